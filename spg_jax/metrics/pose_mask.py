"""Person masks from keypoints for the Market-1501 masked metrics (PATN `produce_ma_mask`).

PATN's `tool/getMetrics_market.py` (and SPGNet's `tools/metrics_market.py`, which copies it) score
mask-SSIM / mask-IS / mask-LPIPS on images multiplied by a binary mask drawn from the TARGET pose:

  1. for each of 23 limbs (`LIMBS`) whose two joints are present, the filled rectangle of
     half-width `point_radius` around the segment: vertices f ± n, t ∓ n with
     n = point_radius · perp(f − t) / |f − t| (`skimage.draw.polygon`);
  2. for each present joint, the disc of radius `point_radius` (`skimage.draw.circle`: pixels at
     squared distance < radius², i.e. the circle itself excluded);
  3. a 5 × 5 square dilation followed by a 5 × 5 square erosion (a closing, which fills the gaps
     between neighbouring limbs).

Pixel (row r, column c) has its centre at x = c, y = r, the keypoint convention of this project.
A joint is missing when either coordinate is negative (PATN tests `== -1`, the value its CSVs hold).

Polygon rule. The scripts import `skimage.measure.compare_ssim`, which scikit-image removed in 0.18,
so they ran scikit-image ≤ 0.17, whose `polygon` fills by the PNPOLY crossing test: a pixel is inside
iff a ray from it towards +x crosses an odd number of edges, an edge (i, j) crossing row y when
y_i ≤ y < y_j (or y_j ≤ y < y_i) and x < the edge's x at y. Pixels exactly on an edge therefore count
only on the left and top sides of a limb. scikit-image ≥ 0.18 counts every boundary pixel, which
makes the mask one column / row wider along axis-aligned limbs (common with integer keypoints); this
module keeps the rule that produced the published numbers. Off the boundary both rules agree, and a
limb whose two joints coincide (a zero-length segment, whose direction PATN computes as 0 / 0 = NaN)
fills no pixel under either.

Everything is NumPy float64 on the host, as the scripts compute it.
"""

from __future__ import annotations

import numpy as np

# PATN's limbs, 1-based in its code: the 19 OpenPose-18 skeleton limbs, plus neck to both ears
# ([2,17], [2,18]), hip to hip ([9,12]), each hip to its shoulder ([12,6], [9,3]) and ear to ear
# ([17,18]), which close the torso and the head. Stored 0-based (0 nose, 1 neck, 2 right shoulder, ...).
LIMBS = np.array([[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12],
                  [12, 13], [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [2, 17], [2, 18],
                  [9, 12], [12, 6], [9, 3], [17, 18]]) - 1
NUM_KEYPOINTS = 18
POINT_RADIUS = 4  # PATN's default, at Market-1501's 128 × 64
CLOSING_SIZE = 5  # skimage.morphology.square(5)


def _limb_rectangles(keypoints: np.ndarray, point_radius: float) -> tuple[np.ndarray, np.ndarray]:
  """Vertices (B, L, 4, 2) (x, y) of each limb's rectangle, and (B, L) whether both joints are present."""
  f = keypoints[:, LIMBS[:, 0]]  # (B, L, 2)
  t = keypoints[:, LIMBS[:, 1]]
  present = ~((f < 0).any(-1) | (t < 0).any(-1))
  d = f - t
  perp = np.stack([-d[..., 1], d[..., 0]], axis=-1)
  with np.errstate(invalid="ignore", divide="ignore"):  # coincident joints: NaN vertices, an empty polygon
    n = point_radius * perp / np.linalg.norm(perp, axis=-1, keepdims=True)
  # PATN's vertex order; the crossing test does not depend on it.
  return np.stack([f + n, f - n, t - n, t + n], axis=-2), present


def _fill_polygons(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
  """PNPOLY fill (scikit-image ≤ 0.17 `draw.polygon`) of (..., V, 2) (x, y) polygons → (..., H, W) bool."""
  xp, yp = vertices[..., 0], vertices[..., 1]
  xq, yq = np.roll(xp, 1, axis=-1), np.roll(yp, 1, axis=-1)  # edge (j, i) with j = i − 1, as PNPOLY walks
  y = np.arange(height, dtype=np.float64)[:, None]  # (H, 1) against (..., 1, V)
  xp, yp, xq, yq = (v[..., None, :] for v in (xp, yp, xq, yq))
  spans = ((yp <= y) & (y < yq)) | ((yq <= y) & (y < yp))  # (..., H, V); False for NaN vertices
  with np.errstate(invalid="ignore", divide="ignore"):  # horizontal edges never span a row
    x_cross = (xq - xp) * (y - yp) / (yq - yp) + xp  # PNPOLY's expression, operation for operation
  x = np.arange(width, dtype=np.float64)
  crossings = spans[..., None, :] & (x[:, None] < x_cross[..., None, :])  # (..., H, W, V)
  return np.logical_xor.reduce(crossings, axis=-1)


def _discs(keypoints: np.ndarray, height: int, width: int, radius: float) -> np.ndarray:
  """(B, K, 2) (x, y) → (B, H, W) bool: pixels strictly within `radius` of a present joint."""
  present = ~(keypoints < 0).any(-1)  # (B, K)
  dr = (np.arange(height, dtype=np.float64)[:, None] - keypoints[:, :, 1, None, None]) / radius
  dc = (np.arange(width, dtype=np.float64)[None, :] - keypoints[:, :, 0, None, None]) / radius
  return ((dr ** 2 + dc ** 2 < 1) & present[:, :, None, None]).any(axis=1)


def _square_filter(mask: np.ndarray, size: int, reduce) -> np.ndarray:
  """Max / min over a size × size window centred on each pixel, (B, H, W); outside pixels ignored.

  scikit-image's `dilation` / `erosion` pad by reflection, so the window only ever sees in-image
  values: padding with the edge values does the same.
  """
  half = size // 2
  padded = np.pad(mask, ((0, 0), (half, half), (half, half)), mode="edge")
  h, w = mask.shape[1:]
  # The square footprint is separable: rows, then columns.
  rows = reduce.reduce(np.stack([padded[:, i:i + h, :] for i in range(size)]), axis=0)
  return reduce.reduce(np.stack([rows[:, :, j:j + w] for j in range(size)]), axis=0)


def person_masks(keypoints: np.ndarray, height: int = 128, width: int = 64,
                 point_radius: float = POINT_RADIUS) -> np.ndarray:
  """PATN's `produce_ma_mask` for a batch of poses.

  Args:
    keypoints: (B, 18, 2) or (18, 2) (x, y) pixel coordinates in the image's frame, OpenPose-18
      order; a joint with a negative coordinate is missing.
    height, width: the mask's size (Market-1501: 128 × 64).
    point_radius: half-width of the limb rectangles and radius of the joint discs (PATN: 4).

  Returns:
    (B, H, W) bool, or (H, W) for a single pose.
  """
  kp = np.asarray(keypoints, np.float64)
  single = kp.ndim == 2
  if single:
    kp = kp[None]
  if kp.ndim != 3 or kp.shape[1:] != (NUM_KEYPOINTS, 2):
    raise ValueError(f"person_masks: expected (B, {NUM_KEYPOINTS}, 2) keypoints, got shape {np.shape(keypoints)}")
  vertices, present = _limb_rectangles(kp, float(point_radius))
  limbs = _fill_polygons(vertices, height, width) & present[:, :, None, None]  # (B, L, H, W)
  mask = limbs.any(axis=1) | _discs(kp, height, width, float(point_radius))
  mask = _square_filter(mask, CLOSING_SIZE, np.maximum)
  mask = _square_filter(mask, CLOSING_SIZE, np.minimum)
  return mask[0] if single else mask


__all__ = ["CLOSING_SIZE", "LIMBS", "POINT_RADIUS", "person_masks"]
