"""The SEAN (region-adaptive) modulation, as the official "ACE" layer computes it."""

from __future__ import annotations

import jax


def sean_modulation(
    x_normalized: jax.Array,
    gamma_style: jax.Array,
    beta_style: jax.Array,
    gamma_spade: jax.Array,
    beta_spade: jax.Array,
    blending_gamma: jax.Array,
    blending_beta: jax.Array,
) -> jax.Array:
  """Blends the style-code and the SPADE modulations of a normalised activation.

  out = x̂ · (1 + a_γ γ_style + (1 − a_γ) γ_spade) + a_β β_style + (1 − a_β) β_spade,
  with a_γ = sigmoid(blending_gamma), a_β = sigmoid(blending_beta) (0.5 at initialisation).

  Args:
    x_normalized: (B, H, W, C) output of the parameter-free BatchNorm.
    gamma_style, beta_style: (B, H, W, C) convolutions of the broadcast per-region style codes.
    gamma_spade, beta_spade: (B, H, W, C) SPADE convolutions of the target parsing.
    blending_gamma, blending_beta: scalar (or shape (1,)) blending logits.

  Returns:
    (B, H, W, C).
  """
  a_gamma = jax.nn.sigmoid(blending_gamma).reshape(())
  a_beta = jax.nn.sigmoid(blending_beta).reshape(())
  gamma = a_gamma * gamma_style + (1.0 - a_gamma) * gamma_spade
  beta = a_beta * beta_style + (1.0 - a_beta) * beta_spade
  return x_normalized * (1.0 + gamma) + beta
