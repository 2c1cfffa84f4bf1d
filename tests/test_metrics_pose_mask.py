"""PATN's Market-1501 person mask (`spg_jax.metrics.pose_mask`) against scikit-image references.

The reference is PATN's `produce_ma_mask` written out one pose at a time with scikit-image's drawing
and morphology (`draw.polygon`, `draw.disk`, `morphology.dilation` / `erosion` with a 5 × 5 square).
Its polygon fill comes in two versions: the installed `skimage.draw.polygon` (≥ 0.18, boundary pixels
in) for float keypoints, where no pixel centre lies on a rectangle's edge, and a line-by-line
transliteration of scikit-image 0.17's `_polygon` / `point_in_polygon` (PNPOLY, what the official
scripts ran) for integer keypoints, where many do: edges of axis-aligned limbs, and of diagonal ones
through lattice points, on which only float rounding decides.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.draw import disk, polygon
from skimage.morphology import dilation, erosion

from spg_jax.metrics import pose_mask

# PATN's list, 1-based, as in its source.
PATN_LIMBS = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13],
              [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [2, 17], [2, 18], [9, 12], [12, 6],
              [9, 3], [17, 18]]
SQUARE_5 = np.ones((5, 5), bool)  # skimage.morphology.square(5), deprecated in 0.25


def legacy_polygon(r, c, shape):
  """scikit-image 0.17 `draw.polygon`: PNPOLY over the vertices' bounding box, pixel by pixel."""
  r, c = np.asarray(r, np.float64), np.asarray(c, np.float64)
  minr, maxr = int(max(0, r.min())), min(shape[0] - 1, int(math.ceil(r.max())))
  minc, maxc = int(max(0, c.min())), min(shape[1] - 1, int(math.ceil(c.max())))
  rr, cc = [], []
  for y in range(minr, maxr + 1):
    for x in range(minc, maxc + 1):
      inside, j = False, len(r) - 1
      for i in range(len(r)):
        if ((r[i] <= y < r[j]) or (r[j] <= y < r[i])) and x < (c[j] - c[i]) * (y - r[i]) / (r[j] - r[i]) + c[i]:
          inside = not inside
        j = i
      if inside:
        rr.append(y)
        cc.append(x)
  return np.array(rr, np.intp), np.array(cc, np.intp)


def reference_mask(kp_xy: np.ndarray, height: int, width: int, radius: float = 4,
                   polygon_fn=polygon) -> np.ndarray:
  """`produce_ma_mask` on (18, 2) (x, y) keypoints (negative = missing), with scikit-image."""
  kp = np.asarray(kp_xy, np.float64)
  missing = lambda j: kp[j][0] < 0 or kp[j][1] < 0
  mask = np.zeros((height, width), bool)
  for f, t in np.array(PATN_LIMBS) - 1:
    if missing(f) or missing(t):
      continue
    n = kp[f] - kp[t]
    n = np.array([-n[1], n[0]])
    if not n.any():
      continue  # coincident joints: PATN divides 0 by 0 and its polygon call fails on the NaNs
    n = radius * n / np.linalg.norm(n)
    v = np.array([kp[f] + n, kp[f] - n, kp[t] - n, kp[t] + n])
    rr, cc = polygon_fn(v[:, 1], v[:, 0], shape=(height, width))
    mask[rr, cc] = True
  for j, (x, y) in enumerate(kp):
    if not missing(j):
      rr, cc = disk((y, x), radius, shape=(height, width))
      mask[rr, cc] = True
  return erosion(dilation(mask, SQUARE_5), SQUARE_5)


def _random_poses(rng: np.random.Generator, n: int, height: int, width: int, integer: bool) -> np.ndarray:
  kp = np.stack([rng.uniform(-3, width + 3, (n, 18)), rng.uniform(-3, height + 3, (n, 18))], axis=-1)
  if integer:
    kp = np.floor(kp)  # Market's keypoints are integers
    kp[:, 8:11, 0] = kp[:, 8:9, 0]  # a vertical right leg
    kp[:, 5, 1] = kp[:, 2, 1]  # level shoulders
    kp[:, 3] = kp[:, 2] + np.array([2, 4])  # an upper arm with lattice points on its rectangle's ends
  kp[1, 4] = kp[1, 3]  # a zero-length limb
  kp[rng.uniform(size=(n, 18)) < 0.2] = -1  # missing joints (PATN's -1)
  kp[0] = -1  # nobody: an empty mask
  return kp.astype(np.float32)


@pytest.mark.parametrize("height,width", [(128, 64), (32, 32)])
def test_person_masks_match_scikit_image_on_float_keypoints(height, width):
  kp = _random_poses(np.random.default_rng(height), 16, height, width, integer=False)
  ours = pose_mask.person_masks(kp, height, width)
  assert ours.shape == (16, height, width) and ours.dtype == bool
  for i, pose in enumerate(kp):
    np.testing.assert_array_equal(ours[i], reference_mask(pose, height, width), err_msg=f"pose {i}")
  assert not ours[0].any() and ours[2:].any(axis=(1, 2)).all()
  np.testing.assert_array_equal(pose_mask.person_masks(kp[3], height, width), ours[3])  # one pose


def test_person_masks_match_the_scripts_polygon_rule_on_integer_keypoints():
  kp = _random_poses(np.random.default_rng(7), 6, 128, 64, integer=True)
  ours = pose_mask.person_masks(kp, 128, 64)
  differs = 0
  for i, pose in enumerate(kp):
    np.testing.assert_array_equal(ours[i], reference_mask(pose, 128, 64, polygon_fn=legacy_polygon),
                                  err_msg=f"pose {i}")
    differs += int((ours[i] != reference_mask(pose, 128, 64)).any())
  assert differs >= 3  # the two scikit-image rules do give different masks on these poses


def test_polygon_fill_is_half_open_like_scikit_image_up_to_0_17():
  # The rectangle x ∈ [2, 6], y ∈ [1, 4]: pixel centres on its left and top edges are in, on its right
  # and bottom edges out (PNPOLY; scikit-image ≥ 0.18 would fill 5 × 4 pixels).
  rect = np.array([[[2.0, 1.0], [6.0, 1.0], [6.0, 4.0], [2.0, 4.0]]])
  filled = pose_mask._fill_polygons(rect, 6, 8)  # pylint: disable=protected-access
  expected = np.zeros((6, 8), bool)
  expected[1:4, 2:6] = True
  np.testing.assert_array_equal(filled[0], expected)


def test_bad_shape_is_an_error():
  with pytest.raises(ValueError, match=r"expected \(B, 18, 2\)"):
    pose_mask.person_masks(np.zeros((2, 17, 2)))
