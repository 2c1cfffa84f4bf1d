"""Per-image pixel metrics (L1, PSNR) and the uint8 conversion the official evaluation scripts apply.

All functions take batched NHWC arrays (B, H, W, C) and return one float value per image, shape (B,),
so that callers can average over a dataset however the protocol they reproduce does. They compute in
float32, or in float64 when given float64 inputs with `jax_enable_x64` on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compute_dtype(*arrays: jax.Array) -> jnp.dtype:
  """float64 if any input is float64 (possible only with x64 enabled), else float32."""
  # canonicalize_dtype maps float64 to float32 unless x64 is on, so float64 is only chosen when usable.
  if any(jax.dtypes.canonicalize_dtype(a.dtype) == jnp.float64 for a in arrays):
    return jnp.dtype(jnp.float64)
  return jnp.dtype(jnp.float32)


def _check_pair(a: jax.Array, b: jax.Array, name: str) -> None:
  if a.shape != b.shape:
    raise ValueError(f"{name}: shapes differ, {a.shape} vs {b.shape}")
  if a.ndim != 4:
    raise ValueError(f"{name}: expected (B, H, W, C) images, got shape {a.shape}")


def to_uint8_values(images: jax.Array) -> jax.Array:
  """Maps [-1, 1] images to the integer values {0, ..., 255} the official scripts evaluate.

  Intr-Flow / SPGNet convert network outputs with `((x + 1) * 127.5).clip(0, 255).astype(np.uint8)`
  (`models/modules.py` SSIM/PSNR and the test script that writes the result images): the cast
  truncates towards zero, it does not round. This reproduces that conversion, keeping a float dtype.

  Args:
    images: any shape, float, nominally in [-1, 1].

  Returns:
    Same shape, float32 (float64 for float64 input), integer values in [0, 255].
  """
  dtype = compute_dtype(images)
  return jnp.floor(jnp.clip((images.astype(dtype) + 1.0) * 127.5, 0.0, 255.0))


def l1_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-image mean absolute difference over H, W and C.

  The value is in the units of the inputs: for project images in [-1, 1] it equals PATN's `l1_score`
  (which maps uint8 images to [-1, 1] first); GFLA's `l1` works on [0, 1] images and is half of it.

  Args:
    a, b: (B, H, W, C) float images in the same value range.

  Returns:
    (B,) mean |a − b| per image.
  """
  _check_pair(a, b, "l1_distance")
  dtype = compute_dtype(a, b)
  return jnp.mean(jnp.abs(a.astype(dtype) - b.astype(dtype)), axis=(1, 2, 3))


def psnr(a: jax.Array, b: jax.Array, data_range: float | jax.Array) -> jax.Array:
  """Per-image peak signal-to-noise ratio, `10 · log10(data_range² / MSE)` in dB.

  Matches `skimage.metrics.peak_signal_noise_ratio(a, b, data_range=data_range)` per image (MSE over
  H, W and C). Identical images give +inf.

  Args:
    a, b: (B, H, W, C) float images in the same value range.
    data_range: the range of that value scale, given explicitly (2 for [-1, 1] images, 255 for
      uint8-valued ones, 1 for [0, 1]); a scalar or a (B,) array.

  Returns:
    (B,) PSNR per image.
  """
  _check_pair(a, b, "psnr")
  dtype = compute_dtype(a, b)
  mse = jnp.mean(jnp.square(a.astype(dtype) - b.astype(dtype)), axis=(1, 2, 3))
  data_range = jnp.asarray(data_range, dtype)
  return 10.0 * jnp.log10(jnp.square(data_range) / mse)


__all__ = ["compute_dtype", "l1_distance", "psnr", "to_uint8_values"]
