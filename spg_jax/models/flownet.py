"""The Intr-Flow flow / visibility network (`networks.FlowUnet`) that SPGNet runs, frozen, on two poses.

Input: (B, H, W, 36) NHWC keypoint maps, channels 0-17 the source joints and 18-35 the target joints
(binary discs in {0, 1}). H and W must be divisible by 2**(num_scales + 1) (64 for the released net).

Outputs (`FlowOutput`), all float32:
  flow          (B, H, W, 2)  target->source flow at input resolution, channel 0 = x (along W), channel
                              1 = y (along H), in units of 20 pixels: the network is trained on flow / 20
                              and this is **not** multiplied back (see `flow_and_visibility`).
  vis_logits    (B, H, W, 3)  unnormalised scores of visible (0) / invisible (1) / background (2).
  flow_pyramid  tuple of (B, H/2**(k+1), W/2**(k+1), 2), k = 0 (outermost block) first: each block's
                              own flow prediction, raw network output like `flow` (no per-level
                              rescaling); `flow` is entry 0 upsampled x2.
  feature       (B, H/2, W/2, 2·nf)  the outermost block's up-branch output (input of the vis head).

Architecture (nf = 32, max_nf = 512, num_scales = 5 for the released DeepFashion net):
  * stem (`conv_downsample`): conv7x7 (no bias) · BN · LeakyReLU(0.1) · conv3x3 s2 (no bias) · BN ·
    LeakyReLU(0.1), to 2·nf channels at H/2.
  * `num_scales` nested pix2pix U-Net skip blocks. Block k (0 = outermost) maps outer(k) channels at
    H/2**(k+1) to inner(k) channels at H/2**(k+2) and back, outer(k) = min(2·nf·2**k, max_nf),
    inner(k) = min(2·nf·2**(k+1), max_nf): (64,128), (128,256), (256,512), (512,512), (512,512).
      down: outermost [conv4x4 s2, BN]; middle [LeakyReLU(0.2), conv4x4 s2, BN];
            innermost [LeakyReLU(0.2), conv4x4 s2] (no BN). Down convs have no bias.
      up:   [ReLU, ConvTranspose4x4 s2 p1, BN]; the transposed conv has a bias only in the outermost
            block; its input is the inner block's concatenation (2·inner channels) or, innermost, the
            down output (inner channels).
      skip: a non-outermost block returns cat(LeakyReLU_0.2(x), up) — see `_FlowUnetBlock`.
      flow head on every block's up output (before the concatenation): LeakyReLU(0.1) · conv3x3 -> 2.
  * vis head on the outermost up output: LeakyReLU(0.1) · conv3x3 -> 3.
  * The outermost flow and the vis logits are upsampled x2, bilinear, align_corners=False.

Submodules are named after the official state_dict (`unet_block/submodule/.../down_conv`), so the
converter in `spg_jax.convert.flownet` is a direct mapping. BatchNorm statistics live in `batch_stats`.
The heads always run in float32 (they are tiny) so that the arg-max of the visibility logits and the
×20 flow do not inherit bfloat16 rounding when `dtype` is bfloat16.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from spg_jax.models.layers import BatchNorm, ConvTranspose2d, conv2d
from spg_jax.ops.resample import bilinear_upsample

Dtype = Any

# The network regresses flow / FLOW_SCALE; Intr-Flow's FlowRegressionModel and SPGNet multiply by it.
FLOW_SCALE = 20.0
BACKGROUND = 2  # visibility class of background pixels, whose flow SPGNet zeroes


@flax.struct.dataclass
class FlowOutput:
  """What `FlowUnet` returns (official `(flow_out, vis_out, flow_pyr, feat_out)`), NHWC float32."""

  flow: jax.Array
  vis_logits: jax.Array
  flow_pyramid: tuple[jax.Array, ...]
  feature: jax.Array


def _lrelu(x: jax.Array, slope: float) -> jax.Array:
  return jax.nn.leaky_relu(x, negative_slope=slope)


class _FlowHead(nn.Module):
  """LeakyReLU(0.1) · conv3x3 (with bias) in float32: the official `predict_flow` / `predict_vis`."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return conv2d(self.features, 3, padding=1, use_bias=True, name="conv")(_lrelu(x.astype(jnp.float32), 0.1))


class _FlowUnetBlock(nn.Module):
  """One official `FlowUnetSkipConnectionBlock`, with its inner blocks nested under `submodule`.

  Returns (x_out, flow_pyramid): x_out is the up output for the outermost block and
  cat(LeakyReLU_0.2(x), up) otherwise. The official down path starts with `nn.LeakyReLU(0.2, True)`,
  which runs in place on `x`, so the tensor it later concatenates as the skip is the activated one
  (the classic pix2pix behaviour); the outermost block has no such activation and no skip. We keep
  that form, although it cannot change any output or gradient: x_out is only ever read by the
  parent's up path, which starts with a ReLU, and ReLU(LeakyReLU(x)) = ReLU(x).
  """

  level: int
  num_scales: int
  nf: int  # channels after the stem (2 · the constructor's nf)
  max_nf: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    outermost = self.level == 0
    innermost = self.level == self.num_scales - 1
    outer = min(self.max_nf, self.nf * 2**self.level)
    inner = min(self.max_nf, self.nf * 2 ** (self.level + 1))
    if x.shape[-1] != outer:
      raise ValueError(f"FlowUnet block {self.level}: expected {outer} input channels, got {x.shape[-1]}")

    if not outermost:
      x = _lrelu(x, 0.2)  # in place in PyTorch: the skip below sees this activated tensor
    h = conv2d(inner, 4, stride=2, padding=1, use_bias=False, dtype=self.dtype, name="down_conv")(x)
    if not innermost:
      h = BatchNorm(dtype=self.dtype, name="down_norm")(h, train)
      h, pyramid = _FlowUnetBlock(self.level + 1, self.num_scales, self.nf, self.max_nf, self.dtype,
                                  name="submodule")(h, train)
    else:
      pyramid = ()
    h = nn.relu(h)
    h = ConvTranspose2d(outer, 4, 2, 1, use_bias=outermost, dtype=self.dtype, name="up_conv")(h)
    up = BatchNorm(dtype=self.dtype, name="up_norm")(h, train)
    flow = _FlowHead(2, name="predict_flow")(up)
    x_out = up if outermost else jnp.concatenate([x, up], axis=-1)
    return x_out, (flow,) + pyramid


class FlowUnet(nn.Module):
  """Intr-Flow `FlowUnet(input_nc, nf, start_scale=2, num_scale, norm='batch', max_nf)` in NHWC.

  Attributes:
    nf: channels of the first 7x7 conv; the U-Net works on 2·nf channels and up.
    max_nf: channel cap of the U-Net blocks (the official default 512; `FlowRegressionModel` never
      overrides it).
    num_scales: number of nested U-Net blocks (`num_scale` in the options).
    input_nc: input channels, 18 source + 18 target joints.
    dtype: compute dtype of the convolutions and BatchNorms; parameters, statistics and the heads
      stay float32.
  """

  nf: int = 32
  max_nf: int = 512
  num_scales: int = 5
  input_nc: int = 36
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> FlowOutput:
    """Flow and visibility logits for (B, H, W, input_nc) keypoint maps; see the module docstring."""
    if self.num_scales < 2:
      raise ValueError(f"FlowUnet needs num_scales >= 2 (an outermost and an innermost block), got {self.num_scales}")
    if x.shape[-1] != self.input_nc:
      raise ValueError(f"FlowUnet: expected {self.input_nc} input channels, got {x.shape[-1]}")
    div = 2 ** (self.num_scales + 1)
    if x.shape[1] % div or x.shape[2] % div:
      raise ValueError(f"FlowUnet: spatial size {x.shape[1:3]} not divisible by {div} (num_scales={self.num_scales})")

    h = x.astype(self.dtype)
    h = conv2d(self.nf, 7, padding=3, use_bias=False, dtype=self.dtype, name="stem_conv")(h)
    h = _lrelu(BatchNorm(dtype=self.dtype, name="stem_norm")(h, train), 0.1)
    h = conv2d(2 * self.nf, 3, stride=2, padding=1, use_bias=False, dtype=self.dtype, name="stem_down_conv")(h)
    h = _lrelu(BatchNorm(dtype=self.dtype, name="stem_down_norm")(h, train), 0.1)

    feature, pyramid = _FlowUnetBlock(0, self.num_scales, 2 * self.nf, self.max_nf, self.dtype, name="unet_block")(
        h, train)
    vis = _FlowHead(3, name="predict_vis")(feature)
    # The official forward upsamples by its hard-coded `self.start_scale = 2`, matching the one
    # stride-2 conv of the stem.
    return FlowOutput(
        flow=bilinear_upsample(pyramid[0], 2),
        vis_logits=bilinear_upsample(vis, 2),
        flow_pyramid=pyramid,
        feature=feature.astype(jnp.float32),
    )


def flow_and_visibility(flow: jax.Array, vis_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """What SPGNet feeds its generator: masked flow in pixels and hard visibility.

  Official `PoseTransferModel`: `vis = argmax(vis_logits)`, `flow = flow_out · 20 · (vis < 2)`.

  Args:
    flow: (B, H, W, 2) `FlowOutput.flow` (units of 20 pixels).
    vis_logits: (B, H, W, 3) `FlowOutput.vis_logits`.

  Returns:
    (flow_px, vis): flow_px (B, H, W, 2) float32 in pixels, zero where vis == 2 (background);
    vis (B, H, W, 1) float32 holding 0 visible / 1 invisible / 2 background (first maximum on ties,
    as `torch.argmax`).
  """
  vis = jnp.argmax(vis_logits, axis=-1)[..., None].astype(jnp.float32)
  flow_px = flow.astype(jnp.float32) * FLOW_SCALE * (vis < BACKGROUND).astype(jnp.float32)
  return flow_px, vis
