"""TensorFlow graph-mode twins of `spg_jax.ops.pose_maps` for the per-example tf.data pipeline.

`keypoint_maps` and `distance_maps` compute exactly what the JAX functions of the same name compute
(see that module's docstring for the definitions and the choice of the 12 limbs), for one example:
keypoints (18, 2) float (x, y) pixel coordinates in OpenPose-18 order, a joint with x < 0 or y < 0
missing, pixel (row Y, column X) evaluated at the integer point (X, Y). Keypoints outside the frame
but with non-negative coordinates are kept. Output size, mode, radius and κ are static Python
values; the keypoints may be a symbolic tensor, so both functions work inside
`tf.data.Dataset.map`. The arithmetic is float32 in the same order as the JAX version, so the binary
joint maps agree bit for bit (the tests check both against the same per-pixel NumPy references).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from spg_jax.ops.pose_maps import DEFAULT_KAPPA, LIMBS, NUM_KEYPOINTS, NUM_LIMBS, RADIUS_DEEPFASHION

_LIMB_STARTS = np.asarray([a for a, _ in LIMBS], np.int32)
_LIMB_ENDS = np.asarray([b for _, b in LIMBS], np.int32)


def _check_keypoints(keypoints, fn: str) -> tf.Tensor:
  keypoints = tf.convert_to_tensor(keypoints)
  shape = keypoints.shape
  if shape.rank is not None and (shape.rank != 2 or shape[-1] not in (None, 2)):
    raise ValueError(f"{fn}: keypoints must be (K, 2) (x, y) pairs, got shape {shape}")
  return tf.cast(keypoints, tf.float32)


def _pixel_grid(height: int, width: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(H, W) float32 column (X) and row (Y) index grids."""
  ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32),
                       indexing="ij")
  return xs, ys


def joint_present(keypoints: tf.Tensor) -> tf.Tensor:
  """(..., K) bool: True where both coordinates are ≥ 0 (a negative coordinate marks a missing joint)."""
  return tf.reduce_all(keypoints >= 0, axis=-1)


def keypoint_maps(keypoints, height: int, width: int, mode: str = "binary",
                  radius: float = RADIUS_DEEPFASHION) -> tf.Tensor:
  """One map per joint (official `kp_to_map`), for a single example.

  Args:
    keypoints: (K, 2) float (x, y) pixel coordinates, K = 18 for OpenPose; negative = missing.
    height, width: static output size (Python ints).
    mode: 'binary' (1 where (X − x)² + (Y − y)² ≤ r², the official choice) or 'gaussian'
      (exp(−d² / r²)).
    radius: disc radius / Gaussian width r in pixels (8 DeepFashion 256×256, 4 Market 128×64).

  Returns:
    (H, W, K) float32 in [0, 1]; all-zero channels for missing joints.
  """
  keypoints = _check_keypoints(keypoints, "keypoint_maps")
  if mode not in ("binary", "gaussian"):
    raise ValueError(f"keypoint_maps: mode must be 'binary' or 'gaussian', got {mode!r}")
  if radius <= 0:
    raise ValueError(f"keypoint_maps: radius must be > 0, got {radius}")
  xs, ys = _pixel_grid(height, width)
  kx = keypoints[:, 0]  # (K,), broadcast against the (H, W, 1) grid
  ky = keypoints[:, 1]
  sq_dist = tf.square(xs[..., None] - kx) + tf.square(ys[..., None] - ky)
  # The threshold is rounded to float32 once, as JAX does with its weakly typed Python scalar.
  r2 = tf.constant(float(radius) ** 2, tf.float32)
  if mode == "binary":
    maps = tf.cast(sq_dist <= r2, tf.float32)
  else:
    maps = tf.exp(-sq_dist / r2)
  return tf.where(joint_present(keypoints), maps, tf.zeros_like(maps))


def limb_distances(keypoints, height: int, width: int) -> tf.Tensor:
  """Euclidean distance from every pixel to every limb segment of `LIMBS`.

  Args:
    keypoints: (18, 2) float (x, y) pixel coordinates; negative = missing.
    height, width: static output size (Python ints).

  Returns:
    (H, W, 12) float32 distances in pixels; +inf for a limb with a missing endpoint.
  """
  keypoints = _check_keypoints(keypoints, "limb_distances")
  if keypoints.shape[0] is not None and keypoints.shape[0] != NUM_KEYPOINTS:
    raise ValueError(f"limb_distances: expected {NUM_KEYPOINTS} OpenPose keypoints, got shape {keypoints.shape}")
  return segment_distances(tf.gather(keypoints, _LIMB_STARTS), tf.gather(keypoints, _LIMB_ENDS),
                           height, width)


def segment_distances(starts: tf.Tensor, ends: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """Distance from every pixel to each of S closed segments (a degenerate one is its point).

  Args:
    starts, ends: (S, 2) float32 (x, y) endpoints; a segment with a negative coordinate at either end
      is missing.
    height, width: output size.

  Returns:
    (H, W, S) float32 distances in pixels; +inf for missing segments.
  """
  present = joint_present(starts) & joint_present(ends)  # (S,)
  xs, ys = _pixel_grid(height, width)
  dx = ends[:, 0] - starts[:, 0]  # (S,)
  dy = ends[:, 1] - starts[:, 1]
  px = xs[..., None] - starts[:, 0]  # (H, W, S): pixel relative to the segment start
  py = ys[..., None] - starts[:, 1]
  # Project onto the segment's line and clamp to the segment (t = 0 start, t = 1 end); a degenerate
  # segment gets t = 0, i.e. the distance to its point. Same operation order as the JAX version.
  length2 = tf.square(dx) + tf.square(dy)
  safe_length2 = tf.where(length2 > 0, length2, tf.ones_like(length2))
  t = tf.clip_by_value((px * dx + py * dy) / safe_length2, 0.0, 1.0)
  t = tf.where(length2 > 0, t, tf.zeros_like(t))
  dist = tf.sqrt(tf.square(px - t * dx) + tf.square(py - t * dy))
  return tf.where(present, dist, tf.fill(tf.shape(dist), np.float32(np.inf)))


def distance_maps(keypoints, height: int, width: int, kappa: float = DEFAULT_KAPPA) -> tf.Tensor:
  """The 12 limb distance maps M_m = exp(κ · d_m) (supplementary material §C, eq. 2), one example.

  Args:
    keypoints: (18, 2) float (x, y) pixel coordinates; negative = missing.
    height, width: static output size (Python ints).
    kappa: static negative Python float (default −0.1).

  Returns:
    (H, W, 12) float32 in [0, 1] (1 on the limb); all-zero channels for limbs with a missing endpoint.

  Raises:
    ValueError: if `kappa` ≥ 0 (or NaN).
  """
  kappa = float(kappa)
  if not kappa < 0:
    raise ValueError(f"distance_maps: kappa must be negative, got {kappa}")
  # exp(κ · inf) = 0 for missing limbs, with no special case.
  maps = tf.exp(tf.constant(kappa, tf.float32) * limb_distances(keypoints, height, width))
  maps.set_shape([height, width, NUM_LIMBS])
  return maps
