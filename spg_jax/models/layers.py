"""PyTorch-compatible Flax layers: convolutions, transposed convolutions, BatchNorm, spectral norm.

Everything is NHWC. Kernels are stored in Flax layout (kh, kw, in, out); the converter in
`spg_jax.convert` maps PyTorch's (out, in, kh, kw) onto it. Non-trainable state (BatchNorm running
statistics, spectral-norm vectors) lives in the `batch_stats` collection, as in Flax's own
BatchNorm and SpectralNorm; apply with `mutable=['batch_stats']` in training.

Initialisation follows the official `init_weights(net, 'kaiming')`: kaiming-normal kernels (fan-in,
gain √2), zero biases, BatchNorm scales from N(1, 0.02).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from spg_jax.ops import normalization as norm_ops
from spg_jax.ops import spectral

Dtype = Any

kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def bn_scale_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def conv2d(
    features: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    use_bias: bool = True,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
  """`nn.Conv2d` with symmetric zero padding `padding` (PyTorch semantics, NHWC, f32 parameters)."""
  return nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=kaiming_normal,
      name=name,
  )


class ConvTranspose2d(nn.Module):
  """`nn.ConvTranspose2d(k, stride, padding, output_padding)` in NHWC.

  Implemented as a correlation of the stride-dilated input with padding (k − 1 − p, k − 1 − p + op).
  The stored `kernel` (kh, kw, in, out) is the kernel of that correlation: PyTorch's (in, out, kh, kw)
  weight flipped in both spatial axes.
  """

  features: int
  kernel_size: int
  stride: int
  padding: int
  output_padding: int = 0
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", kaiming_normal, (k, k, x.shape[-1], self.features), jnp.float32)
    lo = k - 1 - self.padding
    hi = lo + self.output_padding
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype),
        kernel.astype(self.dtype),
        window_strides=(1, 1),
        padding=((lo, hi), (lo, hi)),
        lhs_dilation=(self.stride, self.stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class BatchNorm(nn.Module):
  """`nn.BatchNorm2d` (eps 1e-5, momentum 0.1) with PyTorch's running-variance rule.

  Training normalises with the biased batch variance and folds the *unbiased* variance into
  `var` (Flax's BatchNorm folds the biased one, which drifts from converted checkpoints when
  training continues). Statistics and normalisation are float32 whatever the compute dtype.
  `affine=False` gives the parameter-free BatchNorm inside SEAN.
  """

  affine: bool = True
  momentum: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    if train:
      mean, var, unbiased = norm_ops.batch_moments(x)
      if not self.is_initializing():
        ra_mean.value = norm_ops.ema_update(ra_mean.value, mean, self.momentum)
        ra_var.value = norm_ops.ema_update(ra_var.value, unbiased, self.momentum)
    else:
      mean, var = ra_mean.value, ra_var.value
    y = norm_ops.normalize(x, mean, var)
    if self.affine:
      scale = self.param("scale", bn_scale_init, (c,), jnp.float32)
      bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
      y = y * scale + bias
    return y.astype(self.dtype)


class ConvBN(nn.Module):
  """[ReLU] · [reflect pad] · conv (no bias) · BN · [ReLU], the unit of the encoders.

  `padding` is zero padding (default kernel_size // 2, or 0 when `reflect` pads instead).
  Parameters live under `conv` and `bn`.
  """

  features: int
  kernel_size: int
  stride: int = 1
  padding: int | None = None
  reflect: int = 0
  pre_relu: bool = False
  post_relu: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.pre_relu:
      x = nn.relu(x)
    if self.reflect:
      x = reflect_pad(x, self.reflect)
    padding = self.padding if self.padding is not None else (0 if self.reflect else self.kernel_size // 2)
    x = conv2d(self.features, self.kernel_size, self.stride, padding, use_bias=False, dtype=self.dtype,
               name="conv")(x)
    x = BatchNorm(dtype=self.dtype, name="bn")(x, train)
    return nn.relu(x) if self.post_relu else x


def _unit_normal(key: jax.Array, n: int) -> jax.Array:
  v = jax.random.normal(key, (n,), jnp.float32)
  return v / jnp.maximum(jnp.linalg.norm(v), spectral.SN_EPS)


class SpectralNormConv2d(nn.Module):
  """`spectral_norm(nn.Conv2d(..., bias=False))` with PyTorch's `u` and `v` buffers.

  `batch_stats/u` is (out,), `batch_stats/v` is (in·kh·kw,) in PyTorch's flattening order
  (in, kh, kw), so converted buffers drop in unchanged. Training runs `power_iterations` updates
  and stores them; evaluation uses the stored vectors as they are.
  """

  features: int
  kernel_size: int
  padding: int = 0
  power_iterations: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    k = self.kernel_size
    c_in = x.shape[-1]
    kernel = self.param("kernel", kaiming_normal, (k, k, c_in, self.features), jnp.float32)
    # PyTorch flattens (out, in, kh, kw) to (out, in·kh·kw).
    w_mat = kernel.transpose(3, 2, 0, 1).reshape(self.features, -1)
    u_var = self.variable("batch_stats", "u", lambda: _unit_normal(self.make_rng("params"), self.features))
    v_var = self.variable("batch_stats", "v", lambda: _unit_normal(self.make_rng("params"), c_in * k * k))
    u, v = u_var.value, v_var.value
    if train:
      u, v = spectral.power_iteration(w_mat, u, self.power_iterations)
      if not self.is_initializing():
        u_var.value, v_var.value = u, v
    sigma = spectral.spectral_sigma(w_mat, u, v)
    p = self.padding
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype),
        (kernel / sigma).astype(self.dtype),
        window_strides=(1, 1),
        padding=((p, p), (p, p)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """`nn.ReflectionPad2d(pad)` on the spatial axes of an NHWC array."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
