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


def test_discriminator_pth_converts_and_reproduces_official_logits_within_1e_4(load_reference, tmp_path):
  from spg_jax.models.discriminator import PatchDiscriminator  # pylint: disable=import-outside-toplevel

  ref = load_reference("discriminator.npz")
  pth = tmp_path / "latest_net_netD.pth"
  _save_pth(ref.state_dict, pth)
  out_file = tmp_path / "d.npz"
  assert main(["discriminator", "--input", str(pth), "--output", str(out_file)]) == 0
  variables, meta = load_weights(out_file)
  assert meta["num_parameters"] == 2_787_137
  logits = PatchDiscriminator().apply(variables, nchw_to_nhwc(ref["input/x"]), train=False)
  assert np.abs(np.asarray(logits) - nchw_to_nhwc(ref["output/logits_eval"])).max() <= 1e-4


def test_full_size_flownet_with_train_opt_converts(official_keys, tmp_path):
  rng = np.random.default_rng(0)
  entries = official_keys["flownet_deepfashion"]["state_dict"]
  state = {e["key"]: rng.standard_normal(e["shape"]).astype(np.float32) if e["dtype"] == "float32"
           else np.zeros(e["shape"], np.int64) for e in entries}
  pth = tmp_path / "best_net_netF.pth"
  _save_pth(state, pth)
  opts = tmp_path / "train_opt.json"
  opts.write_text('{"which_model": "unet", "nf": 32, "num_scale": 5, "start_scale": 2, "norm": "batch", '
                  '"input_type1": "joint", "input_type2": "joint", "joint_nc": 18}')
  out_file = tmp_path / "f.npz"
  assert main(["flownet", "--input", str(pth), "--options", str(opts), "--output", str(out_file)]) == 0
  variables, meta = load_weights(out_file)
  assert meta["num_parameters"] == 29_338_189
  assert meta["config"]["max_nf"] == 512 and "dtype" not in meta["config"]
  # A value survives the trip with the layout change (O, I, kh, kw) -> (kh, kw, I, O).
  kernel = variables["params"]["stem_conv"]["kernel"]
  np.testing.assert_array_equal(kernel, state["conv_downsample.0.weight"].transpose(2, 3, 1, 0))


def test_flownet_without_options_file_stops(tmp_path, capsys, load_reference):
  ref = load_reference("flownet_small.npz")
  pth = tmp_path / "best_net_netF.pth"
  _save_pth(ref.state_dict, pth)
  assert main(["flownet", "--input", str(pth), "--output", str(tmp_path / "f.npz")]) == 1
  assert "--options" in capsys.readouterr().err
