"""The pure training and evaluation steps of SPGNet (both stages, discriminator, frozen helpers).

One training step is the official `optimize_parameters()`:
  1. forward: stage 1 (SPATN) predicts target-parsing logits; stage 2 (the SPGNet generator) renders
     the target from the source image, the target pose, both parsings and the flow / visibility;
  2. discriminator update (only once the GAN is on): 0.5·(BCE(D(real), 1) + BCE(D(fake), 0))·w_gan
     with the fake detached;
  3. generator update: w_l1·L1 + w_vgg·VGG19 perceptual + w_gan·BCE(D'(fake), 1) against the
     *updated* discriminator D', plus w_ce·cross-entropy of stage 1 when stage 1 trains.
The generator runs forward once: `jax.vjp` keeps its pullback while the discriminator steps, then
the loss gradient with respect to its outputs is pulled back to the parameters.

Training schemes (`config.scheme`, the paper's Table A):
  parallel    S1∥S2: both stages train; stage 2 is fed the ground-truth target parsing.
  sequential  S1▷S2: stage 1 is frozen (weights from `config.init.parsing`); stage 2 is fed its
              arg-max prediction.
  joint       S1⋈S2: end to end; stage 2 is fed stage 1's softmax, so the image losses reach stage 1.
Evaluation always feeds stage 2 the predicted (arg-max) parsing, as inference does.

Flow and visibility come from the batch (`data.flow` = 'ground_truth' / 'geometric') or from the
frozen flow network on the joint maps (`data.flow` = 'network', the official setting).

Batch (see `input_pipeline.pipeline`): source/target_image (B, H, W, 3) in [-1, 1], source/target_
pose (B, H, W, 18), optional source/target_distance (B, H, W, 12), source/target_parsing as (B, H, W)
labels or (B, H, W, 20) one-hot, optional flow (B, H, W, 2) pixels and visibility (B, H, W), valid (B,).
Parameters, optimizer state, norm statistics and losses are float32; the networks compute in
`config.compute_dtype`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from spg_jax import losses
from spg_jax.metrics import segmentation, ssim
from spg_jax.models.flownet import flow_and_visibility
from spg_jax.models import generator as generator_lib
from spg_jax.models import parsing as parsing_lib
from spg_jax.models.from_config import Networks
from spg_jax.models.parsing import parsing_cross_entropy
from spg_jax.models.vgg import perceptual_loss
from spg_jax.ops.warp import warp_by_flow

NUM_CLASSES = 20
SCHEMES = ("parallel", "sequential", "joint")
PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds besides the data position (which is `step`).

  params / batch_stats: {'generator', 'discriminator'} and 'parsing' unless stage 1 is frozen.
  The generator's spectral-norm vectors u, v live in its batch_stats, as PyTorch keeps them as buffers.
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_g: optax.OptState
  opt_d: optax.OptState


@flax.struct.dataclass
class Frozen:
  """Networks that do not train: never checkpointed, loaded from their weights files at start.

  flownet: {'params', 'batch_stats'} or None when flows come from the data.
  vgg: {'params'} or None when the perceptual loss is off.
  parsing: {'params', 'batch_stats'} of stage 1 in the sequential scheme, else None.
  """
  flownet: PyTree | None = None
  vgg: PyTree | None = None
  parsing: PyTree | None = None


@dataclasses.dataclass(frozen=True)
class LossWeights:
  l1: float = 1.0
  perceptual: float = 1.0
  gan: float = 0.01
  parsing_ce: float = 1.0


def onehot_parsing(parsing: jax.Array) -> jax.Array:
  """(B, H, W) labels or (B, H, W, 20) one-hot → (B, H, W, 20) float32."""
  if parsing.ndim == 4:
    return parsing.astype(jnp.float32)
  return jax.nn.one_hot(parsing, NUM_CLASSES, dtype=jnp.float32)


def parsing_labels(parsing: jax.Array) -> jax.Array:
  """(B, H, W) labels or (B, H, W, 20) one-hot → (B, H, W) int32 labels."""
  return parsing.astype(jnp.int32) if parsing.ndim == 3 else jnp.argmax(parsing, -1).astype(jnp.int32)


def flow_inputs(nets: Networks, frozen: Frozen, batch: dict) -> tuple[jax.Array, jax.Array]:
  """(flow (B, H, W, 2) pixels, visibility (B, H, W, 1) float 0/1/2) from the batch or the flow net."""
  if "flow" in batch:
    return batch["flow"].astype(jnp.float32), batch["visibility"][..., None].astype(jnp.float32)
  if frozen.flownet is None:
    raise ValueError("the batch has no flow and no flow network is loaded (data.flow='network' needs "
                     "config.init.flownet)")
  joints = jnp.concatenate([batch["source_pose"], batch["target_pose"]], axis=-1)
  out = nets.flownet.apply(frozen.flownet, joints, train=False)
  flow, vis = flow_and_visibility(out.flow, out.vis_logits)
  return jax.lax.stop_gradient(flow), jax.lax.stop_gradient(vis)


def stage1_inputs(batch: dict, use_distance_maps: bool) -> dict[str, jax.Array]:
  inputs = dict(source_parsing=onehot_parsing(batch["source_parsing"]),
                source_pose=batch["source_pose"], target_pose=batch["target_pose"])
  if use_distance_maps:
    inputs.update(source_distance=batch["source_distance"], target_distance=batch["target_distance"])
  return inputs


def discriminator_input(batch: dict, image: jax.Array) -> jax.Array:
  """Official D input cat(source image, real or generated image, target joint maps): 24 channels."""
  return jnp.concatenate([batch["source_image"], image, batch["target_pose"]], axis=-1)


def make_optimizers(config, steps_per_epoch: int) -> tuple[optax.GradientTransformation, ...]:
  """Adam for G (2e-4) and D (2e-5, PyTorch-style L2 weight decay 4e-4), β = (0.5, 0.999).

  The learning rates follow the official StepLR (× `lr_gamma` every `lr_decay_epochs` epochs),
  which never fires within the official 45 (DeepFashion) or 10 (Market) epochs. PyTorch's Adam
  `weight_decay` adds wd·θ to the gradient before the moments (not AdamW), hence
  `add_decayed_weights` first in the chain.
  """
  o = config.optim

  def schedule(lr):
    return optax.exponential_decay(lr, transition_steps=max(1, o.lr_decay_epochs * steps_per_epoch),
                                   decay_rate=o.lr_gamma, staircase=True)

  tx_g = optax.chain(optax.add_decayed_weights(o.weight_decay_g) if o.weight_decay_g else optax.identity(),
                     optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps),
                     optax.scale_by_learning_rate(schedule(o.lr_g)))
  tx_d = optax.chain(optax.add_decayed_weights(o.weight_decay_d) if o.weight_decay_d else optax.identity(),
                     optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps),
                     optax.scale_by_learning_rate(schedule(o.lr_d)))
  return tx_g, tx_d, schedule(o.lr_g), schedule(o.lr_d)


@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """The step functions of one configuration (closed over the networks and hyper-parameters)."""

  nets: Networks
  scheme: str
  use_distance_maps: bool
  weights: LossWeights
  tx_g: optax.GradientTransformation
  tx_d: optax.GradientTransformation
  lr_g: Callable[[jax.Array], jax.Array]
  lr_d: Callable[[jax.Array], jax.Array]
  seed: int

  def __post_init__(self):
    if self.scheme not in SCHEMES:
      raise ValueError(f"config.scheme={self.scheme!r}; expected one of {SCHEMES}")

  @property
  def trains_stage1(self) -> bool:
    return self.scheme != "sequential"

  # -------------------------------------------------------------------------------------------
  # Forward passes.

  def _stage1(self, variables, batch, train):
    """Stage-1 logits (B, H, W, 20) float32, and updated batch stats when `train`."""
    inputs = stage1_inputs(batch, self.use_distance_maps)
    if train:
      logits, updates = self.nets.parsing.apply(variables, **inputs, train=True, mutable=["batch_stats"])
      return logits.astype(jnp.float32), updates["batch_stats"]
    return self.nets.parsing.apply(variables, **inputs, train=False).astype(jnp.float32), None

  def _generate(self, variables, batch, target_parsing, flow, vis, *, train, rng):
    """Generated image (B, H, W, 3) in [-1, 1], and updated batch stats when `train`."""
    kwargs = dict(target_pose=batch["target_pose"], source_image=batch["source_image"],
                  source_parsing=onehot_parsing(batch["source_parsing"]),
                  target_parsing=target_parsing, flow=flow, visibility=vis)
    if train:
      raw, updates = self.nets.generator.apply(variables, **kwargs, train=True, mutable=["batch_stats"],
                                               rngs={"noise": rng})
      return jnp.tanh(raw), updates["batch_stats"]
    raw = self.nets.generator.apply(variables, **kwargs, train=False, deterministic=True)
    return jnp.tanh(raw), None

  # -------------------------------------------------------------------------------------------
  # Training.

  def train_step(self, state: TrainState, frozen: Frozen, batch: dict, *,
                 with_gan: bool) -> tuple[TrainState, dict[str, jax.Array]]:
    """One D step (when `with_gan`) and one G step. Pure: jit it with the state donated."""
    rng = jax.random.fold_in(jax.random.key(self.seed), state.step)
    flow, vis = flow_inputs(self.nets, frozen, batch)
    target_labels = parsing_labels(batch["target_parsing"])
    g_names = ("generator", "parsing") if self.trains_stage1 else ("generator",)
    g_params = {k: state.params[k] for k in g_names}

    def forward(trainable):
      new_stats = {}
      if self.trains_stage1:
        logits, new_stats["parsing"] = self._stage1(
            {"params": trainable["parsing"], "batch_stats": state.batch_stats["parsing"]}, batch, train=True)
      else:
        logits, _ = self._stage1(frozen.parsing, batch, train=False)
      if self.scheme == "parallel":
        fed = onehot_parsing(batch["target_parsing"])
      elif self.scheme == "sequential":
        fed = jax.nn.one_hot(jnp.argmax(logits, -1), NUM_CLASSES, dtype=jnp.float32)
      else:  # joint: differentiable soft parsing
        fed = jax.nn.softmax(logits, axis=-1)
      fake, new_stats["generator"] = self._generate(
          {"params": trainable["generator"], "batch_stats": state.batch_stats["generator"]},
          batch, fed, flow, vis, train=True, rng=rng)
      return (fake, logits), new_stats

    (fake, logits), pullback, new_stats = jax.vjp(forward, g_params, has_aux=True)
    metrics = {}

    # Discriminator update, on the detached fake.
    d_params, opt_d = state.params["discriminator"], state.opt_d
    d_stats = state.batch_stats["discriminator"]
    if with_gan:
      def d_loss_fn(params):
        variables = {"params": params, "batch_stats": d_stats}
        real_logits, upd = self.nets.discriminator.apply(
            variables, discriminator_input(batch, batch["target_image"]), train=True, mutable=["batch_stats"])
        fake_logits, upd = self.nets.discriminator.apply(
            {"params": params, **upd}, discriminator_input(batch, jax.lax.stop_gradient(fake)),
            train=True, mutable=["batch_stats"])
        real_loss = losses.bce_with_logits(real_logits, True)
        fake_loss = losses.bce_with_logits(fake_logits, False)
        return 0.5 * (real_loss + fake_loss) * self.weights.gan, (upd["batch_stats"], real_loss, fake_loss)

      (d_loss, (d_stats, real_loss, fake_loss)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
      updates, opt_d = self.tx_d.update(d_grads, opt_d, d_params)
      d_params = optax.apply_updates(d_params, updates)
      metrics.update(d_loss=d_loss, d_real_bce=real_loss, d_fake_bce=fake_loss)

    # Generator (and stage-1) update.
    def g_loss_fn(fake, logits):
      terms = {"l1": losses.l1(fake, batch["target_image"])}
      if self.weights.perceptual:
        feats = self.nets.vgg.apply(frozen.vgg, jnp.concatenate([fake, batch["target_image"]]))
        n = fake.shape[0]
        terms["perceptual"] = perceptual_loss([f[:n] for f in feats],
                                              [jax.lax.stop_gradient(f[n:]) for f in feats])
      if with_gan:
        # The official D stays in train mode here: batch statistics of the fake batch; its running
        # statistics are never used, so this call's updates are dropped.
        fake_logits, _ = self.nets.discriminator.apply(
            {"params": d_params, "batch_stats": d_stats}, discriminator_input(batch, fake), train=True,
            mutable=["batch_stats"])
        terms["gan"] = losses.bce_with_logits(fake_logits, True)
      if self.trains_stage1:
        terms["parsing_ce"] = parsing_cross_entropy(logits, target_labels)
      total = sum(getattr(self.weights, k) * v for k, v in terms.items())
      return total, terms

    (g_loss, g_terms), (grad_fake, grad_logits) = jax.value_and_grad(
        g_loss_fn, argnums=(0, 1), has_aux=True)(fake, logits)
    (g_grads,) = pullback((grad_fake, grad_logits))
    updates, opt_g = self.tx_g.update(g_grads, state.opt_g, g_params)
    g_params = optax.apply_updates(g_params, updates)

    params = {**state.params, **g_params, "discriminator": d_params}
    batch_stats = {**state.batch_stats, **new_stats, "discriminator": d_stats}
    metrics.update(g_loss=g_loss, **{f"g_{k}": v for k, v in g_terms.items()},
                   lr_g=self.lr_g(state.step), lr_d=self.lr_d(state.step),
                   g_grad_norm=optax.tree.norm(g_grads))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_g=opt_g, opt_d=opt_d)
    return new_state, metrics

  # -------------------------------------------------------------------------------------------
  # Evaluation.

  def stage1_variables(self, state: TrainState, frozen: Frozen) -> PyTree:
    """Stage 1's {'params', 'batch_stats'}: trained in the state, or frozen (sequential scheme)."""
    if not self.trains_stage1:
      return frozen.parsing
    return {"params": state.params["parsing"], "batch_stats": state.batch_stats["parsing"]}

  def predict(self, state: TrainState, frozen: Frozen, batch: dict, *,
              true_parsing: bool = False) -> dict[str, jax.Array]:
    """Inference as users run it: stage 1's arg-max parsing feeds stage 2; no noise, running stats.

    Returns generated (B, H, W, 3) in [-1, 1], parsing (B, H, W) int32 stage-1 labels, and the
    flow / visibility the generator used. `true_parsing=True` also returns generated_true_parsing:
    stage 2 fed the batch's target parsing instead (the setting stage 2 trains in under the parallel
    scheme), which separates stage-2 quality from stage-1 errors; stage 1 and the flow run once.
    """
    logits, _ = self._stage1(self.stage1_variables(state, frozen), batch, train=False)
    labels = jnp.argmax(logits, -1).astype(jnp.int32)
    flow, vis = flow_inputs(self.nets, frozen, batch)
    generator = {"params": state.params["generator"], "batch_stats": state.batch_stats["generator"]}
    generate = lambda fed: self._generate(generator, batch, fed, flow, vis, train=False, rng=None)[0]
    out = dict(generated=generate(jax.nn.one_hot(labels, NUM_CLASSES, dtype=jnp.float32)), parsing=labels,
               flow=flow, visibility=vis[..., 0])
    if true_parsing:
      out["generated_true_parsing"] = generate(onehot_parsing(batch["target_parsing"]))
    return out

  def eval_step(self, state: TrainState, frozen: Frozen, batch: dict) -> dict[str, jax.Array]:
    """Sums over the valid pairs of a batch: SSIM, L1, count and the stage-1 confusion matrix.

    SSIM is the official test script's (scikit-image defaults on 0..255 values, `ssim_spgnet`); L1
    is the mean absolute difference in [-1, 1] units. Padding pairs (valid = False) count nowhere:
    their true labels become -1, which the confusion matrix ignores. Keys are `<metric>_sum`:
      ssim, l1                    inference (stage 2 fed stage 1's prediction);
      true_parsing_{ssim,l1}      stage 2 fed the true target parsing;
      baseline_copy_{ssim,l1}     the source image as the prediction;
      baseline_warp_{ssim,l1}     the source image warped by the batch's flow (when it has one).
    """
    out = self.predict(state, frozen, batch, true_parsing=True)
    valid = batch["valid"]
    validf = valid.astype(jnp.float32)
    target = batch["target_image"]
    predictions = {"": out["generated"], "true_parsing_": out["generated_true_parsing"],
                   "baseline_copy_": batch["source_image"]}
    if "flow" in batch:
      predictions["baseline_warp_"] = warp_by_flow(batch["source_image"], batch["flow"].astype(jnp.float32))
    sums = {}
    for prefix, image in predictions.items():
      sums[f"{prefix}ssim_sum"] = jnp.sum(ssim.ssim_spgnet(image, target) * validf)
      sums[f"{prefix}l1_sum"] = jnp.sum(jnp.mean(jnp.abs(image - target), axis=(1, 2, 3)) * validf)
    truth = jnp.where(valid[:, None, None], parsing_labels(batch["target_parsing"]), -1)
    sums["confusion"] = segmentation.confusion_matrix(out["parsing"], truth, NUM_CLASSES)
    sums["count"] = jnp.sum(validf)
    return sums


def init_state(config, nets: Networks, fn: StepFunctions,
               rng: jax.Array) -> TrainState:
  """Randomly initialised state (official init: Kaiming-normal, zero biases, BN γ ~ N(1, 0.02))."""
  h, w = config.data.image_size
  k_g, k_p, k_d = jax.random.split(rng, 3)
  variables = {
      "generator": generator_lib.init_variables(nets.generator, k_g, (1, h, w)),
      "discriminator": nets.discriminator.init(k_d, jnp.zeros((1, h, w, nets.discriminator.input_nc)),
                                               train=False),
  }
  if fn.trains_stage1:
    variables["parsing"] = parsing_lib.init_variables(nets.parsing, k_p, (1, h, w))
  params = {k: v["params"] for k, v in variables.items()}
  batch_stats = {k: v.get("batch_stats", {}) for k, v in variables.items()}
  g_params = {k: params[k] for k in params if k != "discriminator"}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_g=fn.tx_g.init(g_params), opt_d=fn.tx_d.init(params["discriminator"]))
