"""Losses of `spg_jax.losses` against PyTorch transcriptions of the official formulas.

The references below restate, in PyTorch (NCHW, float32), the official Intr-Flow code paths that
SPGNet ships: `L1`/`L2`/`EPE`, `MultiScaleFlowLoss`, `SS_FlowLoss` with `warp_acc_flow` (PyTorch 1.2
`grid_sample`, i.e. `align_corners=True`), `nn.CrossEntropyLoss` and `FlowRegressionModel.backward`'s
weighted sum; and the GAN criterion `F.binary_cross_entropy(sigmoid(x), 1 or 0)`. Values and
gradients are compared on random inputs that exercise empty masks, zero flow errors and the
coarse-scale pooling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spg_jax import losses
from spg_jax.models.flownet import FlowOutput, FlowUnet
from tests.conftest import nchw_to_nhwc, nhwc_to_nchw

TOL = 1e-5  # float32 on both sides; the sums run over a few thousand pixels


def _t(x: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
  return torch.tensor(np.asarray(x), dtype=torch.float32, requires_grad=requires_grad)


# ----------------------------------------------------------------------------------------------------
# Reference transcriptions (NCHW)
# ----------------------------------------------------------------------------------------------------


def ref_l2(inp, tgt, mask):
  bsz = inp.size(0)
  err = (tgt - inp).norm(dim=1, p=2, keepdim=True) * mask
  count = mask.view(bsz, -1).sum(dim=1, keepdim=True)
  return (err.view(bsz, -1) / (count * bsz + 1e-8)).sum()


def ref_l1(inp, tgt, mask):
  bsz = inp.size(0)
  err = (tgt - inp).abs() * mask
  count = mask.view(bsz, -1).sum(dim=1, keepdim=True)
  return (err.view(bsz, -1) / (count * bsz * 2 + 1e-8)).sum()


def ref_multiscale(pyramid, tgt_px, mask, loss_type="l2"):
  fn = ref_l2 if loss_type == "l2" else ref_l1
  tgt = 0.05 * tgt_px
  loss = 0
  for i, inp in enumerate(pyramid):
    k = 2 * 2**i
    loss = loss + (0.32 / 2**i) * fn(inp, F.avg_pool2d(tgt, k, k), F.max_pool2d(mask, k, k))
  return loss


def ref_warp(x, flow):
  bsz, _, h, w = x.size()
  xx = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(bsz, 1, h, w)
  yy = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(bsz, 1, h, w)
  grid = torch.cat((xx, yy), dim=1) + flow
  gx = 2.0 * grid[:, 0] / max(w - 1, 1) - 1.0
  gy = 2.0 * grid[:, 1] / max(h - 1, 1) - 1.0
  grid = torch.stack((gx, gy), dim=-1)
  return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def ref_ss(inp_px, tgt_px, seg_1, seg_2, vis):
  with torch.no_grad():
    seg_1w = (ref_warp(seg_1[:, 1:], inp_px) > 0).float()
    mask = (seg_2[:, 1:] * (1 - seg_1w)).sum(dim=1, keepdim=True) * (vis == 0).float()
  return ((inp_px - tgt_px) * 0.05 * mask).abs().mean()


# ----------------------------------------------------------------------------------------------------
# Random inputs
# ----------------------------------------------------------------------------------------------------

B, H, W, NUM_SCALES, SEG_NC = 3, 64, 64, 4, 7


def _blocky(rng, shape_hw, block, high, batch):
  low = rng.integers(0, high, (batch, shape_hw[0] // block, shape_hw[1] // block))
  return np.repeat(np.repeat(low, block, axis=1), block, axis=2)


@pytest.fixture(scope="module")
def flow_case():
  rng = np.random.default_rng(7)
  vis = _blocky(rng, (H, W), 4, 3, B)
  # Scattered single pixels so that max-pooled masks differ from the blocks.
  vis = np.where(rng.random(vis.shape) < 0.03, rng.integers(0, 3, vis.shape), vis)
  vis[-1] = 2  # an image with no foreground: its flow terms must be 0, not NaN
  gt_flow = rng.normal(0.0, 8.0, (B, H, W, 2)) * (vis < 2)[..., None]
  flow = rng.normal(0.0, 0.3, (B, H, W, 2))
  # Predictions at odd multiples of 1/16 px after ×20 keep every warp sample away from pixel
  # centres, so `warp(...) > 0` cannot flip between the two implementations by rounding.
  flow = (np.round(flow * 20 * 8) / 8 + 1 / 16) / 20
  pyramid = tuple(rng.normal(0.0, 0.3, (B, H // 2**(s + 1), W // 2**(s + 1), 2)) for s in range(NUM_SCALES))
  # A visible, motionless, perfectly predicted block: exact zero errors, where the norm and abs
  # subgradients must be 0 (as in PyTorch), not NaN or ±1.
  vis[0, :8, :8] = 0
  gt_flow[0, :8, :8] = 0.0
  flow[0, :8, :8] = 0.0
  pyramid[0][0, :4, :4] = 0.0
  vis_logits = rng.normal(0.0, 2.0, (B, H, W, 3))
  seg_1 = np.eye(SEG_NC)[_blocky(rng, (H, W), 8, SEG_NC, B)]
  seg_2 = np.eye(SEG_NC)[_blocky(rng, (H, W), 8, SEG_NC, B)]
  return dict(vis=vis, gt_flow=gt_flow, flow=flow, pyramid=pyramid, vis_logits=vis_logits,
              seg_1=seg_1, seg_2=seg_2)


def _output(c, dtype=jnp.float32) -> FlowOutput:
  return FlowOutput(flow=jnp.asarray(c["flow"], dtype), vis_logits=jnp.asarray(c["vis_logits"], dtype),
                    flow_pyramid=tuple(jnp.asarray(p, dtype) for p in c["pyramid"]),
                    feature=jnp.zeros((B, H // 2, W // 2, 4), dtype))


def _reference_terms(c, loss_type="l2", requires_grad=False):
  flow = _t(nhwc_to_nchw(c["flow"]), requires_grad)
  pyramid = [_t(nhwc_to_nchw(p), requires_grad) for p in c["pyramid"]]
  vis_logits = _t(nhwc_to_nchw(c["vis_logits"]), requires_grad)
  vis = _t(c["vis"][:, None])
  gt_flow = _t(nhwc_to_nchw(c["gt_flow"]))
  mask = (vis < 2).float()
  flow_px = flow * 20.0
  terms = {
      "loss_flow": ref_multiscale(pyramid, gt_flow, mask, loss_type),
      "loss_vis": F.cross_entropy(vis_logits, vis.long().squeeze(1)),
      "loss_flow_ss": ref_ss(flow_px, gt_flow, _t(nhwc_to_nchw(c["seg_1"])), _t(nhwc_to_nchw(c["seg_2"])), vis),
      "epe": ref_l2(flow_px, gt_flow, mask),
  }
  terms["total"] = 1.0 * terms["loss_flow"] + 1.0 * terms["loss_vis"] + 5.0 * terms["loss_flow_ss"]
  return terms, (flow, pyramid, vis_logits)


# ----------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------


def test_l1_matches_torch():
  rng = np.random.default_rng(0)
  a, b = rng.uniform(-1, 1, (2, 2, 8, 8, 3)).astype(np.float32)
  ours = losses.l1(jnp.asarray(a), jnp.asarray(b))
  err = abs(float(ours) - F.l1_loss(_t(a), _t(b)).item())
  print(f"l1 vs torch: max|Δ| = {err:.2e}")
  assert err <= 1e-6
  grad = jax.grad(losses.l1)(jnp.zeros(3), jnp.zeros(3))
  assert np.all(np.asarray(grad) == 0)  # PyTorch's subgradient of |x| at 0
  half = losses.l1(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16))
  assert half.dtype == jnp.float32


@pytest.mark.parametrize("real", [True, False])
def test_bce_with_logits_matches_torch(real):
  rng = np.random.default_rng(1)
  x = rng.normal(0.0, 3.0, (4, 30, 30, 1)).astype(np.float32)
  target = torch.full(x.shape, 1.0 if real else 0.0)
  ours = float(jax.jit(losses.bce_with_logits, static_argnums=1)(jnp.asarray(x), real))
  with_logits = F.binary_cross_entropy_with_logits(_t(x), target).item()
  official = F.binary_cross_entropy(torch.sigmoid(_t(x)), target).item()  # nn.BCELoss on sigmoid
  err_logits, err_official = abs(ours - with_logits), abs(ours - official)
  print(f"bce real={real}: vs with_logits {err_logits:.2e}, vs BCELoss(sigmoid) {err_official:.2e}")
  assert err_logits <= 1e-6
  assert err_official <= 1e-5


def test_bce_with_logits_is_stable_for_large_logits():
  x = jnp.asarray([[-200.0, -40.0, 0.0, 40.0, 200.0]])
  for real in (True, False):
    value = losses.bce_with_logits(x, real)
    grad = jax.grad(lambda z: losses.bce_with_logits(z, real))(x)
    expected = F.binary_cross_entropy_with_logits(_t(x), torch.full(x.shape, float(real))).item()
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    assert abs(float(value) - expected) <= 1e-4 * abs(expected)
  assert losses.bce_with_logits(x.astype(jnp.bfloat16), True).dtype == jnp.float32


@pytest.mark.parametrize("loss_type", ["l2", "l1"])
def test_multiscale_flow_loss_matches_reference(flow_case, loss_type):
  c = flow_case
  ref, _ = _reference_terms(c, loss_type)
  mask = jnp.asarray(c["vis"] < 2)
  ours, levels = jax.jit(lambda p, f, m: losses.multiscale_flow_loss(p, f, m, loss_type=loss_type))(
      tuple(jnp.asarray(p, jnp.float32) for p in c["pyramid"]), jnp.asarray(c["gt_flow"], jnp.float32), mask)
  assert len(levels) == NUM_SCALES
  err = abs(float(ours) - ref["loss_flow"].item())
  print(f"multiscale flow loss ({loss_type}): max|Δ| = {err:.2e} (value {float(ours):.4f})")
  assert err <= TOL


def test_flow_network_losses_match_reference(flow_case):
  c = flow_case
  ref, _ = _reference_terms(c)
  seg_1, seg_2 = jnp.asarray(c["seg_1"], jnp.float32), jnp.asarray(c["seg_2"], jnp.float32)
  ours = jax.jit(losses.flow_network_losses)(_output(c), jnp.asarray(c["gt_flow"], jnp.float32),
                                             jnp.asarray(c["vis"]), seg_1, seg_2)
  for name in ("loss_flow", "loss_vis", "loss_flow_ss", "epe", "total"):
    err = abs(float(ours[name]) - ref[name].item())
    print(f"{name}: ours {float(ours[name]):.6f} ref {ref[name].item():.6f} |Δ| = {err:.2e}")
    assert err <= TOL, name
  assert float(ours["loss_flow_ss"]) > 0  # the mask is not trivially empty
  weighted = sum((0.32 / 2**s) * ours[f"loss_flow_s{s}"] for s in range(NUM_SCALES))
  assert abs(float(weighted) - float(ours["loss_flow"])) <= 1e-6
  acc = np.mean(np.argmax(c["vis_logits"], axis=-1) == c["vis"])
  assert abs(float(ours["vis_acc"]) - acc) <= 1e-6
  # Without segmentations the SS term is dropped from the dict and the total.
  no_ss = losses.flow_network_losses(_output(c), jnp.asarray(c["gt_flow"]), jnp.asarray(c["vis"][..., None]))
  assert "loss_flow_ss" not in no_ss
  assert abs(float(no_ss["total"]) - (ref["loss_flow"] + ref["loss_vis"]).item()) <= TOL


def test_flow_network_losses_gradients_match_reference(flow_case):
  c = flow_case
  ref, (flow_t, pyramid_t, vis_t) = _reference_terms(c, requires_grad=True)
  ref["total"].backward()
  seg_1, seg_2 = jnp.asarray(c["seg_1"], jnp.float32), jnp.asarray(c["seg_2"], jnp.float32)
  gt_flow, vis = jnp.asarray(c["gt_flow"], jnp.float32), jnp.asarray(c["vis"])

  def total(out):
    return losses.flow_network_losses(out, gt_flow, vis, seg_1, seg_2)["total"]

  grads = jax.jit(jax.grad(total))(_output(c))
  pairs = [(grads.flow, flow_t.grad), (grads.vis_logits, vis_t.grad)]
  pairs += [(g, p.grad) for g, p in zip(grads.flow_pyramid, pyramid_t)]
  worst = 0.0
  for ours, theirs in pairs:
    ours = np.asarray(ours)
    assert np.all(np.isfinite(ours))
    worst = max(worst, float(np.abs(ours - nchw_to_nhwc(theirs.numpy())).max()))
  print(f"flow-loss gradients: max|Δ| = {worst:.2e}")
  assert worst <= 1e-6


def test_endpoint_error_and_bfloat16_inputs(flow_case):
  c = flow_case
  pred = c["flow"] * 20.0
  mask = c["vis"] < 2
  ref = ref_l2(_t(nhwc_to_nchw(pred)), _t(nhwc_to_nchw(c["gt_flow"])), _t(mask[:, None])).item()
  ours = float(losses.endpoint_error(jnp.asarray(pred), jnp.asarray(c["gt_flow"]), jnp.asarray(mask)))
  assert abs(ours - ref) <= TOL
  # bfloat16 network outputs: computed in float32, close to the float32 value.
  out = losses.flow_network_losses(_output(c, jnp.bfloat16), jnp.asarray(c["gt_flow"]), jnp.asarray(c["vis"]))
  assert all(v.dtype == jnp.float32 for v in out.values())
  assert abs(float(out["loss_flow"]) - ref_multiscale(
      [_t(nhwc_to_nchw(p)) for p in c["pyramid"]], _t(nhwc_to_nchw(c["gt_flow"])),
      _t((c["vis"] < 2)[:, None])).item()) <= 2e-2


def test_pyramid_of_flownet_is_accepted():
  """`FlowUnet`'s pyramid is finest-first at H/2**(s+1), the order `MultiScaleFlowLoss` pairs with pools."""
  model = FlowUnet(nf=4, max_nf=16, num_scales=3)
  x = jnp.zeros((1, 32, 32, 36))
  # Shapes only (tracing is enough and much faster than running the net op by op on CPU).
  shapes = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), x, train=False)[0])
  out = jax.tree.map(lambda s: jnp.full(s.shape, 0.1, s.dtype), shapes)
  assert [p.shape[1] for p in out.flow_pyramid] == [16, 8, 4]
  terms = losses.flow_network_losses(out, jnp.zeros((1, 32, 32, 2)), jnp.zeros((1, 32, 32), jnp.int32))
  assert np.isfinite(float(terms["total"]))
  with pytest.raises(ValueError):
    losses.multiscale_flow_loss(out.flow_pyramid[::-1], jnp.zeros((1, 32, 32, 2)), jnp.ones((1, 32, 32)))
