"""Per-image L1 / PSNR (vs NumPy and scikit-image) and the confusion-matrix mIoU (vs NumPy references)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from spg_jax.metrics import confusion_matrix, l1_distance, mean_iou, per_class_iou, psnr, to_uint8_values


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(0)
  a = rng.uniform(-1, 1, (4, 32, 24, 3))
  b = np.clip(a + rng.normal(0, 0.1, a.shape), -1, 1)
  return a, b


def test_l1_distance(images):
  a, b = images
  ref = np.abs(a - b).mean(axis=(1, 2, 3))
  ours = jax.jit(l1_distance)(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
  err = float(np.abs(np.asarray(ours) - ref).max())
  print(f"l1_distance float32: max|Δ| = {err:.1e}")
  assert ours.shape == (4,) and err <= 1e-6
  with jax.enable_x64(True):
    err64 = float(np.abs(np.asarray(l1_distance(a, b)) - ref).max())
  assert err64 <= 1e-12


@pytest.mark.parametrize("data_range", [2.0, 255.0])
def test_psnr_matches_skimage(images, data_range):
  a, b = images
  if data_range == 255.0:  # uint8-valued images, as the official scripts score them
    a, b = (np.asarray(to_uint8_values(x)).astype(np.float64) for x in (a, b))
  ref = np.array([peak_signal_noise_ratio(x, y, data_range=data_range) for x, y in zip(a, b)])
  ours = jax.jit(psnr)(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), data_range)
  err = float(np.abs(np.asarray(ours) - ref).max())
  with jax.enable_x64(True):
    err64 = float(np.abs(np.asarray(psnr(a, b, data_range)) - ref).max())
  print(f"psnr range {data_range}: float32 max|Δ| = {err:.1e} dB, float64 {err64:.1e} dB")
  assert err <= 1e-4 and err64 <= 1e-10
  assert np.isinf(float(psnr(jnp.asarray(a[:1]), jnp.asarray(a[:1]), data_range)[0]))


def test_psnr_per_image_data_range(images):
  a, b = images
  ranges = np.array([1.0, 2.0, 3.0, 4.0])
  ours = psnr(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), jnp.asarray(ranges))
  ref = [peak_signal_noise_ratio(x, y, data_range=r) for x, y, r in zip(a, b, ranges)]
  assert np.abs(np.asarray(ours) - ref).max() <= 1e-4


# ----------------------------------------------------------------------------------------------------
# Confusion matrix and mIoU
# ----------------------------------------------------------------------------------------------------

K = 6


def _brute_confusion(pred, true, k):
  cm = np.zeros((k, k), np.int64)
  for p, t in zip(pred.ravel(), true.ravel()):
    if 0 <= p < k and 0 <= t < k:
      cm[t, p] += 1
  return cm


def _histogram_confusion(pred, true, k):
  """A second, vectorised NumPy reference (histogram2d over valid pixels)."""
  p, t = pred.ravel(), true.ravel()
  keep = (p >= 0) & (p < k) & (t >= 0) & (t < k)
  cm, _, _ = np.histogram2d(t[keep], p[keep], bins=k, range=[[0, k], [0, k]])
  return cm.astype(np.int64)


def _reference_iou(cm):
  ious = []
  for c in range(cm.shape[0]):
    tp = cm[c, c]
    union = cm[c, :].sum() + cm[:, c].sum() - tp
    ious.append(tp / union if union > 0 else np.nan)
  ious = np.array(ious)
  return ious, ious[~np.isnan(ious)].mean()


@pytest.fixture(scope="module")
def labels():
  rng = np.random.default_rng(1)
  true = rng.integers(0, K, (5, 16, 12))
  pred = np.where(rng.random(true.shape) < 0.6, true, rng.integers(0, K, true.shape))
  # Class 4 never occurs in either map; class 5 is in the truth only (never predicted).
  true[true == 4] = 0
  pred[pred == 4] = 1
  pred[pred == 5] = 2
  # Ignore labels in both maps must not be counted.
  true[0, 0, :4] = 255
  pred[1, 0, :3] = -1
  return pred, true


def test_confusion_matrix_matches_references(labels):
  pred, true = labels
  ours = np.asarray(jax.jit(confusion_matrix, static_argnums=2)(jnp.asarray(pred), jnp.asarray(true), K))
  brute = _brute_confusion(pred, true, K)
  assert ours.dtype == np.int32
  np.testing.assert_array_equal(ours, brute)
  np.testing.assert_array_equal(ours, _histogram_confusion(pred, true, K))
  assert ours.sum() == pred.size - 7  # the 7 ignored pixels
  # Accumulating per-batch matrices equals one matrix over everything.
  parts = sum(np.asarray(confusion_matrix(jnp.asarray(p), jnp.asarray(t), K)) for p, t in zip(pred, true))
  np.testing.assert_array_equal(parts, brute)


def test_mean_iou_excludes_absent_classes(labels):
  pred, true = labels
  cm = _brute_confusion(pred, true, K)
  ref_ious, ref_miou = _reference_iou(cm)
  ious = np.asarray(per_class_iou(jnp.asarray(cm)))
  assert np.isnan(ious[4]) and np.isnan(ref_ious[4])  # absent from both: excluded
  assert ious[5] == 0.0  # in the truth but never predicted: counts as 0
  np.testing.assert_allclose(ious[~np.isnan(ious)], ref_ious[~np.isnan(ref_ious)], atol=1e-7)
  miou = float(jax.jit(mean_iou)(jnp.asarray(cm)))
  print(f"mean_iou: |Δ| = {abs(miou - ref_miou):.1e}")
  assert abs(miou - ref_miou) <= 1e-6
  assert float(mean_iou(jnp.eye(3, dtype=jnp.int32) * 5)) == 1.0
  assert np.isnan(float(mean_iou(jnp.zeros((3, 3), jnp.int32))))
