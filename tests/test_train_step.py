"""`spg_jax.train_step` in-process on the tiny synthetic config: the loss terms and the eval sums.

The end-to-end trainer (subprocesses, device layouts, resume) is tested in `tests/test_train.py`.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from input_pipeline import pipeline, sources
from spg_jax import train
from spg_jax.models.from_config import networks_from_config
from spg_jax.train_step import LossWeights, StepFunctions, init_state, make_optimizers
from tests.train_helpers import tiny_config


def _setup(perceptual: float):
  config = tiny_config()
  config.loss.perceptual = perceptual
  config.allow_random_vgg = True
  nets = networks_from_config(config)
  tx_g, tx_d, lr_g, lr_d = make_optimizers(config, steps_per_epoch=2)
  fn = StepFunctions(nets=nets, scheme="parallel", use_distance_maps=True,
                     weights=LossWeights(**config.loss.to_dict()), tx_g=tx_g, tx_d=tx_d, lr_g=lr_g, lr_d=lr_d,
                     seed=0)
  frozen = train.load_frozen(config, nets, fn)
  return config, fn, frozen


@pytest.fixture(scope="module")
def batch():
  config = tiny_config()
  source = sources.synthetic_source(3, 4, tuple(config.data.image_size))
  ds = pipeline.eval_dataset(source, pipeline.Features.from_config(config, train=False), batch_size=4,
                             process_index=0, process_count=1)
  return next(ds.as_numpy_iterator())


def test_perceptual_term_enters_the_loss_and_the_generator_update(batch):
  config, fn, frozen = _setup(perceptual=1.0)
  _, fn_off, frozen_off = _setup(perceptual=0.0)
  assert frozen.vgg is not None and frozen_off.vgg is None
  state = init_state(config, fn.nets, fn, jax.random.key(0))
  step = jax.jit(functools.partial(fn.train_step, with_gan=False))
  step_off = jax.jit(functools.partial(fn_off.train_step, with_gan=False))
  new, metrics = step(state, frozen, batch)
  new_off, metrics_off = step_off(state, frozen_off, batch)
  m = jax.device_get(metrics)
  assert m["g_perceptual"] > 0
  assert m["g_loss"] == pytest.approx(m["g_l1"] + m["g_perceptual"] + m["g_parsing_ce"], rel=1e-6)
  # The same forward pass: the other terms agree; the perceptual gradient changes G's update only.
  assert m["g_l1"] == pytest.approx(float(metrics_off["g_l1"]), rel=1e-6)
  gen_delta = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(new.params["generator"]),
                                                              jax.tree.leaves(new_off.params["generator"])))
  parsing_delta = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(new.params["parsing"]),
                                                                  jax.tree.leaves(new_off.params["parsing"])))
  assert gen_delta > 1e-5
  assert parsing_delta == 0.0  # the parallel scheme: stage 1 sees no image loss


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
  """scikit-image's SSIM with its defaults on 0..255 values (what validation reports, unquantised)."""
  to_255 = lambda x: (x.astype(np.float64) + 1) * 127.5
  return structural_similarity(to_255(a), to_255(b), channel_axis=-1, data_range=255)


def test_eval_step_sums_match_independent_references(batch):
  config, fn, frozen = _setup(perceptual=0.0)
  state = init_state(config, fn.nets, fn, jax.random.key(1))
  valid = np.array([True, True, True, False])  # the last pair is padding
  padded = dict(batch, valid=valid)
  sums = jax.device_get(jax.jit(fn.eval_step)(state, frozen, padded))
  out = jax.device_get(jax.jit(fn.predict)(state, frozen, padded))
  out_true = jax.device_get(jax.jit(functools.partial(fn.predict, true_parsing=True))(state, frozen, padded))
  np.testing.assert_array_equal(out_true["generated"], out["generated"])
  assert sums["count"] == 3
  target = batch["target_image"]
  cases = {"": out["generated"], "true_parsing_": out_true["generated_true_parsing"],
           "baseline_copy_": batch["source_image"]}
  for prefix, image in cases.items():
    ssim = sum(_skimage_ssim(image[i], target[i]) for i in range(3))
    l1 = sum(float(np.mean(np.abs(image[i] - target[i]))) for i in range(3))
    assert float(sums[f"{prefix}ssim_sum"]) == pytest.approx(ssim, abs=3e-5), prefix
    assert float(sums[f"{prefix}l1_sum"]) == pytest.approx(l1, rel=1e-5), prefix
  # Stage 2 fed the true parsing is a different input from stage 1's (random) prediction.
  assert np.max(np.abs(out["generated"] - out_true["generated_true_parsing"])) > 1e-3
  truth = batch["target_parsing"][:3].reshape(-1)
  predicted = out["parsing"][:3].reshape(-1)
  expected = np.zeros((20, 20), np.int64)
  np.add.at(expected, (truth, predicted), 1)
  np.testing.assert_array_equal(sums["confusion"], expected)
