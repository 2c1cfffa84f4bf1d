"""SPATN (stage-1 parsing network) and its cross-entropy loss.

There is no official stage 1 to compare with, so these tests check the contract: shapes and input
channels, clear input errors, gradients reaching every parameter, the loss against PyTorch's
`cross_entropy` (|Δ| ≤ 1e-5 relative), trainability on one tiny example, and BatchNorm statistics.
A small network (ngf 8, 2 blocks, 32×32) shared by the numerical tests, shape-only checks through
`jax.eval_shape`, and the counter-based 'rbg' PRNG for initialisation (XLA compiles it much faster
than threefry on CPU) keep the file fast.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from spg_jax.models.parsing import SPATN, dummy_inputs, init_variables, logits_to_onehot, parsing_cross_entropy
from spg_jax.ops import pose_maps
from tests.conftest import nhwc_to_nchw

NUM_CLASSES = 20


def _key(seed: int) -> jax.Array:
  return jax.random.key(seed, impl="rbg")


def _init(model: SPATN, seed: int, bhw: tuple[int, int, int]) -> dict:
  return jax.jit(lambda key: init_variables(model, key, bhw))(_key(seed))


def _init_shapes(model: SPATN, bhw: tuple[int, int, int]) -> dict:
  return jax.eval_shape(lambda: init_variables(model, _key(0), bhw))


def _example(batch: int, size: int, use_distance_maps: bool, seed: int = 0) -> tuple[dict, np.ndarray]:
  """Realistic SPATN inputs (keypoint and distance maps from random poses) and target labels."""
  rng = np.random.default_rng(seed)
  src_kp = rng.uniform(0, size - 1, (batch, 18, 2)).astype(np.float32)
  tgt_kp = np.clip(src_kp + rng.normal(0, size / 8, src_kp.shape), 0, size - 1).astype(np.float32)
  src_kp[:, 3] = -1  # a missing joint
  src_labels = rng.integers(0, NUM_CLASSES, (batch, size // 8, size // 8)).repeat(8, 1).repeat(8, 2)
  tgt_labels = np.roll(src_labels, shift=size // 4, axis=2)
  radius = max(size // 32, 1)
  inputs = dict(
      source_parsing=np.eye(NUM_CLASSES, dtype=np.float32)[src_labels],
      source_pose=np.asarray(pose_maps.keypoint_maps(src_kp, size, size, radius=radius)),
      target_pose=np.asarray(pose_maps.keypoint_maps(tgt_kp, size, size, radius=radius)),
  )
  if use_distance_maps:
    inputs.update(source_distance=np.asarray(pose_maps.distance_maps(src_kp, size, size)),
                  target_distance=np.asarray(pose_maps.distance_maps(tgt_kp, size, size)))
  return inputs, tgt_labels.astype(np.int32)


def test_output_shape_64x64():
  for model in (SPATN(num_blocks=2), SPATN(num_blocks=2, use_distance_maps=False)):
    inputs, _ = _example(2, 64, model.use_distance_maps)
    variables = _init_shapes(model, (2, 64, 64))
    logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, **inputs)
    assert logits.shape == (2, 64, 64, NUM_CLASSES) and logits.dtype == jnp.float32


@pytest.mark.parametrize("use_distance_maps, pose_channels", [(True, 60), (False, 36)])
def test_pose_pathway_channels(use_distance_maps, pose_channels):
  model = SPATN(ngf=8, num_blocks=2, use_distance_maps=use_distance_maps)
  assert model.pose_channels == pose_channels
  params = _init_shapes(model, (1, 32, 32))["params"]
  assert params["pose_stem"]["conv"]["kernel"].shape == (7, 7, pose_channels, 8)
  assert params["parsing_stem"]["conv"]["kernel"].shape == (7, 7, NUM_CLASSES, 8)
  # PATN channel plan: block 0's pose stream sees D = 4·ngf channels, later ones 2D.
  assert params["pat_0"]["pose_0"]["conv"]["kernel"].shape == (3, 3, 32, 32)
  assert params["pat_1"]["pose_0"]["conv"]["kernel"].shape == (3, 3, 64, 64)
  assert params["pat_1"]["attention"]["kernel"].shape == (3, 3, 64, 32)
  assert params["head"]["kernel"].shape == (7, 7, 8, NUM_CLASSES)
  assert set(dummy_inputs(model, 1, 32, 32)) == (
      {"source_parsing", "source_pose", "target_pose"}
      | ({"source_distance", "target_distance"} if use_distance_maps else set()))


def test_input_errors_are_clear():
  # Shapes are checked while tracing, so the errors come without compiling anything.
  with_dist = SPATN(ngf=8, num_blocks=1, use_distance_maps=True)
  without = SPATN(ngf=8, num_blocks=1, use_distance_maps=False)
  inputs, _ = _example(1, 32, True)
  variables = _init_shapes(with_dist, (1, 32, 32))
  apply = lambda **kw: jax.eval_shape(functools.partial(with_dist.apply, train=False), variables, **kw)
  no_dist = {k: v for k, v in inputs.items() if "distance" not in k}

  with pytest.raises(ValueError, match="needs source_distance and target_distance"):
    apply(**no_dist)
  with pytest.raises(ValueError, match="use_distance_maps=False.*given distance maps"):
    jax.eval_shape(functools.partial(without.init, train=False), _key(0), **inputs)
  with pytest.raises(ValueError, match=r"target_pose must be \(B, H, W, 18\)"):
    apply(**dict(inputs, target_pose=inputs["target_pose"][..., :17]))
  with pytest.raises(ValueError, match=r"source_distance must be \(B, H, W, 12\)"):
    apply(**dict(inputs, source_distance=inputs["source_distance"][:, :16]))
  with pytest.raises(ValueError, match=r"source_parsing must be \(B, H, W, 20\)"):
    apply(**dict(inputs, source_parsing=inputs["source_parsing"][..., :19]))
  with pytest.raises(ValueError, match="multiples of 4"):
    apply(**{k: v[:, :30] for k, v in inputs.items()})


def test_cross_entropy_matches_torch():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (2, 6, 5, NUM_CLASSES)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, (2, 6, 5))
  probs = rng.dirichlet(np.ones(NUM_CLASSES), (2, 6, 5)).astype(np.float32)
  t_logits = torch.from_numpy(nhwc_to_nchw(logits))
  expected_hard = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(labels)).item()
  expected_soft = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(nhwc_to_nchw(probs))).item()

  ce = float(parsing_cross_entropy(logits, labels))
  assert ce == pytest.approx(expected_hard, rel=1e-5)
  onehot = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
  assert float(parsing_cross_entropy(logits, onehot)) == pytest.approx(expected_hard, rel=1e-5)
  assert float(parsing_cross_entropy(logits, probs)) == pytest.approx(expected_soft, rel=1e-5)
  # bfloat16 logits are upcast before the softmax (the tolerance covers rounding the logits).
  ce_bf16 = float(parsing_cross_entropy(jnp.asarray(logits, jnp.bfloat16), labels))
  assert ce_bf16 == pytest.approx(expected_hard, rel=2e-2)
  with pytest.raises(ValueError, match="labels"):
    parsing_cross_entropy(logits, labels[:, :5])


def test_logits_to_onehot():
  logits = jnp.asarray([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
  np.testing.assert_array_equal(np.asarray(logits_to_onehot(logits)), [[0, 1, 0], [1, 0, 0]])


@pytest.fixture(scope="module")
def tiny():
  model = SPATN(ngf=8, num_blocks=2)
  inputs, labels = _example(2, 32, True, seed=1)
  variables = _init(model, 1, (2, 32, 32))

  def loss_fn(params, batch_stats):
    logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, **inputs, train=True,
                                  mutable=["batch_stats"])
    return parsing_cross_entropy(logits, labels), updates["batch_stats"]

  return model, inputs, labels, variables, loss_fn


def test_gradients_are_finite_and_nonzero_for_every_parameter(tiny):
  _, _, _, variables, loss_fn = tiny
  (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"],
                                                                         variables["batch_stats"])
  assert np.isfinite(float(loss))
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  assert len(flat) == len(jax.tree.leaves(variables["params"]))
  for path, g in flat:
    g = np.asarray(g)
    name = jax.tree_util.keystr(path)
    assert np.isfinite(g).all(), name
    assert np.abs(g).max() > 0, f"zero gradient for {name}"


def test_sgd_overfits_one_example(tiny):
  _, _, _, variables, loss_fn = tiny
  lr = 0.3

  @jax.jit
  def step(params, batch_stats):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), batch_stats, loss

  params, stats = variables["params"], variables["batch_stats"]
  losses = []
  for _ in range(15):
    params, stats, loss = step(params, stats)
    losses.append(float(loss))
  assert all(np.isfinite(losses))
  assert losses[-1] < 0.6 * losses[0], losses


def test_batch_stats_update_in_train_mode_only(tiny):
  model, inputs, _, variables, _ = tiny
  _, updates = model.apply(variables, **inputs, train=True, mutable=["batch_stats"])
  before = variables["batch_stats"]
  after = updates["batch_stats"]
  assert jax.tree.structure(before) == jax.tree.structure(after)
  stem = after["parsing_stem"]["bn"]
  assert not np.allclose(np.asarray(stem["mean"]), 0.0)
  assert not np.allclose(np.asarray(stem["var"]), 1.0)
  for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    assert not np.array_equal(np.asarray(old), np.asarray(new))
  # Evaluation reads the running statistics and changes nothing.
  _, eval_updates = model.apply(variables, **inputs, train=False, mutable=["batch_stats"])
  for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(eval_updates["batch_stats"])):
    np.testing.assert_array_equal(np.asarray(old), np.asarray(new))


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = SPATN(ngf=8, num_blocks=1, use_distance_maps=False, dtype=jnp.bfloat16)
  inputs, _ = _example(1, 32, False)
  variables = _init_shapes(model, (1, 32, 32))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, **inputs)
  assert logits.dtype == jnp.float32
