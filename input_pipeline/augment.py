"""Target-side geometric augmentation of the official SPGNet (inherited from Intr-Flow) for Market-1501.

The official loader scales and shifts the target image, its parsing and its keypoints by one random
affine map per example, drawn as
  sc = scale_base ** U(−1, 1)            (scale_base = 1.2: sc ∈ [1/1.2, 1.2]),
  dx, dy = randint(−max_shift, max_shift) (NumPy semantics, upper bound excluded: −10 … 9),
and applied with cv2.warpAffine to the matrix
  M = [[sc, 0,  0.5 · h · (1 − sc) + dx],
       [0,  sc, 0.5 · w · (1 − sc) + dy]],   h, w = image height, width.
M maps a source point (x, y) (x = column, y = row, integer pixel centres) to the output point
M · (x, y, 1): the output pixel (X, Y) samples the input at M⁻¹ · (X, Y, 1). Quirk kept on purpose:
the x translation uses the height and the y translation the width (Intr-Flow's code swaps them), so
the scaling is centred at (h / 2, w / 2) in (x, y) rather than at the image centre. On the 128×64
Market images that centre is (64, 32), right of the image, so zooming also shifts the person
horizontally. It is part of the published training distribution, so we reproduce it.

Resampling follows cv2.warpAffine with `borderMode=cv2.BORDER_REPLICATE`: bilinear for the image,
nearest (round to the nearest pixel) for the parsing, and points outside the input take the value of
the nearest border pixel (the bilinear weights are applied to the clamped coordinate, which is the
same as interpolating the replicated image). It is implemented with TensorFlow's
`ImageProjectiveTransformV3` (fill_mode 'NEAREST'), whose coordinates are integer pixel centres like
OpenCV's; tests/test_augment.py checks the convention against `skimage.transform.warp`. OpenCV itself
quantises the bilinear weights to 1/32 pixel, which we do not imitate (differences ≤ ~1/64 of the
local intensity step).

Keypoints are mapped by M; a keypoint that was missing (x < 0 or y < 0) or lands outside the frame
(x ∉ [0, W − 1] or y ∉ [0, H − 1]) becomes (−1, −1).

Randomness is stateless (`tf.random.stateless_uniform`) from a shape-[2] integer seed, so the same
seed gives the same augmentation in any pipeline order and across runs.
"""

from __future__ import annotations

import tensorflow as tf

SCALE_BASE = 1.2
MAX_SHIFT = 10


def sample_augmentation(seed, *, scale_base: float = SCALE_BASE,
                        max_shift: int = MAX_SHIFT) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Draws the random scale and shifts of one example.

  Args:
    seed: shape-[2] int32 / int64 tensor, the stateless random seed.
    scale_base: sc = scale_base ** U(−1, 1).
    max_shift: dx, dy uniform integers in [−max_shift, max_shift) (upper bound excluded, like
      `np.random.randint(−max_shift, max_shift)`).

  Returns:
    (sc float32 scalar in [1 / scale_base, scale_base], dx int32 scalar, dy int32 scalar).
  """
  seed = tf.convert_to_tensor(seed)
  if not seed.dtype.is_integer:
    raise ValueError(f"sample_augmentation: seed must be an integer tensor, got {seed.dtype}")
  # Two independent streams from one seed: one for the scale, one for the two shifts.
  seeds = tf.random.experimental.stateless_split(seed, num=2)
  u = tf.random.stateless_uniform([], seeds[0], minval=-1.0, maxval=1.0, dtype=tf.float32)
  sc = tf.pow(tf.constant(scale_base, tf.float32), u)
  shifts = tf.random.stateless_uniform([2], seeds[1], minval=-max_shift, maxval=max_shift, dtype=tf.int32)
  return sc, shifts[0], shifts[1]


def affine_matrix(sc, dx, dy, h, w) -> tf.Tensor:
  """The official 2×3 augmentation matrix (cv2.warpAffine convention, forward: input -> output).

  Args:
    sc: scale (float scalar).
    dx, dy: integer or float shifts in pixels.
    h, w: image height and width. The x translation uses h and the y translation uses w: the
      official quirk, see the module docstring.

  Returns:
    (2, 3) float32 M = [[sc, 0, 0.5·h·(1 − sc) + dx], [0, sc, 0.5·w·(1 − sc) + dy]]; a point
    (x, y) of the input goes to M · (x, y, 1).
  """
  sc = tf.cast(sc, tf.float32)
  h = tf.cast(h, tf.float32)
  w = tf.cast(w, tf.float32)
  tx = 0.5 * h * (1.0 - sc) + tf.cast(dx, tf.float32)
  ty = 0.5 * w * (1.0 - sc) + tf.cast(dy, tf.float32)
  zero = tf.zeros([], tf.float32)
  return tf.stack([tf.stack([sc, zero, tx]), tf.stack([zero, sc, ty])])


def _warp(image: tf.Tensor, matrix: tf.Tensor, interpolation: str) -> tf.Tensor:
  """Resamples (H, W, C) `image` at M⁻¹ · (X, Y, 1) for every output pixel, replicating the border."""
  sc = matrix[0, 0]
  tx, ty = matrix[0, 2], matrix[1, 2]
  # ImageProjectiveTransformV3 takes the output -> input map [a0, a1, a2, b0, b1, b2, c0, c1]:
  # input (x, y) = (a0 X + a1 Y + a2, b0 X + b1 Y + b2) / (c0 X + c1 Y + 1). For M = sc·I + t,
  # the inverse is (X − tx) / sc, (Y − ty) / sc.
  inv = 1.0 / sc
  zero = tf.zeros([], tf.float32)
  transform = tf.stack([inv, zero, -tx * inv, zero, inv, -ty * inv, zero, zero])[None]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
      fill_value=tf.zeros([], tf.float32), interpolation=interpolation, fill_mode="NEAREST")
  return out[0]


def transform_keypoints(keypoints, matrix, height: int | tf.Tensor, width: int | tf.Tensor) -> tf.Tensor:
  """Maps (K, 2) (x, y) keypoints by the 2×3 `matrix`; missing or out-of-frame ones become (−1, −1).

  Args:
    keypoints: (K, 2) float (x, y); a negative coordinate marks a missing joint.
    matrix: (2, 3) float32 forward affine map.
    height, width: frame size; a result with x ∉ [0, W − 1] or y ∉ [0, H − 1] is dropped.

  Returns:
    (K, 2) float32.
  """
  keypoints = tf.cast(keypoints, tf.float32)
  present = tf.reduce_all(keypoints >= 0, axis=-1)
  moved = tf.linalg.matvec(matrix[:, :2], keypoints) + matrix[:, 2]
  x, y = moved[:, 0], moved[:, 1]
  inside = ((x >= 0) & (x <= tf.cast(width, tf.float32) - 1)
            & (y >= 0) & (y <= tf.cast(height, tf.float32) - 1))
  keep = present & inside
  return tf.where(keep[:, None], moved, -tf.ones_like(moved))


def augment_target(image, parsing, keypoints, seed, *, scale_base: float = SCALE_BASE,
                   max_shift: int = MAX_SHIFT) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Applies the official random scale-and-shift to one target example.

  Args:
    image: (H, W, 3) image, any real or integer dtype and value range (uint8 0..255, float [−1, 1]…).
    parsing: (H, W) integer CIHP labels (uint8 / int32 / int64).
    keypoints: (18, 2) float (x, y) pixel coordinates; negative = missing.
    seed: shape-[2] int32 / int64 tensor for the stateless random draws (see `sample_augmentation`).
    scale_base, max_shift: the official 1.2 and 10.

  Returns:
    image (H, W, 3) float32 in the input's value range (bilinear, replicated border);
    parsing (H, W) of the input dtype (nearest, replicated border);
    keypoints (18, 2) float32, (−1, −1) where missing or moved out of the frame.
  """
  image = tf.convert_to_tensor(image)
  parsing = tf.convert_to_tensor(parsing)
  if image.shape.rank != 3 or parsing.shape.rank != 2:
    raise ValueError(f"augment_target: expected (H, W, C) image and (H, W) parsing, got "
                     f"{image.shape} and {parsing.shape}")
  shape = tf.shape(parsing)
  height, width = shape[0], shape[1]
  sc, dx, dy = sample_augmentation(seed, scale_base=scale_base, max_shift=max_shift)
  matrix = affine_matrix(sc, dx, dy, height, width)

  out_image = _warp(tf.cast(image, tf.float32), matrix, "BILINEAR")
  # Nearest-neighbour resampling only copies values, so labels go through int32 exactly.
  out_parsing = _warp(tf.cast(parsing, tf.int32)[..., None], matrix, "NEAREST")[..., 0]
  out_parsing = tf.cast(out_parsing, parsing.dtype)
  out_keypoints = transform_keypoints(keypoints, matrix, height, width)
  out_image.set_shape(image.shape)
  out_parsing.set_shape(parsing.shape)
  return out_image, out_parsing, out_keypoints
