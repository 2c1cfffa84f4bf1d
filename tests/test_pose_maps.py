"""`spg_jax.ops.pose_maps` against brute-force NumPy.

Joint maps are compared with a per-pixel Python loop (exactly for the binary mode, 1e-6 for the
Gaussian one). Limb distances are compared with the minimum over N = 4001 evenly spaced points of
each segment: that sampled minimum is never below the true distance and exceeds it by at most half
the sample spacing, L / (2 (N − 1)) for a segment of length L, so we assert
  −1e-4 ≤ sampled − ours ≤ L / (2 (N − 1)) + 1e-4
(1e-4 px covers float32 rounding of distances up to ~100 px).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spg_jax.ops import pose_maps
from tests.pose_references import brute_keypoint_maps, brute_limb_distances, random_keypoints

H, W = 24, 20
NUM_SAMPLES = 4001
FLOAT_TOL = 1e-4


@pytest.fixture(scope="module")
def keypoints() -> np.ndarray:
  return random_keypoints(np.random.default_rng(0), batch=2, height=H, width=W)


@pytest.fixture(scope="module")
def brute_distances(keypoints):
  return brute_limb_distances(keypoints, H, W, NUM_SAMPLES)


def test_keypoint_names_are_openpose18():
  assert len(pose_maps.KEYPOINT_NAMES) == 18
  assert pose_maps.KEYPOINT_NAMES[:2] == ("nose", "neck")
  assert pose_maps.KEYPOINT_NAMES[2:5] == ("R-shoulder", "R-elbow", "R-wrist")
  assert pose_maps.KEYPOINT_NAMES[14:] == ("L-eye", "R-eye", "L-ear", "R-ear")


def test_limb_list():
  assert pose_maps.LIMBS == ((1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7),
                             (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13))
  assert len(pose_maps.LIMB_NAMES) == pose_maps.NUM_LIMBS == 12
  assert pose_maps.LIMB_NAMES[0] == "neck->R-shoulder"
  assert pose_maps.LIMB_NAMES[11] == "L-knee->L-ankle"
  for (i, j), name in zip(pose_maps.LIMBS, pose_maps.LIMB_NAMES):
    assert name == f"{pose_maps.KEYPOINT_NAMES[i]}->{pose_maps.KEYPOINT_NAMES[j]}"
  # No head joint (nose, eyes, ears) is an endpoint: the head limbs are the ones left out.
  used = {k for limb in pose_maps.LIMBS for k in limb}
  assert used == set(range(1, 14))
  assert len(set(pose_maps.LIMBS)) == 12


@pytest.mark.parametrize("radius", [4, 8, 2.5])
def test_binary_keypoint_maps_match_pixel_loop(keypoints, radius):
  ours = np.asarray(pose_maps.keypoint_maps(keypoints, H, W, mode="binary", radius=radius))
  assert ours.shape == (2, H, W, 18) and ours.dtype == np.float32
  np.testing.assert_array_equal(ours, brute_keypoint_maps(keypoints, H, W, "binary", radius))


def test_binary_disc_on_integer_keypoint_is_exact():
  kp = np.full((18, 2), -1.0, np.float32)
  kp[4] = (10, 12)
  maps = np.asarray(pose_maps.keypoint_maps(kp, H, W, radius=3))
  assert maps.shape == (H, W, 18)
  # Lattice points with dx² + dy² ≤ 9: 29 of them (including (±3, 0) and (0, ±3) on the circle).
  assert maps[..., 4].sum() == 29
  assert maps[12, 13, 4] == 1 and maps[12, 14, 4] == 0 and maps[15, 10, 4] == 1
  assert maps[..., [k for k in range(18) if k != 4]].sum() == 0


def test_gaussian_keypoint_maps_match_pixel_loop(keypoints):
  ours = np.asarray(pose_maps.keypoint_maps(keypoints, H, W, mode="gaussian", radius=4))
  np.testing.assert_allclose(ours, brute_keypoint_maps(keypoints, H, W, "gaussian", 4), atol=1e-6, rtol=0)


def test_missing_joints_give_zero_channels(keypoints):
  maps = np.asarray(pose_maps.keypoint_maps(keypoints, H, W, radius=8))
  for b, k in [(0, 0), (0, 3), (0, 12), (1, 8)]:
    assert maps[b, ..., k].max() == 0
  # A present joint outside the frame keeps only the part of its disc inside the frame (none here:
  # the R-knee is more than 8 px from the nearest pixel); a present joint inside lights its pixels.
  assert maps[1, ..., 9].max() == 0
  present = (keypoints >= 0).all(-1)
  inside = present & (keypoints[..., 0] < W) & (keypoints[..., 1] < H)
  assert inside.sum() > 20
  np.testing.assert_array_equal(maps.max(axis=(1, 2))[inside], 1.0)
  np.testing.assert_array_equal(maps.max(axis=(1, 2))[~present], 0.0)


def test_limb_distances_match_dense_sampling(keypoints, brute_distances):
  sampled, lengths = brute_distances
  ours = np.asarray(pose_maps.limb_distances(keypoints, H, W), np.float64)
  assert ours.shape == (2, H, W, 12)
  missing = np.isinf(sampled)
  np.testing.assert_array_equal(np.isinf(ours), missing)
  bound = (lengths / (2 * (NUM_SAMPLES - 1)))[:, None, None, :] + FLOAT_TOL
  gap = np.where(missing, 0.0, sampled - np.where(missing, 0.0, ours))
  assert gap.min() >= -FLOAT_TOL, f"ours exceeds a sampled distance by {-gap.min():.2e} px"
  assert (gap <= bound).all(), f"max gap {gap.max():.2e} px exceeds the sampling bound"


def test_distance_maps_match_dense_sampling(keypoints, brute_distances):
  sampled, lengths = brute_distances
  kappa = -0.1
  ours = np.asarray(pose_maps.distance_maps(keypoints, H, W, kappa=kappa))
  assert ours.shape == (2, H, W, 12) and ours.dtype == np.float32
  ours = ours.astype(np.float64)
  expected = np.exp(kappa * sampled)  # exp(−inf) = 0 for missing limbs
  # |Δ exp(κd)| ≤ |κ| · |Δd| since the derivative of exp(κd) is bounded by |κ| for d ≥ 0.
  bound = abs(kappa) * ((lengths / (2 * (NUM_SAMPLES - 1)))[:, None, None, :] + FLOAT_TOL)
  assert (np.abs(ours - expected) <= bound + 1e-6).all()
  assert 0.0 <= ours.min() and ours.max() <= 1.0


def test_missing_limbs_are_zero_and_others_are_not(keypoints):
  maps = np.asarray(pose_maps.distance_maps(keypoints, H, W))
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
  kp[5] = (6, 6)    # L-shoulder
  kp[8] = (7, 7)    # R-hip: limb 6 is (2, 5)-(7, 7)
  kp[9] = (7, 7)    # R-knee on the R-hip: limb 7 is the point (7, 7)
  d = np.asarray(pose_maps.limb_distances(kp, H, W))
  assert d[5, 4, 0] == 0 and d[5, 10, 0] == 0      # on the segment, endpoint included
  assert d[8, 6, 0] == pytest.approx(3.0)           # perpendicular foot inside the segment
  assert d[9, 13, 0] == pytest.approx(5.0)          # beyond the end: distance to (10, 5), 3-4-5
  assert d[5, 0, 0] == pytest.approx(2.0)           # before the start
  assert d[10, 11, 7] == pytest.approx(5.0)         # degenerate limb = distance to its point
  assert np.isinf(d[..., 1]).all()                  # R-elbow missing
  maps = np.asarray(pose_maps.distance_maps(kp, H, W, kappa=-0.5))
  assert maps[9, 13, 0] == pytest.approx(np.exp(-2.5), rel=1e-6)
  assert maps[5, 4, 0] == 1.0


def test_unbatched_and_batched_agree(keypoints):
  batched = pose_maps.distance_maps(keypoints, H, W)
  single = pose_maps.distance_maps(keypoints[1], H, W)
  assert single.shape == (H, W, 12)
  np.testing.assert_array_equal(np.asarray(single), np.asarray(batched[1]))
  np.testing.assert_array_equal(np.asarray(pose_maps.keypoint_maps(keypoints[1], H, W)),
                                np.asarray(pose_maps.keypoint_maps(keypoints, H, W)[1]))


def test_jit_and_vmap(keypoints):
  eager_d = np.asarray(pose_maps.distance_maps(keypoints, H, W, kappa=-0.2))
  eager_k = np.asarray(pose_maps.keypoint_maps(keypoints, H, W, radius=4))
  jit_d = jax.jit(functools.partial(pose_maps.distance_maps, height=H, width=W, kappa=-0.2))
  jit_k = jax.jit(pose_maps.keypoint_maps, static_argnames=("height", "width", "mode", "radius"))
  np.testing.assert_allclose(np.asarray(jit_d(jnp.asarray(keypoints))), eager_d, atol=1e-6, rtol=0)
  np.testing.assert_array_equal(np.asarray(jit_k(keypoints, height=H, width=W, radius=4)), eager_k)
  vmapped = jax.vmap(lambda k: pose_maps.distance_maps(k, H, W, kappa=-0.2))(keypoints)
  np.testing.assert_allclose(np.asarray(vmapped), eager_d, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kappa", [0.0, 0.1, float("nan")])
def test_kappa_must_be_negative(keypoints, kappa):
  with pytest.raises(ValueError, match="kappa must be negative"):
    pose_maps.distance_maps(keypoints, H, W, kappa=kappa)


def test_bad_arguments():
  with pytest.raises(ValueError, match=r"\(\.\.\., K, 2\)"):
    pose_maps.keypoint_maps(np.zeros((18, 3)), H, W)
  with pytest.raises(ValueError, match="mode"):
    pose_maps.keypoint_maps(np.zeros((18, 2)), H, W, mode="disc")
  with pytest.raises(ValueError, match="18 OpenPose keypoints"):
    pose_maps.distance_maps(np.zeros((17, 2)), H, W)
