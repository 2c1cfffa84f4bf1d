"""`spg_jax.ops.resample` against PyTorch CPU functional ops (NCHW, converted to NHWC).

Bounds: pixel shuffle, nearest resizing and min-pooling only move values, so they must match exactly;
average pooling and the bilinear x2 up-sampling do float32 arithmetic in a different order than
PyTorch and are held to 1e-6 absolute on O(1) inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spg_jax.ops import resample
from tests.conftest import nchw_to_nhwc, nhwc_to_nchw

torch = pytest.importorskip("torch")
F = torch.nn.functional

FLOAT_TOL = 1e-6


def _rand_nhwc(seed: int, shape: tuple[int, ...]) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _torch_nhwc(fn, x_nhwc: np.ndarray, *args, **kwargs) -> np.ndarray:
  """Applies a PyTorch NCHW op to an NHWC array and returns NHWC."""
  out = fn(torch.from_numpy(nhwc_to_nchw(x_nhwc)), *args, **kwargs)
  return nchw_to_nhwc(out.numpy())


# --- pixel_shuffle -----------------------------------------------------------------------------


@pytest.mark.parametrize("factor,shape", [(2, (2, 3, 5, 12)), (3, (1, 4, 2, 18)), (2, (1, 1, 1, 4))])
def test_pixel_shuffle_matches_torch_pixel_shuffle_exactly(factor, shape):
  # Distinct integer-valued entries: any permutation mistake shows up as a mismatch.
  x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
  ours = np.asarray(resample.pixel_shuffle(jnp.asarray(x), factor))
  ref = _torch_nhwc(F.pixel_shuffle, x, factor)
  assert ours.shape == ref.shape
  np.testing.assert_array_equal(ours, ref)


def test_pixel_shuffle_rejects_channels_not_divisible_by_factor_squared():
  with pytest.raises(ValueError):
    resample.pixel_shuffle(jnp.zeros((1, 2, 2, 6)), 2)


# --- nearest_resize ----------------------------------------------------------------------------

NEAREST_CASES = [
    # integer down-scales (the networks' power-of-two case)
    ((16, 16), (8, 8)),
    ((16, 16), (4, 4)),
    ((32, 32), (4, 4)),
    ((32, 16), (8, 4)),
    ((16, 32), (8, 4)),  # different factors along H and W
    # non-integer ratios, down and up
    ((30, 20), (7, 9)),
    ((5, 5), (11, 11)),
    ((5, 7), (11, 3)),
    ((13, 9), (13, 4)),  # one axis unchanged
    ((8, 6), (16, 12)),  # exact x2 up-sampling
    ((12, 10), (8, 15)),
]


@pytest.mark.parametrize("in_hw,out_hw", NEAREST_CASES)
def test_nearest_resize_matches_torch_interpolate_nearest_exactly(in_hw, out_hw):
  x = _rand_nhwc(0, (2, *in_hw, 3))
  ours = np.asarray(resample.nearest_resize(jnp.asarray(x), out_hw))
  ref = _torch_nhwc(F.interpolate, x, size=out_hw, mode="nearest")
  assert ours.shape == ref.shape == (2, *out_hw, 3)
  np.testing.assert_array_equal(ours, ref)


def test_nearest_resize_keeps_one_hot_integer_maps_exact_and_dtype():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 20, (2, 30, 20))
  onehot = np.eye(20, dtype=np.uint8)[labels]  # (B, H, W, 20)
  ours = resample.nearest_resize(jnp.asarray(onehot), (7, 9))
  assert ours.dtype == jnp.uint8
  ref = _torch_nhwc(F.interpolate, onehot.astype(np.float32), size=(7, 9), mode="nearest")
  np.testing.assert_array_equal(np.asarray(ours).astype(np.float32), ref)
  np.testing.assert_array_equal(np.asarray(ours).sum(-1), 1)


def test_nearest_resize_is_jittable_with_static_size():
  x = _rand_nhwc(2, (1, 30, 20, 2))
  fn = jax.jit(resample.nearest_resize, static_argnums=1)
  np.testing.assert_array_equal(
      np.asarray(fn(jnp.asarray(x), (7, 9))), _torch_nhwc(F.interpolate, x, size=(7, 9), mode="nearest"))


# --- pooling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_avg_pool_matches_torch_avg_pool2d_within_1e_6(factor):
  x = _rand_nhwc(3, (2, 16, 24, 3))
  ours = np.asarray(resample.avg_pool(jnp.asarray(x), factor))
  ref = _torch_nhwc(F.avg_pool2d, x, factor) if factor > 1 else x
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=0, atol=FLOAT_TOL)


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_pool_flow_matches_torch_avg_pool2d_divided_by_factor_within_1e_6(factor):
  # Flows of a few pixels magnitude, as the flow network produces.
  flow = 5.0 * _rand_nhwc(4, (2, 32, 16, 2))
  ours = np.asarray(resample.pool_flow(jnp.asarray(flow), factor))
  ref = (_torch_nhwc(F.avg_pool2d, flow, factor) if factor > 1 else flow) / factor
  assert ours.shape == (2, 32 // factor, 16 // factor, 2)
  # values up to ~20 px: 1e-6 relative on top of 1e-6 absolute
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=FLOAT_TOL)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_pool_visibility_matches_negated_torch_max_pool2d_exactly(factor):
  rng = np.random.default_rng(5)
  vis = rng.integers(0, 3, (2, 32, 16, 1)).astype(np.float32)
  # make sure the priority visible > invisible > background is exercised: a block of only 1s and 2s
  vis[0, :8, :8] = rng.integers(1, 3, (8, 8, 1))
  vis[1, :8, :8] = 2.0
  ours = np.asarray(resample.pool_visibility(jnp.asarray(vis), factor))
  ref = -_torch_nhwc(F.max_pool2d, -vis, factor)
  np.testing.assert_array_equal(ours, ref)
  assert set(np.unique(ours)) <= {0.0, 1.0, 2.0}


@pytest.mark.parametrize("fn", [resample.avg_pool, resample.min_pool, resample.pool_flow, resample.pool_visibility])
def test_pooling_raises_on_spatial_size_not_divisible_by_factor(fn):
  with pytest.raises(ValueError):
    fn(jnp.zeros((1, 12, 10, 2)), 4)  # W = 10 not divisible by 4
  with pytest.raises(ValueError):
    fn(jnp.zeros((1, 10, 12, 2)), 4)  # H = 10 not divisible by 4


# --- bilinear_upsample -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (1, 5, 7, 2), (1, 1, 3, 1), (2, 8, 6, 4)])
def test_bilinear_upsample_x2_matches_torch_interpolate_align_corners_false_within_1e_6(shape):
  x = _rand_nhwc(6, shape)
  ours = np.asarray(resample.bilinear_upsample(jnp.asarray(x), 2))
  ref = _torch_nhwc(F.interpolate, x, scale_factor=2, mode="bilinear", align_corners=False)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=0, atol=FLOAT_TOL)


def test_bilinear_upsample_x4_matches_torch_interpolate_align_corners_false_within_1e_6():
  x = _rand_nhwc(7, (1, 3, 5, 2))
  ours = np.asarray(resample.bilinear_upsample(jnp.asarray(x), 4))
  ref = _torch_nhwc(F.interpolate, x, scale_factor=4, mode="bilinear", align_corners=False)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=FLOAT_TOL)


def test_nearest_resize_matches_torch_for_every_size_pair_up_to_48_exactly():
  # Sweep of all 1-D ratios in / out with in, out in 1..48 (along W; H is resized 1 -> 1), to catch
  # float32 floor(dst * in / out) rounding differences at any ratio. nearest_resize only indexes, so
  # it is fed NumPy arrays here: the same code path without one XLA compilation per shape.
  mismatched = []
  for in_size in range(1, 49):
    x = np.arange(in_size, dtype=np.float32).reshape(1, 1, in_size, 1)
    for out_size in range(1, 49):
      ours = np.asarray(resample.nearest_resize(x, (1, out_size)))
      ref = _torch_nhwc(F.interpolate, x, size=(1, out_size), mode="nearest")
      if ours.shape != ref.shape or not np.array_equal(ours, ref):
        mismatched.append((in_size, out_size))
  assert not mismatched, f"nearest_resize differs from PyTorch for (in, out) = {mismatched}"
