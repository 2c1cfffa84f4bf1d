"""Behaviour of `SPGNetGenerator` beyond parity: noise modes, input checks, gradients, bf16."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spg_jax.models.generator import GeneratorConfig, SPGNetGenerator, dummy_inputs, init_variables, sean_layer_names

CONFIG = GeneratorConfig.market(nf=8, max_nf=16, num_scales=3, num_warp_scales=2)
B, H, W = 2, 32, 16


def _inputs(seed: int = 0) -> dict[str, jax.Array]:
  keys = jax.random.split(jax.random.key(seed), 6)
  labels_s = jax.random.randint(keys[0], (B, H, W), 0, 20)
  labels_t = jax.random.randint(keys[1], (B, H, W), 0, 20)
  return dict(
      target_pose=(jax.random.uniform(keys[2], (B, H, W, 18)) > 0.9).astype(jnp.float32),
      source_image=jax.random.uniform(keys[3], (B, H, W, 3), minval=-1.0, maxval=1.0),
      source_parsing=jax.nn.one_hot(labels_s, 20),
      target_parsing=jax.nn.one_hot(labels_t, 20),
      flow=3.0 * jax.random.normal(keys[4], (B, H, W, 2)),
      visibility=jax.random.randint(keys[5], (B, H, W, 1), 0, 3).astype(jnp.float32),
  )


@pytest.fixture(scope="module")
def variables():
  v = jax.jit(lambda key: init_variables(SPGNetGenerator(CONFIG), key, (B, H, W)))(jax.random.key(0))
  # Non-zero noise scales, so that the noise modes are distinguishable.
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.full_like(x, 0.5) if "noise_var" in jax.tree_util.keystr(path) else x, v)


def test_deterministic_mode_is_repeatable_and_noise_free(variables):
  model = SPGNetGenerator(CONFIG)
  a = model.apply(variables, **_inputs(), train=False, deterministic=True)
  b = model.apply(variables, **_inputs(), train=False, deterministic=True)
  zeros = {name: jnp.zeros(shape) for name, shape in _noise_shapes().items()}
  c = model.apply(variables, **_inputs(), train=False, noise=zeros)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-5)


def _noise_shapes() -> dict[str, tuple[int, ...]]:
  """(B, H_l, W_l, 1) of each SEAN layer: Market runs every SEAN at the decoder level's resolution."""
  shapes = {}
  for name in sean_layer_names(CONFIG):
    level = int(name.split("_")[1])
    shapes[name] = (B, H // 2 ** level, W // 2 ** level, 1)
  return shapes


def test_rng_noise_depends_on_the_key_only(variables):
  model = SPGNetGenerator(CONFIG)
  run = lambda k: np.asarray(model.apply(variables, **_inputs(), train=False, rngs={"noise": jax.random.key(k)}))
  np.testing.assert_array_equal(run(1), run(1))
  assert np.abs(run(1) - run(2)).max() > 1e-3


def test_missing_noise_map_is_named(variables):
  noise = {name: jnp.zeros(shape) for name, shape in _noise_shapes().items()}
  del noise["dec_1_res_0.conv_norm"]
  with pytest.raises(KeyError, match=r"dec_1_res_0\.conv_norm"):
    SPGNetGenerator(CONFIG).apply(variables, **_inputs(), train=False, noise=noise)


def test_bad_input_shapes_are_reported(variables):
  model = SPGNetGenerator(CONFIG)
  bad = _inputs()
  bad["flow"] = bad["flow"][..., :1]
  with pytest.raises(ValueError, match="flow has shape"):
    model.apply(variables, **bad, train=False, deterministic=True)
  small = dummy_inputs(CONFIG, 1, 12, 16)
  with pytest.raises(ValueError, match="divisible by 2\\*\\*num_scales"):
    model.apply(variables, **small, train=False, deterministic=True)


def test_gradients_reach_every_parameter(variables):
  model = SPGNetGenerator(CONFIG)

  def loss(params):
    out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, **_inputs(), train=True,
                         rngs={"noise": jax.random.key(3)}, mutable=["batch_stats"])
    return jnp.mean(jnp.abs(jnp.tanh(out) - 0.1))

  grads = jax.jit(jax.grad(loss))(variables["params"])
  flat = jax.tree_util.tree_leaves_with_path(grads)
  assert all(bool(jnp.isfinite(g).all()) for _, g in flat)
  dead = [jax.tree_util.keystr(p) for p, g in flat if float(jnp.abs(g).max()) == 0.0]
  assert not dead, dead


def test_bfloat16_compute_stays_close_to_float32(variables):
  inputs = _inputs()
  f32 = SPGNetGenerator(CONFIG).apply(variables, **inputs, train=False, deterministic=True)
  bf16 = SPGNetGenerator(CONFIG, dtype=jnp.bfloat16).apply(variables, **inputs, train=False, deterministic=True)
  assert bf16.dtype == jnp.float32  # the head returns float32 whatever the compute dtype
  rel = float(jnp.abs(bf16 - f32).max() / jnp.abs(f32).max())
  assert rel < 0.05, rel


def test_per_sample_style_convolution_gives_the_direct_result_and_gradients():
  """The two SEAN `style_conv` paths compute one function: float32 outputs within 1e-5 of their
  largest value, gradients within 1e-3 of each parameter's largest (sums over all pixels, in
  another order) plus 1e-5 of the largest gradient."""
  from spg_jax.models.sean import SEANNorm  # pylint: disable=import-outside-toplevel
  inputs = _inputs()
  x = jax.random.normal(jax.random.key(3), (B, H // 2, W // 2, 6))
  codes = jax.random.normal(jax.random.key(4), (B, 20, 8))
  seg = inputs["target_parsing"]
  make = lambda style_conv: SEANNorm(6, 3, style_dim=8, spade_hidden=4, style_conv=style_conv)
  variables = make("direct").init(jax.random.key(5), x, seg, codes, train=True, deterministic=True)

  def run(style_conv):
    def loss(params):
      out, _ = make(style_conv).apply({**variables, "params": params}, x, seg, codes, train=True,
                                      deterministic=True, mutable=["batch_stats"])
      return jnp.sum(jnp.sin(3.0 * out)), out
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

  (_, a), ga = run("direct")
  (_, b), gb = run("per_sample")
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5 * float(jnp.abs(a).max()))
  floor = 1e-5 * max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(ga))
  for (path, g), h in zip(jax.tree_util.tree_flatten_with_path(ga)[0], jax.tree_util.tree_leaves(gb)):
    assert float(jnp.abs(g - h).max()) <= 1e-3 * float(jnp.abs(g).max()) + floor, jax.tree_util.keystr(path)
  assert float(jnp.abs(ga["conv_gamma"]["kernel"]).max()) > 0  # the style branch gets gradient
  with pytest.raises(ValueError, match="sean_style_conv"):
    GeneratorConfig.market(sean_style_conv="grouped")
