"""Batched, jit-able SSIM reproducing scikit-image's `structural_similarity` and the pose-transfer variants.

The pose-transfer literature reports several different "SSIM"s, all computed by scikit-image
(`skimage.measure.compare_ssim` 0.14 in the official scripts, `skimage.metrics.structural_similarity`
today); this module reproduces each one per image:

  * `ssim_spgnet`: Intr-Flow / SPGNet test script and "best"-checkpoint SSIM. uint8 values [0, 255],
    7x7 uniform window, sample covariance, data_range 255 (skimage defaults).
  * `ssim_patn`: PATN / XingGAN / ADGAN SSIM, and GFLA's `ssim_256`. uint8 values [0, 255], 11x11
    Gaussian window (σ = 1.5), population covariance, data_range = max − min of the generated image.
  * `masked_ssim`: PATN / SPGNet Market mask-SSIM. `ssim_patn` on uint8 images multiplied by a person
    mask, data_range = max − min of the masked generated image.
  * `ssim_gfla`: GFLA / DPTN / PIDM / CFLD `ssim`. Float values in [0, 1], 51x51 uniform window,
    sample covariance, data_range 1.

`ssim_skimage` is the general function (any value range, skimage's keyword arguments); the four
protocol functions take project images in [-1, 1] and map them to the value scale their official
script saw. The official scripts evaluate 8-bit image files; pass `quantize=True` to apply the
`((x + 1) · 127.5).clip(0, 255).astype(np.uint8)` truncation of Intr-Flow/SPGNet first (file
formats such as JPEG are outside the scope of these functions).

Algorithm and conventions (scikit-image, 2-D images with `channel_axis=-1`):
  * Every channel is processed independently with the same `data_range`; the image score is the mean
    over channels of the mean SSIM map.
  * Local statistics μ_x, μ_y, E[x²], E[y²], E[xy] come from a separable window: uniform of size
    `win_size` (default 7) or, with `gaussian_weights=True`, the normalised Gaussian
    exp(−t²/2σ²), t = −r..r, r = int(3.5·σ + 0.5) (scipy's `truncate=3.5`; 11 taps for σ = 1.5).
  * σ² = c·(E[x²] − μ_x²) and σ_xy = c·(E[xy] − μ_x μ_y), with c = N/(N−1) for the sample covariance
    (N = win_size²; skimage's default) and c = 1 for `use_sample_covariance=False`.
  * S = (2 μ_x μ_y + C1)(2 σ_xy + C2) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2)),
    C1 = (K1 · L)², C2 = (K2 · L)², K1 = 0.01, K2 = 0.03, L = data_range.
  * Padding: skimage filters the whole image with `mode='reflect'` and then crops (win_size − 1) // 2
    pixels from every side of S before averaging. The crop equals the window radius, so every kept
    value only sees pixels inside the image: the result is exactly a "valid" correlation, which is
    what is computed here (band matrices along H and W, no padding). The mean is therefore taken
    over (H − win_size + 1) x (W − win_size + 1) positions per channel; H and W must be ≥ win_size.

Precision. Computation is float32, or float64 for float64 inputs when `jax_enable_x64` is on
(`with jax.enable_x64(True): ...`). scikit-image 0.14 (the version of the official numbers) always
computed in float64. To limit the cancellation in E[x²] − μ², each channel is first shifted by its
rounded median (variances and covariances are shift invariant; the means are shifted back): the
median sits on the dominant flat value (a white background, the zeros outside a mask), where σ² is
smallest. The window sums run at `Precision.HIGHEST` (no TF32 on GPUs). Measured against
scikit-image on 128x64 uint8 images: float64 agrees to ≤ 1e-13; float32 to ~1e-7 on random images
and ≤ 2e-6 on synthetic person-on-background images, where low-variance regions far from the median
(smooth clothing) remain.

A zero `data_range` with constant images gives 0/0 = NaN, as scikit-image does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from spg_jax.metrics.image import compute_dtype, to_uint8_values

# scipy.ndimage's default Gaussian truncation used by skimage's SSIM for gaussian_weights=True.
_GAUSSIAN_TRUNCATE = 3.5


def _gaussian_taps(sigma: float) -> np.ndarray:
  """scipy.ndimage's normalised 1-D Gaussian of radius int(3.5·σ + 0.5), float64."""
  radius = int(_GAUSSIAN_TRUNCATE * sigma + 0.5)
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  taps = np.exp(-0.5 / (sigma * sigma) * t * t)
  return taps / taps.sum()


@functools.lru_cache(maxsize=64)
def _valid_filter_matrix(n: int, taps: tuple[float, ...]) -> np.ndarray:
  """(n − k + 1, n) matrix M with M[i, i + j] = taps[j]: a 'valid' 1-D correlation along one axis."""
  k = len(taps)
  m = np.zeros((n - k + 1, n), np.float64)
  rows = np.arange(n - k + 1)
  for j, t in enumerate(taps):
    m[rows, rows + j] = t
  return m


def _ssim_per_image(x: jax.Array, y: jax.Array, data_range: jax.Array | float, taps: np.ndarray,
                    cov_norm: float, k1: float, k2: float) -> jax.Array:
  """Mean SSIM map of (B, H, W, C) x and y with a separable window `taps`, valid region only -> (B,)."""
  if x.shape != y.shape:
    raise ValueError(f"SSIM: shapes differ, {x.shape} vs {y.shape}")
  if x.ndim != 4:
    raise ValueError(f"SSIM: expected (B, H, W, C) images, got shape {x.shape}")
  dtype = compute_dtype(x, y)
  x = jnp.asarray(x).astype(dtype)
  y = jnp.asarray(y).astype(dtype)
  _, h, w, c = x.shape
  k = len(taps)
  if h < k or w < k:
    raise ValueError(f"SSIM: image size {(h, w)} is smaller than the {k}x{k} window")
  key = tuple(float(t) for t in taps)
  mh = jnp.asarray(_valid_filter_matrix(h, key), dtype)
  mw = jnp.asarray(_valid_filter_matrix(w, key), dtype)

  # Shift each channel by its rounded median: exact for integer-valued images, and it keeps
  # E[x²] − μ² from cancelling as badly in float32 (the covariances do not depend on the shift).
  sx = jax.lax.stop_gradient(jnp.round(jnp.median(x, axis=(1, 2), keepdims=True)))
  sy = jax.lax.stop_gradient(jnp.round(jnp.median(y, axis=(1, 2), keepdims=True)))
  xs = x - sx
  ys = y - sy
  stats = jnp.concatenate([xs, ys, xs * xs, ys * ys, xs * ys], axis=-1)
  hi = jax.lax.Precision.HIGHEST
  stats = jnp.einsum("ph,bhwc->bpwc", mh, stats, precision=hi)
  stats = jnp.einsum("qw,bpwc->bpqc", mw, stats, precision=hi)
  mx, my, mxx, myy, mxy = jnp.split(stats, 5, axis=-1)
  vx = cov_norm * (mxx - mx * mx)
  vy = cov_norm * (myy - my * my)
  vxy = cov_norm * (mxy - mx * my)
  ux = mx + sx
  uy = my + sy

  r = jnp.asarray(data_range, dtype)
  r = jnp.reshape(r, (-1, 1, 1, 1)) if r.ndim else r
  c1 = (k1 * r) ** 2
  c2 = (k2 * r) ** 2
  s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
  # Every channel has the same number of valid positions, so this is the mean of per-channel means.
  return jnp.mean(s, axis=(1, 2, 3))


def ssim_skimage(x: jax.Array, y: jax.Array, data_range: float | jax.Array, *, win_size: int | None = None,
                 gaussian_weights: bool = False, sigma: float = 1.5, use_sample_covariance: bool = True,
                 K1: float = 0.01, K2: float = 0.03) -> jax.Array:  # noqa: N803 (skimage's names)
  """Per-image `skimage.metrics.structural_similarity(x[i], y[i], channel_axis=-1, ...)`.

  The defaults are scikit-image's: 7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03.
  Unlike scikit-image, `data_range` is required (skimage infers 255 for uint8 input; pass 255).

  Args:
    x, y: (B, H, W, C) images in any value range (symmetric in x and y); H, W ≥ the window size.
    data_range: L in C1 = (K1·L)², C2 = (K2·L)²: a scalar or a (B,) array (one value per image).
    win_size: odd uniform window size (default 7). With `gaussian_weights` it is implied by `sigma`
      (11 for σ = 1.5) and may only be given if equal to that.
    gaussian_weights: Gaussian window of standard deviation `sigma` instead of the uniform one.
    sigma: Gaussian standard deviation.
    use_sample_covariance: normalise the (co)variances by N − 1 instead of N (N = window pixels).
    K1, K2: the SSIM stabilisation constants.

  Returns:
    (B,) SSIM per image, float32 (float64 for float64 input under x64).
  """
  if gaussian_weights:
    taps = _gaussian_taps(sigma)
    if win_size is not None and win_size != len(taps):
      # skimage would then crop a different border than the filter radius, and the reflect padding
      # would leak into the score; that combination is not reproduced here.
      raise ValueError(f"gaussian_weights with sigma={sigma} implies win_size={len(taps)}, got {win_size}")
  else:
    win_size = 7 if win_size is None else int(win_size)
    if win_size < 1 or win_size % 2 == 0:
      raise ValueError(f"win_size must be odd and positive, got {win_size}")
    taps = np.full((win_size,), 1.0 / win_size)
  n = len(taps) ** 2
  cov_norm = n / (n - 1.0) if use_sample_covariance else 1.0
  return _ssim_per_image(x, y, data_range, taps, cov_norm, K1, K2)


def _to_255(images: jax.Array, quantize: bool) -> jax.Array:
  """[-1, 1] -> [0, 255] values, optionally truncated to integers as the official scripts do."""
  if quantize:
    return to_uint8_values(images)
  dtype = compute_dtype(images)
  return (jnp.asarray(images).astype(dtype) + 1.0) * 127.5


def ssim_spgnet(generated: jax.Array, target: jax.Array, *, quantize: bool = False) -> jax.Array:
  """Intr-Flow / SPGNet test-script SSIM (`models/modules.SSIM`): skimage defaults on uint8 values.

  `compare_ssim(img_1, img_2, multichannel=True)` on uint8 images: 7x7 uniform window, sample
  covariance, data_range 255. SPGNet computes it at the network resolution (DeepFashion 256x256
  including the white side padding).

  Args:
    generated, target: (B, H, W, C) images in [-1, 1].
    quantize: apply the official float -> uint8 truncation (`to_uint8_values`) first.

  Returns:
    (B,) SSIM per image.
  """
  return ssim_skimage(_to_255(generated, quantize), _to_255(target, quantize), 255.0)


def ssim_patn(generated: jax.Array, target: jax.Array, *, quantize: bool = False) -> jax.Array:
  """PATN SSIM: Gaussian σ = 1.5 window, population covariance, data range of the generated image.

  PATN `tool/getMetrics_*.py` `ssim_score`: `compare_ssim(reference, generated, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, multichannel=True, data_range=generated.max() −
  generated.min())` on uint8 images; the range is taken per image over all pixels and channels of
  the generated image. GFLA's `ssim_256` is the same on float images ×255. For PATN's DeepFashion
  numbers the caller must first re-pad the 176-wide images to 256 (PATN `addBounding`).

  Args:
    generated, target: (B, H, W, C) images in [-1, 1] (mapped to [0, 255]); H, W ≥ 11.
    quantize: apply the official float -> uint8 truncation first.

  Returns:
    (B,) SSIM per image.
  """
  gen = _to_255(generated, quantize)
  tgt = _to_255(target, quantize)
  data_range = jnp.max(gen, axis=(1, 2, 3)) - jnp.min(gen, axis=(1, 2, 3))
  return ssim_skimage(gen, tgt, data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def masked_ssim(generated: jax.Array, target: jax.Array, mask: jax.Array, *, quantize: bool = False) -> jax.Array:
  """Market-1501 mask-SSIM (PATN `getMetrics_market.py`, SPGNet `tools/metrics_market.py`).

  Both uint8 images are multiplied by the binary person mask (pixels outside become 0, i.e. black)
  and scored with `ssim_patn`'s settings; the data range is max − min of the *masked* generated image.
  The mask itself (PATN `produce_ma_mask` from the target keypoints) is computed by the caller.

  Args:
    generated, target: (B, H, W, C) images in [-1, 1] (mapped to [0, 255]).
    mask: (B, H, W) or (B, H, W, 1), bool or {0, 1}.
    quantize: apply the official float -> uint8 truncation first (before masking, as the scripts
      mask the uint8 images).

  Returns:
    (B,) SSIM per image.
  """
  if mask.ndim == 3:
    mask = mask[..., None]
  gen = _to_255(generated, quantize)
  mask = jnp.asarray(mask).astype(gen.dtype)
  gen = gen * mask
  tgt = _to_255(target, quantize) * mask
  data_range = jnp.max(gen, axis=(1, 2, 3)) - jnp.min(gen, axis=(1, 2, 3))
  return ssim_skimage(gen, tgt, data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def ssim_gfla(generated: jax.Array, target: jax.Array, *, quantize: bool = False) -> jax.Array:
  """GFLA `script/metrics.py` `ssim` (also DPTN, PIDM, CFLD): 51x51 uniform window on [0, 1] images.

  `compare_ssim(img_gt, img_pred, data_range=1, win_size=51, multichannel=True)` with images read as
  uint8 and divided by 255: sample covariance, K1 = 0.01, K2 = 0.03, border of 25 pixels cropped.

  Args:
    generated, target: (B, H, W, C) images in [-1, 1] (mapped to [0, 1]); H, W ≥ 51.
    quantize: apply the official float -> uint8 truncation before dividing by 255.

  Returns:
    (B,) SSIM per image.
  """
  gen = _to_255(generated, quantize) / 255.0
  tgt = _to_255(target, quantize) / 255.0
  return ssim_skimage(gen, tgt, 1.0, win_size=51)


__all__ = ["masked_ssim", "ssim_gfla", "ssim_patn", "ssim_skimage", "ssim_spgnet"]
