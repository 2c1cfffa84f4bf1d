"""The config files build the released network sizes, and launch.py runs on them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from configs import deepfashion, market1501, synthetic
from spg_jax.models.from_config import networks_from_config, parameter_counts
from tests.conftest import REPO


@pytest.mark.parametrize("get_config,generator_params", [
    (deepfashion.get_config, 87_795_177),
    (market1501.get_config, 30_914_805),
])
def test_dataset_configs_build_the_released_networks(get_config, generator_params):
  counts = parameter_counts(get_config())
  assert counts["generator (SPGNet)"] == generator_params
  assert counts["flow network (FlowUnet)"] == 29_338_189
  assert counts["discriminator (PatchGAN)"] == 2_787_137


def test_bad_compute_dtype_is_rejected():
  config = synthetic.get_config()
  config.compute_dtype = "float16"
  with pytest.raises(ValueError, match="compute_dtype"):
    networks_from_config(config)


def test_launch_describe_runs_with_overrides():
  result = subprocess.run(
      [sys.executable, "launch.py", "--config", "configs/synthetic.py", "--mode", "describe",
       "--config.model.parsing.use_distance_maps=False"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  assert "generator (SPGNet)" in result.stdout and "parameters" in result.stdout
