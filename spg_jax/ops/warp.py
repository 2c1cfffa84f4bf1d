"""Backward warping of feature maps by a dense pixel flow (the Feature Deformation Module's sampler)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def warp_by_flow(x: jax.Array, flow: jax.Array) -> jax.Array:
  """Bilinearly samples `x` at (x + u, y + v), zero outside the image.

  This is PyTorch 1.2's `grid_sample(x, grid, mode='bilinear', padding_mode='zeros')` with the grid
  normalised as `2 * p / (size - 1) - 1`, i.e. `align_corners=True`: integer flow values land exactly
  on pixel centres. Each of the four bilinear corners that falls outside the image contributes zero,
  so samples near the border fade out rather than clamp.

  Args:
    x: (B, H, W, C) features.
    flow: (B, H, W, 2) in pixels; channel 0 = x (along W), channel 1 = y (along H). The output at
      (i, j) reads `x` at column j + flow[..., 0] and row i + flow[..., 1].

  Returns:
    (B, H, W, C) warped features, dtype of `x`.
  """
  b, h, w, c = x.shape
  if flow.shape != (b, h, w, 2):
    raise ValueError(f"warp_by_flow: flow shape {flow.shape} does not match features {x.shape[:3]} + (2,)")
  flow = flow.astype(jnp.float32)
  cols = jnp.arange(w, dtype=jnp.float32)[None, None, :] + flow[..., 0]
  rows = jnp.arange(h, dtype=jnp.float32)[None, :, None] + flow[..., 1]
  c0 = jnp.floor(cols)
  r0 = jnp.floor(rows)
  wc1 = cols - c0
  wr1 = rows - r0
  c0 = c0.astype(jnp.int32)
  r0 = r0.astype(jnp.int32)

  flat = x.reshape(b, h * w, c)
  out = jnp.zeros((b, h, w, c), jnp.float32)
  for dr, wr in ((0, 1.0 - wr1), (1, wr1)):
    for dc, wc in ((0, 1.0 - wc1), (1, wc1)):
      rr = r0 + dr
      cc = c0 + dc
      inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
      idx = jnp.clip(rr, 0, h - 1) * w + jnp.clip(cc, 0, w - 1)
      vals = jnp.take_along_axis(flat, idx.reshape(b, h * w, 1), axis=1).reshape(b, h, w, c)
      weight = jnp.where(inside, wr * wc, 0.0)
      out = out + vals.astype(jnp.float32) * weight[..., None]
  return out.astype(x.dtype)
