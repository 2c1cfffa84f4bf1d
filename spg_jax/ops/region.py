"""Region average pooling and per-region broadcasting of style codes (SEAN).

Parsing maps here are one-hot (or 0/1 masks) over K classes, NHWC with classes last.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def region_average_pool(features: jax.Array, segmap: jax.Array) -> jax.Array:
  """Mean feature vector of every region; a class with no pixel gets a zero vector.

  Equals the official per-sample, per-class `masked_select(...).mean()` loop for one-hot maps.

  Args:
    features: (B, h, w, D) style features.
    segmap: (B, h, w, K) one-hot parsing at the same resolution as `features` (resize it with
      `nearest_resize` first).

  Returns:
    (B, K, D) style codes in float32.
  """
  if features.shape[:3] != segmap.shape[:3]:
    raise ValueError(f"region_average_pool: features {features.shape} and segmap {segmap.shape} differ in B, h, w")
  seg = segmap.astype(jnp.float32)
  sums = jnp.einsum("bhwk,bhwd->bkd", seg, features.astype(jnp.float32))
  area = seg.sum(axis=(1, 2))[..., None]  # (B, K, 1)
  return sums / jnp.maximum(area, 1.0)


def broadcast_region_codes(segmap: jax.Array, codes: jax.Array) -> jax.Array:
  """Paints every pixel with the code of its class: sum_k segmap[..., k] * codes[:, k].

  Args:
    segmap: (B, H, W, K) one-hot parsing.
    codes: (B, K, D) per-class codes.

  Returns:
    (B, H, W, D), dtype of `codes`.
  """
  return jnp.einsum("bhwk,bkd->bhwd", segmap.astype(codes.dtype), codes)
