"""Independent plain-PyTorch Inception-v3 feature extractor (both FID variants) for the parity tests.

torchvision is not importable on the development machine, so this writes the network from its
published structure with torch.nn / torch.nn.functional only. Module attribute names follow
torchvision's `Inception3`, so `state_dict()` has the official keys (`Mixed_6b.branch7x7_2.conv.weight`).
The pooling layers are PyTorch's own functional ops, which is what the JAX version must match:
  * torchvision: `F.avg_pool2d(x, 3, 1, 1)` (count_include_pad=True) in the A/C/E pool branches;
  * pytorch_fid: count_include_pad=False in A/C/E_1 and `F.max_pool2d(x, 3, 1, 1)` in E_2 (Mixed_7c).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Conv(nn.Module):
  """BasicConv2d: conv (no bias) -> BN(eps 1e-3) -> ReLU; keys `<name>.conv.*`, `<name>.bn.*`."""

  def __init__(self, cin, cout, k, s=1, p=0):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=False)
    self.bn = nn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _pool(x, mode):
  if mode == "incl":
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)
  if mode == "excl":
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
  return F.max_pool2d(x, 3, stride=1, padding=1)


class A(nn.Module):
  def __init__(self, cin, pool_features, mode):
    super().__init__()
    self.mode = mode
    self.branch1x1 = Conv(cin, 64, 1)
    self.branch5x5_1, self.branch5x5_2 = Conv(cin, 48, 1), Conv(48, 64, 5, p=2)
    self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 64, 1), Conv(64, 96, 3, p=1)
    self.branch3x3dbl_3 = Conv(96, 96, 3, p=1)
    self.branch_pool = Conv(cin, pool_features, 1)

  def forward(self, x):
    return torch.cat([
        self.branch1x1(x),
        self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(_pool(x, self.mode)),
    ], 1)


class B(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = Conv(cin, 384, 3, s=2)
    self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 64, 1), Conv(64, 96, 3, p=1)
    self.branch3x3dbl_3 = Conv(96, 96, 3, s=2)

  def forward(self, x):
    dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return torch.cat([self.branch3x3(x), dbl, F.max_pool2d(x, 3, stride=2)], 1)


class C(nn.Module):
  def __init__(self, cin, c7, mode):
    super().__init__()
    self.mode = mode
    self.branch1x1 = Conv(cin, 192, 1)
    self.branch7x7_1 = Conv(cin, c7, 1)
    self.branch7x7_2 = Conv(c7, c7, (1, 7), p=(0, 3))
    self.branch7x7_3 = Conv(c7, 192, (7, 1), p=(3, 0))
    self.branch7x7dbl_1 = Conv(cin, c7, 1)
    self.branch7x7dbl_2 = Conv(c7, c7, (7, 1), p=(3, 0))
    self.branch7x7dbl_3 = Conv(c7, c7, (1, 7), p=(0, 3))
    self.branch7x7dbl_4 = Conv(c7, c7, (7, 1), p=(3, 0))
    self.branch7x7dbl_5 = Conv(c7, 192, (1, 7), p=(0, 3))
    self.branch_pool = Conv(cin, 192, 1)

  def forward(self, x):
    b7 = x
    for i in (1, 2, 3):
      b7 = getattr(self, f"branch7x7_{i}")(b7)
    bd = x
    for i in (1, 2, 3, 4, 5):
      bd = getattr(self, f"branch7x7dbl_{i}")(bd)
    return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_pool(x, self.mode))], 1)


class D(nn.Module):
  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1, self.branch3x3_2 = Conv(cin, 192, 1), Conv(192, 320, 3, s=2)
    self.branch7x7x3_1 = Conv(cin, 192, 1)
    self.branch7x7x3_2 = Conv(192, 192, (1, 7), p=(0, 3))
    self.branch7x7x3_3 = Conv(192, 192, (7, 1), p=(3, 0))
    self.branch7x7x3_4 = Conv(192, 192, 3, s=2)

  def forward(self, x):
    b7 = x
    for i in (1, 2, 3, 4):
      b7 = getattr(self, f"branch7x7x3_{i}")(b7)
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class E(nn.Module):
  def __init__(self, cin, mode):
    super().__init__()
    self.mode = mode
    self.branch1x1 = Conv(cin, 320, 1)
    self.branch3x3_1 = Conv(cin, 384, 1)
    self.branch3x3_2a, self.branch3x3_2b = Conv(384, 384, (1, 3), p=(0, 1)), Conv(384, 384, (3, 1), p=(1, 0))
    self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 448, 1), Conv(448, 384, 3, p=1)
    self.branch3x3dbl_3a, self.branch3x3dbl_3b = Conv(384, 384, (1, 3), p=(0, 1)), Conv(384, 384, (3, 1), p=(1, 0))
    self.branch_pool = Conv(cin, 192, 1)

  def forward(self, x):
    t = self.branch3x3_1(x)
    d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    return torch.cat([self.branch1x1(x), self.branch3x3_2a(t), self.branch3x3_2b(t),
                      self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(_pool(x, self.mode))], 1)


class InceptionReference(nn.Module):
  """Inception-v3 -> Mixed_7c -> global mean: (B, 3, H, W) -> (B, 2048). `variant` picks the pool modes."""

  def __init__(self, variant: str):
    super().__init__()
    ac, e1, e2 = ("incl", "incl", "incl") if variant == "torchvision" else ("excl", "excl", "max")
    self.Conv2d_1a_3x3 = Conv(3, 32, 3, s=2)
    self.Conv2d_2a_3x3 = Conv(32, 32, 3)
    self.Conv2d_2b_3x3 = Conv(32, 64, 3, p=1)
    self.Conv2d_3b_1x1 = Conv(64, 80, 1)
    self.Conv2d_4a_3x3 = Conv(80, 192, 3)
    self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = A(192, 32, ac), A(256, 64, ac), A(288, 64, ac)
    self.Mixed_6a = B(288)
    self.Mixed_6b, self.Mixed_6c = C(768, 128, ac), C(768, 160, ac)
    self.Mixed_6d, self.Mixed_6e = C(768, 160, ac), C(768, 192, ac)
    self.Mixed_7a = D(768)
    self.Mixed_7b, self.Mixed_7c = E(1280, e1), E(2048, e2)

  def forward(self, x):
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, 3, stride=2)
    x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
      x = getattr(self, f"Mixed_{name}")(x)
    return x.mean(dim=(2, 3))


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random conv weights and BN affine / running statistics that keep activations O(1) over depth.

  Each conv gets N(0, 2 / fan_in) (He) weights; each BN gets scale U(0.8, 1.2), bias N(0, 0.1),
  running mean N(0, 0.1) and running var U(0.5, 1.5), so eval-mode BN is a non-trivial affine map
  and a wrong mean/var/scale/bias mapping shows in the output.
  """
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.Conv2d):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
      elif isinstance(m, nn.BatchNorm2d):
        n = m.num_features
        m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
        m.bias.copy_(0.1 * torch.randn(n, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
        m.running_var.copy_(0.5 + torch.rand(n, generator=g))
  return model.eval()


def numpy_state(module: nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def official_extras(variant: str, seed: int = 0) -> dict[str, np.ndarray]:
  """The keys of the official files the extractor ignores: fc (1000 / 1008 classes), torchvision's AuxLogits."""
  rng = np.random.default_rng(seed)
  classes = 1000 if variant == "torchvision" else 1008
  extras = {"fc.weight": rng.normal(0, 0.01, (classes, 2048)).astype(np.float32),
            "fc.bias": np.zeros(classes, np.float32)}
  if variant == "torchvision":
    for name, cin, cout, k in (("conv0", 768, 128, 1), ("conv1", 128, 768, 5)):
      extras[f"AuxLogits.{name}.conv.weight"] = rng.normal(0, 0.01, (cout, cin, k, k)).astype(np.float32)
      for leaf, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
        extras[f"AuxLogits.{name}.bn.{leaf}"] = np.full(cout, value, np.float32)
      extras[f"AuxLogits.{name}.bn.num_batches_tracked"] = np.zeros((), np.int64)
    extras["AuxLogits.fc.weight"] = rng.normal(0, 0.001, (1000, 768)).astype(np.float32)
    extras["AuxLogits.fc.bias"] = np.zeros(1000, np.float32)
  return extras
