"""Parity of `spg_jax.metrics.ssim` with scikit-image's `structural_similarity`.

scikit-image runs on uint8 (or float64) arrays, so it computes in float64, as the 0.14 release used
by the official scripts did. The 1e-6 parity checks run our functions in float64 (inside
`jax.enable_x64(True)`); the float32 path, which the evaluation uses by default, is checked with a
looser bound because E[x²] − μ² cancels in float32 where images have large flat areas.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from spg_jax.metrics import ssim as S
from spg_jax.metrics.image import to_uint8_values

TOL64 = 1e-6
TOL32 = 1e-5


def _structured(rng: np.random.Generator, b: int, h: int, w: int) -> np.ndarray:
  """uint8 (b, h, w, 3) 'person on white background' images: flat areas, gradients, edges, noise."""
  yy, xx = np.mgrid[0:h, 0:w]
  out = []
  for _ in range(b):
    img = np.full((h, w, 3), 250.0)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    body = ((yy - cy) / (0.35 * h)) ** 2 + ((xx - cx) / (0.2 * w)) ** 2 < 1
    shade = (40 + 150 * xx / w + 30 * np.sin(yy / 7.0))[..., None] * np.array([1.0, 0.8, 0.6])
    img[body] = shade[body]
    img += rng.normal(0.0, 3.0, img.shape)
    out.append(np.clip(np.round(img), 0, 255))
  return np.stack(out).astype(np.uint8)


@pytest.fixture(scope="module", params=["random", "structured"])
def pair(request):
  """Two uint8 (3, 128, 64, 3) batches (Market size; large enough for the 51x51 window)."""
  rng = np.random.default_rng(0 if request.param == "random" else 1)
  if request.param == "random":
    a = rng.integers(0, 256, (3, 128, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
  else:
    a = _structured(rng, 3, 128, 64)
    b = _structured(rng, 3, 128, 64)
  return request.param, a, b


def _unit(u: np.ndarray) -> np.ndarray:
  """uint8 -> the project's [-1, 1] convention, float64."""
  return u.astype(np.float64) / 127.5 - 1.0


def _check(name: str, ours64, ours32, ref) -> None:
  ref = np.asarray(ref, np.float64)
  err64 = float(np.abs(np.asarray(ours64, np.float64) - ref).max())
  err32 = float(np.abs(np.asarray(ours32, np.float64) - ref).max())
  print(f"{name}: float64 max|Δ| = {err64:.1e}, float32 max|Δ| = {err32:.1e}")
  assert err64 <= TOL64, name
  assert err32 <= TOL32, name


def _both(fn, *arrays):
  """fn(*arrays) jitted in float32 and in float64."""
  ours32 = jax.jit(fn)(*(np.asarray(x, np.float32) for x in arrays))
  with jax.enable_x64(True):
    ours64 = jax.jit(fn)(*(np.asarray(x, np.float64) for x in arrays))
    assert ours64.dtype == jnp.float64
    ours64 = np.asarray(ours64)
  assert ours32.dtype == jnp.float32
  return ours64, ours32


def test_ssim_skimage_defaults(pair):
  kind, a, b = pair
  ref = [structural_similarity(x, y, channel_axis=-1) for x, y in zip(a, b)]  # uint8: data_range 255
  _check(f"ssim_skimage defaults [{kind}]", *_both(lambda x, y: S.ssim_skimage(x, y, 255.0), a, b), ref)


def test_ssim_skimage_options(pair):
  kind, a, b = pair
  x, y = a / 255.0, b / 255.0
  ref = [structural_similarity(p, q, channel_axis=-1, data_range=1.0, win_size=9, use_sample_covariance=False,
                               K1=0.02, K2=0.05) for p, q in zip(x, y)]
  fn = lambda p, q: S.ssim_skimage(p, q, 1.0, win_size=9, use_sample_covariance=False, K1=0.02, K2=0.05)
  _check(f"ssim_skimage win 9, population cov [{kind}]", *_both(fn, x, y), ref)
  ref = [structural_similarity(p, q, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=0.8)
         for p, q in zip(x, y)]
  fn = lambda p, q: S.ssim_skimage(p, q, 1.0, gaussian_weights=True, sigma=0.8)
  _check(f"ssim_skimage gaussian σ=0.8 [{kind}]", *_both(fn, x, y), ref)


def test_ssim_spgnet(pair):
  kind, a, b = pair
  ref = [structural_similarity(g, t, channel_axis=-1) for g, t in zip(a, b)]
  _check(f"ssim_spgnet [{kind}]", *_both(S.ssim_spgnet, _unit(a), _unit(b)), ref)


def test_ssim_patn(pair):
  kind, a, b = pair
  ref = [structural_similarity(t, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                               channel_axis=-1, data_range=g.max() - g.min()) for g, t in zip(a, b)]
  _check(f"ssim_patn [{kind}]", *_both(S.ssim_patn, _unit(a), _unit(b)), ref)


def test_ssim_gfla(pair):
  kind, a, b = pair
  # GFLA reads uint8 files and divides by 255; scikit-image 0.14 then computed in float64.
  ref = [structural_similarity(t.astype(np.float64) / 255.0, g.astype(np.float64) / 255.0, data_range=1,
                               win_size=51, channel_axis=-1) for g, t in zip(a, b)]
  _check(f"ssim_gfla [{kind}]", *_both(S.ssim_gfla, _unit(a), _unit(b)), ref)


def test_masked_ssim(pair):
  kind, a, b = pair
  rng = np.random.default_rng(2)
  h, w = a.shape[1:3]
  yy, xx = np.mgrid[0:h, 0:w]
  masks = np.stack([((yy - rng.uniform(40, 90)) / 45.0) ** 2 + ((xx - rng.uniform(20, 44)) / 18.0) ** 2 < 1
                    for _ in range(a.shape[0])])
  ref = []
  for g, t, m in zip(a, b, masks):
    gm, tm = g * m[..., None], t * m[..., None]  # uint8 · bool, as the Market scripts
    ref.append(structural_similarity(tm, gm, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     channel_axis=-1, data_range=gm.max() - gm.min()))
  _check(f"masked_ssim [{kind}]", *_both(S.masked_ssim, _unit(a), _unit(b), masks.astype(np.float64)), ref)
  # A (B, H, W, 1) bool mask gives the same.
  bool_mask = S.masked_ssim(_unit(a).astype(np.float32), _unit(b).astype(np.float32), masks[..., None])
  assert np.abs(np.asarray(bool_mask) - np.asarray(ref)).max() <= TOL32


def test_quantize_follows_the_official_uint8_conversion():
  rng = np.random.default_rng(3)
  g = rng.uniform(-1.1, 1.1, (2, 64, 64, 3)).astype(np.float32)
  t = np.clip(g + rng.normal(0, 0.2, g.shape), -1, 1).astype(np.float32)
  official = lambda x: ((x + 1.0) * 127.5).clip(0, 255).astype(np.uint8)  # Intr-Flow / SPGNet
  assert np.array_equal(np.asarray(to_uint8_values(g)), official(g).astype(np.float32))
  ref = [structural_similarity(official(p), official(q), channel_axis=-1) for p, q in zip(g, t)]
  ours = S.ssim_spgnet(jnp.asarray(g), jnp.asarray(t), quantize=True)
  assert np.abs(np.asarray(ours) - np.asarray(ref)).max() <= TOL32


def test_identity_batching_and_errors():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.uniform(-1, 1, (3, 64, 64, 3)), jnp.float32)
  y = jnp.asarray(rng.uniform(-1, 1, (3, 64, 64, 3)), jnp.float32)
  np.testing.assert_allclose(np.asarray(S.ssim_patn(x, x)), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(S.ssim_gfla(x, x)), 1.0, atol=1e-6)
  batched = np.asarray(S.ssim_patn(x, y))
  single = np.concatenate([np.asarray(S.ssim_patn(x[i:i + 1], y[i:i + 1])) for i in range(3)])
  np.testing.assert_allclose(batched, single, atol=1e-7)
  with pytest.raises(ValueError):
    S.ssim_skimage(x, y, 2.0, gaussian_weights=True, win_size=7)  # σ = 1.5 implies 11 taps
  with pytest.raises(ValueError):
    S.ssim_skimage(x, y, 2.0, win_size=6)
  with pytest.raises(ValueError):
    S.ssim_skimage(x[:, :5], y[:, :5], 2.0)
  with pytest.raises(ValueError):
    S.ssim_gfla(x[:, :40], y[:, :40])  # smaller than the 51x51 window
