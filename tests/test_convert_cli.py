"""End-to-end `python -m spg_jax.convert`: a real `.pth` in, a weights file out, official outputs back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spg_jax.convert.__main__ import main
from spg_jax.models.generator import GeneratorConfig, SPGNetGenerator
from spg_jax.weights import load_weights
from tests.conftest import nchw_to_nhwc


def _save_pth(state: dict, path) -> None:
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, str(path))


@pytest.mark.parametrize("kind", ["deepfashion", "market"])
def test_generator_pth_converts_and_reproduces_official_output_within_1e_4(kind, load_reference, tmp_path):
  ref = load_reference(f"generator_{kind}_small.npz")
  pth = tmp_path / "latest_net_netG.pth"
  _save_pth(ref.state_dict, pth)
  out_file = tmp_path / "weights" / "generator.npz"
  assert main(["generator", "--input", str(pth), "--output", str(out_file), "--variant", kind]) == 0

  variables, meta = load_weights(out_file)
  assert meta["network"] == "spgnet_generator" and meta["config"]["variant"] == kind
  assert len(meta["source_sha256"]) == 64
  model = SPGNetGenerator(GeneratorConfig(**meta["config"]))
  out = model.apply(variables, train=False, deterministic=True,
                    target_pose=nchw_to_nhwc(ref["input/x_p"]), source_image=nchw_to_nhwc(ref["input/x_a"]),
                    source_parsing=nchw_to_nhwc(ref["input/s_seg"]), target_parsing=nchw_to_nhwc(ref["input/d_seg"]),
                    flow=nchw_to_nhwc(ref["input/flow"]), visibility=nchw_to_nhwc(ref["input/vis"]))
  assert np.abs(np.asarray(out) - nchw_to_nhwc(ref["output/out_nonoise"])).max() <= 1e-4


def test_wrong_variant_stops_with_a_message(load_reference, tmp_path, capsys):
  ref = load_reference("generator_market_small.npz")
  pth = tmp_path / "g.pth"
  _save_pth(ref.state_dict, pth)
  assert main(["generator", "--input", str(pth), "--output", str(tmp_path / "g.npz"), "--variant", "deepfashion"]) == 1
  assert "market generator" in capsys.readouterr().err
  assert not (tmp_path / "g.npz").exists()


def test_missing_input_file_is_named(tmp_path, capsys):
  missing = tmp_path / "nope" / "latest_net_netG.pth"
  assert main(["generator", "--input", str(missing), "--output", str(tmp_path / "g.npz")]) == 1
  assert str(missing) in capsys.readouterr().err


def test_truncated_state_dict_lists_missing_keys(load_reference, tmp_path, capsys):
  ref = load_reference("generator_market_small.npz")
  state = ref.state_dict
  del state["dec_output.1.bias"]
  pth = tmp_path / "g.pth"
  _save_pth(state, pth)
  assert main(["generator", "--input", str(pth), "--output", str(tmp_path / "g.npz")]) == 1
  assert "dec_output.1.bias" in capsys.readouterr().err
