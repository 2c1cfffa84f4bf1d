"""SEAN region-adaptive normalisation and the style encoder that feeds it.

`StyleEncoder` (the official "Zencoder") turns the source image into a style feature map at half
resolution; region average pooling over the source parsing gives one 128-d code per CIHP class.
`SEANNorm` (the official "ACE") normalises an activation with a parameter-free BatchNorm and
modulates it by a blend of (a) convolutions of the per-region style codes painted onto the target
parsing and (b) SPADE convolutions of the target parsing itself.

Shapes: activations (B, H, W, C); parsing maps (B, H_s, W_s, 20) one-hot at any resolution that
is an integer multiple of the activation's (they are nearest-resized); style codes (B, 20, 128).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from spg_jax.models.layers import BatchNorm, ConvTranspose2d, conv2d, kaiming_normal, reflect_pad
from spg_jax.ops import normalization as norm_ops
from spg_jax.ops.region import broadcast_region_codes, region_average_pool, region_code_conv
from spg_jax.ops.resample import nearest_resize
from spg_jax.ops.sean import sean_modulation

Dtype = Any

NUM_CLASSES = 20
STYLE_DIM = 128
SPADE_HIDDEN = 64
STYLE_CONVS = ("direct", "per_sample")


class StyleEncoder(nn.Module):
  """SEAN's `Zencoder(3, 128, ngf=32, n_downsampling=2)` plus region average pooling.

  Layers: reflect-pad 1 · conv3×3 3→32 · IN · LReLU(0.2) · conv3×3 s2 32→64 · IN · LReLU ·
  conv3×3 s2 64→128 · IN · LReLU · convT3×3 s2 p1 op1 128→256 · IN · LReLU · reflect-pad 1 ·
  conv3×3 256→128 · tanh. Instance norms have no affine parameters.

  Input: image (B, H, W, 3) in [−1, 1] and its parsing (B, H, W, 20) one-hot.
  Output: style codes (B, 20, 128) float32; a class absent from the parsing gets a zero code.
  """

  ngf: int = 32
  style_dim: int = STYLE_DIM
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, segmap: jax.Array) -> jax.Array:
    act = lambda t: nn.leaky_relu(norm_ops.instance_norm(t), 0.2)
    x = act(conv2d(self.ngf, 3, dtype=self.dtype, name="conv_0")(reflect_pad(image, 1)))
    x = act(conv2d(self.ngf * 2, 3, stride=2, padding=1, dtype=self.dtype, name="conv_1")(x))
    x = act(conv2d(self.ngf * 4, 3, stride=2, padding=1, dtype=self.dtype, name="conv_2")(x))
    x = act(ConvTranspose2d(self.ngf * 8, 3, 2, 1, 1, dtype=self.dtype, name="deconv_3")(x))
    x = jnp.tanh(conv2d(self.style_dim, 3, dtype=self.dtype, name="conv_4")(reflect_pad(x, 1)))
    seg = nearest_resize(segmap, x.shape[1:3])
    return region_average_pool(x, seg)


class ConvParams(nn.Module):
  """The kernel (k, k, in, out) and bias (out,) of a `conv2d`, declared but not applied.

  Same names, shapes, initialisers and RNG order as `conv2d(out, k, name=...)`, so checkpoints and
  converted weights are unchanged, while the caller may apply several kernels as one convolution.
  """

  in_features: int
  features: int
  kernel_size: int

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    k = self.kernel_size
    kernel = self.param("kernel", kaiming_normal, (k, k, self.in_features, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return kernel, bias


def _conv_same(x: jax.Array, kernel: jax.Array, bias: jax.Array, dtype: Dtype) -> jax.Array:
  pad = kernel.shape[0] // 2
  y = jax.lax.conv_general_dilated(x.astype(dtype), kernel.astype(dtype), (1, 1), ((pad, pad), (pad, pad)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y + bias.astype(dtype)


class SEANNorm(nn.Module):
  """The official `ACE` layer: noise, parameter-free BatchNorm, blended style/SPADE modulation.

  Steps (x: (B, H, W, C)):
    1. x + r · noise_var, with r one (B, H, W, 1) standard-normal map per sample shared by all
       channels and `noise_var` a learned (C,) scale (zero at initialisation).
    2. x̂ = BatchNorm without affine parameters (batch statistics when training).
    3. P = nearest-resized target parsing; μ_j = ReLU(fc_j(S_j)) for each class j, the 20 per-class
       linear layers applied in one einsum; M = Σ_j P_j μ_j (per-region style broadcast).
    4. γ_s, β_s = conv_k(M); a = ReLU(conv_k(P)); γ_p, β_p = conv_k(a) (SPADE).
    5. `sean_modulation` blends the two with learned sigmoid weights.

  Computation: each γ/β pair that shares an input is one convolution with the two kernels
  concatenated (three convolutions instead of five). `style_conv` chooses how conv_k(M) runs, the
  same function either way: 'direct' paints M (B, H, W, 128) and convolves it; 'per_sample'
  convolves P itself with per-sample kernels (`region_code_conv`: 20 input channels instead of
  128, half the generator's FLOPs, but a grouped convolution, which compiled and ran far slower
  on an H100 with cuDNN; see BENCHMARKS.md). The parameters keep the official layout
  (`conv_gamma`, `conv_beta`, `spade_shared`, `spade_gamma`, `spade_beta`).

  Noise: pass `noise` (B, H, W, 1) to feed a specific map (parity tests, reproducible sampling);
  otherwise, with `deterministic=True` no noise is added, and with `deterministic=False` a map is
  drawn from the `noise` RNG stream. The official code always draws, at test time too.
  """

  features: int
  kernel_size: int = 3
  num_classes: int = NUM_CLASSES
  style_dim: int = STYLE_DIM
  spade_hidden: int = SPADE_HIDDEN
  style_conv: str = "direct"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      segmap: jax.Array,
      style_codes: jax.Array,
      *,
      train: bool,
      noise: jax.Array | None = None,
      deterministic: bool = False,
  ) -> jax.Array:
    b, h, w, c = x.shape
    if c != self.features:
      raise ValueError(f"{self.name}: expected {self.features} channels, got {c}")
    k, pad = self.kernel_size, self.kernel_size // 2
    noise_var = self.param("noise_var", nn.initializers.zeros, (c,), jnp.float32)
    blending_gamma = self.param("blending_gamma", nn.initializers.zeros, (1,), jnp.float32)
    blending_beta = self.param("blending_beta", nn.initializers.zeros, (1,), jnp.float32)
    fc_kernel = self.param(
        "fc_mu_kernel", nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=1, out_axis=2, batch_axis=(0,)),
        (self.num_classes, self.style_dim, self.style_dim), jnp.float32)
    fc_bias = self.param("fc_mu_bias", nn.initializers.zeros, (self.num_classes, self.style_dim), jnp.float32)

    if noise is None and not deterministic:
      noise = jax.random.normal(self.make_rng("noise"), (b, h, w, 1), jnp.float32)
    x = x.astype(jnp.float32)
    if noise is not None:
      if noise.shape != (b, h, w, 1):
        raise ValueError(f"{self.name}: noise shape {noise.shape}, expected {(b, h, w, 1)}")
      x = x + noise.astype(jnp.float32) * noise_var
    x_hat = BatchNorm(affine=False, name="param_free_norm")(x, train)

    seg = nearest_resize(segmap, (h, w)).astype(self.dtype)
    mu = jnp.einsum("bjd,jde->bje", style_codes.astype(jnp.float32), fc_kernel) + fc_bias
    mu = nn.relu(mu)
    params = lambda name, cin: ConvParams(cin, c, k, name=name)()
    (k_gs, b_gs), (k_bs, b_bs) = params("conv_gamma", self.style_dim), params("conv_beta", self.style_dim)
    style_kernel, style_bias = jnp.concatenate([k_gs, k_bs], -1), jnp.concatenate([b_gs, b_bs])
    if self.style_conv == "direct":
      style = _conv_same(broadcast_region_codes(seg, mu.astype(self.dtype)), style_kernel, style_bias, self.dtype)
    elif self.style_conv == "per_sample":
      style = region_code_conv(seg, mu, style_kernel, pad) + style_bias.astype(self.dtype)
    else:
      raise ValueError(f"{self.name}: style_conv must be one of {STYLE_CONVS}, got {self.style_conv!r}")
    actv = nn.relu(conv2d(self.spade_hidden, k, padding=pad, dtype=self.dtype, name="spade_shared")(seg))
    (k_gp, b_gp), (k_bp, b_bp) = params("spade_gamma", self.spade_hidden), params("spade_beta", self.spade_hidden)
    spade = _conv_same(actv, jnp.concatenate([k_gp, k_bp], -1), jnp.concatenate([b_gp, b_bp]), self.dtype)
    gamma_style, beta_style = jnp.split(style, 2, axis=-1)
    gamma_spade, beta_spade = jnp.split(spade, 2, axis=-1)
    out = sean_modulation(
        x_hat,
        gamma_style.astype(jnp.float32),
        beta_style.astype(jnp.float32),
        gamma_spade.astype(jnp.float32),
        beta_spade.astype(jnp.float32),
        blending_gamma,
        blending_beta,
    )
    return out.astype(self.dtype)
