"""Training and evaluation code never imports torch; only `spg_jax.convert` may."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

RUNTIME_MODULES = [
    "spg_jax.ops.resample", "spg_jax.ops.warp", "spg_jax.ops.region", "spg_jax.ops.sean",
    "spg_jax.ops.normalization", "spg_jax.ops.spectral", "spg_jax.ops.pose_maps",
    "spg_jax.models.layers", "spg_jax.models.sean", "spg_jax.models.generator", "spg_jax.models.flownet",
    "spg_jax.models.discriminator", "spg_jax.models.vgg", "spg_jax.models.parsing",
    "spg_jax.models.from_config", "spg_jax.weights", "spg_jax.metrics.lpips", "spg_jax.metrics.inception",
    "spg_jax.metrics.fid", "spg_jax.loop", "spg_jax.train_step", "spg_jax.evaluate", "spg_jax.generate",
]


def test_runtime_modules_do_not_import_torch():
  code = ("import importlib, sys\n"
          f"for m in {RUNTIME_MODULES!r}: importlib.import_module(m)\n"
          "assert 'torch' not in sys.modules, 'torch was imported'\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
