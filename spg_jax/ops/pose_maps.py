"""Pose representations computed from keypoints: joint maps and limb distance maps.

Keypoints are (..., 18, 2) float arrays of (x, y) pixel coordinates in the OpenPose/COCO-18 order
(`KEYPOINT_NAMES`); x is the column index (along W), y the row index (along H), and a joint with
x < 0 or y < 0 is missing. Keypoints outside the image but with non-negative coordinates are kept:
their disc or limb simply falls (partly) outside the frame. Pixel (row Y, column X) is evaluated
at the integer point (X, Y), as the official `kp_to_map` does with `np.meshgrid(range(w), range(h))`.
Every function keeps the leading dimensions of `keypoints`: (B, 18, 2) -> (B, H, W, C) and
(18, 2) -> (H, W, C). Everything is jit-able: keypoints may be traced; output size, mode, radius
and κ are static Python values.

Joint maps (`keypoint_maps`, the official `kp_to_map`): channel k is
  binary:   1 where (X − x_k)² + (Y − y_k)² ≤ r², else 0 (the official mode; r = 8 on DeepFashion
            256×256, r = 4 on Market-1501 128×64);
  gaussian: exp(−((X − x_k)² + (Y − y_k)²) / r²) (implemented but unused by the official code);
and all zero for a missing joint. The official code marks missing joints with exactly −1; any
negative coordinate is treated as missing here, which agrees on its data.

Distance maps (`distance_maps`, supplementary material §C, eqs. 1–2): one channel per limb m,
  M_m(X, Y) = exp(κ · min over points (x', y') of segment L_m of ‖(X, Y) − (x', y')‖₂),
the Euclidean distance (in pixels) from the pixel to the closed line segment between the limb's two
joints, with κ < 0 so that values are 1 on the limb and decay away from it (κ = −0.1: the constant
the official stage-2 code's unused distance-map branch uses). A limb with a missing endpoint has
distance +∞ and therefore an all-zero channel. A degenerate limb (both endpoints equal) is its point.

Which 12 limbs: the supplementary material says only "12 lines ... to represent the body skeleton" and the paper does
not list them; no released code computes them. We take the OpenPose
COCO-18 skeleton (19 connections) and drop the 5 head connections (neck–nose, nose–eyes, eyes–ears)
and the 2 auxiliary ear–shoulder connections. What remains is exactly 12 limbs that outline the
body — the three segments of each arm and each leg plus the neck-to-shoulder and neck-to-hip
segments — and the head is already pinned down by its 5 joint maps. `LIMBS` lists them as
(start, end) joint indices in this order, with names ('neck->R-shoulder', ...) in `LIMB_NAMES`:
   0 neck–R-shoulder     1 R-shoulder–R-elbow   2 R-elbow–R-wrist
   3 neck–L-shoulder     4 L-shoulder–L-elbow   5 L-elbow–L-wrist
   6 neck–R-hip          7 R-hip–R-knee         8 R-knee–R-ankle
   9 neck–L-hip         10 L-hip–L-knee        11 L-knee–L-ankle
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "neck",
    "R-shoulder", "R-elbow", "R-wrist",
    "L-shoulder", "L-elbow", "L-wrist",
    "R-hip", "R-knee", "R-ankle",
    "L-hip", "L-knee", "L-ankle",
    "L-eye", "R-eye", "L-ear", "R-ear",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

_K = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
_LIMB_JOINTS = (
    ("neck", "R-shoulder"), ("R-shoulder", "R-elbow"), ("R-elbow", "R-wrist"),
    ("neck", "L-shoulder"), ("L-shoulder", "L-elbow"), ("L-elbow", "L-wrist"),
    ("neck", "R-hip"), ("R-hip", "R-knee"), ("R-knee", "R-ankle"),
    ("neck", "L-hip"), ("L-hip", "L-knee"), ("L-knee", "L-ankle"),
)
LIMBS: tuple[tuple[int, int], ...] = tuple((_K[a], _K[b]) for a, b in _LIMB_JOINTS)
LIMB_NAMES: tuple[str, ...] = tuple(f"{a}->{b}" for a, b in _LIMB_JOINTS)
NUM_LIMBS = len(LIMBS)

# Official joint-disc radii (`joint_radius`): DeepFashion 256×256 and Market-1501 128×64.
RADIUS_DEEPFASHION = 8
RADIUS_MARKET = 4
# κ of the distance maps: the official code's leftover distance-map branch uses exp(−0.1·d).
DEFAULT_KAPPA = -0.1


def _pixel_grid(height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """(H, W) float32 column (X) and row (Y) index grids."""
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                        indexing="ij")
  return xs, ys


def _check_keypoints(keypoints: jax.Array, fn: str) -> jax.Array:
  keypoints = jnp.asarray(keypoints)
  if keypoints.ndim < 2 or keypoints.shape[-1] != 2:
    raise ValueError(f"{fn}: keypoints must be (..., K, 2) (x, y) pairs, got shape {keypoints.shape}")
  return keypoints.astype(jnp.float32)


def joint_present(keypoints: jax.Array) -> jax.Array:
  """(..., K) bool: True where both coordinates are ≥ 0 (a negative coordinate marks a missing joint)."""
  keypoints = jnp.asarray(keypoints)
  return jnp.all(keypoints >= 0, axis=-1)


def keypoint_maps(
    keypoints: jax.Array,
    height: int,
    width: int,
    mode: str = "binary",
    radius: float = RADIUS_DEEPFASHION,
) -> jax.Array:
  """One map per joint (official `kp_to_map`).

  Args:
    keypoints: (..., K, 2) (x, y) pixel coordinates, K = 18 for OpenPose; negative = missing.
    height, width: static output size.
    mode: 'binary' (disc of radius `radius`, the official choice) or 'gaussian' (exp(−d² / r²)).
    radius: disc radius / Gaussian width in pixels (8 DeepFashion 256×256, 4 Market 128×64).

  Returns:
    (..., H, W, K) float32 in [0, 1]; all-zero channels for missing joints.
  """
  keypoints = _check_keypoints(keypoints, "keypoint_maps")
  if mode not in ("binary", "gaussian"):
    raise ValueError(f"keypoint_maps: mode must be 'binary' or 'gaussian', got {mode!r}")
  if radius <= 0:
    raise ValueError(f"keypoint_maps: radius must be > 0, got {radius}")
  xs, ys = _pixel_grid(height, width)
  kx = keypoints[..., None, None, :, 0]  # (..., 1, 1, K) against the (H, W, 1) grid
  ky = keypoints[..., None, None, :, 1]
  sq_dist = jnp.square(xs[..., None] - kx) + jnp.square(ys[..., None] - ky)
  r2 = float(radius) ** 2
  if mode == "binary":
    maps = (sq_dist <= r2).astype(jnp.float32)
  else:
    maps = jnp.exp(-sq_dist / r2)
  present = joint_present(keypoints)[..., None, None, :]
  return jnp.where(present, maps, 0.0)


def limb_distances(keypoints: jax.Array, height: int, width: int) -> jax.Array:
  """Euclidean distance from every pixel to every limb segment of `LIMBS` (supplementary eq. 1).

  Args:
    keypoints: (..., 18, 2) (x, y) pixel coordinates; negative = missing.
    height, width: static output size.

  Returns:
    (..., H, W, 12) float32 distances in pixels; +inf for a limb with a missing endpoint.
  """
  keypoints = _check_keypoints(keypoints, "limb_distances")
  if keypoints.shape[-2] != NUM_KEYPOINTS:
    raise ValueError(f"limb_distances: expected {NUM_KEYPOINTS} OpenPose keypoints, got shape {keypoints.shape}")
  limbs = np.asarray(LIMBS)
  a = keypoints[..., limbs[:, 0], :]  # (..., 12, 2) segment starts
  b = keypoints[..., limbs[:, 1], :]  # (..., 12, 2) segment ends
  present = joint_present(a) & joint_present(b)  # (..., 12)

  xs, ys = _pixel_grid(height, width)
  ax, ay = a[..., None, None, :, 0], a[..., None, None, :, 1]  # (..., 1, 1, 12)
  dx = (b[..., 0] - a[..., 0])[..., None, None, :]
  dy = (b[..., 1] - a[..., 1])[..., None, None, :]
  px = xs[..., None] - ax  # (..., H, W, 12): pixel relative to the segment start
  py = ys[..., None] - ay
  # Project the pixel onto the segment's line and clamp to the segment: t = 0 is the start point,
  # t = 1 the end. A degenerate segment (length 0) gets t = 0, i.e. the distance to its point.
  length2 = jnp.square(dx) + jnp.square(dy)
  safe_length2 = jnp.where(length2 > 0, length2, 1.0)
  t = jnp.clip((px * dx + py * dy) / safe_length2, 0.0, 1.0)
  t = jnp.where(length2 > 0, t, 0.0)
  dist = jnp.sqrt(jnp.square(px - t * dx) + jnp.square(py - t * dy))
  return jnp.where(present[..., None, None, :], dist, jnp.inf)


def distance_maps(keypoints: jax.Array, height: int, width: int, kappa: float = DEFAULT_KAPPA) -> jax.Array:
  """The 12 limb distance maps M_m = exp(κ · d_m) of the supplementary material, §C (eq. 2).

  Args:
    keypoints: (..., 18, 2) (x, y) pixel coordinates; negative = missing.
    height, width: static output size.
    kappa: static negative Python float (default −0.1).

  Returns:
    (..., H, W, 12) float32 in [0, 1] (1 on the limb); all-zero channels for limbs with a missing
    endpoint.

  Raises:
    ValueError: if `kappa` ≥ 0 (the maps would not decay away from the limb, and a missing limb's
      exp(κ · ∞) would not be 0).
  """
  kappa = float(kappa)
  if not kappa < 0:
    raise ValueError(f"distance_maps: kappa must be negative, got {kappa}")
  # exp(κ · inf) = exp(−inf) = 0 for missing limbs, with no special case.
  return jnp.exp(kappa * limb_distances(keypoints, height, width))
