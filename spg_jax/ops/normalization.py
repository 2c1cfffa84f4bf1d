"""Normalisation math with PyTorch semantics (BatchNorm2d, InstanceNorm2d), computed in float32.

Under `jax.jit` with a batch sharded over a mesh, the batch means below are taken over the global
batch, so BatchNorm is synchronised across devices without any explicit collective.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS = 1e-5


def batch_moments(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-channel batch statistics of an NHWC array.

  Returns:
    (mean, biased_var, unbiased_var), each (C,) float32. PyTorch normalises with the biased variance
    and puts the unbiased one (n / (n - 1)) into its running average.
  """
  x = x.astype(jnp.float32)
  mean = x.mean(axis=(0, 1, 2))
  var = jnp.square(x - mean).mean(axis=(0, 1, 2))
  n = x.shape[0] * x.shape[1] * x.shape[2]
  unbiased = var * (n / max(n - 1, 1))
  return mean, var, unbiased


def normalize(x: jax.Array, mean: jax.Array, var: jax.Array, eps: float = EPS) -> jax.Array:
  """(x − mean) / sqrt(var + eps) in float32, broadcasting (C,) statistics over NHWC."""
  return (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + eps)


def ema_update(running: jax.Array, batch: jax.Array, momentum: float = 0.1) -> jax.Array:
  """PyTorch running-statistics update: (1 − momentum) · running + momentum · batch."""
  return (1.0 - momentum) * running + momentum * batch


def instance_norm(x: jax.Array, eps: float = EPS) -> jax.Array:
  """`InstanceNorm2d(affine=False, track_running_stats=False)`: per sample and channel, biased var."""
  x32 = x.astype(jnp.float32)
  mean = x32.mean(axis=(1, 2), keepdims=True)
  var = jnp.square(x32 - mean).mean(axis=(1, 2), keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)
