"""VGG19 features up to relu5_1 and the perceptual (content) loss of the official `VGGLoss`.

`VGG19Features` is torchvision's `vgg19().features[0:30]` (the ImageNet classifier weights
`vgg19-dcbb9e9d.pth`, converted by `spg_jax.convert.vgg`), frozen during training:

  torchvision index  layer                     output (input H × W)
  0, 2               conv3×3 64, 64            relu1_1 = ReLU after conv 0         (H,    W,    64)
  4                  max-pool 2×2 s2
  5, 7               conv3×3 128, 128          relu2_1 = ReLU after conv 5         (H/2,  W/2,  128)
  9                  max-pool
  10, 12, 14, 16     conv3×3 256 ×4            relu3_1 = ReLU after conv 10        (H/4,  W/4,  256)
  18                 max-pool
  19, 21, 23, 25     conv3×3 512 ×4            relu4_1 = ReLU after conv 19        (H/8,  W/8,  512)
  27                 max-pool
  28                 conv3×3 512               relu5_1 = ReLU after conv 28        (H/16, W/16, 512)

Every conv is 3×3, stride 1, zero padding 1, with bias, followed by ReLU; the official slices are
relu1_1 = features[0:2], relu2_1 = [2:7], relu3_1 = [7:12], relu4_1 = [12:21], relu5_1 = [21:30].
Conv submodules are named `conv_<torchvision index>`, so `features.<i>.weight` maps onto `conv_<i>`.
The last three convs (30, 32, 34) and the classifier are never evaluated and have no parameters here.

Input: NHWC images in [−1, 1] (the package convention), mapped to [0, 1] and normalised with the
ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), as the official loss does before
calling VGG. Max-pooling floors odd sizes, like PyTorch's default.

`perceptual_loss` is the official `balance` content loss: Σ_i w_i · mean |φ_i(a) − φ_i(b)| with
w_i = 0.125 for the five layers (the official `VGGLoss` in its 'balance' mode).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from spg_jax.models.layers import conv2d

Dtype = Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYER_NAMES = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
BALANCE_WEIGHTS = (0.125,) * 5

# torchvision `vgg19().features` up to relu5_1: (index, out channels) for convs, (index, 'M') for
# max-pools, and the index after which each returned activation is taken (its ReLU's index).
_PLAN: tuple[tuple[int, Any], ...] = (
    (0, 64), (2, 64), (4, "M"),
    (5, 128), (7, 128), (9, "M"),
    (10, 256), (12, 256), (14, 256), (16, 256), (18, "M"),
    (19, 512), (21, 512), (23, 512), (25, 512), (27, "M"),
    (28, 512),
)
_TAPS = (0, 5, 10, 19, 28)  # convs whose ReLU output is relu1_1 … relu5_1
CONV_INDICES: tuple[int, ...] = tuple(i for i, c in _PLAN if c != "M")


def imagenet_normalize(images: jax.Array) -> jax.Array:
  """[−1, 1] images -> ImageNet-normalised ((x + 1) / 2 − mean) / std, per RGB channel, float32."""
  x = (images.astype(jnp.float32) + 1.0) * 0.5
  return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


class VGG19Features(nn.Module):
  """VGG19 activations relu1_1 … relu5_1 of an image in [−1, 1].

  Attributes:
    dtype: compute dtype of the convolutions (parameters stay float32).
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    """Runs features[0:30] and returns its five taps.

    Args:
      images: (B, H, W, 3) RGB in [−1, 1].
      train: unused (VGG has no batch statistics); accepted for a uniform module interface.

    Returns:
      Five arrays (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1) of shapes (B, H/2^k, W/2^k, C_k),
      C = 64, 128, 256, 512, 512, in `dtype`.
    """
    del train
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"VGG19Features: expected (B, H, W, 3) RGB images, got shape {images.shape}")
    x = imagenet_normalize(images).astype(self.dtype)
    taps = []
    for index, channels in _PLAN:
      if channels == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        continue
      x = nn.relu(conv2d(channels, 3, padding=1, use_bias=True, dtype=self.dtype, name=f"conv_{index}")(x))
      if index in _TAPS:
        taps.append(x)
    return tuple(taps)


def perceptual_loss(
    features_a: Sequence[jax.Array],
    features_b: Sequence[jax.Array],
    weights: Sequence[float] = BALANCE_WEIGHTS,
) -> jax.Array:
  """Σ_i w_i · mean |a_i − b_i| over the feature lists (official `VGGLoss`, `balance` mode).

  The official loss detaches the real image's features; pass those as `features_b` computed outside
  the differentiated function (or wrap them in `jax.lax.stop_gradient`) to get the same gradients.

  Args:
    features_a, features_b: matching sequences of feature maps (e.g. `VGG19Features` outputs for the
      generated and the real image).
    weights: one weight per layer (default 0.125 each).

  Returns:
    Scalar float32 loss.
  """
  if not len(features_a) == len(features_b) == len(weights):
    raise ValueError(f"perceptual_loss: got {len(features_a)} and {len(features_b)} feature maps "
                     f"and {len(weights)} weights; they must match")
  total = jnp.zeros((), jnp.float32)
  for a, b, w in zip(features_a, features_b, weights):
    if a.shape != b.shape:
      raise ValueError(f"perceptual_loss: feature shapes differ: {a.shape} vs {b.shape}")
    total = total + w * jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))
  return total
