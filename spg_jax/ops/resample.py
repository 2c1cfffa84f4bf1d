"""Resampling with PyTorch-exact semantics: pixel shuffle, nearest down-sampling, pooling, bilinear x2.

All functions take NHWC arrays and are pure and jit-able; output sizes are static.
"""

from __future__ import annotations

import jax
import numpy as np


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
  """PyTorch `PixelShuffle(factor)` in NHWC.

  Args:
    x: (B, H, W, C * factor**2). PyTorch splits the channel axis C-major, as (C, factor, factor).
    factor: upscaling factor r.

  Returns:
    (B, H*r, W*r, C) with out[b, h*r + i, w*r + j, c] = x[b, h, w, c*r*r + i*r + j].
  """
  b, h, w, c = x.shape
  if c % (factor * factor):
    raise ValueError(f"pixel_shuffle: channels {c} not divisible by factor**2 = {factor * factor}")
  out_c = c // (factor * factor)
  x = x.reshape(b, h, w, out_c, factor, factor)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, h * factor, w * factor, out_c)


def _torch_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  # PyTorch (legacy 'nearest'): src = min(floor(dst * float32(in / out)), in - 1).
  scale = np.float32(in_size) / np.float32(out_size)
  idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
  return np.minimum(idx, in_size - 1)


def nearest_resize(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
  """`F.interpolate(x, size=out_hw, mode='nearest')` in NHWC, used for label and parsing maps.

  `jax.image.resize(method='nearest')` samples at half-pixel centres and does not match PyTorch;
  this picks rows and columns floor(dst * in / out) exactly as PyTorch does. For the power-of-two
  down-scales of the networks this is a strided slice x[:, ::s, ::s].

  Args:
    x: (B, H, W, C), any dtype.
    out_hw: (H_out, W_out).

  Returns:
    (B, H_out, W_out, C), same dtype.
  """
  _, h, w, _ = x.shape
  oh, ow = out_hw
  if (oh, ow) == (h, w):
    return x
  if h % oh == 0 and w % ow == 0:
    return x[:, :: h // oh, :: w // ow]
  rows = _torch_nearest_indices(h, oh)
  cols = _torch_nearest_indices(w, ow)
  return x[:, rows][:, :, cols]


def _check_divisible(x: jax.Array, factor: int, name: str) -> None:
  if x.shape[1] % factor or x.shape[2] % factor:
    raise ValueError(f"{name}: spatial size {x.shape[1:3]} not divisible by {factor}")


def avg_pool(x: jax.Array, factor: int) -> jax.Array:
  """Mean over non-overlapping factor x factor windows: (B, H, W, C) -> (B, H/f, W/f, C)."""
  if factor == 1:
    return x
  _check_divisible(x, factor, "avg_pool")
  b, h, w, c = x.shape
  return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def min_pool(x: jax.Array, factor: int) -> jax.Array:
  """Minimum over non-overlapping factor x factor windows: (B, H, W, C) -> (B, H/f, W/f, C)."""
  if factor == 1:
    return x
  _check_divisible(x, factor, "min_pool")
  b, h, w, c = x.shape
  return x.reshape(b, h // factor, factor, w // factor, factor, c).min(axis=(2, 4))


def pool_flow(flow: jax.Array, factor: int) -> jax.Array:
  """Flow at 1/factor resolution: window mean divided by factor, so it stays in (coarse) pixels.

  Args:
    flow: (B, H, W, 2) in pixels of the full-resolution grid.
    factor: down-sampling factor 2**l.

  Returns:
    (B, H/f, W/f, 2) in pixels of the coarse grid (official `avg_pool2d(flow, f) / f`).
  """
  return avg_pool(flow, factor) / factor


def pool_visibility(vis: jax.Array, factor: int) -> jax.Array:
  """Visibility at 1/factor resolution by min-pooling: priority visible(0) > invisible(1) > background(2).

  Args:
    vis: (B, H, W, 1) holding 0/1/2 (any real dtype).
    factor: down-sampling factor.

  Returns:
    (B, H/f, W/f, 1), same dtype (official `-max_pool2d(-vis, f)`).
  """
  return min_pool(vis, factor)


def bilinear_upsample(x: jax.Array, factor: int) -> jax.Array:
  """`F.interpolate(mode='bilinear', align_corners=False)` by an integer factor (up-sampling only).

  For up-sampling `jax.image.resize` uses the same half-pixel sampling and edge clamping as PyTorch.
  """
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, h * factor, w * factor, c), method="bilinear", antialias=False)
