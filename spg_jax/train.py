"""The SPGNet trainer: sharded state, the loop, validation, checkpoints, logs and samples.

`train_and_evaluate(config, workdir)` runs (or resumes) a run in `workdir`:
  <workdir>/checkpoints/   Orbax checkpoints (`spg_jax.checkpoints`)
  <workdir>/               TensorBoard events (losses, learning rates, steps/s, data wait, SSIM, L1,
                           mIoU, sample grids), written by process 0 only
  <workdir>/samples/       sample-grid PNGs: source | target pose | predicted parsing | generated | truth
  <workdir>/validation.json  the latest validation metrics
  <workdir>/plugins/profile  a profiler trace of a few steps

The math of a step lives in `spg_jax.train_step`; the data in `input_pipeline`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metric_writers
from jax.sharding import NamedSharding

from spg_jax import checkpoints, loop, sharding, visualize
from spg_jax.metrics import segmentation
from spg_jax.models import parsing as parsing_lib
from spg_jax.models.from_config import Networks, networks_from_config
from spg_jax.train_step import Frozen, LossWeights, StepFunctions, TrainState, init_state, make_optimizers
from spg_jax.weights import load_weights

PyTree = Any


# ---------------------------------------------------------------------------------------------
# State: created directly sharded, or restored.


def _load_network_weights(path: str, network: str) -> dict[str, Any]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.init.{network} = {path!r}: no such file (make it with "
                            f"`python -m spg_jax.convert {network} ...`, see README)")
  variables, _ = load_weights(path)
  return variables


def _overlay(template: PyTree, loaded: PyTree, what: str) -> PyTree:
  """`loaded` in the structure of `template`, with shapes checked leaf by leaf."""
  flat_t = flax_flatten(template)
  flat_l = flax_flatten(loaded)
  missing = sorted(set(flat_t) - set(flat_l))
  extra = sorted(set(flat_l) - set(flat_t))
  if missing or extra:
    raise ValueError(f"{what}: the weights file does not match the configured network; missing "
                     f"{missing[:5]}{'…' if len(missing) > 5 else ''}, unexpected {extra[:5]}")
  for k, v in flat_t.items():
    if tuple(flat_l[k].shape) != tuple(v.shape):
      raise ValueError(f"{what}: {'/'.join(k)} has shape {flat_l[k].shape}, the config builds {v.shape}")
  return jax.tree.map(lambda t, l: jnp.asarray(l, t.dtype), template, loaded)


def flax_flatten(tree: PyTree) -> dict[tuple[str, ...], Any]:
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  return traverse_util.flatten_dict(jax.tree.map(lambda x: x, tree, is_leaf=lambda x: not isinstance(x, dict)))


def apply_init_weights(config: ml_collections.ConfigDict, state: TrainState) -> TrainState:
  """Replaces freshly initialised networks by `config.init.{generator,parsing,discriminator}` files."""
  params, stats = dict(state.params), dict(state.batch_stats)
  for name in ("generator", "parsing", "discriminator"):
    path = config.init.get(name)
    if path is None or name not in params:
      continue
    loaded = _load_network_weights(path, name)
    params[name] = _overlay(params[name], loaded["params"], f"config.init.{name}")
    if stats[name]:
      stats[name] = _overlay(stats[name], loaded.get("batch_stats", {}), f"config.init.{name}")
    logging.info("initialised %s from %s", name, path)
  return state.replace(params=params, batch_stats=stats)


def load_frozen(config: ml_collections.ConfigDict, nets: Networks, fn: StepFunctions) -> Frozen:
  """The frozen networks this config needs, with clear errors for missing weights files."""
  h, w = config.data.image_size
  flownet = vgg = parsing = None
  if config.data.flow == "network":
    if config.init.flownet is None:
      raise ValueError(
          "data.flow='network' needs the frozen flow network: set config.init.flownet to a weights file "
          "(`python -m spg_jax.convert flownet --input best_net_netF.pth ...`, or train one with "
          "configs/flownet_synthetic.py), or use data.flow='geometric' / 'ground_truth'")
    loaded = _load_network_weights(config.init.flownet, "flownet")
    template = jax.eval_shape(lambda: nets.flownet.init(jax.random.key(0), jnp.zeros((1, h, w, nets.flownet.input_nc)),
                                                        train=False))
    flownet = _overlay(template, loaded, "config.init.flownet")
  if config.loss.perceptual:
    if config.init.vgg19 is not None:
      loaded = _load_network_weights(config.init.vgg19, "vgg19")
      template = jax.eval_shape(lambda: nets.vgg.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
      vgg = _overlay(template, loaded, "config.init.vgg19")
    elif config.allow_random_vgg:
      logging.warning("PERCEPTUAL LOSS WITH RANDOM VGG19 WEIGHTS (config.allow_random_vgg=True): "
                      "results will not match ImageNet-VGG training; set config.init.vgg19 for real runs")
      vgg = nets.vgg.init(jax.random.key(config.seed + 19), jnp.zeros((1, 32, 32, 3)))
    else:
      raise ValueError(
          "the perceptual loss needs ImageNet VGG19 weights: set config.init.vgg19 to a file made by "
          "`python -m spg_jax.convert vgg19 --input vgg19-dcbb9e9d.pth --output vgg19.npz`, or accept "
          "random weights with --config.allow_random_vgg=True, or turn the loss off with "
          "--config.loss.perceptual=0")
  if not fn.trains_stage1:
    if config.init.parsing is None:
      raise ValueError("scheme='sequential' freezes stage 1: set config.init.parsing to its weights file")
    loaded = _load_network_weights(config.init.parsing, "parsing")
    template = jax.eval_shape(lambda: parsing_lib.init_variables(nets.parsing, jax.random.key(0), (1, h, w)))
    parsing = _overlay(template, loaded, "config.init.parsing")
  return Frozen(flownet=flownet, vgg=vgg, parsing=parsing)


# ---------------------------------------------------------------------------------------------
# Data.


def data_sources(config: ml_collections.ConfigDict):
  """(train source, validation source) for `config.data.name`."""
  from input_pipeline import sources  # pylint: disable=g-import-not-at-top  (TensorFlow)
  # TFDS is imported here, before any asynchronous checkpoint write: importing it swaps
  # `builtins.__import__` for etils' lazy importer process-wide for a moment, so an import in
  # Orbax's writer threads meanwhile gets a stand-in module and the save fails. Left to the first
  # validation (`pipeline.process_share`), that import raced with the write of the last checkpoint.
  import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import

  d = config.data
  if d.name == "synthetic":
    return (sources.synthetic_source(d.synthetic.train_seed, d.synthetic.train_pairs, tuple(d.image_size)),
            sources.synthetic_source(d.synthetic.eval_seed, min(d.synthetic.eval_pairs, config.eval.num_pairs),
                                     tuple(d.image_size)))
  return (_tfds_source(config, d.train_split),
          _tfds_source(config, f"{d.eval_split}[:{config.eval.num_pairs}]"))


def test_source(config: ml_collections.ConfigDict):
  """The whole evaluation split (`data.eval_split`; synthetic: all `eval_pairs`), for `--mode eval`."""
  from input_pipeline import sources  # pylint: disable=g-import-not-at-top  (TensorFlow)

  d = config.data
  if d.name == "synthetic":
    return sources.synthetic_source(d.synthetic.eval_seed, d.synthetic.eval_pairs, tuple(d.image_size))
  return _tfds_source(config, d.eval_split)


def _tfds_source(config: ml_collections.ConfigDict, split: str):
  from input_pipeline import sources  # pylint: disable=g-import-not-at-top  (TensorFlow)

  d = config.data
  names = {"deepfashion": "spg_deepfashion", "market1501": "spg_market1501"}
  if d.name not in names:
    raise ValueError(f"config.data.name={d.name!r}; expected 'synthetic' or one of {sorted(names)}")
  name = names[d.name] + (f"/{d.tfds_config}" if d.tfds_config else "")
  source = sources.tfds_source(name, split, d.data_dir)
  if tuple(source.image_size) != tuple(d.image_size):
    raise ValueError(f"{source.name} holds {source.image_size} images, config.data.image_size is "
                     f"{tuple(d.image_size)}")
  return source


# ---------------------------------------------------------------------------------------------
# Validation.


def evaluate(eval_step, predict, state: TrainState, frozen: Frozen, source, config,
             mesh) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Validation metrics over all of `source` and the sample grid of its first pairs.

  Args:
    eval_step, predict: the jitted `StepFunctions.eval_step` and `.predict`.
  """
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top

  features = pipeline.Features.from_config(config, train=False)
  bsz = sharding.check_batch_size(config.eval.batch_size, mesh)
  ds = pipeline.eval_dataset(source, features, batch_size=bsz, process_index=jax.process_index(),
                             process_count=jax.process_count())
  num_batches = pipeline.num_eval_batches(source.num_pairs, bsz, jax.process_count())
  totals, first = None, None
  for host_batch in pipeline.padded_batches(ds, bsz, num_batches):
    batch = sharding.global_batch(host_batch, mesh)
    sums = eval_step(state, frozen, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if first is None:
      first = (host_batch, batch)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  metrics = dict(miou=float(segmentation.mean_iou(totals["confusion"])), num_pairs=int(count))
  for key, total in totals.items():
    if key.endswith("_sum"):  # ssim, l1, true_parsing_ssim, baseline_copy_ssim, ...
      metrics[key[:-len("_sum")]] = float(total) / count
  host_batch, batch = first
  predicted = jax.device_get(predict(state, frozen, batch))
  n = min(config.eval.num_sample_pairs, len(host_batch["valid"]))
  grid = visualize.sample_grid(host_batch["source_image"][:n], host_batch["target_pose"][:n],
                               predicted["parsing"][:n], predicted["generated"][:n],
                               host_batch["target_image"][:n])
  return metrics, {"grid": grid}


# ---------------------------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass
class Run:
  """What training and evaluation of one config in one workdir share (built by `setup_run`)."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  fn: StepFunctions
  frozen: Frozen
  abstract_state: PyTree
  state_sharding: PyTree
  frozen_sharding: PyTree
  batch_sharding: NamedSharding
  checkpointer: checkpoints.Checkpointer
  train_source: Any
  eval_source: Any
  global_batch_size: int
  steps_per_epoch: int
  eval_step: Callable
  predict: Callable

  def restore(self, step: int) -> tuple[TrainState, dict[str, Any]]:
    state, meta = self.checkpointer.restore(
        step, checkpoints.with_shardings(self.abstract_state, self.state_sharding))
    return state, meta

  def validate(self, state: TrainState, step: int, writer) -> dict[str, float]:
    """Validation metrics at `step`, written to the logs, `validation.json` and a sample PNG."""
    metrics, images = evaluate(self.eval_step, self.predict, state, self.frozen, self.eval_source,
                               self.config, self.mesh)
    writer.write_scalars(step, {f"val_{k}": v for k, v in metrics.items()})
    writer.write_images(step, {"samples": images["grid"][None]})
    if jax.process_index() == 0:
      os.makedirs(os.path.join(self.workdir, "samples"), exist_ok=True)
      visualize.write_png(os.path.join(self.workdir, "samples", f"step_{step:08d}.png"), images["grid"])
      with open(os.path.join(self.workdir, "validation.json"), "w") as f:
        json.dump(dict(step=step, **metrics), f, indent=2)
    logging.info("validation at step %d: %s", step, metrics)
    return metrics


def setup_run(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Mesh, networks, frozen weights, data sources, checkpointer and jitted steps for a config."""
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(config.mesh.fsdp)
  global_batch_size = int(config.train.batch_size)
  local_batch_size = sharding.check_batch_size(global_batch_size, mesh)
  logging.info("mesh %s over %d devices (%d processes); global batch %d, %d per process",
               dict(mesh.shape), mesh.devices.size, jax.process_count(), global_batch_size, local_batch_size)
  train_source, eval_source = data_sources(config)
  steps_per_epoch = max(1, train_source.num_pairs // global_batch_size)

  nets = networks_from_config(config)
  tx_g, tx_d, lr_g, lr_d = make_optimizers(config, steps_per_epoch)
  fn = StepFunctions(nets=nets, scheme=config.scheme,
                     use_distance_maps=bool(config.model.parsing.use_distance_maps),
                     weights=LossWeights(**config.loss.to_dict()), tx_g=tx_g, tx_d=tx_d,
                     lr_g=lr_g, lr_d=lr_d, seed=int(config.seed))
  frozen = jax.device_put(load_frozen(config, nets, fn), sharding.replicated(mesh))
  abstract = jax.eval_shape(functools.partial(init_state, config, nets, fn), jax.random.key(config.seed))
  state_sh = sharding.state_shardings(abstract, mesh)
  frozen_sh = jax.tree.map(lambda _: sharding.replicated(mesh), frozen)
  batch_sh = sharding.batch_sharding(mesh)
  in_sh = (state_sh, frozen_sh, batch_sh)
  return Run(
      config=config, workdir=workdir, mesh=mesh, fn=fn, frozen=frozen, abstract_state=abstract,
      state_sharding=state_sh, frozen_sharding=frozen_sh, batch_sharding=batch_sh,
      checkpointer=checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"),
                                            keep=config.train.keep_checkpoints),
      train_source=train_source, eval_source=eval_source, global_batch_size=global_batch_size,
      steps_per_epoch=steps_per_epoch,
      eval_step=jax.jit(fn.eval_step, in_shardings=in_sh, out_shardings=sharding.replicated(mesh)),
      predict=jax.jit(fn.predict, in_shardings=in_sh, out_shardings=sharding.replicated(mesh)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds checkpoints), validates, returns final metrics."""
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top

  run = setup_run(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  num_steps = loop.num_train_steps(config, run.steps_per_epoch)
  gan_start_step = (int(config.train.gan_start_epoch) - 1) * run.steps_per_epoch

  start = run.checkpointer.latest_step()
  if start is not None:
    state, meta = run.restore(start)
    loop.check_resumable(meta, run.global_batch_size, workdir)
  else:
    # Parameters are born sharded: the initialiser is jitted onto the state's shardings.
    init = functools.partial(init_state, config, run.fn.nets, run.fn)
    state = jax.jit(init, out_shardings=run.state_sharding)(jax.random.key(config.seed))
    state = jax.device_put(apply_init_weights(config, state), run.state_sharding)
    start = 0
  loop.write_config(config, workdir)

  # Two programs (before and after the GAN starts), each compiled once.
  compiled = {
      with_gan: jax.jit(functools.partial(run.fn.train_step, with_gan=with_gan),
                        in_shardings=(run.state_sharding, run.frozen_sharding, run.batch_sharding),
                        out_shardings=(run.state_sharding, sharding.replicated(run.mesh)), donate_argnums=0)
      for with_gan in (False, True)}

  def step(i, state, host_batch):
    return compiled[i >= gan_start_step](state, run.frozen, sharding.global_batch(host_batch, run.mesh))

  def save(done, state, metrics):
    run.checkpointer.save(done, state, dict(step=done, global_batch_size=run.global_batch_size,
                                            pairs_consumed=done * run.global_batch_size,
                                            train_source=run.train_source.name), metrics=metrics)

  features = pipeline.Features.from_config(config, train=True)
  train_ds = pipeline.train_dataset(run.train_source, features, global_batch_size=run.global_batch_size,
                                    seed=int(config.seed), start_step=start,
                                    process_index=jax.process_index(), process_count=jax.process_count())
  logging.info("training %s on %s: steps %d → %d (%d per epoch; GAN from step %d)",
               config.scheme, run.train_source.name, start, num_steps, run.steps_per_epoch, gan_start_step)
  _, metrics = loop.run(
      state, config=config, start=start, num_steps=num_steps, batches=train_ds.as_numpy_iterator(), step=step,
      validate=lambda state, done: run.validate(state, done, writer), save=save, writer=writer,
      workdir=workdir, eval_every=loop.eval_every_steps(config, run.steps_per_epoch))
  run.checkpointer.wait()
  run.checkpointer.close()
  writer.flush()
  return metrics


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Validates the latest checkpoint in `workdir` (`launch.py --mode eval`)."""
  run = setup_run(config, workdir)
  step = run.checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {run.checkpointer.directory}; train first")
  state, _ = run.restore(step)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  metrics = run.validate(state, step, writer)
  run.checkpointer.close()
  writer.flush()
  return metrics
