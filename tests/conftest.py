"""Shared test fixtures: float32 JAX on CPU, and the official reference tensors.

The reference tensors (`shared/reference/*.npz`, produced by the official PyTorch code) are found at
`$SPG_REFERENCE_DIR`, else at `<repo>/../shared/reference`. Without them the parity tests are skipped,
unless `SPG_REQUIRE_REFERENCE=1` (set by `.ci/run`), which turns a missing file into a failure.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

REPO = pathlib.Path(__file__).resolve().parent.parent


def reference_dir() -> pathlib.Path:
  env = os.environ.get("SPG_REFERENCE_DIR")
  return pathlib.Path(env) if env else REPO.parent / "shared" / "reference"


class Reference:
  """One reference `.npz`: `param/<key>`, `input/<name>`, `output/<name>`, `meta/json`."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    self.data = np.load(path, allow_pickle=False)
    self.meta = json.loads(str(self.data["meta/json"])) if "meta/json" in self.data.files else {}

  def prefixed(self, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: self.data[k] for k in self.data.files if k.startswith(prefix)}

  @property
  def state_dict(self) -> dict[str, np.ndarray]:
    return self.prefixed("param/")

  def __getitem__(self, key: str) -> np.ndarray:
    return self.data[key]


@pytest.fixture(scope="session")
def load_reference():
  """Returns a loader: `load_reference('generator_market_small.npz') -> Reference`."""

  def load(name: str) -> Reference:
    path = reference_dir() / name
    if not path.exists():
      if os.environ.get("SPG_REQUIRE_REFERENCE") == "1":
        pytest.fail(f"reference fixture {path} is missing (SPG_REQUIRE_REFERENCE=1)")
      pytest.skip(f"reference fixture {path} not found; set SPG_REFERENCE_DIR")
    return Reference(path)

  return load


@pytest.fixture(scope="session")
def official_keys():
  """The full-size official state_dict listing (`official_state_dict_keys.json`)."""
  path = reference_dir() / "official_state_dict_keys.json"
  if not path.exists():
    if os.environ.get("SPG_REQUIRE_REFERENCE") == "1":
      pytest.fail(f"{path} is missing (SPG_REQUIRE_REFERENCE=1)")
    pytest.skip(f"{path} not found; set SPG_REFERENCE_DIR")
  return json.loads(path.read_text())


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1))


def nhwc_to_nchw(x) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))
