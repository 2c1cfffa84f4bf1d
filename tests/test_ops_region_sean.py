"""`spg_jax.ops.region` and `spg_jax.ops.sean` against brute-force NumPy (float64 loops / formulas).

Bounds (float32, O(1) values): region means and broadcasts 1e-6 absolute (means of <= 48 values);
the SEAN modulation 1e-5 absolute (a few float32 products of N(0, 1) values); the per-sample
region-code convolution 1e-5 of the largest output (sums of ≤ 150 float32 products).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spg_jax.ops import region, sean

K = 20
REGION_TOL = 1e-6
SEAN_TOL = 1e-5


def _labels_with_absent_classes(rng: np.random.Generator, b: int, h: int, w: int) -> np.ndarray:
  """(B, h, w) integer labels; each sample uses a different subset of the K classes."""
  labels = np.empty((b, h, w), np.int64)
  for bi in range(b):
    present = rng.choice(K, size=6 + 3 * bi, replace=False)
    labels[bi] = rng.choice(present, size=(h, w))
  labels[0, 0, 0] = 17  # a class present in exactly one pixel of sample 0
  return labels


def _one_hot(labels: np.ndarray, dtype=np.float32) -> np.ndarray:
  return np.eye(K, dtype=dtype)[labels]


def _loop_region_average(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """The official loop: per sample and class, masked_select(...).mean(); absent class -> zeros."""
  b, _, _, d = features.shape
  out = np.zeros((b, K, d), np.float64)
  for bi in range(b):
    for k in range(K):
      mask = labels[bi] == k
      if mask.any():
        out[bi, k] = features[bi][mask].astype(np.float64).mean(axis=0)
  return out


def test_region_average_pool_matches_per_sample_per_class_loop_within_1e_6():
  rng = np.random.default_rng(0)
  b, h, w, d = 2, 8, 6, 5
  features = rng.standard_normal((b, h, w, d)).astype(np.float32)
  labels = _labels_with_absent_classes(rng, b, h, w)
  ours = np.asarray(region.region_average_pool(jnp.asarray(features), jnp.asarray(_one_hot(labels))))
  ref = _loop_region_average(features, labels)
  assert ours.shape == (b, K, d)
  assert ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref, rtol=0, atol=REGION_TOL)


def test_region_average_pool_gives_exact_zero_code_for_every_absent_class():
  rng = np.random.default_rng(1)
  features = rng.standard_normal((2, 8, 6, 4)).astype(np.float32) + 3.0  # nowhere near zero
  labels = _labels_with_absent_classes(rng, 2, 8, 6)
  ours = np.asarray(region.region_average_pool(jnp.asarray(features), jnp.asarray(_one_hot(labels))))
  for bi in range(2):
    absent = sorted(set(range(K)) - set(np.unique(labels[bi]).tolist()))
    assert absent, "the fixture must leave some class absent"
    np.testing.assert_array_equal(ours[bi, absent], 0.0)
    present = sorted(set(np.unique(labels[bi]).tolist()))
    assert (np.abs(ours[bi, present]) > 0).all()


def test_region_average_pool_accepts_integer_one_hot_and_bfloat16_features_within_1e_2():
  # uint8 one-hot (as nearest-resized parsing may be) and low-precision features: the result is
  # float32 and bounded by bfloat16 input rounding (relative 2**-8 of values ~ 1).
  rng = np.random.default_rng(2)
  features = rng.standard_normal((1, 8, 6, 3)).astype(np.float32)
  labels = _labels_with_absent_classes(rng, 1, 8, 6)
  ours = region.region_average_pool(jnp.asarray(features, jnp.bfloat16), jnp.asarray(_one_hot(labels, np.uint8)))
  assert ours.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(ours), _loop_region_average(features, labels), rtol=0, atol=1e-2)


def test_region_average_pool_rejects_mismatched_resolution():
  with pytest.raises(ValueError):
    region.region_average_pool(jnp.zeros((1, 8, 6, 3)), jnp.zeros((1, 16, 12, K)))


def test_broadcast_region_codes_matches_per_pixel_loop_within_1e_6():
  rng = np.random.default_rng(3)
  b, h, w, d = 2, 7, 5, 6
  labels = _labels_with_absent_classes(rng, b, h, w)
  codes = rng.standard_normal((b, K, d)).astype(np.float32)
  ours = np.asarray(region.broadcast_region_codes(jnp.asarray(_one_hot(labels)), jnp.asarray(codes)))
  ref = np.zeros((b, h, w, d), np.float32)
  for bi in range(b):
    for i in range(h):
      for j in range(w):
        ref[bi, i, j] = codes[bi, labels[bi, i, j]]
  assert ours.shape == (b, h, w, d)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=REGION_TOL)


def test_broadcast_region_codes_with_soft_masks_matches_sum_over_classes_loop_within_1e_5():
  # General (non one-hot) masks: out = sum_k seg[..., k] * codes[:, k].
  rng = np.random.default_rng(4)
  b, h, w, d = 2, 4, 3, 5
  seg = rng.uniform(0, 1, (b, h, w, K)).astype(np.float32)
  codes = rng.standard_normal((b, K, d)).astype(np.float32)
  ours = np.asarray(region.broadcast_region_codes(jnp.asarray(seg), jnp.asarray(codes)))
  ref = np.zeros((b, h, w, d), np.float64)
  for bi in range(b):
    for i in range(h):
      for j in range(w):
        for k in range(K):
          ref[bi, i, j] += float(seg[bi, i, j, k]) * codes[bi, k].astype(np.float64)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_region_pool_then_broadcast_round_trip_equals_loop_under_jit_within_1e_6():
  rng = np.random.default_rng(5)
  features = rng.standard_normal((2, 8, 6, 4)).astype(np.float32)
  labels = _labels_with_absent_classes(rng, 2, 8, 6)
  seg = jnp.asarray(_one_hot(labels))

  @jax.jit
  def round_trip(f, s):
    return region.broadcast_region_codes(s, region.region_average_pool(f, s))

  ours = np.asarray(round_trip(jnp.asarray(features), seg))
  means = _loop_region_average(features, labels)
  ref = np.stack([means[bi][labels[bi]] for bi in range(2)])
  np.testing.assert_allclose(ours, ref, rtol=0, atol=REGION_TOL)


def _numpy_conv_of_painted_map(labels: np.ndarray, codes: np.ndarray, kernel: np.ndarray, pad: int) -> np.ndarray:
  """float64 loops: paint every pixel with its class code, zero-pad, correlate with the kernel."""
  b, h, w = labels.shape
  kh, kw, _, o = kernel.shape
  painted = np.pad(codes[np.arange(b)[:, None, None], labels].astype(np.float64),
                   ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out = np.zeros((b, h + 2 * pad - kh + 1, w + 2 * pad - kw + 1, o))
  for y in range(out.shape[1]):
    for x in range(out.shape[2]):
      window = painted[:, y:y + kh, x:x + kw, :]
      out[:, y, x] = np.einsum("bhwd,hwdo->bo", window, kernel.astype(np.float64))
  return out


@pytest.mark.parametrize("ksize,pad", [(5, 2), (3, 1), (3, 0)])
def test_region_code_conv_equals_convolution_of_the_painted_code_map_within_1e_5(ksize, pad):
  rng = np.random.default_rng(7)
  b, h, w, d, o = 3, 9, 7, 6, 4
  labels = _labels_with_absent_classes(rng, b, h, w)
  codes = rng.standard_normal((b, K, d)).astype(np.float32)
  kernel = rng.standard_normal((ksize, ksize, d, o)).astype(np.float32)
  ours = np.asarray(jax.jit(region.region_code_conv, static_argnums=3)(
      jnp.asarray(_one_hot(labels)), jnp.asarray(codes), jnp.asarray(kernel), pad))
  ref = _numpy_conv_of_painted_map(labels, codes, kernel, pad)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_region_code_conv_rejects_mismatched_classes():
  with pytest.raises(ValueError, match="differ in B or K"):
    region.region_code_conv(jnp.zeros((1, 4, 4, K)), jnp.zeros((1, K - 1, 3)), jnp.zeros((3, 3, 3, 2)), 1)


def _sigmoid(z: float) -> float:
  return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("blend_gamma,blend_beta", [(0.0, 0.0), (0.7, -1.3), (-2.5, 3.0)])
@pytest.mark.parametrize("logit_shape", [(), (1,)])
def test_sean_modulation_matches_numpy_formula_within_1e_5(blend_gamma, blend_beta, logit_shape):
  rng = np.random.default_rng(6)
  shape = (2, 5, 4, 3)
  x, gs, bs, gp, bp = (rng.standard_normal(shape).astype(np.float32) for _ in range(5))
  a = _sigmoid(blend_gamma)
  b = _sigmoid(blend_beta)
  x64, gs64, bs64, gp64, bp64 = (t.astype(np.float64) for t in (x, gs, bs, gp, bp))
  ref = x64 * (1.0 + a * gs64 + (1.0 - a) * gp64) + b * bs64 + (1.0 - b) * bp64
  ours = sean.sean_modulation(
      jnp.asarray(x), jnp.asarray(gs), jnp.asarray(bs), jnp.asarray(gp), jnp.asarray(bp),
      jnp.full(logit_shape, blend_gamma, jnp.float32), jnp.full(logit_shape, blend_beta, jnp.float32))
  assert ours.shape == shape
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=SEAN_TOL)


def test_sean_modulation_blending_gradients_match_numpy_formula_within_1e_4():
  # d out / d blend_gamma = sigmoid'(g) * x * (gs - gp); d out / d blend_beta = sigmoid'(b) * (bs - bp).
  rng = np.random.default_rng(7)
  shape = (1, 3, 4, 2)
  x, gs, bs, gp, bp = (rng.standard_normal(shape).astype(np.float32) for _ in range(5))
  g0, b0 = 0.4, -0.9

  def total(g, b):
    return jnp.sum(sean.sean_modulation(*(jnp.asarray(t) for t in (x, gs, bs, gp, bp)), g, b))

  dg, db = jax.grad(total, argnums=(0, 1))(jnp.float32(g0), jnp.float32(b0))
  sg = _sigmoid(g0) * (1 - _sigmoid(g0))
  sb = _sigmoid(b0) * (1 - _sigmoid(b0))
  ref_dg = sg * np.sum(x.astype(np.float64) * (gs - gp))
  ref_db = sb * np.sum((bs - bp).astype(np.float64))
  np.testing.assert_allclose(float(dg), ref_dg, rtol=0, atol=1e-4)
  np.testing.assert_allclose(float(db), ref_db, rtol=0, atol=1e-4)
