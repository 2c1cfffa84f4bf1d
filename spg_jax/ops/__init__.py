"""Pure, jit-able array functions on NHWC arrays; the Flax layers in `spg_jax.models` call them."""
