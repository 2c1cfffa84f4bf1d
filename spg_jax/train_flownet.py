"""Training the Intr-Flow flow / visibility network (`FlowUnet`) on ground-truth flows.

SPGNet runs a frozen flow network on (source, target) joint maps (`data.flow='network'`). Its
authors trained it with Intr-Flow's `FlowRegressionModel`; this module does the same on any source
with ground-truth flow and visibility: synthetic persons (exact flows) or DeepFashion prepared
`--with_flow` (Intr-Flow's HMR correspondences). The exported weights file plugs into the SPGNet
trainer as `config.init.flownet`.

One step is the official `optimize_parameters()`:
  input  cat(source joint maps, target joint maps): (B, H, W, 36) binary discs;
  loss   loss.flow · multi-scale EPE (`losses.multiscale_flow_loss`, targets in pixels / 20)
         + loss.vis · 3-class cross-entropy of the visibility logits
         (+ loss.flow_ss · segmentation-sensitive flow loss, which needs Intr-Flow's 7-class SMPL
         segmentations; no data source here has them, so it must be off: see `check_config`);
  update Adam with PyTorch-style L2 weight decay (added to the gradient before the moments), the
         learning rate halved every `optim.lr_decay_epochs` epochs as the official StepLR.
Validation (BatchNorm running statistics, as the official `model.eval()`) averages over the held-out
pairs: the official EPE over ground-truth body pixels (visibility < 2) and over visible pixels
(visibility == 0), in pixels; the visibility accuracy over all pixels and over body pixels; the
losses; and trivial baselines on the same pairs: zero flow; "visible on the whole body" (class 0 on
the ground-truth body, 2 elsewhere: an oracle body mask, which keypoints alone do not determine);
"background everywhere".

`train_and_evaluate(config, workdir)` runs (or resumes) a run in `workdir`:
  <workdir>/checkpoints/       Orbax checkpoints (`spg_jax.checkpoints`; latest N kept)
  <workdir>/flownet.npz        the network at the latest validation (`spg_jax.weights` format), for
                               `config.init.flownet` of an SPGNet config with the same image size,
                               joint maps and `model.flownet`
  <workdir>/flownet_best.npz   the network at the lowest validation EPE (the official `best` epoch)
  <workdir>/validation.json    the latest validation metrics
  <workdir>/                   TensorBoard events, written by process 0 only
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metric_writers
from jax.sharding import NamedSharding

from spg_jax import checkpoints, loop, losses, sharding
from spg_jax import train as spg_train
from spg_jax.models.flownet import BACKGROUND, FLOW_SCALE, FlowOutput, FlowUnet
from spg_jax.models.from_config import compute_dtype
from spg_jax.weights import load_weights, save_weights

PyTree = Any
# What a step reads from the pipeline's batches; the images and parsings it also decodes stay on the host.
BATCH_KEYS = ("source_pose", "target_pose", "flow", "visibility", "valid")
WEIGHTS_FILE = "flownet.npz"
BEST_WEIGHTS_FILE = "flownet_best.npz"


@flax.struct.dataclass
class FlowTrainState:
  """Everything a checkpoint holds besides the data position (which is `step`).

  params / batch_stats: the `FlowUnet` variables; opt_state: the Adam state of `params`.
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState


# ---------------------------------------------------------------------------------------------
# Configuration pieces.


def flownet_from_config(config: ml_collections.ConfigDict) -> FlowUnet:
  """The `FlowUnet` of `config.model.flownet` in `config.compute_dtype`."""
  return FlowUnet(**config.model.flownet.to_dict(), dtype=compute_dtype(config))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Rejects settings this trainer cannot honour, with the reason."""
  if config.loss.flow_ss:
    raise ValueError(
        f"loss.flow_ss={config.loss.flow_ss}: the segmentation-sensitive flow loss needs Intr-Flow's "
        "7-class SMPL part segmentations of both images (`Img/seg/*.bmp`), which no data source here "
        "provides (the CIHP parsings have other classes); set --config.loss.flow_ss=0")
  if config.loss.flow_loss_type not in ("l1", "l2"):
    raise ValueError(f"loss.flow_loss_type={config.loss.flow_loss_type!r}; expected 'l1' or 'l2'")
  h, w = config.data.image_size
  div = 2 ** (int(config.model.flownet.get("num_scales", FlowUnet.num_scales)) + 1)
  if h % div or w % div:
    raise ValueError(f"data.image_size={tuple(config.data.image_size)} is not divisible by {div}, as "
                     f"FlowUnet with model.flownet.num_scales needs (2**(num_scales+1))")


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           steps_per_epoch: int) -> Callable[[jax.Array], jax.Array]:
  """The official StepLR as a function of the step.

  lr(step) = optim.lr · optim.lr_gamma ** ⌊(epoch + 1) / optim.lr_decay_epochs⌋, epoch = ⌊step / steps_per_epoch⌋.

  The official loop calls `StepLR.step()` at the *start* of every epoch, so 1-based epoch e trains
  at lr · γ^⌊e / 8⌋: the first halving comes after 7 epochs, not 8. The +1 reproduces that.
  """
  o = config.optim

  def schedule(step):
    epoch = jnp.asarray(step, jnp.int32) // steps_per_epoch
    exponent = ((epoch + 1) // int(o.lr_decay_epochs)).astype(jnp.float32)
    return jnp.float32(o.lr) * jnp.power(jnp.float32(o.lr_gamma), exponent)

  return schedule


def make_optimizer(config: ml_collections.ConfigDict, schedule: Callable) -> optax.GradientTransformation:
  """Official `torch.optim.Adam(lr, betas=(beta1, beta2), weight_decay)` over every parameter.

  PyTorch's Adam adds weight_decay·θ to the gradient before the moments (L2, not AdamW), to all
  parameters (BatchNorm scales and biases included), hence `add_decayed_weights` first, unmasked.
  """
  o = config.optim
  return optax.chain(optax.add_decayed_weights(o.weight_decay) if o.weight_decay else optax.identity(),
                     optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps),
                     optax.scale_by_learning_rate(schedule))


def parameter_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """{'flow network (FlowUnet)': trainable parameters} at the config's image size (`--mode describe`)."""
  net = flownet_from_config(config)
  h, w = config.data.image_size
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, h, w, net.input_nc)), train=False))
  return {"flow network (FlowUnet)": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))}


# ---------------------------------------------------------------------------------------------
# The pure steps.


def joint_input(batch: dict[str, jax.Array]) -> jax.Array:
  """(B, H, W, 36) network input: source joint maps (channels 0-17), then target joint maps."""
  return jnp.concatenate([batch["source_pose"], batch["target_pose"]], axis=-1)


def _per_image_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """(B,) masked mean over each image of (B, H, W) `values` with a (B, H, W) {0, 1} mask (0 if empty)."""
  mask = mask.astype(jnp.float32)
  return jnp.sum(values * mask, axis=(1, 2)) / (jnp.sum(mask, axis=(1, 2)) + 1e-8)


@dataclasses.dataclass(frozen=True)
class FlowSteps:
  """The step functions of one configuration (closed over the network and hyper-parameters)."""

  net: FlowUnet
  tx: optax.GradientTransformation
  schedule: Callable[[jax.Array], jax.Array]
  weights: losses.FlowLossWeights
  loss_type: str = "l2"

  def init_state(self, rng: jax.Array, image_size: tuple[int, int]) -> FlowTrainState:
    """Randomly initialised state, step 0, fresh Adam moments.

    The layers' initialisers are Intr-Flow's `init_type='kaiming'`: Kaiming-normal (fan-in)
    convolutions, zero biases, BatchNorm γ ~ N(1, 0.02).
    """
    h, w = image_size
    variables = self.net.init(rng, jnp.zeros((1, h, w, self.net.input_nc)), train=False)
    return FlowTrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                          batch_stats=variables["batch_stats"], opt_state=self.tx.init(variables["params"]))

  def train_step(self, state: FlowTrainState, batch: dict) -> tuple[FlowTrainState, dict[str, jax.Array]]:
    """One Adam step on the official loss. Pure: jit it with the state donated.

    Args:
      state: the current state.
      batch: source_pose, target_pose (B, H, W, 18); flow (B, H, W, 2) target→source pixels;
        visibility (B, H, W) int 0/1/2.

    Returns:
      (new state, metrics): the loss terms of `losses.flow_network_losses` (train-mode EPE and
      visibility accuracy included), the learning rate and the gradient norm.
    """
    inputs = joint_input(batch)

    def loss_fn(params):
      out, updates = self.net.apply({"params": params, "batch_stats": state.batch_stats}, inputs,
                                    train=True, mutable=["batch_stats"])
      terms = losses.flow_network_losses(out, batch["flow"], batch["visibility"], weights=self.weights,
                                         loss_type=self.loss_type)
      return terms["total"], (terms, updates["batch_stats"])

    (_, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(terms, lr=self.schedule(state.step), grad_norm=optax.tree.norm(grads))
    return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state), metrics

  def eval_step(self, state: FlowTrainState, batch: dict) -> dict[str, jax.Array]:
    """Sums over the valid pairs of a batch of per-pair metrics, and `count`; see `evaluate`.

    Each pair is scored as a batch of one, so the sums divided by the count are the official batch
    formulas over the whole validation set, whatever the batch size and padding. Padding pairs
    (valid = False) count nowhere.
    """
    out = self.net.apply({"params": state.params, "batch_stats": state.batch_stats}, joint_input(batch),
                         train=False)
    gt_flow = batch["flow"].astype(jnp.float32)
    labels = batch["visibility"].astype(jnp.int32)

    def one_pair(o: FlowOutput, flow, vis):
      o = jax.tree.map(lambda x: x[None], o)
      return losses.flow_network_losses(o, flow[None], vis[None], weights=self.weights,
                                        loss_type=self.loss_type)

    per_pair = jax.vmap(one_pair)(out, gt_flow, labels)
    body, visible = labels < BACKGROUND, labels == 0
    pred_px = out.flow * FLOW_SCALE
    pred_vis = jnp.argmax(out.vis_logits, axis=-1)
    # The oracle-body baseline: "visible" on every ground-truth body pixel, background elsewhere.
    all_visible = jnp.where(body, 0, BACKGROUND)

    def epe(pred, mask):
      return _per_image_mean(jnp.linalg.norm(pred - gt_flow, axis=-1), mask)

    def accuracy(pred, mask):
      return _per_image_mean((pred == labels).astype(jnp.float32), mask)

    everywhere = jnp.ones_like(body)
    metrics = dict(
        epe=per_pair["epe"],
        epe_visible=epe(pred_px, visible),
        vis_acc=per_pair["vis_acc"],
        vis_acc_body=accuracy(pred_vis, body),
        loss_flow=per_pair["loss_flow"],
        loss_vis=per_pair["loss_vis"],
        total=per_pair["total"],
        baseline_zero_flow_epe=epe(jnp.zeros_like(gt_flow), body),
        baseline_zero_flow_epe_visible=epe(jnp.zeros_like(gt_flow), visible),
        baseline_all_visible_vis_acc=accuracy(all_visible, everywhere),
        baseline_all_visible_vis_acc_body=accuracy(all_visible, body),
        baseline_all_background_vis_acc=accuracy(jnp.full_like(labels, BACKGROUND), everywhere),
    )
    valid = batch["valid"].astype(jnp.float32)
    sums = {f"{k}_sum": jnp.sum(v * valid) for k, v in metrics.items()}
    sums["count"] = jnp.sum(valid)
    return sums


# ---------------------------------------------------------------------------------------------
# Data and validation.


def pipeline_features(config: ml_collections.ConfigDict):
  """Joint maps as `config.data`, ground-truth flow and visibility, no distance maps, no augmentation.

  The official flow loader shifts the target side by up to ±20 / ±10 pixels in training; the
  pipeline cannot shift a ground-truth flow (`Features` rejects augment with it), so none is done.
  """
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)

  d = config.data
  return pipeline.Features(joint_mode=d.joint_mode, joint_radius=float(d.joint_radius), distance_maps=False,
                           flow="ground_truth", augment=False)


def step_inputs(ds):
  """The batched pipeline `ds` reduced to `BATCH_KEYS`, so that images and parsings stay on the host."""
  return ds.map(lambda b: {k: b[k] for k in BATCH_KEYS})


def evaluate(eval_step: Callable, state: FlowTrainState, source, config: ml_collections.ConfigDict,
             mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Validation metrics averaged over every pair of `source` (each process reads its share).

  Returns:
    epe / epe_visible: official EPE (pixels) over ground-truth body (vis < 2) / visible (vis == 0)
      pixels, per pair then averaged; vis_acc / vis_acc_body: arg-max visibility accuracy over all
      / body pixels; loss_flow, loss_vis, total: the training losses; baseline_*: the same metrics
      of zero flow, of the oracle-body "all visible" labelling and of "all background"; num_pairs.
  """
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top

  bsz = sharding.check_batch_size(config.eval.batch_size, mesh)
  ds = step_inputs(pipeline.eval_dataset(source, pipeline_features(config), batch_size=bsz,
                                     process_index=jax.process_index(), process_count=jax.process_count()))
  num_batches = pipeline.num_eval_batches(source.num_pairs, bsz, jax.process_count())
  totals = None
  for host_batch in pipeline.padded_batches(ds, bsz, num_batches):
    sums = eval_step(state, sharding.global_batch(host_batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals.pop("count"))
  metrics = {k[:-len("_sum")]: float(v) / count for k, v in totals.items()}
  metrics["num_pairs"] = int(count)
  return metrics


# ---------------------------------------------------------------------------------------------
# Weights export.


def export_weights(path: str, variables: PyTree, config: ml_collections.ConfigDict, *, step: int,
                   metrics: dict[str, float] | None, train_source: str) -> None:
  """Writes the frozen network (`{'params', 'batch_stats'}`, host NumPy arrays) as a weights file.

  Metadata: network 'flownet'; config = the `FlowUnet` constructor arguments (as the converter of
  the official checkpoint writes them); the joint maps and image size the network expects; the
  step, the validation metrics and the training config.
  """
  net = flownet_from_config(config)
  model_config = {f.name: getattr(net, f.name) for f in dataclasses.fields(net)
                  if f.name not in ("parent", "name", "dtype")}
  meta = dict(
      network="flownet", config=model_config,
      num_parameters=int(sum(np.size(x) for x in jax.tree.leaves(variables["params"]))),
      image_size=list(config.data.image_size), joint_mode=config.data.joint_mode,
      joint_radius=float(config.data.joint_radius), step=int(step), validation=metrics,
      source=f"spg_jax.train_flownet on {train_source}",
      train_config=json.loads(config.to_json_best_effort()))
  save_weights(path, variables, meta)


# ---------------------------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass
class FlowRun:
  """What training and evaluation of one config in one workdir share (built by `setup_run`)."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  steps: FlowSteps
  abstract_state: PyTree
  state_sharding: PyTree
  batch_sharding: NamedSharding
  checkpointer: checkpoints.Checkpointer
  train_source: Any
  eval_source: Any
  global_batch_size: int
  steps_per_epoch: int
  eval_step: Callable
  replicate: Callable

  def restore(self, step: int) -> tuple[FlowTrainState, dict[str, Any]]:
    target = checkpoints.with_shardings(self.abstract_state, self.state_sharding)
    return self.checkpointer.restore(step, target)

  def host_variables(self, state: FlowTrainState) -> PyTree:
    """The network's variables as NumPy arrays on every process (gathered if sharded)."""
    return jax.device_get(self.replicate({"params": state.params, "batch_stats": state.batch_stats}))

  def validate(self, state: FlowTrainState, step: int, writer, best_epe: float | None = None,
               export: bool = False) -> dict[str, float]:
    """Validation metrics at `step`, written to the logs and `validation.json`.

    With `export`, also writes `flownet.npz`, and `flownet_best.npz` when the EPE beats `best_epe`.
    """
    metrics = evaluate(self.eval_step, state, self.eval_source, self.config, self.mesh)
    writer.write_scalars(step, {f"val_{k}": v for k, v in metrics.items()})
    logging.info("validation at step %d: EPE %.3f px (zero flow %.3f), visibility accuracy %.4f "
                 "(all visible %.4f)", step, metrics["epe"], metrics["baseline_zero_flow_epe"],
                 metrics["vis_acc"], metrics["baseline_all_visible_vis_acc"])
    if export:
      variables = self.host_variables(state)
    if jax.process_index() == 0:
      with open(os.path.join(self.workdir, "validation.json"), "w") as f:
        json.dump(dict(step=step, **metrics), f, indent=2)
      if export:
        kwargs = dict(step=step, metrics=metrics, train_source=self.train_source.name)
        export_weights(os.path.join(self.workdir, WEIGHTS_FILE), variables, self.config, **kwargs)
        if best_epe is None or metrics["epe"] < best_epe:
          export_weights(os.path.join(self.workdir, BEST_WEIGHTS_FILE), variables, self.config, **kwargs)
    return metrics


def setup_run(config: ml_collections.ConfigDict, workdir: str) -> FlowRun:
  """Mesh, network, data sources, checkpointer and jitted evaluation for a flow-network config."""
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(config.mesh.fsdp)
  global_batch_size = int(config.train.batch_size)
  local_batch_size = sharding.check_batch_size(global_batch_size, mesh)
  logging.info("mesh %s over %d devices (%d processes); global batch %d, %d per process",
               dict(mesh.shape), mesh.devices.size, jax.process_count(), global_batch_size, local_batch_size)
  train_source, eval_source = spg_train.data_sources(config)
  for source in (train_source, eval_source):
    if not source.has_flow:
      raise ValueError(f"{source.name} has no ground-truth flow: train the flow network on synthetic persons "
                       "or on a dataset prepared --with_flow (data.tfds_config='pkl_flow')")
  steps_per_epoch = max(1, train_source.num_pairs // global_batch_size)
  schedule = learning_rate_schedule(config, steps_per_epoch)
  steps = FlowSteps(net=flownet_from_config(config), tx=make_optimizer(config, schedule), schedule=schedule,
                    weights=losses.FlowLossWeights(flow=float(config.loss.flow), vis=float(config.loss.vis),
                                                   flow_ss=float(config.loss.flow_ss)),
                    loss_type=config.loss.flow_loss_type)
  abstract = jax.eval_shape(functools.partial(steps.init_state, image_size=tuple(config.data.image_size)),
                            jax.random.key(config.seed))
  state_sh = sharding.state_shardings(abstract, mesh)
  batch_sh = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  return FlowRun(
      config=config, workdir=workdir, mesh=mesh, steps=steps, abstract_state=abstract, state_sharding=state_sh,
      batch_sharding=batch_sh,
      checkpointer=checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"),
                                            keep=config.train.keep_checkpoints),
      train_source=train_source, eval_source=eval_source, global_batch_size=global_batch_size,
      steps_per_epoch=steps_per_epoch,
      eval_step=jax.jit(steps.eval_step, in_shardings=(state_sh, batch_sh), out_shardings=replicated),
      replicate=jax.jit(lambda x: x, out_shardings=replicated))


def initial_state(run: FlowRun) -> FlowTrainState:
  """Random initialisation born sharded, optionally overlaid with `config.init.flownet` (fine-tuning)."""
  config = run.config
  init = functools.partial(run.steps.init_state, image_size=tuple(config.data.image_size))
  state = jax.jit(init, out_shardings=run.state_sharding)(jax.random.key(config.seed))
  path = config.init.get("flownet")
  if path is None:
    return state
  # The check `train.load_frozen` applies, so a file accepted here is accepted there too.
  template = {"params": state.params, "batch_stats": state.batch_stats}
  overlay = spg_train._overlay  # pylint: disable=protected-access
  loaded = overlay(template, load_weights(path)[0], "config.init.flownet")
  logging.info("initialised the flow network from %s", path)
  # Adam starts from zero moments of the loaded parameters, as a fresh official run would.
  state = state.replace(params=loaded["params"], batch_stats=loaded["batch_stats"],
                        opt_state=run.steps.tx.init(loaded["params"]))
  return jax.device_put(state, run.state_sharding)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains the flow network (resuming from `workdir` if it holds checkpoints), validates, exports.

  Returns:
    The last validation metrics (see `evaluate`), plus `step`.
  """
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top

  run = setup_run(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  num_steps = loop.num_train_steps(config, run.steps_per_epoch)

  start = run.checkpointer.latest_step()
  best_epe = None
  if start is not None:
    state, meta = run.restore(start)
    loop.check_resumable(meta, run.global_batch_size, workdir)
    best_epe = meta.get("best_epe")
  else:
    state = initial_state(run)
    start = 0
  loop.write_config(config, workdir)

  train_step = jax.jit(run.steps.train_step, in_shardings=(run.state_sharding, run.batch_sharding),
                       out_shardings=(run.state_sharding, sharding.replicated(run.mesh)), donate_argnums=0)

  def validate(state, done):
    nonlocal best_epe
    metrics = run.validate(state, done, writer, best_epe=best_epe, export=True)
    best_epe = metrics["epe"] if best_epe is None else min(best_epe, metrics["epe"])
    return metrics

  def save(done, state, metrics):
    del metrics  # the exported `flownet_best.npz` is the best network; checkpoints keep the latest
    run.checkpointer.save(done, state, dict(step=done, global_batch_size=run.global_batch_size,
                                            pairs_consumed=done * run.global_batch_size,
                                            train_source=run.train_source.name, best_epe=best_epe))

  train_ds = step_inputs(pipeline.train_dataset(
      run.train_source, pipeline_features(config), global_batch_size=run.global_batch_size,
      seed=int(config.seed), start_step=start, process_index=jax.process_index(),
      process_count=jax.process_count()))
  logging.info("training the flow network on %s: steps %d → %d (%d per epoch)", run.train_source.name, start,
               num_steps, run.steps_per_epoch)
  _, metrics = loop.run(
      state, config=config, start=start, num_steps=num_steps, batches=train_ds.as_numpy_iterator(),
      step=lambda i, state, host_batch: train_step(state, sharding.global_batch(host_batch, run.mesh)),
      validate=validate, save=save, writer=writer, workdir=workdir,
      eval_every=loop.eval_every_steps(config, run.steps_per_epoch))
  run.checkpointer.wait()
  run.checkpointer.close()
  writer.flush()
  return dict(metrics, step=max(start, num_steps))


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Validates the latest checkpoint in `workdir` (`launch.py --mode eval`); exports nothing."""
  run = setup_run(config, workdir)
  step = run.checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {run.checkpointer.directory}; train first")
  state, _ = run.restore(step)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  metrics = run.validate(state, step, writer)
  run.checkpointer.close()
  writer.flush()
  return dict(metrics, step=step)
