"""Training losses: pixel L1, the GAN criterion, and the Intr-Flow flow-network losses.

Every function computes in float32, whatever the input dtype (bfloat16 activations included), and
returns float32 scalars. Images and maps are NHWC; flows are (B, H, W, 2) with channel 0 = x (along W)
and channel 1 = y (along H); visibility labels are 0 visible / 1 invisible / 2 background.

GAN criterion. SPGNet's `GANLoss(use_lsgan=False)` applies `F.binary_cross_entropy` to the sigmoid
output of the PatchGAN with constant targets 1 (real) or 0 (fake), averaged over every patch element
(official `models/modules.py`, class `GANLoss`). `bce_with_logits` is the same quantity computed from
the logits (the discriminator output before its final sigmoid) in the numerically stable form.

Intr-Flow flow-network losses. Source: ly015/intrinsic_flow at commit 94ea8f0b (SPGNet ships identical
copies): `models/flow_regression_model.py` (`initialize` l.44-47, `forward` l.93-108, `compute_loss`
l.117-127, `backward` l.129-137), `models/modules.py` (`EPE` l.361-372, `L1` l.374-384, `L2`
l.386-396, `MultiScaleFlowLoss` l.400-429, `SS_FlowLoss` l.431-460, `warp_acc_flow` l.596-625) and
`options/flow_regression_options.py` (l.17-21, l.112-114). With `F` = the network's output flow in
units of 20 pixels and `f*`, `v*` the ground-truth flow in pixels and visibility:

  total = loss_weight_flow · L_flow + loss_weight_vis · L_vis + loss_weight_flow_ss · L_ss
        = 1.0 · L_flow + 1.0 · L_vis + 5.0 · L_ss              (official defaults, use_ss_flow_loss=1)

  L_flow = Σ_{s=0}^{S-1} (0.32 / 2^s) · D(F_s, avgpool_{2·2^s}(0.05 · f*), maxpool_{2·2^s}(v* < 2))
      F_s is pyramid entry s at H / 2^(s+1) (s = 0 the finest; `FlowOutput.flow_pyramid` has the same
      order), and every level regresses flow in full-resolution pixels / 20 (targets are average
      pooled, never rescaled by the pooling factor). The official default `flow_loss_type='l2'` makes
      D the per-image masked mean end-point error, averaged over the batch:
        D_l2(F, T, M) = Σ_b [Σ_p M_bp · ||F_bp − T_bp||_2] / (B · Σ_p M_bp + 1e-8)
      and `'l1'` the per-component absolute error:
        D_l1(F, T, M) = Σ_b [Σ_p M_bp · Σ_c |F_bpc − T_bpc|] / (2 · B · Σ_p M_bp + 1e-8).
      An image whose mask is empty contributes 0 but still counts in B.

  L_vis = mean over all B·H·W pixels of the 3-class cross-entropy of the full-resolution visibility
      logits (`nn.CrossEntropyLoss()`).

  L_ss (segmentation-sensitive flow loss) = mean over all B·H·W·2 elements of
      |0.05 · (20·F_up − f*)| · m, with the stop-gradient mask
      m = [v* == 0] · Σ_{k≥1} seg2_k · [warp(seg1_k, 20·F_up) == 0]
      i.e. visible target pixels whose warped source body part (SMPL 7-class one-hot maps, channel 0 =
      background and ignored) does not contain the target's part. F_up = `FlowOutput.flow`.

`FlowRegressionModel` also logs `EPE(20·F_up, f*, v* < 2)` (the `D_l2` formula at full resolution,
in pixels); `endpoint_error` reproduces it. `MultiScaleFlowLoss` additionally returns a pyramid EPE
that the model discards; it is not reproduced. `visibility_accuracy` is not in the official code.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from spg_jax.models.flownet import BACKGROUND, FLOW_SCALE, FlowOutput
from spg_jax.ops.warp import warp_by_flow

# `MultiScaleFlowLoss(l_weight=0.32)`: level s of the pyramid is weighted 0.32 / 2**s.
PYRAMID_BASE_WEIGHT = 0.32
# `start_scale`: the finest pyramid level is at 1/2 of the input resolution.
START_SCALE = 2
# Official `div_flow`: ground truth in pixels is multiplied by it (not divided by FLOW_SCALE) so that the
# float32 rounding is the official one.
DIV_FLOW = 0.05
# The official denominators add this to the per-image mask count so that empty masks give 0.
_COUNT_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class FlowLossWeights:
  """Official `loss_weight_*` defaults of `TrainFlowRegressionOptions`."""

  flow: float = 1.0
  vis: float = 1.0
  flow_ss: float = 5.0


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean absolute error over all elements (`nn.L1Loss()`), as a float32 scalar.

  Args:
    a, b: arrays of the same shape, any float dtype (e.g. (B, H, W, 3) images in [-1, 1]).
  """
  if a.shape != b.shape:
    raise ValueError(f"l1: shapes differ, {a.shape} vs {b.shape}")
  return jnp.mean(_abs(a.astype(jnp.float32) - b.astype(jnp.float32)))


def bce_with_logits(logits: jax.Array, target_is_real: bool) -> jax.Array:
  """Vanilla-GAN binary cross-entropy against a constant target, averaged over all elements.

  Equals the official `F.binary_cross_entropy(sigmoid(logits), 1 or 0)`:
  −log σ(x) = softplus(−x) for real targets and −log(1 − σ(x)) = softplus(x) for fake ones. The
  official probability form saturates in float32: σ(x) rounds to exactly 1 for x ≳ 16.6 (so a fake
  target gives log(0), clamped by PyTorch to a loss of 100 with zero gradient) and underflows to 0
  for x ≲ −88 (a real target is then clamped the same way). This form keeps the exact, finite loss
  and gradient there; elsewhere the two agree to float32 rounding.

  Args:
    logits: (B, h, w, 1) PatchGAN scores before the sigmoid (any shape, any float dtype).
    target_is_real: static Python bool; True for target 1, False for target 0.

  Returns:
    float32 scalar.
  """
  x = logits.astype(jnp.float32)
  # softplus(±x) = max(±x, 0) + log1p(exp(−|x|)) never overflows.
  return jnp.mean(jax.nn.softplus(-x if target_is_real else x))


def _abs(x: jax.Array) -> jax.Array:
  """|x| with the subgradient 0 at x = 0, as PyTorch's `abs` (JAX's `abs` uses 1 there)."""
  return x * jnp.sign(x)


def _labels(vis: jax.Array) -> jax.Array:
  """(B, H, W) int32 visibility labels from (B, H, W) or (B, H, W, 1), integer- or float-valued."""
  if vis.ndim == 4:
    if vis.shape[-1] != 1:
      raise ValueError(f"visibility labels must be (B, H, W) or (B, H, W, 1), got {vis.shape}")
    vis = vis[..., 0]
  if jnp.issubdtype(vis.dtype, jnp.floating):
    vis = jnp.round(vis)
  return vis.astype(jnp.int32)


def _mask(mask: jax.Array) -> jax.Array:
  """(B, H, W, 1) float32 mask from (B, H, W) or (B, H, W, 1)."""
  if mask.ndim == 3:
    mask = mask[..., None]
  return mask.astype(jnp.float32)


def _safe_norm(d: jax.Array) -> jax.Array:
  """Euclidean norm over the last axis with a zero (not NaN) gradient at d = 0, as `torch.norm`."""
  sq = jnp.sum(d * d, axis=-1, keepdims=True)
  nonzero = sq > 0
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def _masked_flow_error(pred: jax.Array, target: jax.Array, mask: jax.Array,
                       loss_type: Literal["l1", "l2"]) -> jax.Array:
  """Official `L2` (= `EPE`) or `L1` on (B, h, w, 2) flows with a (B, h, w, 1) {0, 1} mask."""
  bsz = pred.shape[0]
  diff = pred - target
  if loss_type == "l2":
    err, per_pixel = _safe_norm(diff) * mask, 1.0
  elif loss_type == "l1":
    err, per_pixel = _abs(diff) * mask, 2.0
  else:
    raise ValueError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
  count = jnp.sum(mask, axis=(1, 2, 3))  # (B,)
  return jnp.sum(jnp.sum(err, axis=(1, 2, 3)) / (count * bsz * per_pixel + _COUNT_EPS))


def _pool(x: jax.Array, k: int, op) -> jax.Array:
  """Non-overlapping k x k pooling of (B, H, W, C), H and W divisible by k (`nn.AvgPool2d(k, k)`)."""
  b, h, w, c = x.shape
  if h % k or w % k:
    raise ValueError(f"cannot pool {x.shape[1:3]} by {k}: not divisible")
  return op(x.reshape(b, h // k, k, w // k, k, c), axis=(2, 4))


def endpoint_error(pred_flow_px: jax.Array, gt_flow_px: jax.Array, mask: jax.Array) -> jax.Array:
  """Official `EPE`: the per-image mean end-point error over the mask, averaged over the batch.

  `Σ_b [Σ_p mask_bp · ||pred_bp − gt_bp||_2] / (B · Σ_p mask_bp + 1e-8)`; an image with an empty mask
  contributes 0 but still counts in B.

  Args:
    pred_flow_px: (B, H, W, 2) predicted flow in pixels (for `FlowUnet`, `20 · FlowOutput.flow`).
    gt_flow_px: (B, H, W, 2) ground-truth flow in pixels.
    mask: (B, H, W) or (B, H, W, 1) {0, 1} (bool or float); officially `gt_vis < 2`.

  Returns:
    float32 scalar, in pixels.
  """
  return _masked_flow_error(pred_flow_px.astype(jnp.float32), gt_flow_px.astype(jnp.float32), _mask(mask), "l2")


def multiscale_flow_loss(flow_pyramid: tuple[jax.Array, ...] | list[jax.Array], gt_flow_px: jax.Array,
                         gt_mask: jax.Array, *, loss_type: Literal["l1", "l2"] = "l2",
                         base_weight: float = PYRAMID_BASE_WEIGHT) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """Official `MultiScaleFlowLoss` (see the module docstring for the formula).

  Args:
    flow_pyramid: `FlowOutput.flow_pyramid`; entry s is (B, H/2^(s+1), W/2^(s+1), 2) in units of
      20 full-resolution pixels, s = 0 the finest.
    gt_flow_px: (B, H, W, 2) ground-truth flow in pixels (zero on the background).
    gt_mask: (B, H, W) or (B, H, W, 1) {0, 1}; officially `gt_vis < 2`.
    loss_type: 'l2' (official default, per-pixel end-point error) or 'l1'.
    base_weight: weight of level 0; level s gets base_weight / 2**s.

  Returns:
    (loss, per_level): the weighted float32 sum and the unweighted per-level terms.
  """
  target = gt_flow_px.astype(jnp.float32) * DIV_FLOW
  mask = _mask(gt_mask)
  loss = jnp.zeros((), jnp.float32)
  terms = []
  for s, pred in enumerate(flow_pyramid):
    k = START_SCALE * 2**s
    target_s = _pool(target, k, jnp.mean)
    mask_s = _pool(mask, k, jnp.max)
    if pred.shape != target_s.shape:
      raise ValueError(f"pyramid level {s}: prediction {pred.shape} vs pooled target {target_s.shape}")
    term = _masked_flow_error(pred.astype(jnp.float32), target_s, mask_s, loss_type)
    terms.append(term)
    loss = loss + (base_weight / 2**s) * term
  return loss, tuple(terms)


def visibility_loss(vis_logits: jax.Array, gt_vis: jax.Array) -> jax.Array:
  """`nn.CrossEntropyLoss()` over the 3 visibility classes, averaged over all B·H·W pixels.

  Args:
    vis_logits: (B, H, W, 3) unnormalised scores (`FlowOutput.vis_logits`).
    gt_vis: (B, H, W) or (B, H, W, 1) labels in {0, 1, 2}, integer or float valued.

  Returns:
    float32 scalar.
  """
  logp = jax.nn.log_softmax(vis_logits.astype(jnp.float32), axis=-1)
  labels = _labels(gt_vis)
  return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


def visibility_accuracy(vis_logits: jax.Array, gt_vis: jax.Array) -> jax.Array:
  """Fraction of the B·H·W pixels whose arg-max visibility class equals the label (for logging).

  Args:
    vis_logits: (B, H, W, 3) scores; ties go to the first maximum, as `torch.argmax`.
    gt_vis: (B, H, W) or (B, H, W, 1) labels in {0, 1, 2}.

  Returns:
    float32 scalar in [0, 1].
  """
  pred = jnp.argmax(vis_logits, axis=-1)
  return jnp.mean((pred == _labels(gt_vis)).astype(jnp.float32))


def segmentation_sensitive_flow_loss(pred_flow_px: jax.Array, gt_flow_px: jax.Array, seg_1: jax.Array,
                                     seg_2: jax.Array, gt_vis: jax.Array) -> jax.Array:
  """Official `SS_FlowLoss(loss_type='l1')`: flow error only where the flow lands on a wrong body part.

  The mask is built without gradient: source parts `seg_1[..., 1:]` are warped by the predicted flow
  (bilinear, zeros outside, `align_corners=True` pixel convention as `warp_acc_flow` on PyTorch ≤ 1.2;
  `spg_jax.ops.warp.warp_by_flow`) and binarised with `> 0`; a pixel counts when it is visible
  (`gt_vis == 0`) and its target part is absent from the warped source there. The loss is then
  `mean(|0.05 · (pred − gt)| · mask)` over all B·H·W·2 elements.

  Args:
    pred_flow_px: (B, H, W, 2) predicted flow in pixels (`20 · FlowOutput.flow`, not masked).
    gt_flow_px: (B, H, W, 2) ground-truth flow in pixels.
    seg_1, seg_2: (B, H, W, S) one-hot body-part maps of the source and target images, channel 0 =
      background (Intr-Flow's 7-class SMPL projection).
    gt_vis: (B, H, W) or (B, H, W, 1) target visibility labels.

  Returns:
    float32 scalar.
  """
  pred = pred_flow_px.astype(jnp.float32)
  seg_1w = warp_by_flow(seg_1[..., 1:].astype(jnp.float32), jax.lax.stop_gradient(pred)) > 0
  mask = jnp.sum(seg_2[..., 1:].astype(jnp.float32) * (~seg_1w).astype(jnp.float32), axis=-1, keepdims=True)
  mask = jax.lax.stop_gradient(mask * (_labels(gt_vis) == 0)[..., None].astype(jnp.float32))
  err = (pred - gt_flow_px.astype(jnp.float32)) * DIV_FLOW * mask
  return jnp.mean(_abs(err))


def flow_network_losses(output: FlowOutput, gt_flow_px: jax.Array, gt_vis: jax.Array,
                        seg_1: jax.Array | None = None, seg_2: jax.Array | None = None, *,
                        weights: FlowLossWeights = FlowLossWeights(),
                        loss_type: Literal["l1", "l2"] = "l2") -> dict[str, jax.Array]:
  """All official `FlowRegressionModel` training terms for one batch, and their weighted total.

  Args:
    output: `FlowUnet` output (flow and pyramid in units of 20 pixels).
    gt_flow_px: (B, H, W, 2) target->source ground-truth flow in pixels, zero on the background.
    gt_vis: (B, H, W) or (B, H, W, 1) ground-truth visibility in {0, 1, 2}.
    seg_1, seg_2: optional (B, H, W, S) one-hot body-part maps (channel 0 = background). The official
      training uses them (`use_ss_flow_loss=1`); without them `loss_flow_ss` is left out of the dict
      and of the total (the official `use_ss_flow_loss=0`).
    weights: `loss_weight_flow`, `loss_weight_vis`, `loss_weight_flow_ss` (official 1, 1, 5); plain
      Python floats, so close over them (or mark the argument static) under `jax.jit`.
    loss_type: official `flow_loss_type`, default 'l2'.

  Returns:
    dict of float32 scalars: `loss_flow` (multi-scale), `loss_flow_s{i}` (its unweighted levels),
    `loss_vis`, `loss_flow_ss` (with segmentations), `total` (the weighted sum that the official
    `backward` differentiates), and the logged metrics `epe` (pixels, `EPE` at full resolution over
    `gt_vis < 2`) and `vis_acc`; the metrics are computed under stop_gradient.
  """
  labels = _labels(gt_vis)
  gt_mask = (labels < BACKGROUND)[..., None]
  pred_px = output.flow.astype(jnp.float32) * FLOW_SCALE
  loss_flow, levels = multiscale_flow_loss(output.flow_pyramid, gt_flow_px, gt_mask, loss_type=loss_type)
  out = {"loss_flow": loss_flow}
  out.update({f"loss_flow_s{s}": t for s, t in enumerate(levels)})
  out["loss_vis"] = visibility_loss(output.vis_logits, labels)
  total = weights.flow * loss_flow + weights.vis * out["loss_vis"]
  if (seg_1 is None) != (seg_2 is None):
    raise ValueError("flow_network_losses: pass both seg_1 and seg_2, or neither")
  if seg_1 is not None:
    out["loss_flow_ss"] = segmentation_sensitive_flow_loss(pred_px, gt_flow_px, seg_1, seg_2, labels)
    total = total + weights.flow_ss * out["loss_flow_ss"]
  out["total"] = total
  out["epe"] = jax.lax.stop_gradient(endpoint_error(pred_px, gt_flow_px, gt_mask))
  out["vis_acc"] = jax.lax.stop_gradient(visibility_accuracy(output.vis_logits, labels))
  return out
