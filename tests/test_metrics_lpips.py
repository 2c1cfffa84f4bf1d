"""LPIPS v0.1 / AlexNet (`spg_jax.metrics.lpips`) and its converter against PyTorch.

torchvision and lpips are not installed here, so the main parity test writes torchvision's
`alexnet().features` layer list itself (same indices, hence the same state_dict keys) with random
weights, adds fake `classifier.*` tensors, and computes LPIPS with torch ops the way `lpips.LPIPS.forward`
does (ScalingLayer, lpips's slices [0:2], [2:5], [5:8], [8:10], [10:12], channel normalisation with eps
1e-10, squared difference, bias-free 1×1 conv, spatial mean, sum). The weights go through
`spg_jax.convert.lpips.convert`. On random 64×64 (batch 2) and 80×48 (batch 3) pairs, float32 with the
highest matmul precision: every tap within max |Δ| ≤ 1e-5 · max |reference|, per-layer terms and
distances within 1e-5 relative.

`test_matches_pypi_lpips` repeats the comparison against the real `lpips.LPIPS(net='alex')` (random
torchvision AlexNet backbone, the wheel's own `alex.pth` heads) where lpips and torchvision import,
within 1e-4 relative (see `PYPI_REL_TOL`).
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np
import pytest
import torch
from torch import nn as tnn
from torch.nn import functional as F

from spg_jax.convert import lpips as convert_lpips
from spg_jax.convert.state_dict import ConversionError
from spg_jax.metrics.lpips import (CHANNELS, CONV_INDICES, LAYER_NAMES, AlexNetFeatures, load_lpips_weights,
                                   lpips_distance, lpips_per_layer)
from spg_jax.weights import save_weights
from tests.conftest import nchw_to_nhwc

REL_TOL = 1e-5
# Against the real lpips, which may run where JAX uses a GPU while torch stays on the CPU: the
# convolutions then sum in another order, and the per-layer terms of near-identical pairs are
# differences of close numbers, so allow 1e-4 there (about 3e-6 is seen CPU-to-CPU).
PYPI_REL_TOL = 1e-4
TAP_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))  # lpips.pretrained_networks.alexnet slices
SHAPES = ((2, 64, 64), (3, 80, 48))  # (B, H, W): square, and non-square with odd intermediate sizes


def _torch_alexnet_features() -> tnn.Sequential:
  """torchvision `AlexNet.features`, index for index."""
  return tnn.Sequential(
      tnn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), tnn.ReLU(inplace=False),
      tnn.MaxPool2d(kernel_size=3, stride=2),
      tnn.Conv2d(64, 192, kernel_size=5, padding=2), tnn.ReLU(inplace=False),
      tnn.MaxPool2d(kernel_size=3, stride=2),
      tnn.Conv2d(192, 384, kernel_size=3, padding=1), tnn.ReLU(inplace=False),
      tnn.Conv2d(384, 256, kernel_size=3, padding=1), tnn.ReLU(inplace=False),
      tnn.Conv2d(256, 256, kernel_size=3, padding=1), tnn.ReLU(inplace=False),
      tnn.MaxPool2d(kernel_size=3, stride=2),
  )


def _torch_scale(x: torch.Tensor) -> torch.Tensor:
  """lpips.ScalingLayer."""
  shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
  scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
  return (x - shift) / scale


def _torch_taps(features: tnn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
  out, h = [], _torch_scale(x)
  for start, stop in TAP_SLICES:
    h = features[start:stop](h)
    out.append(h)
  return out


def _torch_lpips(features: tnn.Sequential, heads: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
  """(taps of x, per-layer terms (B, 5), distances (B,)) as numpy, computed like lpips.LPIPS.forward."""
  with torch.no_grad():
    tx = _torch_taps(features, torch.from_numpy(x))
    ty = _torch_taps(features, torch.from_numpy(y))
    terms = []
    for k, (a, b) in enumerate(zip(tx, ty)):
      na = a / (torch.sqrt(torch.sum(a ** 2, dim=1, keepdim=True)) + 1e-10)
      nb = b / (torch.sqrt(torch.sum(b ** 2, dim=1, keepdim=True)) + 1e-10)
      weighted = F.conv2d((na - nb) ** 2, torch.from_numpy(heads[f"lin{k}.model.1.weight"]))
      terms.append(weighted.mean([2, 3], keepdim=True))
    total = sum(terms)
  per_layer = torch.stack([t.flatten() for t in terms], dim=-1)
  return [t.numpy() for t in tx], per_layer.numpy(), total.flatten().numpy()


def _random_heads(seed: int) -> dict[str, np.ndarray]:
  """Non-negative heads with some exact zeros, like the trained ones."""
  rng = np.random.default_rng(seed)
  heads = {}
  for k, c in enumerate(CHANNELS):
    w = rng.uniform(0.0, 1.0, (1, c, 1, 1)).astype(np.float32)
    w[rng.uniform(size=w.shape) < 0.2] = 0.0
    heads[f"lin{k}.model.1.weight"] = w
  return heads


@pytest.fixture(scope="module")
def torch_setup():
  torch.manual_seed(0)
  features = _torch_alexnet_features().eval()
  # PyTorch's bias init is small; give the biases visible values so a wrong bias mapping shows.
  with torch.no_grad():
    for m in features:
      if isinstance(m, tnn.Conv2d):
        m.bias.normal_(0.0, 0.1)
  backbone = {f"features.{k}": v.numpy().copy() for k, v in features.state_dict().items()}
  rng = np.random.default_rng(0)
  # Stand-ins for torchvision's classifier.{1,4,6} (the real ones are 9216 -> 4096 -> 4096 -> 1000).
  for i, (o, n) in {1: (16, 36), 4: (16, 16), 6: (10, 16)}.items():
    backbone[f"classifier.{i}.weight"] = rng.normal(size=(o, n)).astype(np.float32)
    backbone[f"classifier.{i}.bias"] = np.zeros(o, np.float32)
  return features, backbone, _random_heads(1)


@pytest.fixture(scope="module")
def variables(torch_setup):
  _, backbone, heads = torch_setup
  return convert_lpips.convert(backbone, heads, "random_alexnet")


def _pair(shape, seed):
  b, h, w = shape
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, (b, 3, h, w)).astype(np.float32)
  # y near x for some pairs and unrelated for others, so the distances span a range.
  noise = rng.uniform(-1, 1, x.shape).astype(np.float32)
  mix = np.linspace(0.1, 1.0, b, dtype=np.float32).reshape(b, 1, 1, 1)
  y = np.clip(x + mix * noise, -1, 1).astype(np.float32)
  return x, y


def test_state_dict_layout(torch_setup):
  _, backbone, _ = torch_setup
  conv_keys = sorted({int(k.split(".")[1]) for k in backbone if k.startswith("features.")})
  assert conv_keys == list(CONV_INDICES) == [0, 3, 6, 8, 10]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_features_and_distance_match_torch_within_1em5_relative(torch_setup, variables, shape):
  features, _, heads = torch_setup
  x, y = _pair(shape, seed=shape[1])
  ref_taps, ref_terms, ref_dist = _torch_lpips(features, heads, x, y)

  taps = AlexNetFeatures().apply({"params": variables["params"]["features"]}, nchw_to_nhwc(x))
  for name, r, o, c in zip(LAYER_NAMES, ref_taps, taps, CHANNELS):
    o = np.asarray(o)
    assert o.shape == nchw_to_nhwc(r).shape and o.shape[-1] == c, name
    scale = np.abs(r).max()
    assert scale > 0, name
    err = np.abs(o - nchw_to_nhwc(r)).max()
    assert err <= REL_TOL * scale, f"{name}: max |Δ| {err:.3e} vs scale {scale:.3e}"

  terms = np.asarray(lpips_per_layer(variables, nchw_to_nhwc(x), nchw_to_nhwc(y)))
  np.testing.assert_allclose(terms, ref_terms, rtol=REL_TOL, atol=0)
  dist = np.asarray(jax.jit(lpips_distance)(variables, nchw_to_nhwc(x), nchw_to_nhwc(y)))
  assert dist.shape == (shape[0],) and dist.dtype == np.float32
  np.testing.assert_allclose(dist, ref_dist, rtol=REL_TOL, atol=0)
  assert np.all(np.diff(ref_dist) > 0)  # the mix makes later pairs farther apart: a non-trivial check


def test_identity_and_symmetry(variables):
  x, y = (nchw_to_nhwc(a) for a in _pair((2, 64, 64), seed=5))
  assert np.all(np.asarray(lpips_distance(variables, x, x)) == 0.0)
  d_xy = np.asarray(lpips_distance(variables, x, y))
  d_yx = np.asarray(lpips_distance(variables, y, x))
  assert np.all(d_xy > 0)
  np.testing.assert_allclose(d_xy, d_yx, rtol=1e-6, atol=0)


def test_gradient_is_finite(variables):
  # ReLU leaves all-zero feature vectors; the channel norm must not turn them into NaN gradients.
  x, y = (nchw_to_nhwc(a) for a in _pair((1, 48, 48), seed=6))
  grad = jax.jit(jax.grad(lambda a, b: lpips_distance(variables, a, b).sum()))
  for other in (y, x):
    assert np.all(np.isfinite(np.asarray(grad(x, other))))


def test_rejects_bad_inputs(variables):
  with pytest.raises(ValueError, match="RGB"):
    AlexNetFeatures().init(jax.random.key(0), np.zeros((1, 64, 64, 4), np.float32))
  with pytest.raises(ValueError, match="at least 31"):
    AlexNetFeatures().init(jax.random.key(0), np.zeros((1, 30, 64, 3), np.float32))
  with pytest.raises(ValueError, match="shapes differ"):
    lpips_distance(variables, np.zeros((1, 64, 64, 3), np.float32), np.zeros((1, 64, 32, 3), np.float32))


def test_converter_layout(variables):
  params = variables["params"]
  assert set(variables) == {"params"} and set(params) == {"features", "heads"}
  assert sorted(params["features"], key=lambda n: int(n.split("_")[1])) == [f"conv_{i}" for i in CONV_INDICES]
  assert params["features"]["conv_0"]["kernel"].shape == (11, 11, 3, 64)
  assert params["features"]["conv_3"]["kernel"].shape == (5, 5, 64, 192)
  assert [params["heads"][f"lin{k}"]["kernel"].shape for k in range(5)] == [(1, 1, c, 1) for c in CHANNELS]


def test_converter_reports_missing_keys(torch_setup):
  _, backbone, heads = torch_setup
  broken = {k: v for k, v in backbone.items() if k != "features.6.weight"}
  with pytest.raises(ConversionError, match=r"missing key 'features\.6\.weight'"):
    convert_lpips.convert(broken, heads, "broken")
  broken_heads = {k: v for k, v in heads.items() if k != "lin3.model.1.weight"}
  with pytest.raises(ConversionError, match=r"missing key 'lin3\.model\.1\.weight'"):
    convert_lpips.convert(backbone, broken_heads, ("a.pth", "heads.pth"))


def test_converter_reports_misshaped_keys(torch_setup):
  _, backbone, heads = torch_setup
  wrong = dict(backbone, **{"features.3.bias": np.zeros(7, np.float32)})
  with pytest.raises(ConversionError, match=r"conv_3/bias \(from features\.3\.bias\)"):
    convert_lpips.convert(wrong, heads, "misshaped")
  wrong_heads = dict(heads, **{"lin2.model.1.weight": np.ones((1, 100, 1, 1), np.float32)})
  with pytest.raises(ConversionError, match=r"lin2/kernel \(from lin2\.model\.1\.weight\)"):
    convert_lpips.convert(backbone, wrong_heads, "misshaped")


def test_converter_reports_unexpected_keys_and_negative_heads(torch_setup):
  _, backbone, heads = torch_setup
  extra = dict(backbone, **{"features.1.running_mean": np.zeros(64, np.float32)})
  with pytest.raises(ConversionError, match=r"features\.1\.running_mean"):
    convert_lpips.convert(extra, heads, "bn_like")
  # A whole `lpips.LPIPS().state_dict()` is not a heads file (it also has `lins.*`, `net.*`, ...).
  aliased = dict(heads, **{"lins.0.model.1.weight": heads["lin0.model.1.weight"]})
  with pytest.raises(ConversionError, match=r"lins\.0\.model\.1\.weight"):
    convert_lpips.convert(backbone, aliased, "full_lpips_state")
  negative = dict(heads, **{"lin4.model.1.weight": -np.ones((1, 256, 1, 1), np.float32)})
  with pytest.raises(ConversionError, match=r"non-negative.*: lin4\.model\.1\.weight \(min -1\)"):
    convert_lpips.convert(backbone, negative, "untrained")


def test_run_reads_pth_files_and_loader_round_trips(torch_setup, variables, tmp_path):
  _, backbone, heads = torch_setup
  for name, state in (("alexnet.pth", backbone), ("alex.pth", heads)):
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, str(tmp_path / name))
  parser = argparse.ArgumentParser()
  convert_lpips.add_arguments(parser)
  args = parser.parse_args(["--alexnet", str(tmp_path / "alexnet.pth"), "--heads", str(tmp_path / "alex.pth")])
  converted, meta = convert_lpips.run(args)
  assert meta["network"] == "lpips_alex" and meta["config"]["version"] == "0.1"
  assert len(meta["alexnet_sha256"]) == len(meta["heads_sha256"]) == 64
  path = tmp_path / "lpips_alex.npz"
  save_weights(path, converted, meta)
  loaded = load_lpips_weights(path)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)
  other = tmp_path / "other.npz"
  save_weights(other, converted, dict(meta, network="vgg19_features"))
  with pytest.raises(ValueError, match="not 'lpips_alex'"):
    load_lpips_weights(other)


def test_loader_names_missing_file(tmp_path):
  missing = tmp_path / "nowhere" / "lpips_alex.npz"
  with pytest.raises(FileNotFoundError) as info:
    load_lpips_weights(missing)
  message = str(info.value)
  assert str(missing) in message
  assert "alexnet-owt-7be5be79.pth" in message and "python -m spg_jax.convert lpips" in message


def test_matches_pypi_lpips(torch_setup):
  lpips = pytest.importorskip("lpips")
  torchvision = pytest.importorskip("torchvision")
  from spg_jax.convert.torch_io import load_torch_state_dict  # pylint: disable=import-outside-toplevel

  features, _, _ = torch_setup
  # A random torchvision AlexNet state_dict, real classifier shapes included.
  tv_alexnet = torchvision.models.alexnet()
  # Same random features as the hand-written reference, which therefore must have torchvision's layout.
  tv_features = {f"features.{k}": v for k, v in features.state_dict().items()}
  tv_state = tv_alexnet.state_dict()
  assert {k: tuple(v.shape) for k, v in tv_state.items() if k.startswith("features.")} == \
      {k: tuple(v.shape) for k, v in tv_features.items()}
  tv_alexnet.load_state_dict(dict(tv_state, **tv_features))
  backbone = {k: v.detach().numpy().copy() for k, v in tv_alexnet.state_dict().items()}

  heads_path = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "alex.pth")
  heads = load_torch_state_dict(heads_path)
  assert sorted(heads) == [f"lin{k}.model.1.weight" for k in range(5)]
  variables = convert_lpips.convert(backbone, heads, ("random torchvision alexnet", heads_path))

  model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
  with torch.no_grad():
    for name, param in model.net.named_parameters():  # 'slice<s>.<torchvision index>.<weight|bias>'
      _, index, kind = name.split(".")
      param.copy_(torch.from_numpy(backbone[f"features.{index}.{kind}"]))
    for k in range(5):
      np.testing.assert_array_equal(getattr(model, f"lin{k}").model[1].weight.numpy(),
                                    heads[f"lin{k}.model.1.weight"])

  for shape in SHAPES:
    x, y = _pair(shape, seed=shape[1])
    with torch.no_grad():
      total, terms = model(torch.from_numpy(x), torch.from_numpy(y), retPerLayer=True)
    ref_terms = torch.stack([t.flatten() for t in terms], dim=-1).numpy()
    np.testing.assert_allclose(np.asarray(lpips_per_layer(variables, nchw_to_nhwc(x), nchw_to_nhwc(y))),
                               ref_terms, rtol=PYPI_REL_TOL, atol=0)
    np.testing.assert_allclose(np.asarray(lpips_distance(variables, nchw_to_nhwc(x), nchw_to_nhwc(y))),
                               total.flatten().numpy(), rtol=PYPI_REL_TOL, atol=0)
