"""LPIPS v0.1 with the AlexNet backbone, as PyPI `lpips` computes `lpips.LPIPS(net='alex')`.

This is the perceptual distance reported by SPGNet, PIDM and CFLD: `lpips.LPIPS(net='alex')` with its
defaults (`version='0.1'`, `lpips=True`, `spatial=False`) on image pairs in [−1, 1]. Lower is more
similar; d(x, x) = 0 and d(x, y) = d(y, x).

Shapes and conventions:
  * Images are NHWC, (B, H, W, 3) RGB in [−1, 1] (the package convention and lpips's default; for
    [0, 1] images apply `2 · x − 1` first, which is what lpips's `normalize=True` does).
    H and W must be at least `MIN_SIZE` = 31, the smallest size for which AlexNet's last max-pool still
    has an output.
  * `lpips_distance(variables, x, y)` returns (B,) float32 distances, one per image pair; the papers'
    LPIPS score is the mean of these over the test pairs.

Algorithm (lpips 0.1.x `LPIPS.forward`):
  1. ScalingLayer: (x − shift) / scale per RGB channel, shift (−0.030, −0.088, −0.188), scale
     (0.458, 0.448, 0.450): ImageNet mean/std normalisation expressed for [−1, 1] inputs (2·0.485 − 1,
     2·0.229, ...), rounded to three digits by lpips; the rounded values are the ones used here.
  2. torchvision `alexnet().features[0:12]` (`AlexNetFeatures`), tapped after each ReLU:

       torchvision index  layer                                 tap    output
       0, 1               conv 11×11 s4 p2, 3 -> 64, ReLU        relu1  (B, H1, W1, 64),  H1 = ⌊(H + 4 − 11)/4⌋ + 1
       2                  max-pool 3×3 s2 (no padding, floor)
       3, 4               conv 5×5 p2, 64 -> 192, ReLU           relu2  (B, H2, W2, 192), H2 = ⌊(H1 − 3)/2⌋ + 1
       5                  max-pool 3×3 s2
       6, 7               conv 3×3 p1, 192 -> 384, ReLU          relu3  (B, H3, W3, 384), H3 = ⌊(H2 − 3)/2⌋ + 1
       8, 9               conv 3×3 p1, 384 -> 256, ReLU          relu4  (B, H3, W3, 256)
       10, 11             conv 3×3 p1, 256 -> 256, ReLU          relu5  (B, H3, W3, 256)

     (W likewise; e.g. 256×176 -> 63×43, 31×21, 15×10.) The final max-pool (index 12), the average
     pool and the classifier are not part of LPIPS. Conv submodules are named `conv_<torchvision index>`.
  3. Each tap is unit-normalised along channels: f / (√(Σ_c f²) + 1e-10).
  4. Squared difference of the normalised taps of x and y, weighted by the non-negative "lin" head of
     that layer (a 1×1 conv, 1 output channel, no bias; lpips's dropout before it is inactive at eval),
     averaged over the spatial positions.
  5. Sum over the five layers.

Variables: {'params': {'features': {'conv_{0,3,6,8,10}': {'kernel' (kh, kw, I, O), 'bias' (O,)}},
'heads': {'lin{0..4}': {'kernel' (1, 1, C_k, 1)}}}}, all float32. The taps and everything after them are
computed in float32 whatever `dtype` the backbone convolutions use.

Weights. Two files, both PyTorch state dicts, converted into one spg_jax weights file by
`python -m spg_jax.convert lpips --alexnet alexnet-owt-7be5be79.pth --heads alex.pth
--output weights/lpips_alex.npz` (read back with `load_lpips_weights`):
  * the backbone: torchvision's ImageNet AlexNet `alexnet-owt-7be5be79.pth` (about 233 MB; torchvision
    downloads it from https://download.pytorch.org/models/alexnet-owt-7be5be79.pth and caches it under
    ~/.cache/torch/hub/checkpoints/; older torchvision releases used `alexnet-owt-4df8aa71.pth`, which
    lpips's `tv.alexnet(pretrained=True)` also fetched);
  * the heads: `lpips/weights/v0.1/alex.pth` (6,009 bytes) shipped inside the PyPI `lpips` wheel (e.g.
    `pip download lpips==0.1.4 --no-deps` and unzip it), also in github.com/richzhang/PerceptualSimilarity.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from spg_jax.models.layers import conv2d

Dtype = Any

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LAYER_NAMES = ("relu1", "relu2", "relu3", "relu4", "relu5")
CHANNELS = (64, 192, 384, 256, 256)
NORMALIZE_EPS = 1e-10  # lpips.normalize_tensor's eps, added to the norm (not to its square)
MIN_SIZE = 31  # smallest H, W with a non-empty relu3..relu5 (conv1 -> 7, pool -> 3, pool -> 1)
NETWORK_NAME = "lpips_alex"
CONVERT_COMMAND = ("python -m spg_jax.convert lpips --alexnet alexnet-owt-7be5be79.pth --heads alex.pth "
                   "--output weights/lpips_alex.npz")

# torchvision `alexnet().features[0:12]`: (index, out channels, kernel, stride, padding) for the convs,
# (index, 'M') for the 3×3 stride-2 max-pools. Every conv is followed by a ReLU whose output is a tap.
_PLAN: tuple[tuple[Any, ...], ...] = (
    (0, 64, 11, 4, 2),
    (2, "M"),
    (3, 192, 5, 1, 2),
    (5, "M"),
    (6, 384, 3, 1, 1),
    (8, 256, 3, 1, 1),
    (10, 256, 3, 1, 1),
)
CONV_INDICES: tuple[int, ...] = tuple(step[0] for step in _PLAN if step[1] != "M")


def _output_size(size: int) -> int:
  """Spatial size of relu3..relu5 for an input side of `size` (torch's floor rounding)."""
  size = (size + 2 * 2 - 11) // 4 + 1
  for _ in range(2):
    size = (size - 3) // 2 + 1
  return size


def lpips_scale(images: jax.Array) -> jax.Array:
  """lpips's ScalingLayer: [−1, 1] images -> (x − shift) / scale per RGB channel, float32."""
  x = images.astype(jnp.float32)
  return (x - jnp.asarray(LPIPS_SHIFT, jnp.float32)) / jnp.asarray(LPIPS_SCALE, jnp.float32)


def normalize_channels(features: jax.Array, eps: float = NORMALIZE_EPS) -> jax.Array:
  """f / (√(Σ_c f²) + eps) along the last axis, float32 (lpips.normalize_tensor).

  The square root is taken through a `where` so that an all-zero feature vector (frequent after ReLU)
  has a zero gradient rather than 0 · ∞ = NaN; the value is exactly √(Σ f²) everywhere.
  """
  f = features.astype(jnp.float32)
  sq = jnp.sum(f * f, axis=-1, keepdims=True)
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return f / (norm + eps)


class AlexNetFeatures(nn.Module):
  """torchvision AlexNet `features[0:12]` on lpips-scaled images, returning relu1 … relu5.

  Attributes:
    dtype: compute dtype of the convolutions (parameters stay float32).
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    """Applies the LPIPS ScalingLayer and AlexNet's conv stack.

    Args:
      images: (B, H, W, 3) RGB in [−1, 1], H, W ≥ 31.
      train: unused (no dropout or batch statistics); accepted for a uniform module interface.

    Returns:
      Five arrays (relu1, …, relu5) of shapes (B, H_k, W_k, C_k), C = 64, 192, 384, 256, 256 (sizes in
      the module docstring), in `dtype`, all ≥ 0.
    """
    del train
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"AlexNetFeatures: expected (B, H, W, 3) RGB images, got shape {images.shape}")
    if min(images.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"AlexNetFeatures: H and W must be at least {MIN_SIZE} (AlexNet's pools leave no "
                       f"output below that), got {images.shape[1:3]}")
    x = lpips_scale(images).astype(self.dtype)
    taps = []
    for step in _PLAN:
      if step[1] == "M":
        # torch MaxPool2d(3, 2): no padding, floor rounding == 'VALID'.
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        continue
      index, channels, kernel, stride, padding = step
      x = conv2d(channels, kernel, stride=stride, padding=padding, use_bias=True, dtype=self.dtype,
                 name=f"conv_{index}")(x)
      x = nn.relu(x)
      taps.append(x)
    return tuple(taps)


class LPIPSHeads(nn.Module):
  """The five learned "lin" layers: per-layer weighted, spatially averaged squared differences."""

  channels: Sequence[int] = CHANNELS

  @nn.compact
  def __call__(self, features_x: Sequence[jax.Array], features_y: Sequence[jax.Array]) -> jax.Array:
    """Per-layer LPIPS terms.

    Args:
      features_x, features_y: the five taps of the two images, (B, H_k, W_k, C_k) each, any float dtype.

    Returns:
      (B, 5) float32: for each layer k, mean over positions of Σ_c w_kc (f̂x − f̂y)², f̂ the
      channel-normalised taps. Their sum over the last axis is the LPIPS distance.
    """
    if not len(features_x) == len(features_y) == len(self.channels):
      raise ValueError(f"LPIPSHeads: got {len(features_x)} and {len(features_y)} feature maps for "
                       f"{len(self.channels)} heads")
    terms = []
    for k, (fx, fy, c) in enumerate(zip(features_x, features_y, self.channels)):
      if fx.shape != fy.shape or fx.shape[-1] != c:
        raise ValueError(f"LPIPSHeads: layer {k} shapes {fx.shape} and {fy.shape}, expected (..., {c})")
      diff = jnp.square(normalize_channels(fx) - normalize_channels(fy))
      # lpips's 1×1 Conv2d(C, 1, bias=False); float32 regardless of the backbone dtype.
      weighted = nn.Conv(1, (1, 1), use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32,
                         kernel_init=nn.initializers.ones, name=f"lin{k}")(diff)
      terms.append(jnp.mean(weighted, axis=(1, 2, 3)))
    return jnp.stack(terms, axis=-1)


class LPIPS(nn.Module):
  """LPIPS v0.1 / AlexNet distance between two image batches (submodules `features`, `heads`).

  Attributes:
    dtype: compute dtype of the AlexNet convolutions; normalisation and heads run in float32.
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array, per_layer: bool = False) -> jax.Array:
    """Distance between paired images.

    Args:
      x, y: (B, H, W, 3) RGB in [−1, 1], same shape, H, W ≥ 31.
      per_layer: return the five per-layer terms instead of their sum.

    Returns:
      (B,) float32 distances ≥ 0, or (B, 5) per-layer terms with `per_layer`.
    """
    if x.shape != y.shape:
      raise ValueError(f"LPIPS: image shapes differ: {x.shape} vs {y.shape}")
    features = AlexNetFeatures(dtype=self.dtype, name="features")
    # One backbone pass over both batches; each image is processed independently, so this is
    # the same as two passes.
    taps = features(jnp.concatenate([x, y], axis=0))
    b = x.shape[0]
    terms = LPIPSHeads(name="heads")([t[:b] for t in taps], [t[b:] for t in taps])
    return terms if per_layer else jnp.sum(terms, axis=-1)


def lpips_distance(variables: Mapping[str, Any], x: jax.Array, y: jax.Array) -> jax.Array:
  """LPIPS (v0.1, AlexNet, lpips=True, spatial=False) between paired images; pure and jittable.

  Args:
    variables: LPIPS variables (`load_lpips_weights` or `spg_jax.convert.lpips.convert`).
    x, y: (B, H, W, 3) RGB in [−1, 1], same shape, H, W ≥ 31.

  Returns:
    (B,) float32, one distance per pair (`lpips.LPIPS(net='alex')(x, y)` flattened).
  """
  return LPIPS().apply(variables, x, y)


def lpips_per_layer(variables: Mapping[str, Any], x: jax.Array, y: jax.Array) -> jax.Array:
  """Like `lpips_distance` but (B, 5): the relu1 … relu5 terms (lpips's `retPerLayer=True` list)."""
  return LPIPS().apply(variables, x, y, per_layer=True)


def lpips_template(height: int = 64, width: int = 64) -> Any:
  """Shape/dtype tree of the LPIPS variables (for checking converted or loaded weights)."""
  z = jnp.zeros((1, height, width, 3), jnp.float32)
  return jax.eval_shape(LPIPS().init, jax.random.key(0), z, z)


def load_lpips_weights(path: str | os.PathLike) -> dict[str, Any]:
  """Reads LPIPS / AlexNet variables from an spg_jax weights file.

  Args:
    path: `.npz` written by `python -m spg_jax.convert lpips ...`.

  Returns:
    The variables for `lpips_distance` (float32 numpy arrays).

  Raises:
    FileNotFoundError: `path` does not exist; the message says what the file holds and how to make it.
    ValueError: the file is not an LPIPS weights file or its arrays do not fit the network.
  """
  # Imported here so that importing this module stays light (and torch-free, like all of these).
  from spg_jax.convert.state_dict import check_against_template  # pylint: disable=import-outside-toplevel
  from spg_jax.weights import load_network_weights  # pylint: disable=import-outside-toplevel

  path = os.fspath(path)
  variables, _ = load_network_weights(
      path, NETWORK_NAME,
      f"LPIPS weights file not found: {path}. It should hold the LPIPS v0.1 AlexNet variables: "
      "torchvision's ImageNet AlexNet features (alexnet-owt-7be5be79.pth, from "
      "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth) and the linear heads "
      "lpips/weights/v0.1/alex.pth from the PyPI `lpips` wheel. Make it with:\n  "
      f"{CONVERT_COMMAND}\n(with --output {path} to write it here).", CONVERT_COMMAND)
  return check_against_template(variables, lpips_template(), path)
