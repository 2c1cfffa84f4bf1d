"""`VGG19Features` and its converter against a plain-PyTorch VGG19 `features` stack.

torchvision is not installed here, so the test writes torchvision's `vgg19().features` layer list
itself (same indices, hence the same state_dict keys) with random weights, adds fake `classifier.*`
tensors, converts the state_dict and compares the five taps relu1_1 … relu5_1 on a random
2×3×64×64 input: max |Δ| ≤ 1e-4 · max |reference| per tap (float32, highest matmul precision).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from torch import nn as tnn

from spg_jax.convert import vgg as convert_vgg
from spg_jax.convert.state_dict import ConversionError
from spg_jax.models.vgg import CONV_INDICES, LAYER_NAMES, VGG19Features, perceptual_loss
from tests.conftest import nchw_to_nhwc

REL_TOL = 1e-4
# torchvision `cfgs['E']`: conv widths and 'M' for max-pool.
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
TAP_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))  # the official VGGLoss slices


def _torch_vgg19_features() -> tnn.Sequential:
  layers, c = [], 3
  for v in VGG19_CFG:
    if v == "M":
      layers.append(tnn.MaxPool2d(kernel_size=2, stride=2))
    else:
      layers += [tnn.Conv2d(c, v, kernel_size=3, padding=1), tnn.ReLU(inplace=False)]
      c = v
  return tnn.Sequential(*layers)


def _torch_taps(features: tnn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
  out = []
  for start, stop in TAP_SLICES:
    x = features[start:stop](x)
    out.append(x)
  return out


def _torch_normalize(x: torch.Tensor) -> torch.Tensor:
  """The official `VGGLoss.normalize`: [−1, 1] -> ImageNet mean / std."""
  mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
  return (x * 0.5 + 0.5 - mean) / std


@pytest.fixture(scope="module")
def torch_setup():
  torch.manual_seed(0)
  features = _torch_vgg19_features().eval()
  # Bias init in PyTorch is small; give the biases visible values so a wrong bias mapping shows.
  with torch.no_grad():
    for m in features:
      if isinstance(m, tnn.Conv2d):
        m.bias.normal_(0.0, 0.1)
  state = {f"features.{k}": v.numpy().copy() for k, v in features.state_dict().items()}
  rng = np.random.default_rng(0)
  state.update({
      "classifier.0.weight": rng.normal(size=(16, 8)).astype(np.float32),
      "classifier.0.bias": np.zeros(16, np.float32),
      "classifier.6.weight": rng.normal(size=(10, 16)).astype(np.float32),
      "classifier.6.bias": np.zeros(10, np.float32),
  })
  return features, state


@pytest.fixture(scope="module")
def images() -> np.ndarray:
  return np.random.default_rng(1).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def outputs(torch_setup, images):
  features, state = torch_setup
  with torch.no_grad():
    ref = [t.numpy() for t in _torch_taps(features, _torch_normalize(torch.from_numpy(images)))]
  model = VGG19Features()
  variables = convert_vgg.convert(state, model, "random_vgg19")
  ours = model.apply(variables, nchw_to_nhwc(images))
  return ref, [np.asarray(o) for o in ours], variables


def test_state_dict_layout(torch_setup):
  _, state = torch_setup
  conv_keys = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.")})
  assert conv_keys == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
  assert CONV_INDICES == (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28)


def test_features_match_torch_within_1em4_relative(outputs):
  ref, ours, _ = outputs
  expected_shapes = [(2, 64, 64, 64), (2, 32, 32, 128), (2, 16, 16, 256), (2, 8, 8, 512), (2, 4, 4, 512)]
  for name, r, o, shape in zip(LAYER_NAMES, ref, ours, expected_shapes):
    assert o.shape == shape, name
    scale = np.abs(r).max()
    assert scale > 0, name
    err = np.abs(o - nchw_to_nhwc(r)).max()
    assert err <= REL_TOL * scale, f"{name}: max |Δ| {err:.3e} vs scale {scale:.3e}"


def test_conv_names_follow_torchvision_indices(outputs):
  *_, variables = outputs
  assert set(variables) == {"params"}
  assert sorted(variables["params"], key=lambda n: int(n.split("_")[1])) == [f"conv_{i}" for i in CONV_INDICES]
  assert variables["params"]["conv_28"]["kernel"].shape == (3, 3, 512, 512)


def test_perceptual_loss_matches_torch(torch_setup, images):
  features, state = torch_setup
  other = np.random.default_rng(2).uniform(-1, 1, images.shape).astype(np.float32)
  with torch.no_grad():
    fa = _torch_taps(features, _torch_normalize(torch.from_numpy(images)))
    fb = _torch_taps(features, _torch_normalize(torch.from_numpy(other)))
    expected = sum(0.125 * torch.nn.functional.l1_loss(a, b) for a, b in zip(fa, fb)).item()
  model = VGG19Features()
  variables = convert_vgg.convert(state, model, "random_vgg19")
  ours_a = model.apply(variables, nchw_to_nhwc(images))
  ours_b = model.apply(variables, nchw_to_nhwc(other))
  loss = float(perceptual_loss(ours_a, ours_b))
  assert loss == pytest.approx(expected, rel=1e-4)
  # The pure function alone, on the torch features themselves (the layout does not matter for a mean).
  torch_feats = [a.numpy() for a in fa], [b.numpy() for b in fb]
  assert float(perceptual_loss(*torch_feats)) == pytest.approx(expected, rel=1e-6)
  weights = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
  imbalance = sum(w * torch.nn.functional.l1_loss(a, b).item() for w, a, b in zip(weights, fa, fb))
  assert float(perceptual_loss(*torch_feats, weights=weights)) == pytest.approx(imbalance, rel=1e-6)
  assert float(perceptual_loss(ours_a, ours_a)) == 0.0


def test_perceptual_loss_argument_checks():
  a = [np.zeros((1, 4, 4, 2), np.float32)] * 5
  with pytest.raises(ValueError, match="must match"):
    perceptual_loss(a, a[:4])
  with pytest.raises(ValueError, match="shapes differ"):
    perceptual_loss(a, a[:4] + [np.zeros((1, 2, 2, 2), np.float32)])


def test_converter_reports_missing_key(torch_setup):
  _, state = torch_setup
  broken = {k: v for k, v in state.items() if k != "features.10.weight"}
  with pytest.raises(ConversionError, match=r"missing key 'features\.10\.weight'"):
    convert_vgg.convert(broken, VGG19Features(), "broken_vgg19")


def test_converter_reports_unexpected_and_misshaped_keys(torch_setup):
  _, state = torch_setup
  extra = dict(state, **{"features.1.running_mean": np.zeros(64, np.float32)})
  with pytest.raises(ConversionError, match=r"features\.1\.running_mean"):
    convert_vgg.convert(extra, VGG19Features(), "vgg19_bn_like")
  wrong = dict(state, **{"features.5.bias": np.zeros(7, np.float32)})
  with pytest.raises(ConversionError, match=r"conv_5/bias \(from features\.5\.bias\)"):
    convert_vgg.convert(wrong, VGG19Features(), "misshaped_vgg19")


def test_rejects_non_rgb_input():
  with pytest.raises(ValueError, match="RGB"):
    VGG19Features().init(jax.random.key(0), np.zeros((1, 32, 32, 4), np.float32))
