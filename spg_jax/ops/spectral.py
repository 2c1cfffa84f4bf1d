"""Spectral normalisation of a weight matrix, as `torch.nn.utils.spectral_norm` computes it.

PyTorch keeps two buffers per layer: `u` (out,) and `v` (in·kh·kw,), both unit vectors. In training
each forward runs `n` power iterations v ← normalize(Wᵀu), u ← normalize(W v) (no gradient through
u, v); in evaluation it runs none. Either way sigma = u · (W v) with the current u, v, and the layer
uses W / sigma. Dividing by an SVD or a converged estimate would not match converted checkpoints,
whose u, v are whatever training left behind.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SN_EPS = 1e-12


def _l2_normalize(v: jax.Array) -> jax.Array:
  # torch.nn.functional.normalize: v / max(||v||, eps).
  return v / jnp.maximum(jnp.linalg.norm(v), SN_EPS)


def power_iteration(w_mat: jax.Array, u: jax.Array, num_iters: int = 1) -> tuple[jax.Array, jax.Array]:
  """Runs `num_iters` power iterations from `u`; returns the new (u, v), without gradient.

  Args:
    w_mat: (O, I) weight matrix (a conv kernel flattened PyTorch-style as (O, I·kh·kw)).
    u: (O,) current left vector.
    num_iters: number of iterations (PyTorch default 1).
  """
  w_mat = jax.lax.stop_gradient(w_mat.astype(jnp.float32))
  v = None
  for _ in range(num_iters):
    v = _l2_normalize(w_mat.T @ u)
    u = _l2_normalize(w_mat @ v)
  return u, v


def spectral_sigma(w_mat: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
  """sigma = u · (W v); differentiable in W, constant in u and v."""
  u = jax.lax.stop_gradient(u)
  v = jax.lax.stop_gradient(v)
  return jnp.dot(u, w_mat.astype(jnp.float32) @ v)
