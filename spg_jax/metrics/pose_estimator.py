"""The OpenPose COCO body-pose network behind PCKh, and the multi-scale inference of the PCKh scripts.

PCKh in PATN (`tool/compute_coordinates.py`), Deformable-GAN (`compute_coordinates.py`) and SPGNet
(`tools/compute_coordinates.py`, the same script) detects keypoints on generated images with the CMU
COCO model of Cao et al. (github.com/ZheC/Realtime_Multi-Person_Pose_Estimation), converted to Keras by
Deformable-GAN as `pose_estimator.h5`. This module is that network and the scripts' way of running it;
`spg_jax.metrics.pckh` turns its maps into keypoints and scores them.

Network (`OpenPoseCOCO`), as the Keras model builds it, NHWC, every conv stride 1 with 'same' padding:

  VGG19 front      conv1_1, conv1_2 (64), pool; conv2_1, conv2_2 (128), pool;
                   conv3_1 … conv3_4 (256), pool; conv4_1, conv4_2 (512)      3×3 convs, ReLU
                   conv4_3_CPM (256), conv4_4_CPM (128)                      3×3 convs, ReLU  -> F
  stage 1          branch b ∈ {1: PAFs, 38 ch; 2: heatmaps, 19 ch} on F:
                   Mconv1..3_stage1_L<b> 3×3 128, Mconv4_stage1_L<b> 1×1 512,
                   Mconv5_stage1_L<b> 1×1 (38 or 19)
  stages t = 2..6  both branches on concat(L1, L2, F) (38 + 19 + 128 = 185 channels, in that order):
                   Mconv1..5_stage<t>_L<b> 7×7 128, Mconv6_stage<t>_L<b> 1×1 128,
                   Mconv7_stage<t>_L<b> 1×1 (38 or 19)

ReLU follows every conv except the last of each branch (the PAF / heatmap outputs are linear). The max-pools
are 2×2 stride 2 without padding (Keras 'valid': floor), so an h×w input gives ⌊⌊⌊h/2⌋/2⌋/2⌋ ×
⌊⌊⌊w/2⌋/2⌋/2⌋ outputs (1/8 resolution; inputs need not be multiples of 8). Outputs are those of the last
stage, in the Keras model's order: (PAFs (B, h', w', 38), heatmaps (B, h', w', 19)); heatmap channels are
the 18 parts in the OpenPose COCO-18 order (0 nose, 1 neck, 2 R-shoulder, … 17 R-ear, as
`spg_jax.ops.pose_maps.KEYPOINT_NAMES`) plus background (18); PAF channels come in x/y pairs per limb
(the decoder's table says which). The network's input is what the script feeds to `model.predict`: BGR
pixel values v ∈ [0, 255] as `v / 255 − 0.5` (`network_input`). Since the script normalises the input
itself, the Keras model is expected to hold no normalisation layer (some Keras ports of the CMU model put
a `Lambda(x / 256 − 0.5)` inside theirs; the converter refuses a file whose stored architecture has one).
Layer names in Flax are the Keras layer names. Some Keras conversions of the CMU model name the stage-1
convs after the Caffe layers, `conv5_<i>_CPM_L<b>`; the converter accepts both.

Multi-scale inference (`multiscale_maps`), as the PCKh script runs it: under Python 2 with
scikit-image ≤ 0.14 (the script uses `print >>`; Deformable-GAN pins Keras 2.0.8 and scikit-image
0.13.1, and scikit-image dropped Python 2 after 0.14, whose `resize` behaves like 0.13's here):
  1. Multipliers m = x · 368 / H for x in (0.5, 1, 1.5, 2), H the image height, evaluated with Python 2
     arithmetic: for the integer entries 1 and 2 `x * 368 / H` is an integer division, so m is
     ⌊368/H⌋ and ⌊736/H⌋ (for H = 256: m = 0.71875, 1, 2.15625, 2; for H = 128: 1.4375, 2, 4.3125, 5).
     `python2_division=False` gives the true quotients instead.
  2. Per scale, the BGR image (float values 0..255) is resized to (int(H·m), int(W·m)) (truncation) by
     scikit-image's `resize(order=3, preserve_range=True)` of those versions: Keys cubic convolution with
     a = −0.5 (Catmull-Rom) sampling the source at (i + 0.5) · in/out − 0.5, no anti-aliasing, pixels
     outside the image read as 0 (mode 'constant', cval 0), and the result clipped to the image's
     [min, max] (over all pixels and channels). No padding to a multiple of 8 is done.
  3. The network runs on `resized / 255 − 0.5`.
  4. Both outputs are resized straight back to (H, W) by `resize(order=1, preserve_range=True)`:
     bilinear with the same half-pixel mapping, zero outside, clipped to the output's [min, max].
  5. Heatmaps are averaged over the scales; PAFs are summed (the script never divides `paf_avg` by the
     number of scales, so the decoder's PAF threshold and limb scores see the sum; `sum_pafs=False`
     averages them instead).
Everything is computed in float32 (the scripts resize in float64 around a float32 network). Resampling
is done as products with precomputed (out, in) interpolation matrices, which is exact for these
separable kernels. Not reproduced: the JPEG round trip of the official pipeline (generated images are
written to disk as JPEG and read back before this step).

Weights: `pose_estimator.h5` (Keras HDF5), converted into an spg_jax weights file by
`python -m spg_jax.convert pose_estimator --input pose_estimator.h5 --output weights/pose_estimator.npz`
and read back with `load_pose_estimator_weights`. Variables: {'params': {<layer name>: {'kernel'
(kh, kw, I, O), 'bias' (O,)}}}, float32, 52,311,446 parameters.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from spg_jax.metrics.image import to_uint8_values
from spg_jax.models.layers import conv2d

Dtype = Any
NetworkFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]

NUM_PAFS = 38
NUM_HEATMAPS = 19  # 18 COCO parts + background
NUM_PARTS = 18
FEATURE_CHANNELS = 128  # conv4_4_CPM, concatenated into every later stage
NUM_STAGES = 6
STRIDE = 8
BOXSIZE = 368
SCALE_SEARCH = (0.5, 1, 1.5, 2)
NETWORK_NAME = "openpose_coco_pose_estimator"
CONVERT_COMMAND = ("python -m spg_jax.convert pose_estimator --input pose_estimator.h5 "
                   "--output weights/pose_estimator.npz")
WEIGHT_SOURCES = (
    "Deformable-GAN (github.com/AliaksandrSiarohin/pose-gan): https://yadi.sk/d/blgmGpDi3PjXvK",
    "PATN (github.com/tengteng95/Pose-Transfer), README 'PCKh': "
    "https://drive.google.com/open?id=1YMsYXc41dR3k8YroXeWGh9zweNUQmZBw",
    "SPGNet (github.com/cszy98/SPGNet), README: "
    "https://drive.google.com/file/d/1Y1WWYKUhCnei2dFxf8gj9lKJswR73arh/view",
)

# VGG front: (Keras layer name, output channels) for the 3×3 convs, "pool" for a 2×2/2 max-pool.
VGG_PLAN: tuple[tuple[str, int] | str, ...] = (
    ("conv1_1", 64), ("conv1_2", 64), "pool",
    ("conv2_1", 128), ("conv2_2", 128), "pool",
    ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), ("conv3_4", 256), "pool",
    ("conv4_1", 512), ("conv4_2", 512),
    ("conv4_3_CPM", 256), ("conv4_4_CPM", FEATURE_CHANNELS),
)
BRANCH_CHANNELS = {1: NUM_PAFS, 2: NUM_HEATMAPS}


def branch_plan(stage: int, branch: int) -> tuple[tuple[str, int, int], ...]:
  """The convs of one branch: ((Keras layer name, kernel size, output channels), ...), last one linear."""
  out = BRANCH_CHANNELS[branch]
  if stage == 1:
    sizes = ((3, 128), (3, 128), (3, 128), (1, 512), (1, out))
  else:
    sizes = ((7, 128),) * 5 + ((1, 128), (1, out))
  return tuple((f"Mconv{i}_stage{stage}_L{branch}", k, c) for i, (k, c) in enumerate(sizes, start=1))


def conv_layers() -> tuple[tuple[str, int, int, int], ...]:
  """Every conv of the network in Keras build order: (name, kernel size, in channels, out channels)."""
  layers, channels = [], 3
  for step in VGG_PLAN:
    if step == "pool":
      continue
    name, out = step
    layers.append((name, 3, channels, out))
    channels = out
  stage_in = FEATURE_CHANNELS
  for stage in range(1, NUM_STAGES + 1):
    for branch in (1, 2):
      channels = stage_in
      for name, k, out in branch_plan(stage, branch):
        layers.append((name, k, channels, out))
        channels = out
    stage_in = NUM_PAFS + NUM_HEATMAPS + FEATURE_CHANNELS
  return tuple(layers)


def output_size(size: int) -> int:
  """Output side for an input side `size`: three floor halvings (Keras 'valid' 2×2/2 max-pools)."""
  for _ in range(3):
    size //= 2
  return size


def network_input(bgr_values: jax.Array) -> jax.Array:
  """The script's input normalisation: BGR values in [0, 255] -> `v / 255 − 0.5`, float32."""
  return bgr_values.astype(jnp.float32) / 255.0 - 0.5


class OpenPoseCOCO(nn.Module):
  """The 6-stage, 2-branch CMU COCO pose network (layers in the module docstring).

  Attributes:
    dtype: compute dtype of the convolutions (parameters stay float32); outputs are float32.
  """

  dtype: Dtype = jnp.float32

  def _branch(self, x: jax.Array, stage: int, branch: int) -> jax.Array:
    plan = branch_plan(stage, branch)
    for i, (name, k, out) in enumerate(plan):
      x = conv2d(out, k, padding=k // 2, dtype=self.dtype, name=name)(x)
      if i < len(plan) - 1:
        x = nn.relu(x)
    return x

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Runs the network on normalised images.

    Args:
      x: (B, h, w, 3) BGR, `network_input` of pixel values (v / 255 − 0.5, so in [−0.5, 0.5]); h, w ≥ 8.

    Returns:
      (pafs (B, h', w', 38), heatmaps (B, h', w', 19)), float32, h' = `output_size(h)` (about h / 8).
    """
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"OpenPoseCOCO: expected (B, h, w, 3) BGR images, got shape {x.shape}")
    if min(x.shape[1:3]) < STRIDE:
      raise ValueError(f"OpenPoseCOCO: h and w must be at least {STRIDE} (three 2×2 pools), got {x.shape[1:3]}")
    h = x.astype(self.dtype)
    for step in VGG_PLAN:
      if step == "pool":
        h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")
        continue
      name, out = step
      h = nn.relu(conv2d(out, 3, padding=1, dtype=self.dtype, name=name)(h))
    features = h
    pafs = self._branch(features, 1, 1)
    heatmaps = self._branch(features, 1, 2)
    for stage in range(2, NUM_STAGES + 1):
      # Keras's Concatenate([L1, L2, features]): this channel order is what the 7×7 kernels expect.
      stage_input = jnp.concatenate([pafs, heatmaps, features], axis=-1)
      pafs = self._branch(stage_input, stage, 1)
      heatmaps = self._branch(stage_input, stage, 2)
    return pafs.astype(jnp.float32), heatmaps.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------------
# scikit-image 0.13/0.14 `resize` (2-D path: `warp` with an affine map, the Cython `_warp_fast` kernels).


def _cubic_weights(x: np.ndarray) -> np.ndarray:
  """Keys cubic convolution (a = −0.5) weights of the samples at offsets −1, 0, 1, 2 for x ∈ [0, 1).

  These are the coefficients of skimage's `cubic_interpolation(x, f)`, which evaluates
  f1 + x/2 · (f2 − f0 + x · (2f0 − 5f1 + 4f2 − f3 + x · (3(f1 − f2) + f3 − f0))).
  """
  x2, x3 = x * x, x * x * x
  return np.stack([0.5 * (-x + 2.0 * x2 - x3),
                   1.0 - 2.5 * x2 + 1.5 * x3,
                   0.5 * (x + 4.0 * x2 - 3.0 * x3),
                   0.5 * (x3 - x2)], axis=-1)


def resize_matrix(in_size: int, out_size: int, order: int) -> np.ndarray:
  """(out_size, in_size) float64 matrix R such that R @ signal is skimage's 1-D resampling.

  Output sample i reads the source at s = (i + 0.5) · in_size / out_size − 0.5 (pixel centres at half
  integers, skimage's `resize` affine map). Order 1: weights 1 − d and d at ⌊s⌋ and ⌈s⌉ (d = s − ⌊s⌋);
  order 3: `_cubic_weights(d)` at ⌊s⌋ − 1 … ⌊s⌋ + 2. Taps outside [0, in_size) read the constant 0
  (mode 'constant', cval 0) and are simply dropped. Rows need not sum to 1 near the borders.

  Args:
    in_size, out_size: positive lengths.
    order: 1 (bilinear) or 3 (bicubic).
  """
  if order not in (1, 3):
    raise ValueError(f"resize_matrix: order must be 1 or 3, got {order}")
  if in_size < 1 or out_size < 1:
    raise ValueError(f"resize_matrix: sizes must be positive, got {in_size} -> {out_size}")
  src = (np.arange(out_size, dtype=np.float64) + 0.5) * (float(in_size) / out_size) - 0.5
  base = np.floor(src)
  frac = src - base
  base = base.astype(np.int64)
  if order == 1:
    taps = np.stack([base, np.ceil(src).astype(np.int64)], axis=-1)
    weights = np.stack([1.0 - frac, frac], axis=-1)
  else:
    taps = base[:, None] + np.arange(-1, 3)[None, :]
    weights = _cubic_weights(frac)
  matrix = np.zeros((out_size, in_size), np.float64)
  rows = np.broadcast_to(np.arange(out_size)[:, None], taps.shape)
  inside = (taps >= 0) & (taps < in_size)
  # np.add.at: for order 1 at integer s both taps are the same pixel (weights 1 and 0).
  np.add.at(matrix, (rows[inside], taps[inside]), weights[inside])
  return matrix


def skimage_resize(images: jax.Array, height: int, width: int, order: int) -> jax.Array:
  """scikit-image ≤ 0.14 `resize(image, (height, width), order, preserve_range=True)` per image.

  Defaults of those versions: mode 'constant' with cval 0, no anti-aliasing, clip=True. Clipping is
  to [min, max] of each input image over all of its pixels and channels; as skimage does, an output
  that is exactly 0 (the cval) is kept at 0 when 0 lies outside that range.

  Args:
    images: (B, h, w, C) float.
    height, width: static output size.
    order: 1 (bilinear) or 3 (Keys bicubic, a = −0.5).

  Returns:
    (B, height, width, C) float32.
  """
  x = images.astype(jnp.float32)
  rows = jnp.asarray(resize_matrix(x.shape[1], height, order), jnp.float32)
  cols = jnp.asarray(resize_matrix(x.shape[2], width, order), jnp.float32)
  hi = jax.lax.Precision.HIGHEST  # interpolation weights must not be rounded to bfloat16 on accelerators
  out = jnp.einsum("oh,bhwc->bowc", rows, x, precision=hi)
  out = jnp.einsum("pw,bowc->bopc", cols, out, precision=hi)
  lo_val = jnp.min(x, axis=(1, 2, 3), keepdims=True)
  hi_val = jnp.max(x, axis=(1, 2, 3), keepdims=True)
  keep_zero = ((lo_val > 0) | (hi_val < 0)) & (out == 0)
  return jnp.where(keep_zero, 0.0, jnp.clip(out, lo_val, hi_val))


# ---------------------------------------------------------------------------------------------------
# Multi-scale inference of the PCKh script.


def scale_multipliers(height: int, scale_search: Sequence[float] = SCALE_SEARCH, boxsize: int = BOXSIZE,
                      python2_division: bool = True) -> tuple[float, ...]:
  """The script's `[x * boxsize / H for x in scale_search]`.

  Args:
    height: image height H in pixels.
    scale_search: the factors x; Python ints among them (1, 2 by default) are integer-divided under
      Python 2 semantics.
    boxsize: 368 in the scripts.
    python2_division: evaluate as Python 2 did (int · int / int is floor division); False gives the
      true quotients.

  Returns:
    One multiplier per entry of `scale_search`.
  """
  out = []
  for x in scale_search:
    if python2_division and isinstance(x, int) and not isinstance(x, bool):
      out.append(float((x * boxsize) // height))
    else:
      out.append(x * boxsize / height)
  return tuple(out)


def scaled_size(height: int, width: int, multiplier: float) -> tuple[int, int]:
  """`(np.array((H, W)) * multiplier).astype(np.int32)`: each side scaled and truncated."""
  return int(math.floor(height * multiplier)), int(math.floor(width * multiplier))


def multiscale_maps(
    network: NetworkFn,
    bgr_values: jax.Array,
    scale_search: Sequence[float] = SCALE_SEARCH,
    boxsize: int = BOXSIZE,
    python2_division: bool = True,
    sum_pafs: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """Heatmaps and PAFs at image resolution from the script's multi-scale loop (module docstring).

  Args:
    network: maps `network_input` images (B, h, w, 3) to (pafs (B, h', w', 38), heatmaps (B, h', w', 19)),
      e.g. `functools.partial(OpenPoseCOCO().apply, variables)`.
    bgr_values: (B, H, W, 3) BGR pixel values in [0, 255] (integers in the official pipeline, which reads
      uint8 image files), any float or integer dtype.
    scale_search, boxsize, python2_division: see `scale_multipliers`.
    sum_pafs: sum the PAFs over scales as the script does (True) or average them.

  Returns:
    (heatmaps (B, H, W, 19) averaged over scales, pafs (B, H, W, 38) summed or averaged), float32.

  Raises:
    ValueError: a scale would give an image side below 8 pixels (no network output).
  """
  if bgr_values.ndim != 4 or bgr_values.shape[-1] != 3:
    raise ValueError(f"multiscale_maps: expected (B, H, W, 3) BGR images, got shape {bgr_values.shape}")
  _, height, width, _ = bgr_values.shape
  image = bgr_values.astype(jnp.float32)
  heat_sum = paf_sum = None
  multipliers = scale_multipliers(height, scale_search, boxsize, python2_division)
  for m in multipliers:
    h, w = scaled_size(height, width, m)
    if min(h, w) < STRIDE:
      raise ValueError(f"multiscale_maps: multiplier {m} turns {height}×{width} into {h}×{w}, below the "
                       f"network's minimum of {STRIDE} pixels")
    pafs, heatmaps = network(network_input(skimage_resize(image, h, w, order=3)))
    heatmaps = skimage_resize(heatmaps, height, width, order=1)
    pafs = skimage_resize(pafs, height, width, order=1)
    heat_sum = heatmaps if heat_sum is None else heat_sum + heatmaps
    paf_sum = pafs if paf_sum is None else paf_sum + pafs
  n = len(multipliers)
  return heat_sum / n, (paf_sum if sum_pafs else paf_sum / n)


def make_pose_fn(
    variables: Mapping[str, Any],
    scale_search: Sequence[float] = SCALE_SEARCH,
    boxsize: int = BOXSIZE,
    python2_division: bool = True,
    sum_pafs: bool = True,
    uint8_input: bool = False,
    dtype: Dtype = jnp.float32,
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
  """A jitted images -> (heatmaps, PAFs) function running the PCKh script's multi-scale inference.

  Args:
    variables: `OpenPoseCOCO` variables (`load_pose_estimator_weights`).
    scale_search, boxsize, python2_division, sum_pafs: see `multiscale_maps`.
    uint8_input: the function takes RGB values in [0, 255] (e.g. uint8 image files) instead of [−1, 1]
      images.
    dtype: compute dtype of the network's convolutions.

  Returns:
    fn(images) with images (B, H, W, 3) RGB, in [−1, 1] by default (quantised to the integer values
    {0, …, 255} first, with `spg_jax.metrics.image.to_uint8_values`, as the official pipeline writes
    uint8 files before detecting keypoints), returning (heatmaps (B, H, W, 19), pafs (B, H, W, 38))
    float32 for `spg_jax.metrics.pckh.keypoints_from_maps`. Shapes are static: each new (B, H, W)
    compiles once. The convolutions use JAX's default precision, which on recent GPUs rounds float32
    operands to TF32; set `jax_default_matmul_precision` to 'highest' to match the float32 Keras
    network closely (the resampling always uses the highest precision).
  """
  model = OpenPoseCOCO(dtype=dtype)

  def network(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return model.apply(variables, x)

  @jax.jit
  def pose_fn(images: jax.Array) -> tuple[jax.Array, jax.Array]:
    values = images.astype(jnp.float32) if uint8_input else to_uint8_values(images)
    return multiscale_maps(network, values[..., ::-1], scale_search, boxsize, python2_division, sum_pafs)

  return pose_fn


# ---------------------------------------------------------------------------------------------------
# Weights.


def pose_estimator_template() -> Any:
  """Shape/dtype tree of the `OpenPoseCOCO` variables (for checking converted or loaded weights)."""
  return jax.eval_shape(OpenPoseCOCO().init, jax.random.key(0), jnp.zeros((1, 16, 16, 3), jnp.float32))


def load_pose_estimator_weights(path: str | os.PathLike) -> dict[str, Any]:
  """Reads the OpenPose COCO variables from an spg_jax weights file.

  Args:
    path: `.npz` written by `python -m spg_jax.convert pose_estimator ...`.

  Returns:
    The variables for `OpenPoseCOCO` / `make_pose_fn` (float32 numpy arrays).

  Raises:
    FileNotFoundError: `path` does not exist; the message says where the Keras model comes from and how
      to convert it.
    ValueError: the file is not a pose-estimator weights file or its arrays do not fit the network.
  """
  # Imported here so that importing this module stays light.
  from spg_jax.convert.state_dict import check_against_template  # pylint: disable=import-outside-toplevel
  from spg_jax.weights import load_network_weights  # pylint: disable=import-outside-toplevel

  path = os.fspath(path)
  sources = "\n  ".join(WEIGHT_SOURCES)
  variables, _ = load_network_weights(
      path, NETWORK_NAME,
      f"pose estimator weights file not found: {path}. It should hold the CMU OpenPose COCO model "
      "(Realtime_Multi-Person_Pose_Estimation) used by the PCKh scripts, converted from the Keras file "
      f"pose_estimator.h5, which is distributed by:\n  {sources}\nMake it with:\n  {CONVERT_COMMAND}\n"
      f"(with --output {path} to write it here).", CONVERT_COMMAND)
  return check_against_template(variables, pose_estimator_template(), path)
