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


def region_code_conv(segmap: jax.Array, codes: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  """`conv(broadcast_region_codes(segmap, codes), kernel)` without painting the codes.

  The broadcast map M = Σ_k segmap_k · codes_k is linear in the parsing, so its convolution is a
  convolution of the parsing itself with a per-sample kernel ν_b[o, k] = kernel[o] · codes_b[k]:

    conv(M_b)(p) = Σ_o Σ_k segmap_b,k(p + o) · (kernel[o]ᵀ codes_b,k).

  The parsing has K = 20 channels where M has D = 128, so this costs K / D of the direct
  convolution (the SEAN style branch dominates the generator's FLOPs), and the (B, H, W, D) map is
  never materialised. The per-sample kernels run as one grouped convolution (`jax.vmap` over the
  batch). Zero padding commutes with the rewrite: a padded parsing pixel is all-zero, as is M there.

  Args:
    segmap: (B, H, W, K) parsing (one-hot, or any weights).
    codes: (B, K, D) per-class codes.
    kernel: (kh, kw, D, O) convolution kernel (no bias; add it to the result).
    padding: symmetric zero padding on H and W.

  Returns:
    (B, H', W', O) in the dtype of `segmap`; the per-sample kernels are formed in float32 and cast.
  """
  if segmap.shape[0] != codes.shape[0] or segmap.shape[-1] != codes.shape[1]:
    raise ValueError(f"region_code_conv: segmap {segmap.shape} and codes {codes.shape} differ in B or K")
  if kernel.shape[2] != codes.shape[2]:
    raise ValueError(f"region_code_conv: kernel {kernel.shape} expects {kernel.shape[2]}-d codes, got {codes.shape}")
  per_sample = jnp.einsum("bkd,hwdo->bhwko", codes.astype(jnp.float32), kernel.astype(jnp.float32))

  def conv(seg: jax.Array, nu: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(
        seg[None], nu.astype(seg.dtype), window_strides=(1, 1), padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]

  return jax.vmap(conv)(segmap, per_sample)
