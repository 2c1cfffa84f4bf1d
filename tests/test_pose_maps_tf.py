"""`input_pipeline.pose_maps_tf` against the brute-force NumPy references and the JAX versions.

The references (`tests/pose_references.py`) are the ones `tests/test_pose_maps.py` uses for the JAX
functions. Binary joint maps must match the per-pixel loop exactly, Gaussian ones to 1e-6. Limb
distances are compared with the minimum over N = 4001 evenly spaced points of each segment, which
exceeds the true distance by at most L / (2 (N − 1)) for a segment of length L:
  −1e-4 ≤ sampled − ours ≤ L / (2 (N − 1)) + 1e-4   (1e-4 px: float32 rounding up to ~100 px).
Everything is computed inside `tf.data.Dataset.map` (graph mode, symbolic keypoints), as the input
pipeline uses it.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import pose_maps_tf
from spg_jax.ops import pose_maps
from tests.pose_references import brute_keypoint_maps, brute_limb_distances, random_keypoints

H, W = 24, 20
NUM_SAMPLES = 4001
FLOAT_TOL = 1e-4


def _map_each(fn, keypoints: np.ndarray) -> np.ndarray:
  """Applies `fn` to every (18, 2) example through `tf.data.Dataset.map` and stacks the results."""
  ds = tf.data.Dataset.from_tensor_slices(keypoints).map(fn)
  return np.stack([x.numpy() for x in ds])


@pytest.fixture(scope="module")
def keypoints() -> np.ndarray:
  return random_keypoints(np.random.default_rng(0), batch=2, height=H, width=W)


@pytest.fixture(scope="module")
def brute_distances(keypoints):
  return brute_limb_distances(keypoints, H, W, NUM_SAMPLES)


@pytest.mark.parametrize("radius", [4, 8, 2.5])
def test_binary_keypoint_maps_match_pixel_loop(keypoints, radius):
  ours = _map_each(lambda k: pose_maps_tf.keypoint_maps(k, H, W, mode="binary", radius=radius), keypoints)
  assert ours.shape == (2, H, W, 18) and ours.dtype == np.float32
  np.testing.assert_array_equal(ours, brute_keypoint_maps(keypoints, H, W, "binary", radius))
  np.testing.assert_array_equal(ours, np.asarray(pose_maps.keypoint_maps(keypoints, H, W, radius=radius)))


def test_binary_disc_on_integer_keypoint_is_exact():
  kp = np.full((18, 2), -1.0, np.float32)
  kp[4] = (10, 12)
  maps = pose_maps_tf.keypoint_maps(tf.constant(kp), H, W, radius=3).numpy()
  # Lattice points with dx² + dy² ≤ 9: 29 of them, the 4 on the circle included.
  assert maps[..., 4].sum() == 29
  assert maps[12, 13, 4] == 1 and maps[12, 14, 4] == 0 and maps[15, 10, 4] == 1
  assert maps[..., [k for k in range(18) if k != 4]].sum() == 0


def test_gaussian_keypoint_maps_match_pixel_loop(keypoints):
  ours = _map_each(lambda k: pose_maps_tf.keypoint_maps(k, H, W, mode="gaussian", radius=4), keypoints)
  np.testing.assert_allclose(ours, brute_keypoint_maps(keypoints, H, W, "gaussian", 4), atol=1e-6, rtol=0)


def test_missing_and_outside_joints(keypoints):
  maps = _map_each(lambda k: pose_maps_tf.keypoint_maps(k, H, W, radius=8), keypoints)
  for b, k in [(0, 0), (0, 3), (0, 12), (1, 8)]:
    assert maps[b, ..., k].max() == 0
  present = (keypoints >= 0).all(-1)
  inside = present & (keypoints[..., 0] < W) & (keypoints[..., 1] < H)
  np.testing.assert_array_equal(maps.max(axis=(1, 2))[inside], 1.0)
  # A present joint just outside the frame keeps the part of its disc that is inside.
  kp = np.full((18, 2), -1.0, np.float32)
  kp[2] = (W + 2.0, 5.0)
  disc = pose_maps_tf.keypoint_maps(kp, H, W, radius=4).numpy()[..., 2]
  assert disc.sum() > 0 and disc[:, : W - 4].sum() == 0


def test_limb_distances_match_dense_sampling(keypoints, brute_distances):
  sampled, lengths = brute_distances
  ours = _map_each(lambda k: pose_maps_tf.limb_distances(k, H, W), keypoints).astype(np.float64)
  assert ours.shape == (2, H, W, 12)
  missing = np.isinf(sampled)
  np.testing.assert_array_equal(np.isinf(ours), missing)
  bound = (lengths / (2 * (NUM_SAMPLES - 1)))[:, None, None, :] + FLOAT_TOL
  gap = np.where(missing, 0.0, sampled - np.where(missing, 0.0, ours))
  assert gap.min() >= -FLOAT_TOL, f"ours exceeds a sampled distance by {-gap.min():.2e} px"
  assert (gap <= bound).all(), f"max gap {gap.max():.2e} px exceeds the sampling bound"


@pytest.mark.parametrize("kappa", [-0.1, -0.5])
def test_distance_maps_match_dense_sampling_and_jax(keypoints, brute_distances, kappa):
  sampled, lengths = brute_distances
  ours = _map_each(lambda k: pose_maps_tf.distance_maps(k, H, W, kappa=kappa), keypoints)
  assert ours.shape == (2, H, W, 12) and ours.dtype == np.float32
  expected = np.exp(kappa * sampled)  # exp(−inf) = 0 for missing limbs
  # |Δ exp(κd)| ≤ |κ| · |Δd| for d ≥ 0.
  bound = abs(kappa) * ((lengths / (2 * (NUM_SAMPLES - 1)))[:, None, None, :] + FLOAT_TOL)
  assert (np.abs(ours.astype(np.float64) - expected) <= bound + 1e-6).all()
  assert 0.0 <= ours.min() and ours.max() <= 1.0
  jax_maps = np.asarray(pose_maps.distance_maps(keypoints, H, W, kappa=kappa))
  np.testing.assert_allclose(ours, jax_maps, atol=1e-6, rtol=0)


def test_missing_limbs_are_zero_and_others_are_not(keypoints):
  maps = _map_each(lambda k: pose_maps_tf.distance_maps(k, H, W), keypoints)
  missing = {0: {1, 2, 10, 11}, 1: {6, 7}}
  for b in range(2):
    for m in range(12):
      if m in missing[b]:
        assert maps[b, ..., m].max() == 0, (b, pose_maps.LIMB_NAMES[m])
      else:
        assert maps[b, ..., m].min() > 0, (b, pose_maps.LIMB_NAMES[m])


def test_distance_to_segment_geometry():
  kp = np.full((18, 2), -1.0, np.float32)
  kp[1] = (2, 5)    # neck
  kp[2] = (10, 5)   # R-shoulder: limb 0 is the horizontal segment (2, 5)-(10, 5)
  kp[8] = (7, 7)    # R-hip
  kp[9] = (7, 7)    # R-knee on the R-hip: limb 7 is the point (7, 7)
  d = pose_maps_tf.limb_distances(kp, H, W).numpy()
  assert d[5, 4, 0] == 0 and d[5, 10, 0] == 0
  assert d[8, 6, 0] == pytest.approx(3.0)
  assert d[9, 13, 0] == pytest.approx(5.0)   # beyond the end: distance to (10, 5)
  assert d[10, 11, 7] == pytest.approx(5.0)  # degenerate limb = distance to its point
  assert np.isinf(d[..., 1]).all()


def test_static_shapes_in_graph_mode():
  spec = tf.TensorSpec([18, 2], tf.float32)
  k = tf.function(lambda x: pose_maps_tf.keypoint_maps(x, H, W)).get_concrete_function(spec)
  d = tf.function(lambda x: pose_maps_tf.distance_maps(x, H, W)).get_concrete_function(spec)
  assert k.output_shapes.as_list() == [H, W, 18]
  assert d.output_shapes.as_list() == [H, W, 12]


def test_bad_arguments():
  with pytest.raises(ValueError, match=r"\(K, 2\)"):
    pose_maps_tf.keypoint_maps(np.zeros((18, 3), np.float32), H, W)
  with pytest.raises(ValueError, match="mode"):
    pose_maps_tf.keypoint_maps(np.zeros((18, 2), np.float32), H, W, mode="disc")
  with pytest.raises(ValueError, match="18 OpenPose keypoints"):
    pose_maps_tf.distance_maps(np.zeros((17, 2), np.float32), H, W)
  with pytest.raises(ValueError, match="kappa must be negative"):
    pose_maps_tf.distance_maps(np.zeros((18, 2), np.float32), H, W, kappa=0.0)
