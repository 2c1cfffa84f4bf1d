"""The SPGNet discriminator: pix2pix `NLayerDiscriminator` (70x70 PatchGAN) with BatchNorm, NHWC.

Input: (B, H, W, 24) = cat(source image (3), real or generated target image (3), target joints (18));
images in [-1, 1], joints binary discs. Output: (B, h, w, 1) **logits**, one per overlapping patch;
with the released n_layers = 3, h = H/8 - 2 (a 256x256 input gives 30x30, 64x64 gives 6x6).

Layers (ndf = 64, n_layers = 3; every conv 4x4 with zero padding 1):
  conv s2 24->64 (bias) · LeakyReLU(0.2)
  conv s2 64->128 (no bias) · BN · LeakyReLU(0.2)
  conv s2 128->256 (no bias) · BN · LeakyReLU(0.2)
  conv s1 256->512 (no bias) · BN · LeakyReLU(0.2)      <- stride 1 from here on
  conv s1 512->1 (bias)
The official module ends with `nn.Sigmoid()` (`use_sigmoid=True`) and the losses apply
`F.binary_cross_entropy` to its probabilities. Here the sigmoid is left to the caller: a GAN loss
should use a logits-form BCE (e.g. `optax.sigmoid_binary_cross_entropy`), which equals
BCE(sigmoid(logits)) mathematically but stays exact and finite where the sigmoid rounds to 0 or 1
(PyTorch's BCE then clamps log(p) at -100 and its gradient vanishes). `jax.nn.sigmoid(logits)`
reproduces the official output.

Submodules are named after the official `model.<index>` positions (`conv_0`, `norm_3`, ...) so the
converter in `spg_jax.convert.discriminator` is a direct mapping. Running statistics live in
`batch_stats` and follow PyTorch (momentum 0.1, unbiased running variance).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from spg_jax.models.layers import BatchNorm, conv2d

Dtype = Any


def layer_indices(n_layers: int) -> tuple[list[int], list[int], int]:
  """Official `model.<i>` indices: (conv indices of the n_layers normalised convs, their BN indices, last conv).

  The sequence is conv, LReLU, then n_layers times [conv, BN, LReLU], then the output conv; the first
  conv is index 0.
  """
  convs = [3 * i - 1 for i in range(1, n_layers + 1)]
  return convs, [c + 1 for c in convs], 3 * n_layers + 2


class PatchDiscriminator(nn.Module):
  """Official `NLayerDiscriminator(input_nc, ndf, n_layers, BatchNorm2d, use_sigmoid, output_bias=True)`.

  Attributes:
    input_nc: input channels (3 + 3 + 18 in SPGNet).
    ndf: channels of the first conv; layer n has ndf·min(2**n, 8).
    n_layers: number of stride-2 convs (the last BN conv and the output conv are stride 1).
    dtype: compute dtype; parameters and BN statistics stay float32, logits are returned in float32.
  """

  input_nc: int = 24
  ndf: int = 64
  n_layers: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """(B, H, W, input_nc) -> (B, h, w, 1) patch logits (no sigmoid; see the module docstring)."""
    if x.shape[-1] != self.input_nc:
      raise ValueError(f"PatchDiscriminator: expected {self.input_nc} input channels, got {x.shape[-1]}")
    conv_idx, norm_idx, last_idx = layer_indices(self.n_layers)
    h = conv2d(self.ndf, 4, stride=2, padding=1, use_bias=True, dtype=self.dtype, name="conv_0")(x.astype(self.dtype))
    h = nn.leaky_relu(h, 0.2)
    for n in range(1, self.n_layers + 1):
      # The last normalised conv keeps the resolution (stride 1), as in pix2pix.
      stride = 2 if n < self.n_layers else 1
      features = self.ndf * min(2**n, 8)
      h = conv2d(features, 4, stride=stride, padding=1, use_bias=False, dtype=self.dtype,
                 name=f"conv_{conv_idx[n - 1]}")(h)
      h = BatchNorm(dtype=self.dtype, name=f"norm_{norm_idx[n - 1]}")(h, train)
      h = nn.leaky_relu(h, 0.2)
    logits = conv2d(1, 4, stride=1, padding=1, use_bias=True, dtype=self.dtype, name=f"conv_{last_idx}")(h)
    return logits.astype(jnp.float32)
