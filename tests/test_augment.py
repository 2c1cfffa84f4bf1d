"""`input_pipeline.augment`: the official scale-and-shift target augmentation.

The resampling is checked against an independent implementation, `skimage.transform.warp` given the
inverse map M⁻¹ and mode='edge' (= cv2.BORDER_REPLICATE): order=1 for the image, order=0 for the
parsing. Measured on random [0, 1] float images (128×64 and 64×96, 8 seeds each): max
|ours − skimage| ≤ 1.2e-5 over the whole image, borders included (float32 rounding of the
coordinates); we assert ≤ 5e-5. Nearest-neighbour parsing agreed on every pixel, including the 191
whose sample lies within 1e-3 px of a rounding tie; the test excludes those, where float32 and
float64 coordinates may legitimately round apart. Keypoints are checked against M applied in NumPy
(float64), to 1e-4 px.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from skimage.transform import AffineTransform, warp

from input_pipeline import augment

SIZES = [(128, 64), (64, 96)]


def _augment_params(seed):
  sc, dx, dy = augment.sample_augmentation(tf.constant(seed, tf.int64))
  return float(sc.numpy()), int(dx.numpy()), int(dy.numpy())


def _matrix(sc, dx, dy, h, w) -> np.ndarray:
  """(3, 3) float64 forward matrix of the official code (x translation from h, y from w)."""
  return np.array([[sc, 0, 0.5 * h * (1 - sc) + dx], [0, sc, 0.5 * w * (1 - sc) + dy], [0, 0, 1]])


def _random_example(rng, h, w):
  image = rng.uniform(0, 1, (h, w, 3)).astype(np.float32)
  parsing = rng.integers(0, 20, (h, w)).astype(np.uint8)
  kp = np.stack([rng.uniform(-3, w + 2, 18), rng.uniform(-3, h + 2, 18)], -1).astype(np.float32)
  kp[[0, 5]] = -1.0  # missing joints stay missing
  kp[7] = (0.0, 0.0)  # a corner joint: kept or dropped depending on the draw
  kp[8] = (w - 1.0, h - 1.0)
  return image, parsing, kp


def test_sample_augmentation_ranges_and_determinism():
  seeds = tf.data.Dataset.range(2000).map(lambda i: tf.stack([i, tf.constant(7, tf.int64)]))
  draws = [tuple(x.numpy() for x in t) for t in seeds.map(augment.sample_augmentation)]
  sc = np.array([d[0] for d in draws])
  shifts = np.array([(d[1], d[2]) for d in draws])
  assert sc.dtype == np.float32 and shifts.dtype == np.int32
  assert sc.min() >= 1 / 1.2 - 1e-6 and sc.max() <= 1.2 + 1e-6
  u = np.log(sc.astype(np.float64)) / np.log(1.2)  # U(−1, 1)
  assert abs(u.mean()) < 0.05 and abs(u.var() - 1 / 3) < 0.03
  assert shifts.min() == -10 and shifts.max() == 9  # randint(−10, 10): upper bound excluded
  for axis in range(2):
    counts = np.bincount(shifts[:, axis] + 10, minlength=20)
    assert counts.min() > 50  # every value of −10..9 occurs (100 expected)
  assert abs(np.corrcoef(shifts[:, 0], shifts[:, 1])[0, 1]) < 0.1
  assert abs(np.corrcoef(u, shifts[:, 0])[0, 1]) < 0.1
  assert _augment_params([3, 4]) == _augment_params([3, 4])
  assert _augment_params([3, 4]) != _augment_params([4, 3])
  sc32 = augment.sample_augmentation(tf.constant([3, 4], tf.int32))[0]
  assert sc32.dtype == tf.float32


def test_affine_matrix_keeps_the_official_height_width_quirk():
  m = augment.affine_matrix(1.1, 3, -2, 128, 64).numpy()
  np.testing.assert_allclose(m, _matrix(1.1, 3, -2, 128, 64)[:2], rtol=1e-6, atol=1e-5)
  # x translation: 0.5 · h · (1 − sc) + dx = 64 · (−0.1) + 3; y: 0.5 · w · (1 − sc) − 2.
  assert m[0, 2] == pytest.approx(-3.4, abs=1e-5) and m[1, 2] == pytest.approx(-5.2, abs=1e-5)


@pytest.mark.parametrize("hw", SIZES)
def test_matches_skimage_warp(hw):
  h, w = hw
  rng = np.random.default_rng(h)
  for seed in range(4):
    image, parsing, kp = _random_example(rng, h, w)
    seed_t = tf.constant([seed, h], tf.int64)
    out_image, out_parsing, out_kp = (x.numpy() for x in augment.augment_target(image, parsing, kp, seed_t))
    sc, dx, dy = _augment_params([seed, h])
    m = _matrix(sc, dx, dy, h, w)
    inverse = AffineTransform(matrix=np.linalg.inv(m))
    expected = warp(image.astype(np.float64), inverse, order=1, mode="edge", preserve_range=True)
    assert out_image.dtype == np.float32 and out_image.shape == (h, w, 3)
    assert np.abs(out_image - expected).max() <= 5e-5

    expected_parsing = warp(parsing, inverse, order=0, mode="edge", preserve_range=True).astype(np.uint8)
    # Exclude samples within 1e-3 px of a rounding tie, where float32 vs float64 may round apart.
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    src_x, src_y = (xs - m[0, 2]) / sc, (ys - m[1, 2]) / sc
    tie = (np.abs(np.mod(src_x, 1) - 0.5) < 1e-3) | (np.abs(np.mod(src_y, 1) - 0.5) < 1e-3)
    assert out_parsing.dtype == np.uint8
    np.testing.assert_array_equal(out_parsing[~tie], expected_parsing[~tie])

    moved = kp.astype(np.float64) @ m[:2, :2].T + m[:2, 2]
    keep = (kp >= 0).all(-1) & (moved[:, 0] >= 0) & (moved[:, 0] <= w - 1) & (moved[:, 1] >= 0) & (
        moved[:, 1] <= h - 1)
    assert out_kp.dtype == np.float32 and out_kp.shape == (18, 2)
    np.testing.assert_allclose(out_kp[keep], moved[keep], atol=1e-4, rtol=0)
    assert np.all(out_kp[~keep] == -1.0)
    assert np.all(out_kp[[0, 5]] == -1.0)


def test_pure_shift_replicates_the_border():
  # scale_base = 1 makes sc = 1: an integer shift, out[y, x] = in[clip(y − dy), clip(x − dx)].
  h, w = 32, 24
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
  parsing = rng.integers(0, 20, (h, w)).astype(np.int32)
  kp = np.full((18, 2), -1.0, np.float32)
  kp[1] = (10.0, 12.0)
  for seed in range(6):
    seed_t = tf.constant([seed, 0], tf.int32)
    out_image, out_parsing, out_kp = augment.augment_target(image, parsing, kp, seed_t, scale_base=1.0,
                                                            max_shift=6)
    sc, dx, dy = (x.numpy() for x in augment.sample_augmentation(seed_t, scale_base=1.0, max_shift=6))
    assert sc == 1.0 and -6 <= dx < 6 and -6 <= dy < 6
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    np.testing.assert_array_equal(out_image.numpy(), image[rows][:, cols].astype(np.float32))
    assert out_parsing.dtype == tf.int32
    np.testing.assert_array_equal(out_parsing.numpy(), parsing[rows][:, cols])
    np.testing.assert_allclose(out_kp.numpy()[1], (10.0 + dx, 12.0 + dy), atol=1e-5)


def test_keypoints_follow_the_image():
  # A Gaussian blob drawn at a keypoint stays centred on the transformed keypoint.
  h, w = 128, 64
  ys, xs = np.mgrid[0:h, 0:w]
  kp = np.full((18, 2), -1.0, np.float32)
  kp[1] = (30.3, 60.7)
  blob = np.exp(-((xs - kp[1, 0]) ** 2 + (ys - kp[1, 1]) ** 2) / (2 * 3.0 ** 2)).astype(np.float32)
  image = np.repeat(blob[..., None], 3, -1)
  for seed in range(4):
    out_image, _, out_kp = augment.augment_target(image, np.zeros((h, w), np.uint8), kp,
                                                  tf.constant([seed, 1], tf.int64))
    weights = out_image.numpy()[..., 0]
    centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
    np.testing.assert_allclose(centroid, out_kp.numpy()[1], atol=0.05)


def test_deterministic_in_tf_data_and_static_shapes():
  h, w = 128, 64
  image, parsing, kp = _random_example(np.random.default_rng(5), h, w)
  ds = tf.data.Dataset.from_tensors((image, parsing, kp)).repeat(4).enumerate()
  ds = ds.map(lambda i, e: augment.augment_target(*e, tf.stack([i // 2, tf.constant(9, tf.int64)])),
              num_parallel_calls=4, deterministic=False)
  spec = ds.element_spec
  assert spec[0].shape == (h, w, 3) and spec[0].dtype == tf.float32
  assert spec[1].shape == (h, w) and spec[1].dtype == tf.uint8
  assert spec[2].shape == (18, 2) and spec[2].dtype == tf.float32
  outs = sorted((tuple(x.numpy() for x in e) for e in ds), key=lambda e: e[0].sum())
  # Seeds 0, 0, 1, 1: two pairs of identical examples, the pairs differing from each other.
  for a, b in ((0, 1), (2, 3)):
    for x, y in zip(outs[a], outs[b]):
      np.testing.assert_array_equal(x, y)
  assert not np.array_equal(outs[1][0], outs[2][0])
