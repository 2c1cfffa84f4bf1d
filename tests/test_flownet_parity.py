"""Parity of `FlowUnet` with the official Intr-Flow `networks.FlowUnet`, and its converter.

The reference (`flownet_small.npz`, nf=8, max_nf=128: the released net's channel clipping at a quarter of
its width) was produced by the official PyTorch module in eval mode. Its state_dict is converted with
`spg_jax.convert.flownet`, and every output must match within max |Δ| ≤ 1e-4 in float32. The full-size
checks use the released DeepFashion configuration (nf=32, max_nf=512, 5 blocks).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spg_jax.convert import flownet as convert_flownet
from spg_jax.convert.state_dict import ConversionError
from spg_jax.models.flownet import FlowUnet, flow_and_visibility
from tests.conftest import nchw_to_nhwc

TOL = 1e-4
SOURCE = "flownet_small.npz"

# The architecture fields of the released DeepFashion `train_opt.json` (FlowReg_deepfashion). Its
# `max_nf` of 128 is deliberately kept: FlowRegressionModel never passes it, the net uses 512.
DEEPFASHION_OPTIONS = {
    "id": "FlowReg_deepfashion", "which_model": "unet", "norm": "batch", "nf": 32, "max_nf": 128,
    "input_type1": "joint", "input_type2": "joint", "start_scale": 2, "num_scale": 5,
    "joint_nc": 18, "seg_nc": 7, "image_size": [256, 256],
}


@pytest.fixture(scope="module")
def ref(load_reference):
  return load_reference(SOURCE)


@pytest.fixture(scope="module")
def run(ref):
  """Converts the fixture's state_dict and runs the converted net on its input (eval mode)."""
  kwargs = ref.meta["constructor_kwargs"]
  model = FlowUnet(nf=kwargs["nf"], max_nf=kwargs["max_nf"], num_scales=kwargs["num_scale"],
                   input_nc=kwargs["input_nc"])
  variables = convert_flownet.convert(ref.state_dict, model, SOURCE)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, nchw_to_nhwc(ref["input/x"]))
  flow_px, vis = jax.jit(flow_and_visibility)(out.flow, out.vis_logits)
  return out, flow_px, vis


def _max_err(ours, theirs_nchw) -> float:
  ours = np.asarray(ours)
  theirs = nchw_to_nhwc(theirs_nchw)
  assert ours.shape == theirs.shape
  return float(np.abs(ours - theirs).max())


def _near_tie(logits: np.ndarray) -> np.ndarray:
  """(B, H, W) mask of positions whose two largest logits are within TOL (argmax may legally differ)."""
  top2 = np.sort(logits, axis=-1)[..., -2:]
  return (top2[..., 1] - top2[..., 0]) <= TOL


def test_flow_out_matches_official_within_1e_4(run, ref):
  out, _, _ = run
  assert _max_err(out.flow, ref["output/flow_out"]) <= TOL


def test_vis_logits_match_official_within_1e_4(run, ref):
  out, _, _ = run
  assert _max_err(out.vis_logits, ref["output/vis_out"]) <= TOL


@pytest.mark.parametrize("level", range(5))
def test_flow_pyramid_level_matches_official_within_1e_4(run, ref, level):
  out, _, _ = run
  assert len(out.flow_pyramid) == 5
  assert _max_err(out.flow_pyramid[level], ref[f"output/flow_pyr_{level}"]) <= TOL


def test_feature_matches_official_within_1e_4(run, ref):
  out, _, _ = run
  assert _max_err(out.feature, ref["output/feat_out"]) <= TOL


def test_vis_argmax_matches_official_except_ties_within_1e_4(run, ref):
  out, _, vis = run
  theirs = nchw_to_nhwc(ref["derived/vis_argmax"])
  ties = _near_tie(np.asarray(out.vis_logits)) | _near_tie(nchw_to_nhwc(ref["output/vis_out"]))
  differ = np.asarray(vis)[..., 0] != theirs[..., 0]
  assert not np.any(differ & ~ties), f"{int(np.sum(differ & ~ties))} visibility labels differ off ties"
  assert set(np.unique(np.asarray(vis))) <= {0.0, 1.0, 2.0}


def test_flow_x20_masked_matches_official_within_1e_4(run, ref):
  out, flow_px, _ = run
  ties = _near_tie(np.asarray(out.vis_logits)) | _near_tie(nchw_to_nhwc(ref["output/vis_out"]))
  err = np.abs(np.asarray(flow_px) - nchw_to_nhwc(ref["derived/flow_x20_masked"])).max(axis=-1)
  assert float(np.where(ties, 0.0, err).max()) <= TOL


def test_flow_and_visibility_masks_background_and_takes_first_maximum():
  flow = jnp.ones((1, 1, 3, 2)) * jnp.array([0.5, -0.25])
  logits = jnp.array([[[[0.0, 1.0, 0.5], [0.0, 0.0, 3.0], [2.0, 2.0, 2.0]]]])  # invisible, background, tie
  flow_px, vis = flow_and_visibility(flow, logits)
  np.testing.assert_array_equal(np.asarray(vis)[0, 0, :, 0], [1.0, 2.0, 0.0])
  np.testing.assert_array_equal(np.asarray(flow_px)[0, 0], [[10.0, -5.0], [0.0, 0.0], [10.0, -5.0]])


# Full-size configuration and the converter.


def _zero_state(entries) -> dict[str, np.ndarray]:
  return {e["key"]: np.zeros(e["shape"], dtype=np.dtype(e["dtype"])) for e in entries}


@pytest.fixture(scope="module")
def full_entries(official_keys):
  return official_keys["flownet_deepfashion"]["state_dict"]


def test_full_size_trainable_parameter_count_is_official_29338189(official_keys):
  model = FlowUnet()
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, 256, 256, 36), jnp.float32))
  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes["params"]))
  assert count == official_keys["flownet_deepfashion"]["num_parameters"] == 29_338_189


def test_options_of_released_deepfashion_net_build_the_official_architecture(official_keys):
  model = convert_flownet.flownet_from_options(DEEPFASHION_OPTIONS)
  assert (model.nf, model.max_nf, model.num_scales, model.input_nc) == (32, 512, 5, 36)
  kwargs = official_keys["flownet_deepfashion"]["constructor_kwargs"]
  assert (kwargs["nf"], kwargs["max_nf"], kwargs["num_scale"], kwargs["input_nc"]) == (32, 512, 5, 36)


def test_every_full_size_official_key_converts(full_entries):
  variables = convert_flownet.convert(_zero_state(full_entries), FlowUnet(), "best_net_netF.pth")
  n_params = sum(np.size(x) for x in jax.tree_util.tree_leaves(variables["params"]))
  assert n_params == sum(int(np.prod(e["shape"])) for e in full_entries if e["kind"] == "parameter")


def test_convert_accepts_the_options_dict(full_entries):
  variables = convert_flownet.convert(_zero_state(full_entries), DEEPFASHION_OPTIONS, "best_net_netF.pth")
  assert variables["params"]["unet_block"]["down_conv"]["kernel"].shape == (4, 4, 64, 128)


@pytest.mark.parametrize("which", ["unet_v2", "resnet"])
def test_unsupported_which_model_names_file_and_value(which):
  with pytest.raises(ConversionError, match=rf"train_opt\.json: which_model = '{which}' is not implemented"):
    convert_flownet.flownet_from_options({**DEEPFASHION_OPTIONS, "which_model": which}, source="train_opt.json")


def test_unsupported_start_scale_raises():
  with pytest.raises(ConversionError, match="start_scale = 4"):
    convert_flownet.flownet_from_options({**DEEPFASHION_OPTIONS, "start_scale": 4})


def test_missing_key_raises_naming_it(ref):
  state = dict(ref.state_dict)
  del state["unet_block.submodule.up.2.running_var"]
  with pytest.raises(ConversionError, match=r"missing key 'unet_block\.submodule\.up\.2\.running_var'"):
    convert_flownet.convert(state, FlowUnet(nf=8, max_nf=128), SOURCE)


def test_unexpected_key_raises_naming_it(ref):
  state = {**ref.state_dict, "unet_block.up.2.extra": np.zeros(3, np.float32)}
  with pytest.raises(ConversionError, match=r"unexpected key.*\n\s+unet_block\.up\.2\.extra"):
    convert_flownet.convert(state, FlowUnet(nf=8, max_nf=128), SOURCE)


def test_misshaped_key_raises_naming_it(ref):
  state = dict(ref.state_dict)
  state["predict_vis.1.weight"] = np.zeros((3, 17, 3, 3), np.float32)
  with pytest.raises(ConversionError, match=r"predict_vis/conv/kernel \(from predict_vis\.1\.weight\)"):
    convert_flownet.convert(state, FlowUnet(nf=8, max_nf=128), SOURCE)


def test_wrong_num_scales_leaves_keys_unconsumed(ref):
  with pytest.raises(ConversionError, match=r"(?s)unexpected key.*unet_block(\.submodule){4}\.down\.1\.weight"):
    convert_flownet.convert(ref.state_dict, FlowUnet(nf=8, max_nf=128, num_scales=4), SOURCE)
