"""The flow-network trainer end to end on a tiny 32×32 synthetic config.

Covers: the official loss decreasing on a fixed batch, checkpoints and an exact resume, the exported
`flownet.npz` loading into the SPGNet trainer as its frozen flow network (`data.flow='network'`),
evaluation of a checkpoint, and the guards and schedule of the config.
"""

from __future__ import annotations

import logging
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import deepfashion, flownet_deepfashion, flownet_synthetic, synthetic
from spg_jax import train as spg_train
from spg_jax import train_flownet
from spg_jax.models.from_config import networks_from_config, parameter_counts
from spg_jax.train_step import flow_inputs
from spg_jax.weights import load_weights

SIZE = 32
# 32 = 2**(4 + 1): the deepest U-Net that 32×32 allows.
TINY_FLOWNET = dict(nf=4, max_nf=16, num_scales=4)


def tiny_config():
  config = flownet_synthetic.get_config()
  config.data.image_size = (SIZE, SIZE)
  config.data.joint_radius = 2
  # Eight training pairs and a global batch of eight: every step sees the same pairs.
  config.data.synthetic.update(train_pairs=8, eval_pairs=6)
  config.model.flownet = TINY_FLOWNET
  config.optim.lr = 1e-4  # the official rate
  config.train.batch_size = 8
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 2
  config.train.eval_every_steps = 2
  config.eval.batch_size = 4  # 6 pairs: the second batch is padded
  config.eval.num_pairs = 6
  return config


def _fixed_batch(run):
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top

  ds = train_flownet.step_inputs(pipeline.train_dataset(
      run.train_source, train_flownet.pipeline_features(run.config), global_batch_size=8, seed=0))
  return next(ds.as_numpy_iterator())


def test_official_loss_decreases_on_a_fixed_batch(tmp_path):
  run = train_flownet.setup_run(tiny_config(), str(tmp_path))
  batch = _fixed_batch(run)
  state = run.steps.init_state(jax.random.key(0), (SIZE, SIZE))
  step = jax.jit(run.steps.train_step)
  totals = []
  for _ in range(15):
    state, metrics = step(state, batch)
    totals.append(float(metrics["total"]))
  assert np.all(np.isfinite(totals))
  assert int(state.step) == 15
  # At the official 1e-4 the tiny network descends slowly but steadily.
  assert np.sum(np.diff(totals) < 0) >= 12 and totals[-1] < 0.95 * totals[0], totals
  # The logged total is the official weighted sum (no segmentation-sensitive term).
  np.testing.assert_allclose(float(metrics["total"]), float(metrics["loss_flow"] + metrics["loss_vis"]),
                             rtol=1e-6)
  # One step per epoch here: step 14 is 0-based epoch 14, after the first halving (epoch 7).
  assert float(metrics["lr"]) == pytest.approx(5e-5)


def test_train_resume_export_and_load_into_spgnet(tmp_path, caplog):
  # Reference: 6 uninterrupted steps.
  config = tiny_config()
  config.train.num_train_steps = 6
  full = train_flownet.train_and_evaluate(config, str(tmp_path / "full"))
  # The same run, stopped after 4 steps and resumed.
  config.train.num_train_steps = 4
  first = train_flownet.train_and_evaluate(config, str(tmp_path / "resumed"))
  workdir = tmp_path / "resumed"
  assert first["step"] == 4 and sorted(os.listdir(workdir / "checkpoints"))[-1] == "4"
  for k in ("epe", "epe_visible", "vis_acc", "vis_acc_body", "loss_flow", "loss_vis", "total"):
    assert np.isfinite(first[k]), k
  assert first["num_pairs"] == 6
  config.train.num_train_steps = 6
  with caplog.at_level(logging.INFO):
    resumed = train_flownet.train_and_evaluate(config, str(workdir))
  assert "resuming at step 4" in caplog.text
  assert resumed["step"] == 6 and "6" in os.listdir(workdir / "checkpoints")
  assert resumed["epe"] == pytest.approx(full["epe"], rel=1e-4)

  # The exported weights equal those of the uninterrupted run.
  variables, meta = load_weights(workdir / train_flownet.WEIGHTS_FILE)
  reference, _ = load_weights(tmp_path / "full" / train_flownet.WEIGHTS_FILE)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), variables, reference)
  assert meta["network"] == "flownet" and meta["step"] == 6
  assert meta["config"] == dict(TINY_FLOWNET, input_nc=36)
  assert meta["image_size"] == [SIZE, SIZE] and meta["joint_radius"] == 2
  assert (workdir / train_flownet.BEST_WEIGHTS_FILE).exists()

  # A new run can start from the exported file (fine-tuning).
  finetune = tiny_config()
  finetune.init.flownet = str(workdir / train_flownet.WEIGHTS_FILE)
  state = train_flownet.initial_state(train_flownet.setup_run(finetune, str(tmp_path / "finetune")))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b),
               {"params": state.params, "batch_stats": state.batch_stats}, variables)
  assert int(state.step) == 0

  # Evaluating the checkpoint reproduces the last validation.
  evaluated = train_flownet.evaluate_checkpoint(config, str(workdir))
  assert evaluated["step"] == 6 and evaluated["epe"] == pytest.approx(resumed["epe"], rel=1e-5)

  # The SPGNet trainer loads it as its frozen flow network and runs it.
  spg = synthetic.get_config()
  spg.data.image_size = (SIZE, SIZE)
  spg.data.flow = "network"
  spg.model.flownet = TINY_FLOWNET
  spg.loss.perceptual = 0.0
  spg.init.flownet = str(workdir / train_flownet.WEIGHTS_FILE)
  nets = networks_from_config(spg)
  frozen = spg_train.load_frozen(spg, nets, types.SimpleNamespace(trains_stage1=True))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), frozen.flownet, variables)
  poses = jnp.zeros((2, SIZE, SIZE, 18)).at[:, 10:13, 10:13, :].set(1.0)
  flow, vis = flow_inputs(nets, frozen, dict(source_pose=poses, target_pose=poses))
  assert flow.shape == (2, SIZE, SIZE, 2) and vis.shape == (2, SIZE, SIZE, 1)


def test_segmentation_sensitive_loss_is_refused_without_smpl_segmentations(tmp_path):
  config = tiny_config()
  config.loss.flow_ss = 5.0
  with pytest.raises(ValueError, match="SMPL"):
    train_flownet.setup_run(config, str(tmp_path))


def test_image_size_must_suit_the_unet_depth():
  config = tiny_config()
  config.model.flownet.num_scales = 5  # needs multiples of 64
  with pytest.raises(ValueError, match="divisible by 64"):
    train_flownet.check_config(config)


def test_learning_rate_halves_as_the_official_step_scheduler():
  config = flownet_deepfashion.get_config()
  schedule = train_flownet.learning_rate_schedule(config, steps_per_epoch=10)
  # 0-based epochs 0-6 at 1e-4; StepLR.step() at each epoch start halves from epoch 7 (1-based 8).
  lrs = [float(schedule(jnp.int32(epoch * 10 + 9))) for epoch in range(17)]
  np.testing.assert_allclose(lrs, [1e-4] * 7 + [5e-5] * 8 + [2.5e-5] * 2, rtol=1e-6)


@pytest.mark.parametrize("flow_config,spg_config,num_params", [
    (flownet_synthetic.get_config, synthetic.get_config, 668_189),
    # The released `best_net_netF.pth` size.
    (flownet_deepfashion.get_config, deepfashion.get_config, 29_338_189),
], ids=["synthetic", "deepfashion"])
def test_configs_match_the_spgnet_configs_they_serve(flow_config, spg_config, num_params):
  flow, spg = flow_config(), spg_config()
  assert flow.job == "flownet"
  assert tuple(flow.data.image_size) == tuple(spg.data.image_size)
  assert (flow.data.joint_mode, flow.data.joint_radius) == (spg.data.joint_mode, spg.data.joint_radius)
  assert train_flownet.parameter_counts(flow)["flow network (FlowUnet)"] == num_params
  assert parameter_counts(spg)["flow network (FlowUnet)"] == num_params
