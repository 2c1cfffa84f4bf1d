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
import numpy as np

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


def _phase_taps(k: int, stride: int, lo: int) -> tuple[int, np.ndarray, np.ndarray]:
  """Sub-pixel decomposition of a correlation of the stride-dilated input (1-D, static).

  Output u = stride·q + r of `corr(dilate(x), K, pad_lo=lo)` reads x[q + d] through tap
  a = stride·d + lo − r whenever 0 ≤ a < k. Returns (d_min, taps, valid) with taps[j, r] = a for
  offset d = d_min + j (clipped into range where invalid) and valid[j, r] whether that tap exists.
  """
  ds = [(a + r - lo) // stride for r in range(stride) for a in range(k) if (a + r - lo) % stride == 0]
  d_min, d_max = min(ds), max(ds)
  d = np.arange(d_min, d_max + 1)[:, None]
  a = stride * d + lo - np.arange(stride)[None, :]
  valid = (a >= 0) & (a < k)
  return d_min, np.clip(a, 0, k - 1), valid


def conv_transpose_subpixel(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
                            output_padding: int) -> jax.Array:
  """`nn.ConvTranspose2d` as one stride-1 convolution with stride² phases, then depth-to-space.

  Equals `conv_general_dilated(x, kernel, padding=(k−1−p, k−1−p+op), lhs_dilation=stride)`,
  without the dilated input: each output phase (r_y, r_x) only meets every stride-th tap of the
  kernel, so the phases become the output channels of a small convolution (2 × 2 for k = 3 and 4,
  stride 2), whose forward and backward passes are ordinary convolutions. (XLA's GPU lowering of
  the input-dilated form and of its gradients runs at a small fraction of the ordinary one's speed.)

  Args:
    x: (B, H, W, C_in).
    kernel: (k, k, C_in, C_out), the correlation kernel (PyTorch's weight flipped, see
      `ConvTranspose2d`), in the compute dtype.
    stride, padding, output_padding: PyTorch's arguments.

  Returns:
    (B, H_out, W_out, C_out) with H_out = (H − 1)·stride − 2·padding + k + output_padding.
  """
  b, h, w, _ = x.shape
  k, c_out = kernel.shape[0], kernel.shape[-1]
  lo = k - 1 - padding
  d_min, taps, valid = _phase_taps(k, stride, lo)
  n = taps.shape[0]
  # sub[jy, jx, c_in, ry, rx, c_out] = kernel[taps[jy, ry], taps[jx, rx]] where both taps exist.
  sub = kernel[taps[:, None, :, None], taps[None, :, None, :]]  # (n, n, s, s, C_in, C_out)
  mask = (valid[:, None, :, None] & valid[None, :, None, :]).astype(kernel.dtype)
  sub = (sub * mask[..., None, None]).transpose(0, 1, 4, 2, 3, 5).reshape(n, n, -1, stride * stride * c_out)
  out_h = (h - 1) * stride - 2 * padding + k + output_padding
  out_w = (w - 1) * stride - 2 * padding + k + output_padding
  q_h, q_w = -(-out_h // stride), -(-out_w // stride)
  # y'[q] reads x[q + d_min .. q + d_min + n − 1]; out-of-range reads are zeros.
  pads = [(-d_min, q - 1 + d_min + n - 1 - (size - 1)) for q, size in ((q_h, h), (q_w, w))]
  y = jax.lax.conv_general_dilated(x, sub, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = y.reshape(b, q_h, q_w, stride, stride, c_out).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, q_h * stride, q_w * stride, c_out)[:, :out_h, :out_w]


class ConvTranspose2d(nn.Module):
  """`nn.ConvTranspose2d(k, stride, padding, output_padding)` in NHWC.

  The stored `kernel` (kh, kw, in, out) is the kernel of the equivalent correlation of the
  stride-dilated input with padding (k − 1 − p, k − 1 − p + op): PyTorch's (in, out, kh, kw) weight
  flipped in both spatial axes. It runs as `conv_transpose_subpixel`.
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
    y = conv_transpose_subpixel(x.astype(self.dtype), kernel.astype(self.dtype), self.stride, self.padding,
                                self.output_padding)
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
