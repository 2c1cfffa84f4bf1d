"""The stage-2 SPGNet generator (official `DualUnetGenerator_SEAN`), both released variants.

Inputs (NHWC, batch B, image size H × W):
  target_pose   (B, H, W, 18)  target keypoint maps (binary discs).
  source_image  (B, H, W, 3)   source person image in [−1, 1].
  source_parsing (B, H, W, 20) one-hot source parsing (feeds the style codes).
  target_parsing (B, H, W, 20) one-hot target parsing (ground truth in training, stage-1 prediction
                               at inference); every SEAN layer is modulated by it.
  flow          (B, H, W, 2)   target→source flow in pixels (channel 0 = x), already ×20 and zeroed
                               on background, as `flow_and_visibility` returns it.
  visibility    (B, H, W, 1)   0 visible / 1 invisible / 2 background (any real dtype).
Output: (B, H, W, 3) raw image before tanh (the official code applies tanh outside the network).

Architecture (L = `num_scales` levels; c_in(l) = min(nf·(l+1), max_nf), c_out(l) = min(nf·(l+2), max_nf)):
  * Pose and appearance encoders: 1×1 conv + BN, then per level two pre-activation residual blocks
    (x + BN(conv3×3(ReLU x))) and a stride-2 conv3×3 + BN downsample. Each residual block's output
    is a skip. For l < `num_warp_scales` the appearance skips are warped by the flow pooled to that
    level and refined by a visibility residual block (the Feature Deformation Module).
  * Bottleneck 1×1 conv + BN fuses both encoders.
  * Decoder, l = L−1 … 0: upsample = ReLU · conv3×3 (c_out → 4 c_in) · PixelShuffle(2), with SEAN
    before it and BN after it (DeepFashion) or SEAN after it and no BN (Market-1501); then two SPG
    blocks (`SPGBlock`) fed the concatenated pose/appearance skips of that level.
  * Head: reflect-pad 3 · conv7×7 → 3.

The two official files differ only in the upsample step and the SEAN kernel (5 on DeepFashion, 3 on
Market); `GeneratorConfig.deepfashion()` and `.market()` give the released sizes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from spg_jax.models.layers import BatchNorm, ConvBN, SpectralNormConv2d, conv2d, reflect_pad
from spg_jax.models.sean import SPADE_HIDDEN, STYLE_CONVS, STYLE_DIM, SEANNorm, StyleEncoder
from spg_jax.ops.resample import pixel_shuffle, pool_flow, pool_visibility
from spg_jax.ops.warp import warp_by_flow

Dtype = Any
NoiseMaps = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
  """Sizes of the stage-2 generator.

  Attributes:
    variant: 'deepfashion' (SEAN before the upsample, BN after it) or 'market' (SEAN after it).
    nf, max_nf: channel base and cap.
    num_scales: encoder/decoder levels L (resolution H / 2**L at the bottleneck).
    num_warp_scales: levels whose appearance skips are warped.
    sean_kernel: kernel size of the SEAN convolutions (5 DeepFashion, 3 Market).
    num_classes: parsing classes (20, CIHP).
    style_dim: length of the per-region style codes (official 128).
    sean_hidden: channels of SEAN's parsing branch (official 64).
    sean_style_conv: how SEAN convolves the painted style codes, 'direct' or 'per_sample' (the same
      function; see `SEANNorm`). Not a property of the weights.
  """

  variant: str = "deepfashion"
  nf: int = 32
  max_nf: int = 128
  num_scales: int = 7
  num_warp_scales: int = 5
  sean_kernel: int = 5
  num_classes: int = 20
  style_dim: int = STYLE_DIM
  sean_hidden: int = SPADE_HIDDEN
  sean_style_conv: str = "direct"

  def __post_init__(self):
    if self.sean_style_conv not in STYLE_CONVS:
      raise ValueError(f"GeneratorConfig.sean_style_conv must be one of {STYLE_CONVS}, got {self.sean_style_conv!r}")
    if self.variant not in ("deepfashion", "market"):
      raise ValueError(f"GeneratorConfig.variant must be 'deepfashion' or 'market', got {self.variant!r}")
    if not 0 <= self.num_warp_scales <= self.num_scales:
      raise ValueError(f"num_warp_scales={self.num_warp_scales} must be in [0, num_scales={self.num_scales}]")

  @classmethod
  def deepfashion(cls, **overrides) -> "GeneratorConfig":
    return cls(**{"variant": "deepfashion", "num_scales": 7, "num_warp_scales": 5, "sean_kernel": 5, **overrides})

  @classmethod
  def market(cls, **overrides) -> "GeneratorConfig":
    return cls(**{"variant": "market", "num_scales": 5, "num_warp_scales": 4, "sean_kernel": 3, **overrides})

  def channels(self, level: int) -> tuple[int, int]:
    """(c_in, c_out) of an encoder level."""
    return min(self.nf * (level + 1), self.max_nf), min(self.nf * (level + 2), self.max_nf)


class VisibilityResidualBlock(nn.Module):
  """Refines a warped feature w with its visibility (Intr-Flow `ResidualBlock(dim=C, dim_a=2C)`).

  e = cat(w·[vis = 0], w·[vis = 1]) (background dropped); a = BN(conv1×1(ReLU e));
  w + BN(conv3×3(ReLU cat(w, a))).
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, w: jax.Array, vis: jax.Array, train: bool) -> jax.Array:
    c = w.shape[-1]
    expanded = jnp.concatenate([w * (vis == 0).astype(w.dtype), w * (vis == 1).astype(w.dtype)], axis=-1)
    a = ConvBN(c, 1, pre_relu=True, dtype=self.dtype, name="conv_a")(expanded, train)
    return w + ConvBN(c, 3, pre_relu=True, dtype=self.dtype, name="conv")(jnp.concatenate([w, a], axis=-1), train)


class SPGBlock(nn.Module):
  """Decoder residual block with SEAN (official `ResidualBlock_SEAN`, supplementary Table C).

  skip s = cat(pose skip, warped appearance skip) (2C channels);
  a = SNconv1×1(ReLU(SEAN(s))); x + SNconv3×3(ReLU(SEAN(cat(x, a)))). Spectral-normalised convs,
  no bias, no BatchNorm.
  """

  sean_kernel: int
  style_dim: int = STYLE_DIM
  sean_hidden: int = SPADE_HIDDEN
  style_conv: str = "direct"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, skip, segmap, style_codes, *, train, noise_a=None, noise=None, deterministic=False):
    c = x.shape[-1]
    sean = lambda name: SEANNorm(skip.shape[-1], self.sean_kernel, style_dim=self.style_dim,
                                 spade_hidden=self.sean_hidden, style_conv=self.style_conv, dtype=self.dtype,
                                 name=name)
    a = sean("conv_a_norm")(skip, segmap, style_codes, train=train, noise=noise_a, deterministic=deterministic)
    a = SpectralNormConv2d(c, 1, dtype=self.dtype, name="conv_a")(nn.relu(a), train)
    h = jnp.concatenate([x, a.astype(x.dtype)], axis=-1)
    h = sean("conv_norm")(h, segmap, style_codes, train=train, noise=noise, deterministic=deterministic)
    return x + SpectralNormConv2d(c, 3, padding=1, dtype=self.dtype, name="conv")(nn.relu(h), train).astype(x.dtype)


def sean_layer_names(config: GeneratorConfig) -> list[str]:
  """Names of the generator's SEAN layers in the order they run (the official noise call order)."""
  names = []
  for level in reversed(range(config.num_scales)):
    names.append(f"dec_{level}_upsample_norm")
    for i in reversed(range(2)):
      names += [f"dec_{level}_res_{i}.conv_a_norm", f"dec_{level}_res_{i}.conv_norm"]
  return names


class SPGNetGenerator(nn.Module):
  """Stage-2 generator; see the module docstring for inputs, outputs and architecture.

  Call with `train` (batch statistics and a spectral-norm power iteration; apply with
  `mutable=['batch_stats']`), and either `noise` (a dict from the names of `sean_layer_names` to
  (B, H_l, W_l, 1) maps), `deterministic=True` (no SEAN noise) or an RNG stream named `noise`.
  `return_features=True` also returns a dict of intermediate features for inspection.
  `style_codes` (B, 20, style_dim), e.g. from `encode_style` with some regions' codes taken from
  other images, replaces the codes the style encoder would compute from the source (region-wise
  style control); the source image still feeds the appearance encoder.
  """

  config: GeneratorConfig = GeneratorConfig()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
      self,
      target_pose: jax.Array,
      source_image: jax.Array,
      source_parsing: jax.Array,
      target_parsing: jax.Array,
      flow: jax.Array,
      visibility: jax.Array,
      *,
      train: bool,
      noise: NoiseMaps | None = None,
      deterministic: bool = False,
      return_features: bool = False,
      style_codes: jax.Array | None = None,
  ):
    cfg = self.config
    b, h, w, _ = source_image.shape
    if h % (2 ** cfg.num_scales) or w % (2 ** cfg.num_scales):
      raise ValueError(f"image size {h}x{w} must be divisible by 2**num_scales = {2 ** cfg.num_scales}")
    for name, arr, ch in (("target_pose", target_pose, None), ("source_parsing", source_parsing, cfg.num_classes),
                          ("target_parsing", target_parsing, cfg.num_classes), ("flow", flow, 2),
                          ("visibility", visibility, 1)):
      if arr.shape[:3] != (b, h, w) or (ch is not None and arr.shape[3] != ch):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({b}, {h}, {w}, {ch or 'C'})")
    features = {}

    def noise_for(layer: str):
      if noise is None:
        return None
      if layer not in noise:
        raise KeyError(f"noise maps given but none for SEAN layer {layer!r}")
      return noise[layer]

    encoder = StyleEncoder(style_dim=cfg.style_dim, dtype=self.dtype, name="style_encoder")
    if style_codes is None:
      style_codes = encoder(source_image, source_parsing)
    elif style_codes.shape != (b, cfg.num_classes, cfg.style_dim):
      raise ValueError(f"style_codes has shape {style_codes.shape}, expected ({b}, {cfg.num_classes}, "
                       f"{cfg.style_dim})")
    sean_sizes = dict(style_dim=cfg.style_dim, spade_hidden=cfg.sean_hidden, style_conv=cfg.sean_style_conv)
    features["style_codes"] = style_codes

    # Encoders. Skips are kept per (level, block) for the decoder.
    dt = self.dtype
    x_p = ConvBN(cfg.nf, 1, dtype=dt, name="encp_pre_conv")(target_pose.astype(dt), train)
    x_a = ConvBN(cfg.nf, 1, dtype=dt, name="enca_pre_conv")(source_image.astype(dt), train)
    visibility = jnp.round(visibility.astype(jnp.float32))
    skips = {}
    for level in range(cfg.num_scales):
      c_in, c_out = cfg.channels(level)
      warped = level < cfg.num_warp_scales
      if warped:
        flow_l = pool_flow(flow.astype(jnp.float32), 2 ** level)
        vis_l = pool_visibility(visibility, 2 ** level)
      for i in range(2):
        x_p = x_p + ConvBN(c_in, 3, pre_relu=True, dtype=dt, name=f"encp_{level}_res_{i}")(x_p, train)
        x_a = x_a + ConvBN(c_in, 3, pre_relu=True, dtype=dt, name=f"enca_{level}_res_{i}")(x_a, train)
        skip_a = x_a
        if warped:
          skip_a = warp_by_flow(x_a, flow_l)
          skip_a = VisibilityResidualBlock(dtype=dt, name=f"enca_{level}_vis_{i}")(skip_a, vis_l, train)
          features[f"enca_{level}_vis_{i}"] = skip_a
        skips[level, i] = jnp.concatenate([x_p, skip_a], axis=-1)
      x_p = ConvBN(c_out, 3, stride=2, pre_relu=True, dtype=dt, name=f"encp_{level}_downsample")(x_p, train)
      x_a = ConvBN(c_out, 3, stride=2, pre_relu=True, dtype=dt, name=f"enca_{level}_downsample")(x_a, train)

    c_bottleneck = cfg.channels(cfg.num_scales - 1)[1]
    x = ConvBN(c_bottleneck, 1, dtype=dt, name="dec_fuse")(jnp.concatenate([x_p, x_a], -1), train)
    features["dec_fuse"] = x

    # Decoder.
    sean_kw = dict(train=train, deterministic=deterministic)
    for level in reversed(range(cfg.num_scales)):
      c_in, c_out = cfg.channels(level)
      up_name = f"dec_{level}_upsample_norm"
      if cfg.variant == "deepfashion":
        x = SEANNorm(c_out, cfg.sean_kernel, **sean_sizes, dtype=dt, name=up_name)(
            x, target_parsing, style_codes, noise=noise_for(up_name), **sean_kw)
      x = conv2d(4 * c_in, 3, padding=1, use_bias=False, dtype=dt, name=f"dec_{level}_upsample")(nn.relu(x))
      x = pixel_shuffle(x, 2)
      if cfg.variant == "deepfashion":
        x = BatchNorm(dtype=dt, name=f"dec_{level}_upsample_bn")(x, train)
      else:
        x = SEANNorm(c_in, cfg.sean_kernel, **sean_sizes, dtype=dt, name=up_name)(
            x, target_parsing, style_codes, noise=noise_for(up_name), **sean_kw)
      for i in reversed(range(2)):
        block = f"dec_{level}_res_{i}"
        x = SPGBlock(cfg.sean_kernel, cfg.style_dim, cfg.sean_hidden, cfg.sean_style_conv, dtype=dt, name=block)(
            x, skips[level, i], target_parsing, style_codes,
            noise_a=noise_for(f"{block}.conv_a_norm"), noise=noise_for(f"{block}.conv_norm"), **sean_kw)

    out = conv2d(3, 7, dtype=dt, name="dec_output")(reflect_pad(x, 3)).astype(jnp.float32)
    return (out, features) if return_features else out


def encode_style(config: GeneratorConfig, variables: Mapping[str, Any], image: jax.Array,
                 parsing: jax.Array, dtype: Dtype = jnp.float32) -> jax.Array:
  """Per-region style codes (B, 20, style_dim) float32 of `image` (B, H, W, 3) in [−1, 1] with its
  one-hot `parsing` (B, H, W, 20), by the style encoder inside the generator's `variables`."""
  encoder = StyleEncoder(style_dim=config.style_dim, dtype=dtype)
  return encoder.apply({"params": variables["params"]["style_encoder"]}, image, parsing)


def dummy_inputs(config: GeneratorConfig, batch: int, height: int, width: int) -> dict[str, jax.Array]:
  """All-zero generator inputs of the given size (for initialisation and shape inference)."""
  z = lambda c: jnp.zeros((batch, height, width, c), jnp.float32)
  return dict(target_pose=z(18), source_image=z(3), source_parsing=z(config.num_classes),
              target_parsing=z(config.num_classes), flow=z(2), visibility=z(1))


def init_variables(model: SPGNetGenerator, rng: jax.Array, bhw: tuple[int, int, int]) -> dict[str, Any]:
  """Randomly initialised variables of `model` for inputs of (batch, height, width)."""
  return model.init({"params": rng}, **dummy_inputs(model.config, *bhw), train=False, deterministic=True)
