"""`spg_jax.models.layers` and `spg_jax.ops.normalization` against PyTorch CPU modules / functional ops.

Weights are created in PyTorch and mapped to Flax the way `spg_jax.convert` does:
  * Conv2d (O, I, kh, kw) -> kernel (kh, kw, I, O): transpose (2, 3, 1, 0);
  * ConvTranspose2d (I, O, kh, kw) -> correlation kernel (kh, kw, I, O): flip kh, kw, transpose (2, 3, 0, 1);
  * spectral_norm: weight_orig like Conv2d, weight_u / weight_v into batch_stats u / v unchanged;
  * BatchNorm2d weight / bias -> params scale / bias, running_mean / running_var -> batch_stats mean / var.

Bounds (float32, inputs ~ N(0, 1)): 1e-5 absolute on every output and state (O(1) values; convolution
sums of <= 200 products agree to ~1e-6), 1e-4 absolute on kernel gradients (sums over the whole
batch and image).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spg_jax.models import layers
from spg_jax.ops import normalization
from tests.conftest import nchw_to_nhwc, nhwc_to_nchw

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-5
GRAD_TOL = 1e-4


def _randn(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _t(x: np.ndarray) -> "torch.Tensor":
  return torch.from_numpy(np.ascontiguousarray(x))


def _conv_kernel(w_oikk: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(w_oikk.transpose(2, 3, 1, 0))


def _conv_transpose_kernel(w_iokk: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(w_iokk[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))


# --- convolutions ------------------------------------------------------------------------------

CONV_T_CASES = [
    # (kernel, stride, padding, output_padding, in_hw): Zencoder k3 s2 p1 op1, FlowUnet k4 s2 p1
    (3, 2, 1, 1, (5, 4)),
    (4, 2, 1, 0, (4, 6)),
    (3, 2, 1, 0, (3, 5)),
    (5, 3, 2, 2, (4, 3)),
    (3, 1, 1, 0, (5, 5)),
]


@pytest.mark.parametrize("k,s,p,op,in_hw", CONV_T_CASES)
@pytest.mark.parametrize("use_bias", [True, False])
def test_conv_transpose2d_matches_torch_conv_transpose2d_within_1e_5(k, s, p, op, in_hw, use_bias):
  cin, cout = 5, 4
  x = _randn(0, (2, *in_hw, cin))
  w = _randn(1, (cin, cout, k, k), scale=0.3)  # PyTorch layout (in, out, kh, kw)
  b = _randn(2, (cout,))
  params = {"kernel": _conv_transpose_kernel(w)}
  if use_bias:
    params["bias"] = b
  model = layers.ConvTranspose2d(cout, k, s, p, output_padding=op, use_bias=use_bias)
  ours = np.asarray(model.apply({"params": params}, jnp.asarray(x)))
  ref = F.conv_transpose2d(_t(nhwc_to_nchw(x)), _t(w), _t(b) if use_bias else None, stride=s, padding=p,
                           output_padding=op)
  ref = nchw_to_nhwc(ref.numpy())
  expected_hw = tuple((n - 1) * s - 2 * p + k + op for n in in_hw)
  assert ours.shape == ref.shape == (2, *expected_hw, cout)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)


def test_conv_transpose2d_init_creates_kernel_of_converter_layout():
  model = layers.ConvTranspose2d(7, 3, 2, 1, output_padding=1)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 5)))
  assert variables["params"]["kernel"].shape == (3, 3, 5, 7)
  assert variables["params"]["bias"].shape == (7,)


@pytest.mark.parametrize("k,s,p,in_hw", [(3, 1, 1, (6, 5)), (3, 2, 1, (7, 6)), (5, 1, 2, (5, 8)),
                                         (1, 1, 0, (4, 3)), (4, 2, 1, (8, 6)), (3, 2, 0, (9, 7))])
def test_conv2d_matches_torch_conv2d_with_stride_and_padding_within_1e_5(k, s, p, in_hw):
  cin, cout = 4, 6
  x = _randn(3, (2, *in_hw, cin))
  w = _randn(4, (cout, cin, k, k), scale=0.3)
  b = _randn(5, (cout,))
  model = layers.conv2d(cout, k, stride=s, padding=p)
  ours = np.asarray(model.apply({"params": {"kernel": _conv_kernel(w), "bias": b}}, jnp.asarray(x)))
  ref = nchw_to_nhwc(F.conv2d(_t(nhwc_to_nchw(x)), _t(w), _t(b), stride=s, padding=p).numpy())
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)


# --- BatchNorm ---------------------------------------------------------------------------------


def _torch_bn(c: int, affine: bool, seed: int) -> "torch.nn.BatchNorm2d":
  bn = torch.nn.BatchNorm2d(c, eps=1e-5, momentum=0.1, affine=affine)
  with torch.no_grad():
    if affine:
      bn.weight.copy_(_t(1.0 + _randn(seed, (c,), 0.3)))
      bn.bias.copy_(_t(_randn(seed + 1, (c,), 0.3)))
    bn.running_mean.copy_(_t(_randn(seed + 2, (c,), 0.5)))
    bn.running_var.copy_(_t(np.abs(_randn(seed + 3, (c,))) + 0.5))
  return bn


def _flax_bn_variables(bn: "torch.nn.BatchNorm2d") -> dict:
  variables = {"batch_stats": {"mean": bn.running_mean.numpy().copy(), "var": bn.running_var.numpy().copy()}}
  if bn.affine:
    variables["params"] = {"scale": bn.weight.detach().numpy().copy(), "bias": bn.bias.detach().numpy().copy()}
  return variables


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_train_mode_matches_torch_output_and_unbiased_running_stats_over_3_steps_within_1e_5(affine):
  c = 5
  bn = _torch_bn(c, affine, seed=10)
  bn.train()
  variables = _flax_bn_variables(bn)
  model = layers.BatchNorm(affine=affine)
  for step in range(3):
    # shifted, scaled inputs so that the batch statistics are far from the running ones
    x = _randn(20 + step, (3, 4, 6, c), scale=2.0) + 1.5
    ours, updates = model.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    variables = {**variables, "batch_stats": updates["batch_stats"]}
    with torch.no_grad():
      ref = nchw_to_nhwc(bn(_t(nhwc_to_nchw(x))).numpy())
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["mean"]), bn.running_mean.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["var"]), bn.running_var.numpy(), rtol=0, atol=TOL)


def test_batchnorm_running_var_uses_unbiased_batch_variance():
  # With n = 2 * 1 * 2 = 4 values per channel, unbiased / biased = 4 / 3: a biased update is far off.
  x = np.array([[[[0.0], [1.0]]], [[[2.0], [5.0]]]], np.float32)  # (2, 1, 2, 1)
  variables = {"params": {"scale": np.ones(1, np.float32), "bias": np.zeros(1, np.float32)},
               "batch_stats": {"mean": np.zeros(1, np.float32), "var": np.ones(1, np.float32)}}
  _, updates = layers.BatchNorm().apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  unbiased = np.var([0.0, 1.0, 2.0, 5.0], ddof=1)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["var"]), [0.9 + 0.1 * unbiased], rtol=0, atol=TOL)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["mean"]), [0.1 * 2.0], rtol=0, atol=TOL)


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_eval_mode_matches_torch_and_leaves_running_stats_unchanged_within_1e_5(affine):
  c = 4
  bn = _torch_bn(c, affine, seed=30)
  bn.eval()
  variables = _flax_bn_variables(bn)
  x = _randn(31, (2, 5, 3, c), scale=2.0) + 0.5
  ours, updates = layers.BatchNorm(affine=affine).apply(variables, jnp.asarray(x), train=False,
                                                         mutable=["batch_stats"])
  with torch.no_grad():
    ref = nchw_to_nhwc(bn(_t(nhwc_to_nchw(x))).numpy())
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=TOL)
  np.testing.assert_array_equal(np.asarray(updates["batch_stats"]["mean"]), variables["batch_stats"]["mean"])
  np.testing.assert_array_equal(np.asarray(updates["batch_stats"]["var"]), variables["batch_stats"]["var"])


def test_batchnorm_affine_false_has_no_params():
  variables = layers.BatchNorm(affine=False).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 3)), train=False)
  assert "params" not in variables or not variables["params"]
  assert set(variables["batch_stats"]) == {"mean", "var"}


# --- spectral norm -----------------------------------------------------------------------------


def _torch_sn_conv(cin: int, cout: int, k: int, p: int, iters: int, seed: int):
  torch.manual_seed(seed)
  conv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(cin, cout, k, padding=p, bias=False), n_power_iterations=iters)
  return conv


def _flax_sn_variables(conv) -> dict:
  return {
      "params": {"kernel": _conv_kernel(conv.weight_orig.detach().numpy())},
      "batch_stats": {"u": conv.weight_u.numpy().copy(), "v": conv.weight_v.numpy().copy()},
  }


@pytest.mark.parametrize("k,p,iters", [(3, 1, 1), (4, 1, 1), (1, 0, 1), (3, 1, 3)])
def test_spectral_norm_conv_train_mode_matches_torch_output_and_updated_u_v_within_1e_5(k, p, iters):
  cin, cout = 6, 5
  conv = _torch_sn_conv(cin, cout, k, p, iters, seed=40)
  conv.train()
  variables = _flax_sn_variables(conv)  # taken before the forward, which updates u and v in place
  x = _randn(41, (2, 7, 6, cin))
  model = layers.SpectralNormConv2d(cout, k, padding=p, power_iterations=iters)
  ours, updates = model.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  with torch.no_grad():
    ref = nchw_to_nhwc(conv(_t(nhwc_to_nchw(x))).numpy())
  assert not np.allclose(variables["batch_stats"]["u"], conv.weight_u.numpy(), atol=1e-3), "u must move"
  assert ours.shape == ref.shape
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=TOL)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["u"]), conv.weight_u.numpy(), rtol=0, atol=TOL)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["v"]), conv.weight_v.numpy(), rtol=0, atol=TOL)


def test_spectral_norm_conv_two_consecutive_train_steps_track_torch_within_1e_5():
  cin, cout = 4, 3
  conv = _torch_sn_conv(cin, cout, 3, 1, 1, seed=45)
  conv.train()
  variables = _flax_sn_variables(conv)
  model = layers.SpectralNormConv2d(cout, 3, padding=1)
  for step in range(2):
    x = _randn(46 + step, (1, 5, 4, cin))
    ours, updates = model.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    variables = {**variables, "batch_stats": updates["batch_stats"]}
    with torch.no_grad():
      ref = nchw_to_nhwc(conv(_t(nhwc_to_nchw(x))).numpy())
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["u"]), conv.weight_u.numpy(), rtol=0, atol=TOL)


def test_spectral_norm_conv_eval_mode_matches_torch_without_power_iteration_within_1e_5():
  cin, cout = 6, 5
  conv = _torch_sn_conv(cin, cout, 3, 1, 1, seed=50)
  conv.eval()
  variables = _flax_sn_variables(conv)
  x = _randn(51, (2, 6, 7, cin))
  ours, updates = layers.SpectralNormConv2d(cout, 3, padding=1).apply(variables, jnp.asarray(x), train=False,
                                                                      mutable=["batch_stats"])
  with torch.no_grad():
    ref = nchw_to_nhwc(conv(_t(nhwc_to_nchw(x))).numpy())
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=TOL)
  # neither side iterated
  np.testing.assert_array_equal(conv.weight_u.numpy(), variables["batch_stats"]["u"])
  np.testing.assert_array_equal(np.asarray(updates["batch_stats"]["u"]), variables["batch_stats"]["u"])
  np.testing.assert_array_equal(np.asarray(updates["batch_stats"]["v"]), variables["batch_stats"]["v"])
  # and the eval-mode sigma is u.(W v) with the stored, unconverged vectors: the output differs from
  # dividing by the true largest singular value
  w_mat = conv.weight_orig.detach().numpy().reshape(cout, -1)
  sigma_stored = float(conv.weight_u.numpy() @ w_mat @ conv.weight_v.numpy())
  sigma_true = float(np.linalg.svd(w_mat, compute_uv=False)[0])
  assert abs(sigma_stored - sigma_true) > 1e-2


def test_spectral_norm_conv_kernel_gradient_matches_torch_autograd_with_u_v_constant_within_1e_4():
  cin, cout = 5, 4
  conv = _torch_sn_conv(cin, cout, 3, 1, 1, seed=60)
  conv.train()
  variables = _flax_sn_variables(conv)
  x = _randn(61, (2, 6, 5, cin))
  cot = _randn(62, (2, 6, 5, cout))
  model = layers.SpectralNormConv2d(cout, 3, padding=1)

  def loss(params):
    out, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, jnp.asarray(x),
                               train=True, mutable=["batch_stats"])
    return jnp.sum(out * cot), updates

  grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
  g_ours = np.asarray(grads["kernel"])

  out = conv(_t(nhwc_to_nchw(x)))
  (out * _t(nhwc_to_nchw(cot))).sum().backward()
  g_ref = _conv_kernel(conv.weight_orig.grad.numpy())
  assert np.isfinite(g_ours).all()
  np.testing.assert_allclose(g_ours, g_ref, rtol=0, atol=GRAD_TOL)

  # The gradient through sigma is only d(u.W v)/dW = u v^T. Had u, v been differentiated through the
  # power iteration the gradient would change; check it against the closed form with constant u, v:
  # dL/dW = G / sigma - (sum(G * W) / sigma**2) u v^T, with G the gradient wrt the normalised kernel.
  u = np.asarray(updates["batch_stats"]["u"], np.float64)
  v = np.asarray(updates["batch_stats"]["v"], np.float64)
  w_mat = conv.weight_orig.detach().numpy().astype(np.float64).reshape(cout, -1)
  sigma = u @ w_mat @ v
  w_t = torch.from_numpy(w_mat.reshape(cout, cin, 3, 3) / sigma).requires_grad_(True)
  out_plain = F.conv2d(_t(nhwc_to_nchw(x)).double(), w_t, padding=1)
  (out_plain * _t(nhwc_to_nchw(cot)).double()).sum().backward()
  g_normalised = w_t.grad.numpy().reshape(cout, -1)
  g_closed = g_normalised / sigma - (np.sum(g_normalised * w_mat) / sigma**2) * np.outer(u, v)
  g_closed = _conv_kernel(g_closed.reshape(cout, cin, 3, 3))
  np.testing.assert_allclose(g_ours, g_closed, rtol=0, atol=GRAD_TOL)


# --- instance norm, reflection padding ---------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 6, 5, 3), (1, 1, 7, 2), (3, 4, 4, 1)])
def test_instance_norm_matches_torch_instance_norm_within_1e_5(shape):
  x = _randn(70, shape, scale=3.0) + 2.0
  ours = np.asarray(normalization.instance_norm(jnp.asarray(x)))
  ref = nchw_to_nhwc(F.instance_norm(_t(nhwc_to_nchw(x)), eps=1e-5).numpy())
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)


@pytest.mark.parametrize("pad,hw", [(1, (5, 4)), (2, (6, 3)), (3, (4, 7))])
def test_reflect_pad_matches_torch_pad_reflect_exactly(pad, hw):
  x = _randn(80, (2, *hw, 3))
  ours = np.asarray(layers.reflect_pad(jnp.asarray(x), pad))
  ref = nchw_to_nhwc(F.pad(_t(nhwc_to_nchw(x)), (pad, pad, pad, pad), mode="reflect").numpy())
  assert ours.shape == ref.shape
  np.testing.assert_array_equal(ours, ref)
