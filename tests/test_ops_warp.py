"""`spg_jax.ops.warp.warp_by_flow` against PyTorch `grid_sample` and a brute-force NumPy sampler.

The official code samples with PyTorch 1.2's `grid_sample(x, grid, mode='bilinear',
padding_mode='zeros')` and a grid normalised as `2 * (base + flow) / (size - 1) - 1`, i.e.
`align_corners=True`. Images are non-square (H != W) so that a swapped x / y shows up.

Bounds (float32, features ~ N(0, 1)):
  * vs `grid_sample`: 1e-5 absolute. PyTorch normalises the grid and un-normalises it again in
    float32, which moves sample positions by a few ulps of |p| <= ~30 px (measured ~1e-6).
  * vs the float64 NumPy loop: 1e-5 absolute.
  * integer flows and zero flow: exact (every bilinear weight is exactly 0 or 1).
  * gradients vs PyTorch autograd: 1e-4 absolute (sums of many float32 products).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spg_jax.ops.warp import warp_by_flow
from tests.conftest import nchw_to_nhwc, nhwc_to_nchw

torch = pytest.importorskip("torch")
F = torch.nn.functional

B, H, W, C = 2, 9, 14, 3
VALUE_TOL = 1e-5
GRAD_TOL = 1e-4


def _features(seed: int, shape=(B, H, W, C)) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _random_flow(seed: int, h: int = H, w: int = W, batch: int = B, reach: float = 0.75) -> np.ndarray:
  """Flow uniform in ±reach·size: roughly half the samples land outside the image."""
  rng = np.random.default_rng(seed)
  u = rng.uniform(-reach * w, reach * w, (batch, h, w))
  v = rng.uniform(-reach * h, reach * h, (batch, h, w))
  return np.stack([u, v], axis=-1).astype(np.float32)


def _torch_grid(flow: "torch.Tensor", h: int, w: int) -> "torch.Tensor":
  """The official normalisation: grid = 2 * (base + flow) / (size - 1) - 1, x along W first."""
  gx = 2.0 * (torch.arange(w, dtype=flow.dtype)[None, None, :] + flow[..., 0]) / (w - 1) - 1.0
  gy = 2.0 * (torch.arange(h, dtype=flow.dtype)[None, :, None] + flow[..., 1]) / (h - 1) - 1.0
  return torch.stack([gx, gy], dim=-1)


def _torch_warp(x: np.ndarray, flow: np.ndarray) -> np.ndarray:
  _, h, w, _ = x.shape
  grid = _torch_grid(torch.from_numpy(flow), h, w)
  out = F.grid_sample(torch.from_numpy(nhwc_to_nchw(x)), grid, mode="bilinear", padding_mode="zeros",
                      align_corners=True)
  return nchw_to_nhwc(out.numpy())


def _numpy_bilinear_warp(x: np.ndarray, flow: np.ndarray) -> np.ndarray:
  """Per-pixel loop in float64: out[b, i, j] = sum over the 4 corners inside the image of w * x."""
  b, h, w, c = x.shape
  x64 = x.astype(np.float64)
  out = np.zeros((b, h, w, c), np.float64)
  for bi in range(b):
    for i in range(h):
      for j in range(w):
        px = j + float(flow[bi, i, j, 0])
        py = i + float(flow[bi, i, j, 1])
        x0, y0 = int(np.floor(px)), int(np.floor(py))
        for yy in (y0, y0 + 1):
          for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
              weight = (1.0 - abs(px - xx)) * (1.0 - abs(py - yy))
              out[bi, i, j] += weight * x64[bi, yy, xx]
  return out


def _fraction_outside(flow: np.ndarray) -> tuple[float, float]:
  """(share of samples entirely outside, share with some but not all corners outside)."""
  _, h, w, _ = flow.shape
  px = np.arange(w)[None, None, :] + flow[..., 0]
  py = np.arange(h)[None, :, None] + flow[..., 1]
  fully = (px <= -1) | (px >= w) | (py <= -1) | (py >= h)
  partly = ~fully & ((px < 0) | (px > w - 1) | (py < 0) | (py > h - 1))
  return float(fully.mean()), float(partly.mean())


def test_random_flow_sends_a_good_share_of_samples_outside():
  # Guards the premise of the tests below: the zero-padding path is exercised heavily.
  fully, partly = _fraction_outside(_random_flow(0))
  assert fully > 0.3
  assert partly > 0.02


@pytest.mark.parametrize("seed,reach", [(0, 0.75), (1, 0.2), (2, 1.5)])
def test_warp_matches_grid_sample_bilinear_zeros_align_corners_true_within_1e_5(seed, reach):
  x = _features(10 + seed)
  flow = _random_flow(seed, reach=reach)
  ours = np.asarray(warp_by_flow(jnp.asarray(x), jnp.asarray(flow)))
  ref = _torch_warp(x, flow)
  assert ours.shape == ref.shape == (B, H, W, C)
  assert ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref, rtol=0, atol=VALUE_TOL)


def test_warp_matches_grid_sample_on_tall_image_within_1e_5():
  # H > W this time (the module constants have W > H).
  x = _features(20, (1, 13, 6, 2))
  flow = _random_flow(21, h=13, w=6, batch=1, reach=0.6)
  np.testing.assert_allclose(np.asarray(warp_by_flow(jnp.asarray(x), jnp.asarray(flow))), _torch_warp(x, flow),
                             rtol=0, atol=VALUE_TOL)


def test_warp_with_pure_horizontal_flow_moves_along_width_not_height():
  # A +1.5 px shift in x: any x / y swap in the implementation reads the wrong rows.
  x = _features(22)
  flow = np.zeros((B, H, W, 2), np.float32)
  flow[..., 0] = 1.5
  ours = np.asarray(warp_by_flow(jnp.asarray(x), jnp.asarray(flow)))
  expected = np.zeros_like(x)
  expected[:, :, : W - 2] = 0.5 * (x[:, :, 1 : W - 1] + x[:, :, 2:W])
  expected[:, :, W - 2] = 0.5 * x[:, :, W - 1]  # right corner outside: contributes zero
  np.testing.assert_allclose(ours, expected, rtol=0, atol=VALUE_TOL)


def test_warp_matches_brute_force_numpy_bilinear_loop_within_1e_5():
  x = _features(30)
  flow = _random_flow(31, reach=0.5)
  # also place samples just across every border, where only some corners are inside
  flow[0, 0, :, 1] = -0.3            # row 0 reads y = -0.3
  flow[0, :, 0, 0] = -0.8            # column 0 reads x = -0.8
  flow[1, H - 1, :, 1] = 0.6         # last row reads y = H - 0.4
  flow[1, :, W - 1, 0] = 0.25        # last column reads x = W - 0.75
  ours = np.asarray(warp_by_flow(jnp.asarray(x), jnp.asarray(flow)))
  ref = _numpy_bilinear_warp(x, flow)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=VALUE_TOL)


def test_warp_with_integer_flow_copies_pixels_exactly_and_zero_fills_outside():
  rng = np.random.default_rng(40)
  x = _features(41)
  flow = np.stack([rng.integers(-W, W, (B, H, W)), rng.integers(-H, H, (B, H, W))], axis=-1).astype(np.float32)
  ours = np.asarray(warp_by_flow(jnp.asarray(x), jnp.asarray(flow)))
  expected = np.zeros_like(x)
  for bi in range(B):
    for i in range(H):
      for j in range(W):
        yy, xx = i + int(flow[bi, i, j, 1]), j + int(flow[bi, i, j, 0])
        if 0 <= yy < H and 0 <= xx < W:
          expected[bi, i, j] = x[bi, yy, xx]
  assert (expected == 0).all(axis=-1).mean() > 0.3  # plenty of zero-filled samples
  np.testing.assert_array_equal(ours, expected)


def test_warp_with_zero_flow_is_exact_identity():
  x = _features(50)
  ours = np.asarray(warp_by_flow(jnp.asarray(x), jnp.zeros((B, H, W, 2), jnp.float32)))
  np.testing.assert_array_equal(ours, x)


def test_warp_gradients_match_torch_autograd_of_grid_sample_within_1e_4():
  x = _features(60)
  flow = _random_flow(61, reach=0.5)
  cot = _features(62)

  def loss(xj, fj):
    return jnp.sum(warp_by_flow(xj, fj) * cot)

  gx, gf = jax.grad(loss, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(flow))
  gx, gf = np.asarray(gx), np.asarray(gf)
  assert np.isfinite(gx).all() and np.isfinite(gf).all()
  assert np.abs(gx).max() > 0.1  # the gradient is not trivially zero

  xt = torch.from_numpy(nhwc_to_nchw(x)).requires_grad_(True)
  ft = torch.from_numpy(flow).requires_grad_(True)
  out = F.grid_sample(xt, _torch_grid(ft, H, W), mode="bilinear", padding_mode="zeros", align_corners=True)
  (out * torch.from_numpy(nhwc_to_nchw(cot))).sum().backward()
  np.testing.assert_allclose(gx, nchw_to_nhwc(xt.grad.numpy()), rtol=0, atol=GRAD_TOL)
  np.testing.assert_allclose(gf, ft.grad.numpy(), rtol=0, atol=GRAD_TOL)


def test_warp_under_jit_equals_torch_grid_sample_within_1e_5():
  x = _features(70)
  flow = _random_flow(71)
  ours = np.asarray(jax.jit(warp_by_flow)(jnp.asarray(x), jnp.asarray(flow)))
  np.testing.assert_allclose(ours, _torch_warp(x, flow), rtol=0, atol=VALUE_TOL)


def test_warp_rejects_flow_of_wrong_shape():
  with pytest.raises(ValueError):
    warp_by_flow(jnp.zeros((1, H, W, C)), jnp.zeros((1, W, H, 2)))
