"""Inception-v3 pool features for FID, in the two protocols of the pose-transfer literature.

Both feature extractors are Inception-v3 up to `Mixed_7c` followed by a global average pool, giving
2048-d features per image. They differ in weights, in three pooling layers and in preprocessing:

* `'torchvision'` — the LEGACY "GFLA" FID behind SPGNet's, GFLA's, DPTN's, PIDM's and CFLD's numbers:
  torchvision `inception_v3` with the ImageNet IMAGENET1K_V1 weights (`inception_v3_google-*.pth`).
  The pooling branches of InceptionA/C/E average 3×3 windows with zero padding 1 counted in the
  divisor (`F.avg_pool2d(..., count_include_pad=True)`, PyTorch's default).
  Preprocessing (`preprocess_torchvision_legacy`): [0, 1] images, bilinear resize to 299×299, then per
  channel `x * (std / 0.5) + (mean - 0.5) / 0.5` with the ImageNet mean / std. That is the pre-May-2019
  pytorch-fid code, which applied torchvision's `transform_input` formula (meant for
  ImageNet-normalised inputs) to [0, 1] images, so the network sees roughly [-0.19, 0.43]. It is a
  quirk, but it is what the published numbers used, so it is reproduced exactly.
* `'pytorch_fid'` — STANDARD FID (pytorch-fid >= 0.1, TF-compatible): the TF 2015-12-05 Inception
  ported to PyTorch (`pt_inception-2015-12-05-6726825d.pth`), with pytorch-fid's patched blocks:
  `FIDInceptionA` / `FIDInceptionC` / `FIDInceptionE_1` average without counting the padding
  (`count_include_pad=False`, as TF does) and `FIDInceptionE_2` (`Mixed_7c`) max-pools its pool
  branch (3×3, stride 1, padding 1). Preprocessing (`preprocess_pytorch_fid`): [0, 1] images,
  bilinear resize to 299×299, then `2x - 1`.

Layers (torchvision names; each `Conv2d_*` and every branch conv is a BasicConv2d: conv without bias,
BatchNorm with eps 0.001 on the running statistics, ReLU). Sizes for a 299×299 input:

  Conv2d_1a_3x3 (3×3 s2)  149   Conv2d_2a_3x3 (3×3)  147   Conv2d_2b_3x3 (3×3 p1)  147
  max-pool 3×3 s2          73   Conv2d_3b_1x1         73   Conv2d_4a_3x3 (3×3)      71
  max-pool 3×3 s2          35   Mixed_5b/5c/5d (A)    35   Mixed_6a (B)             17
  Mixed_6b/6c/6d/6e (C)    17   Mixed_7a (D)           8   Mixed_7b/7c (E)           8
  global average pool       1  -> (B, 2048)

The Flax module tree mirrors the PyTorch one (`Mixed_6b/branch7x7_2/conv`, `.../bn`), so
`spg_jax.convert.inception` maps `<block>.conv.weight` onto `params/<block>/conv/kernel` one to one.
Max-pools are 3×3 stride 2 without padding, flooring odd sizes (PyTorch's default `ceil_mode=False`).
The network is fully convolutional and accepts any input of at least 75×75; the protocols feed 299×299.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
PrecisionLike = Any

VARIANTS = ("torchvision", "pytorch_fid")
NETWORK = "inception_v3_features"  # `network` entry of the weights-file metadata
INPUT_SIZE = 299
FEATURE_DIM = 2048
MIN_INPUT_SIZE = 75  # smallest input for which Mixed_7a still has a 1×1 output
BN_EPS = 1e-3  # torchvision BasicConv2d: nn.BatchNorm2d(out_channels, eps=0.001)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Where each variant's official weights come from, for the error message of a missing weights file.
WEIGHT_SOURCES = {
    "torchvision": {
        "file": "inception_v3_google-0cc3c7bd.pth (older torchvision: inception_v3_google-1a9a5a14.pth)",
        "origin": "torchvision IMAGENET1K_V1, https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
        "size": "about 104 MB",
        "example_input": "inception_v3_google-0cc3c7bd.pth",
    },
    "pytorch_fid": {
        "file": "pt_inception-2015-12-05-6726825d.pth",
        "origin": ("pytorch-fid GitHub release 'fid_weights', https://github.com/mseitzer/pytorch-fid/releases/"
                   "download/fid_weights/pt_inception-2015-12-05-6726825d.pth"),
        "size": "about 91-96 MB",
        "example_input": "pt_inception-2015-12-05-6726825d.pth",
    },
}


def _check_variant(variant: str) -> None:
  if variant not in VARIANTS:
    raise ValueError(f"unknown Inception variant {variant!r}; expected one of {VARIANTS}")


# ---------------------------------------------------------------------------------------------------
# Resizing and preprocessing.


def _torch_linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Source indices and weights of PyTorch's bilinear interpolation along one axis.

  PyTorch (`align_corners=False`, size given): scale = in / out, src = max(scale * (dst + 0.5) - 0.5, 0),
  i0 = floor(src), i1 = min(i0 + 1, in - 1), w1 = src - i0, w0 = 1 - w1. There is no antialiasing
  filter, so down-sampling also reads only the two nearest source pixels.

  Rounding follows PyTorch's float32 kernels: the scale is a float32 quotient, and src is rounded to
  float32 once, because the compiled `scale * (dst + 0.5) - 0.5` is contracted into a fused
  multiply-add. Rounding the product and the difference separately instead moves src by up to half
  an ulp (~8e-6 at src ≈ 250), which shows up as ~1e-5 differences in resized pixels.
  """
  scale = np.float32(in_size) / np.float32(out_size)
  # float64 holds the exact product of two float32 numbers, so one final cast emulates the FMA.
  src = (np.float64(scale) * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
  src = np.maximum(src, np.float32(0.0))
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = np.minimum(src - i0.astype(np.float32), np.float32(1.0))
  w0 = np.float32(1.0) - w1
  return i0, i1, w0.astype(np.float32), w1.astype(np.float32)


def _resize_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
  in_size = x.shape[axis]
  if in_size == out_size:
    return x  # PyTorch's weights are then exactly (1, 0): the identity
  i0, i1, w0, w1 = _torch_linear_taps(in_size, out_size)
  shape = [1] * x.ndim
  shape[axis] = out_size
  w0 = jnp.asarray(w0.reshape(shape), x.dtype)
  w1 = jnp.asarray(w1.reshape(shape), x.dtype)
  # Two gathers and a lerp rather than a matmul with an interpolation matrix: no accelerator
  # matmul precision (TF32 / bf16 passes) can creep in, and the arithmetic is PyTorch's.
  return jnp.take(x, i0, axis=axis) * w0 + jnp.take(x, i1, axis=axis) * w1


def resize_bilinear_torch(images: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
  """`F.interpolate(x, size=out_hw, mode='bilinear', align_corners=False)` in NHWC, both directions.

  Half-pixel centres, edge clamping, and no antialiasing when down-sampling: PyTorch's bilinear mode
  reads only the two nearest source pixels per axis, whereas `jax.image.resize`'s default
  `antialias=True` widens the kernel when down-sampling (differences up to ~0.5 on [0, 1] noise).
  `jax.image.resize(..., 'linear', antialias=False)` agrees with this to float rounding; this version
  spells out PyTorch's index arithmetic and is the one tested against PyTorch in both directions.

  Args:
    images: (B, H, W, C) float array, any value range.
    out_hw: (H_out, W_out), static.

  Returns:
    (B, H_out, W_out, C), same dtype.
  """
  if images.ndim != 4:
    raise ValueError(f"resize_bilinear_torch: expected (B, H, W, C), got shape {images.shape}")
  x = _resize_axis(images, 1, int(out_hw[0]))
  return _resize_axis(x, 2, int(out_hw[1]))


def _to_unit_range(images: jax.Array) -> jax.Array:
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"expected (B, H, W, 3) RGB images, got shape {images.shape}")
  # The official scripts read image files as float / 255 in [0, 1]; the project works in [-1, 1].
  return (images.astype(jnp.float32) + 1.0) * 0.5


def preprocess_torchvision_legacy(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """Network input of the LEGACY FID (torchvision Inception, pre-May-2019 pytorch-fid).

  Steps as in that code: x01 = (images + 1) / 2; bilinear resize to size × size (align_corners
  False, no antialias); then per channel c: x01 * (std_c / 0.5) + (mean_c - 0.5) / 0.5, with ImageNet
  mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). The result lies in
  [(mean - 0.5) / 0.5, (mean + std - 0.5) / 0.5] = [(-0.030, -0.088, -0.188), (0.428, 0.360, 0.262)].

  For parity with numbers computed from image files, pass images quantised as the files were
  (uint8 / 127.5 - 1, e.g. via `spg_jax.metrics.image.to_uint8_values`).

  Args:
    images: (B, H, W, 3) RGB in [-1, 1].
    size: output side (299 in the protocol).

  Returns:
    (B, size, size, 3) float32.
  """
  x = resize_bilinear_torch(_to_unit_range(images), (size, size))
  mean = np.asarray(IMAGENET_MEAN, np.float32)
  std = np.asarray(IMAGENET_STD, np.float32)
  # Same constants as torchvision's `_transform_input`, computed the way it writes them.
  return x * jnp.asarray(std / np.float32(0.5)) + jnp.asarray((mean - np.float32(0.5)) / np.float32(0.5))


def preprocess_pytorch_fid(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """Network input of STANDARD pytorch-fid: x01 = (images + 1) / 2, bilinear resize, then 2 * x01 - 1.

  Mathematically this is just the resized [-1, 1] image; the detour through [0, 1] follows
  pytorch-fid's order of operations (`InceptionV3(resize_input=True, normalize_input=True)`).

  Args:
    images: (B, H, W, 3) RGB in [-1, 1].
    size: output side (299 in the protocol).

  Returns:
    (B, size, size, 3) float32 in [-1, 1].
  """
  x = resize_bilinear_torch(_to_unit_range(images), (size, size))
  return 2.0 * x - 1.0


PREPROCESS: dict[str, Callable[..., jax.Array]] = {
    "torchvision": preprocess_torchvision_legacy,
    "pytorch_fid": preprocess_pytorch_fid,
}


def preprocess(images: jax.Array, variant: str, size: int = INPUT_SIZE) -> jax.Array:
  """The preprocessing of `variant`'s protocol: (B, H, W, 3) in [-1, 1] -> (B, size, size, 3) float32."""
  _check_variant(variant)
  return PREPROCESS[variant](images, size)


# ---------------------------------------------------------------------------------------------------
# Pooling with PyTorch semantics.

_AVG_INCLUDE_PAD = "avg_include_pad"  # F.avg_pool2d(x, 3, 1, 1): zeros of the padding counted
_AVG_EXCLUDE_PAD = "avg_exclude_pad"  # ... count_include_pad=False: divide by the in-image count
_MAX = "max"                          # F.max_pool2d(x, 3, 1, 1): padding never wins


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """`nn.MaxPool2d(kernel_size=3, stride=2)`: no padding, floor mode. (B, H, W, C) -> (B, ⌊(H-3)/2⌋+1, ...)."""
  return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")


def _window_counts(size: int) -> np.ndarray:
  # Number of in-image positions of a 3-wide, padding-1 window at each output position.
  i = np.arange(size)
  return (np.minimum(i + 1, size - 1) - np.maximum(i - 1, 0) + 1).astype(np.float32)


def pool_3x3_s1_p1(x: jax.Array, mode: str) -> jax.Array:
  """The 3×3, stride 1, padding 1 pooling of the Inception pool branches (shape preserving).

  Args:
    x: (B, H, W, C).
    mode: 'avg_include_pad' (sum / 9, torchvision), 'avg_exclude_pad' (sum / number of in-image
      pixels, pytorch-fid's patched A/C/E_1 blocks) or 'max' (pytorch-fid's E_2, -inf padding).

  Returns:
    (B, H, W, C), same dtype.
  """
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  if mode == _MAX:
    return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  total = jax.lax.reduce_window(x, jnp.array(0, x.dtype), jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  if mode == _AVG_INCLUDE_PAD:
    return total / jnp.asarray(9.0, x.dtype)
  if mode == _AVG_EXCLUDE_PAD:
    counts = np.outer(_window_counts(x.shape[1]), _window_counts(x.shape[2]))[None, :, :, None]
    return total / jnp.asarray(counts, x.dtype)
  raise ValueError(f"unknown pool mode {mode!r}")


def _pool_modes(variant: str) -> dict[str, str]:
  """Pool-branch mode of each Inception A/C/E block for `variant`."""
  _check_variant(variant)
  names = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7b", "Mixed_7c")
  if variant == "torchvision":
    return dict.fromkeys(names, _AVG_INCLUDE_PAD)
  modes = dict.fromkeys(names, _AVG_EXCLUDE_PAD)
  modes["Mixed_7c"] = _MAX  # FIDInceptionE_2 (a quirk of the TF graph, kept by pytorch-fid)
  return modes


# ---------------------------------------------------------------------------------------------------
# Network.


class BasicConv2d(nn.Module):
  """torchvision `BasicConv2d`: Conv2d(bias=False) -> BatchNorm2d(eps=0.001, running stats) -> ReLU.

  Attributes:
    features: output channels.
    kernel: (kh, kw).
    stride: stride in both axes.
    padding: (ph, pw) symmetric zero padding, PyTorch's `padding`.
    dtype: compute dtype.
    precision: matmul precision of the convolution.
  """

  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)
  dtype: Dtype = jnp.float32
  precision: PrecisionLike = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, strides=(self.stride, self.stride), padding=((ph, ph), (pw, pw)),
                use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, precision=self.precision, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, dtype=self.dtype, param_dtype=jnp.float32,
                     name="bn")(x)
    return nn.relu(x)


class _Block(nn.Module):
  """Base of the Inception blocks: a BasicConv2d factory sharing dtype and precision."""

  dtype: Dtype = jnp.float32
  precision: PrecisionLike = None

  def conv(self, name: str, features: int, kernel: int | tuple[int, int], stride: int = 1,
           padding: int | tuple[int, int] = 0) -> BasicConv2d:
    kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
    return BasicConv2d(features, kernel, stride, padding, dtype=self.dtype, precision=self.precision, name=name)


class InceptionA(_Block):
  """Mixed_5b/5c/5d (35×35): 1×1 | 1×1 -> 5×5 | 1×1 -> 3×3 -> 3×3 | pool -> 1×1; 224 + pool_features channels."""

  pool_features: int = 32
  pool_mode: str = _AVG_INCLUDE_PAD

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.conv("branch1x1", 64, 1)(x)
    b5 = self.conv("branch5x5_2", 64, 5, padding=2)(self.conv("branch5x5_1", 48, 1)(x))
    b3 = self.conv("branch3x3dbl_1", 64, 1)(x)
    b3 = self.conv("branch3x3dbl_3", 96, 3, padding=1)(self.conv("branch3x3dbl_2", 96, 3, padding=1)(b3))
    bp = self.conv("branch_pool", self.pool_features, 1)(pool_3x3_s1_p1(x, self.pool_mode))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
  """Mixed_6a (35 -> 17): 3×3 s2 | 1×1 -> 3×3 -> 3×3 s2 | max-pool 3×3 s2; 384 + 96 + C_in channels."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv("branch3x3", 384, 3, stride=2)(x)
    bd = self.conv("branch3x3dbl_1", 64, 1)(x)
    bd = self.conv("branch3x3dbl_3", 96, 3, stride=2)(self.conv("branch3x3dbl_2", 96, 3, padding=1)(bd))
    return jnp.concatenate([b3, bd, max_pool_3x3_s2(x)], axis=-1)


class InceptionC(_Block):
  """Mixed_6b-6e (17×17): factorised 7×7 branches (1×7 / 7×1); 4 × 192 = 768 channels."""

  channels_7x7: int = 128
  pool_mode: str = _AVG_INCLUDE_PAD

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    b1 = self.conv("branch1x1", 192, 1)(x)
    b7 = self.conv("branch7x7_1", c7, 1)(x)
    b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
    bd = self.conv("branch7x7dbl_1", c7, 1)(x)
    bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
    bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
    bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
    bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
    bp = self.conv("branch_pool", 192, 1)(pool_3x3_s1_p1(x, self.pool_mode))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
  """Mixed_7a (17 -> 8): 1×1 -> 3×3 s2 | 1×1 -> 1×7 -> 7×1 -> 3×3 s2 | max-pool 3×3 s2; 320 + 192 + C_in."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv("branch3x3_2", 320, 3, stride=2)(self.conv("branch3x3_1", 192, 1)(x))
    b7 = self.conv("branch7x7x3_1", 192, 1)(x)
    b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
    b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
    b7 = self.conv("branch7x7x3_4", 192, 3, stride=2)(b7)
    return jnp.concatenate([b3, b7, max_pool_3x3_s2(x)], axis=-1)


class InceptionE(_Block):
  """Mixed_7b/7c (8×8): split 1×3 / 3×1 branches; 320 + 768 + 768 + 192 = 2048 channels."""

  pool_mode: str = _AVG_INCLUDE_PAD

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.conv("branch1x1", 320, 1)(x)
    b3 = self.conv("branch3x3_1", 384, 1)(x)
    b3 = jnp.concatenate([self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                          self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)], axis=-1)
    bd = self.conv("branch3x3dbl_2", 384, 3, padding=1)(self.conv("branch3x3dbl_1", 448, 1)(x))
    bd = jnp.concatenate([self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                          self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd)], axis=-1)
    bp = self.conv("branch_pool", 192, 1)(pool_3x3_s1_p1(x, self.pool_mode))
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3Features(nn.Module):
  """Inception-v3 up to Mixed_7c + global average pool: (B, H, W, 3) network input -> (B, 2048).

  The input is the output of the variant's preprocessing (`preprocess(images, variant)`), not [-1, 1]
  images: keeping the two apart lets callers check or cache the 299×299 inputs.

  Attributes:
    variant: 'torchvision' (legacy FID) or 'pytorch_fid' (standard FID); selects the pool branches.
    dtype: compute dtype (parameters and running statistics stay float32; features are float32).
    precision: convolution precision. HIGHEST by default because on GPUs / TPUs the default would
      use TF32 / bf16 passes, and FID is a difference of large feature statistics that such
      rounding shifts visibly; the reference numbers were computed in full float32.
  """

  variant: str = "torchvision"
  dtype: Dtype = jnp.float32
  precision: PrecisionLike = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes the pool features.

    Args:
      x: (B, H, W, 3) preprocessed input, H, W >= 75 (299 in both protocols).
      train: must be False (the extractor always uses its running statistics); accepted for a
        uniform module interface.

    Returns:
      (B, 2048) float32, non-negative (a mean of ReLU outputs).
    """
    if train:
      raise ValueError("InceptionV3Features is a frozen feature extractor; train=True is not supported")
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"InceptionV3Features: expected (B, H, W, 3) input, got shape {x.shape}")
    if min(x.shape[1], x.shape[2]) < MIN_INPUT_SIZE:
      raise ValueError(f"InceptionV3Features: input {x.shape[1]}×{x.shape[2]} is smaller than "
                       f"{MIN_INPUT_SIZE}×{MIN_INPUT_SIZE}; resize to {INPUT_SIZE}×{INPUT_SIZE} first")
    pools = _pool_modes(self.variant)
    kw = dict(dtype=self.dtype, precision=self.precision)

    def stem(name: str, features: int, kernel: int, stride: int = 1, padding: int = 0) -> BasicConv2d:
      return BasicConv2d(features, (kernel, kernel), stride, (padding, padding), name=name, **kw)

    x = x.astype(self.dtype)
    x = stem("Conv2d_1a_3x3", 32, 3, stride=2)(x)
    x = stem("Conv2d_2a_3x3", 32, 3)(x)
    x = stem("Conv2d_2b_3x3", 64, 3, padding=1)(x)
    x = max_pool_3x3_s2(x)
    x = stem("Conv2d_3b_1x1", 80, 1)(x)
    x = stem("Conv2d_4a_3x3", 192, 3)(x)
    x = max_pool_3x3_s2(x)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features=pool_features, pool_mode=pools[name], name=name, **kw)(x)
    x = InceptionB(name="Mixed_6a", **kw)(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(channels_7x7=c7, pool_mode=pools[name], name=name, **kw)(x)
    x = InceptionD(name="Mixed_7a", **kw)(x)
    for name in ("Mixed_7b", "Mixed_7c"):
      x = InceptionE(pool_mode=pools[name], name=name, **kw)(x)
    # AdaptiveAvgPool2d((1, 1)), accumulated in float32 whatever the compute dtype.
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def make_feature_fn(variables: Any, variant: str, dtype: Dtype = jnp.float32) -> Callable[[jax.Array], jax.Array]:
  """A jitted function (B, H, W, 3) images in [-1, 1] -> (B, 2048) float32 features of `variant`'s protocol."""
  model = InceptionV3Features(variant=variant, dtype=dtype)
  # The variables are an argument of the jitted function, not closed-over constants: ~100 MB of
  # constants folded into the program would slow compilation and be copied per executable.
  apply = jax.jit(lambda v, images: model.apply(v, preprocess(images, variant)))
  return lambda images: apply(variables, images)


# ---------------------------------------------------------------------------------------------------
# Weights.


def conversion_command(variant: str, output: str | os.PathLike) -> str:
  """The command that writes `variant`'s weights file from the official `.pth`."""
  _check_variant(variant)
  src = WEIGHT_SOURCES[variant]["example_input"]
  return f"python -m spg_jax.convert inception --variant {variant} --input {src} --output {os.fspath(output)}"


def load_inception_weights(path: str | os.PathLike, variant: str) -> dict[str, Any]:
  """Reads `variant`'s Inception variables from an spg_jax weights file (`spg_jax.weights`).

  Args:
    path: `.npz` written by `python -m spg_jax.convert inception`.
    variant: 'torchvision' or 'pytorch_fid'; must match the file's metadata.

  Returns:
    {'params': ..., 'batch_stats': ...} for `InceptionV3Features(variant=variant)`.

  Raises:
    FileNotFoundError: naming the path, the official file it is converted from, its size, where to get
      it and the conversion command.
    ValueError: if the file holds another network or the other variant.
  """
  from spg_jax.weights import load_network_weights  # pylint: disable=import-outside-toplevel

  _check_variant(variant)
  path = os.fspath(path)
  src = WEIGHT_SOURCES[variant]
  variables, meta = load_network_weights(
      path, NETWORK,
      f"Inception weights file not found: {path}\n"
      f"  The {variant!r} FID protocol needs it; it is converted from {src['file']}\n"
      f"  ({src['size']}, from {src['origin']}).\n"
      f"  Download that file on a machine with internet access, then run:\n"
      f"    {conversion_command(variant, path)}", conversion_command(variant, path))
  found = meta.get("config", {}).get("variant")
  if found != variant:
    raise ValueError(f"{path}: holds the {found!r} Inception weights, but the {variant!r} variant was asked for; "
                     "the two FID protocols must not be mixed")
  return variables
