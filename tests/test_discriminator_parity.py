"""Parity of `PatchDiscriminator` with the official `NLayerDiscriminator`, and its converter.

The reference (`discriminator.npz`) is the full-size module (input_nc 24, ndf 64, n_layers 3, BatchNorm,
use_sigmoid) run in eval mode and in one train-mode pass. Its state_dict is converted with
`spg_jax.convert.discriminator`; logits, sigmoid outputs and the BatchNorm running statistics after the
train pass (momentum 0.1, unbiased running variance) must match within max |Δ| ≤ 1e-4 in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spg_jax.convert import discriminator as convert_discriminator
from spg_jax.convert.state_dict import ConversionError
from spg_jax.models.discriminator import PatchDiscriminator
from tests.conftest import nchw_to_nhwc

TOL = 1e-4
SOURCE = "discriminator.npz"
BN_INDICES = (3, 6, 9)


@pytest.fixture(scope="module")
def ref(load_reference):
  return load_reference(SOURCE)


@pytest.fixture(scope="module")
def run(ref):
  """Eval logits, train logits and the batch_stats after the train pass of the converted net."""
  kwargs = ref.meta["constructor_kwargs"]
  model = PatchDiscriminator(input_nc=kwargs["input_nc"], ndf=kwargs["ndf"], n_layers=kwargs["n_layers"])
  variables = convert_discriminator.convert(ref.state_dict, model, SOURCE)
  x = nchw_to_nhwc(ref["input/x"])
  eval_logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  train_logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
  return eval_logits, train_logits, updates["batch_stats"]


def _max_err(ours, theirs_nchw) -> float:
  ours = np.asarray(ours)
  theirs = nchw_to_nhwc(theirs_nchw)
  assert ours.shape == theirs.shape
  return float(np.abs(ours - theirs).max())


def test_eval_logits_match_official_within_1e_4(run, ref):
  assert _max_err(run[0], ref["output/logits_eval"]) <= TOL


def test_eval_sigmoid_output_matches_official_within_1e_4(run, ref):
  assert _max_err(jax.nn.sigmoid(run[0]), ref["output/out_eval"]) <= TOL


def test_train_logits_match_official_within_1e_4(run, ref):
  assert _max_err(run[1], ref["output/logits_train"]) <= TOL


def test_train_sigmoid_output_matches_official_within_1e_4(run, ref):
  assert _max_err(jax.nn.sigmoid(run[1]), ref["output/out_train"]) <= TOL


@pytest.mark.parametrize("index", BN_INDICES)
@pytest.mark.parametrize("stat", ["mean", "var"])
def test_running_stats_after_train_pass_match_official_within_1e_4(run, ref, index, stat):
  ours = np.asarray(run[2][f"norm_{index}"][stat])
  theirs = ref[f"output/train_state/model.{index}.running_{stat}"]
  assert ours.shape == theirs.shape
  assert float(np.abs(ours - theirs).max()) <= TOL


def test_eval_pass_leaves_running_stats_alone(ref):
  variables = convert_discriminator.convert(ref.state_dict, PatchDiscriminator(), SOURCE)
  _, updates = PatchDiscriminator().apply(variables, nchw_to_nhwc(ref["input/x"]), train=False,
                                          mutable=["batch_stats"])
  for index in BN_INDICES:
    np.testing.assert_array_equal(updates["batch_stats"][f"norm_{index}"]["var"],
                                  ref.state_dict[f"model.{index}.running_var"])


def test_patch_grid_is_30x30_at_256():
  shapes = jax.eval_shape(lambda x: PatchDiscriminator().init_with_output(jax.random.key(0), x, train=False)[0],
                          jax.ShapeDtypeStruct((2, 256, 256, 24), jnp.float32))
  assert shapes.shape == (2, 30, 30, 1)


# Full-size key set and the converter's error reporting.


def test_full_size_trainable_parameter_count_is_official_2787137(official_keys):
  shapes = jax.eval_shape(lambda x: PatchDiscriminator().init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, 256, 256, 24), jnp.float32))
  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes["params"]))
  assert count == official_keys["discriminator"]["num_parameters"] == 2_787_137


def test_every_full_size_official_key_converts(official_keys):
  entries = official_keys["discriminator"]["state_dict"]
  state = {e["key"]: np.zeros(e["shape"], dtype=np.dtype(e["dtype"])) for e in entries}
  variables = convert_discriminator.convert(state, PatchDiscriminator(), "latest_net_netD.pth")
  n_params = sum(np.size(x) for x in jax.tree_util.tree_leaves(variables["params"]))
  assert n_params == sum(int(np.prod(e["shape"])) for e in entries if e["kind"] == "parameter")


def test_missing_key_raises_naming_it(ref):
  state = dict(ref.state_dict)
  del state["model.6.running_mean"]
  with pytest.raises(ConversionError, match=r"missing key 'model\.6\.running_mean'"):
    convert_discriminator.convert(state, PatchDiscriminator(), SOURCE)


def test_unexpected_key_raises_naming_it(ref):
  state = {**ref.state_dict, "model.12.weight": np.zeros((1,), np.float32)}
  with pytest.raises(ConversionError, match=r"unexpected key.*\n\s+model\.12\.weight"):
    convert_discriminator.convert(state, PatchDiscriminator(), SOURCE)


def test_misshaped_key_raises_naming_it(ref):
  state = dict(ref.state_dict)
  state["model.8.weight"] = np.zeros((512, 128, 4, 4), np.float32)
  with pytest.raises(ConversionError, match=r"conv_8/kernel \(from model\.8\.weight\)"):
    convert_discriminator.convert(state, PatchDiscriminator(), SOURCE)


def test_output_bias_missing_is_reported(ref):
  state = dict(ref.state_dict)
  del state["model.11.bias"]
  with pytest.raises(ConversionError, match=r"missing key 'model\.11\.bias'"):
    convert_discriminator.convert(state, PatchDiscriminator(), SOURCE)
