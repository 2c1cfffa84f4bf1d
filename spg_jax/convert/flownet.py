"""Intr-Flow `FlowUnet` state_dict (`best_net_netF.pth`) + `train_opt.json` -> `FlowUnet` variables.

The architecture comes from the options file Intr-Flow saves beside the weights (`flownet_from_options`).
Key mapping (k = block, 0 outermost; P(k) = 'unet_block' + '.submodule' * k, F(k) the same with '/'):

  conv_downsample.{0,1,3,4}        stem_conv, stem_norm, stem_down_conv, stem_down_norm
  P(0).down.{0,1}                  F(0)/down_conv, F(0)/down_norm   (outermost: no LeakyReLU first)
  P(k).down.{1,2}                  F(k)/down_conv, F(k)/down_norm   (middle; index 0 is the LeakyReLU)
  P(last).down.1                   F(last)/down_conv                (innermost: no BatchNorm)
  P(k).up.{1,2}                    F(k)/up_conv (transposed; bias only for k = 0), F(k)/up_norm
  P(k).predict_flow.1              F(k)/predict_flow/conv
  predict_vis.1                    predict_vis/conv

Deliberately ignored: every `num_batches_tracked` (unused with momentum 0.1).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from spg_jax.convert.state_dict import ConversionError, StateDictReader, VariableTree, check_against_template
from spg_jax.models.flownet import FlowUnet

# `FlowRegressionModel` builds FlowUnet without `max_nf`, so the constructor default applies whatever
# `max_nf` the options file holds (the released DeepFashion train_opt.json says 128; the weights are 512).
OFFICIAL_UNET_MAX_NF = 512

# Channels of each `input_type` item, from Intr-Flow's `FlowRegressionModel.get_input_dim`.
_FIXED_INPUT_DIMS = {"img": 3, "flow": 2, "flow_gt": 2, "vis": 3, "dissrc": 12, "disdst": 12}


def _input_dim(input_type: str, opts: Mapping[str, Any], source: str) -> int:
  dim = 0
  for item in input_type.split("+"):
    if item in _FIXED_INPUT_DIMS:
      dim += _FIXED_INPUT_DIMS[item]
    elif item in ("joint", "seg"):
      key = f"{item}_nc"
      if key not in opts:
        raise ConversionError(f"{source}: input type {item!r} needs {key!r}, which the options lack")
      dim += int(opts[key])
    else:
      raise ConversionError(f"{source}: input type {item!r} (in {input_type!r}) is not supported")
  return dim


def flownet_from_options(opts: Mapping[str, Any], source: str = "train_opt.json") -> FlowUnet:
  """Builds the `FlowUnet` an Intr-Flow `train_opt.json` describes, exactly as `FlowRegressionModel` does.

  Read: `which_model` (must be 'unet'), `nf`, `num_scale`, `start_scale` (must be 2), `norm` (must be
  'batch'), `input_type1`/`input_type2` with `joint_nc`/`seg_nc` (input channels; default
  'joint' + 'joint' with 18 joints, SPGNet's input). `max_nf` is **not** read: the 'unet' branch never
  passes it, so the network always has the constructor default 512.

  The official `FlowUnet.__init__` stores `self.start_scale = 2` and `self.num_scale = 5` whatever it is
  given, but builds its layers from the arguments: `num_scale` sets the number of U-Net blocks, and
  `start_scale` the number of stride-2 stem convs, while `forward` always upsamples by the stored 2.
  Only start_scale = 2 gives a full-resolution output, and only that is implemented.

  Args:
    opts: the parsed JSON options.
    source: the options file's name, for error messages.

  Raises:
    ConversionError: naming `source`, the option and its value, for anything not implemented
      ('unet_v2', instance norm, start_scale != 2, too few scales) or missing.
  """
  def get(key: str, default: Any = None) -> Any:
    if key in opts:
      return opts[key]
    if default is None:
      raise ConversionError(f"{source}: option {key!r} is missing")
    return default

  which = get("which_model")
  if which != "unet":
    hint = (" (FlowUnet_v2: residual blocks and PixelShuffle upsampling, Intr-Flow's Market-1501 model)"
            if which == "unet_v2" else "")
    raise ConversionError(
        f"{source}: which_model = {which!r} is not implemented{hint}; only 'unet' (FlowUnet) is supported")
  norm = get("norm", "batch")
  if norm != "batch":
    raise ConversionError(f"{source}: norm = {norm!r} is not implemented; only 'batch' is supported")
  start_scale = int(get("start_scale", 2))
  if start_scale != 2:
    raise ConversionError(
        f"{source}: start_scale = {start_scale} is not implemented; only 2 (the official forward always "
        "upsamples by its hard-coded 2, so other values would not even give a full-resolution output)")
  num_scale = int(get("num_scale"))
  if num_scale < 2:
    raise ConversionError(f"{source}: num_scale = {num_scale} is not supported; FlowUnet needs at least 2")
  nf = int(get("nf"))
  if nf < 1:
    raise ConversionError(f"{source}: nf = {nf} is not a channel count")
  full = {"joint_nc": 18, **opts}  # Intr-Flow's default joint count, in case an old file lacks it
  input_nc = (_input_dim(str(get("input_type1", "joint")), full, source)
              + _input_dim(str(get("input_type2", "joint")), full, source))
  return FlowUnet(nf=nf, max_nf=OFFICIAL_UNET_MAX_NF, num_scales=num_scale, input_nc=input_nc)


def init_template(model: FlowUnet) -> Any:
  """Shapes of `model`'s variables, from an abstract init at the smallest valid input size."""
  side = 2 ** (model.num_scales + 1)
  x = jax.ShapeDtypeStruct((1, side, side, model.input_nc), jnp.float32)
  return jax.eval_shape(lambda inp: model.init(jax.random.key(0), inp, train=False), x)


def convert(state: Mapping[str, np.ndarray], model: FlowUnet | Mapping[str, Any], source: str) -> dict[str, Any]:
  """Maps an official FlowUnet state_dict onto `model`'s variables.

  Args:
    state: the state_dict as numpy arrays in PyTorch layout.
    model: the `FlowUnet` to fill, or the Intr-Flow options dict to build it from
      (`flownet_from_options`).
    source: the state_dict's file name, for error messages.

  Returns:
    {'params': ..., 'batch_stats': ...} float32 numpy arrays.

  Raises:
    ConversionError: naming every missing, unexpected or mis-shaped key.
  """
  if not isinstance(model, FlowUnet):
    model = flownet_from_options(model, source=f"{source} (options)")
  r = StateDictReader(state, source)
  tree = VariableTree()

  def conv(torch_key: str, path: str, bias: bool, transpose: bool = False) -> None:
    tree.put(path, r.conv_transpose(torch_key, bias) if transpose else r.conv(torch_key, bias))

  def batch_norm(torch_key: str, path: str) -> None:
    tree.put(path, *r.batch_norm(torch_key))

  conv("conv_downsample.0", "stem_conv", bias=False)
  batch_norm("conv_downsample.1", "stem_norm")
  conv("conv_downsample.3", "stem_down_conv", bias=False)
  batch_norm("conv_downsample.4", "stem_down_norm")

  last = model.num_scales - 1
  for k in range(model.num_scales):
    prefix = "unet_block" + ".submodule" * k
    path = "unet_block" + "/submodule" * k
    # Sequential indices shift by one where the block's down path starts with its LeakyReLU.
    d = 0 if k == 0 else 1
    conv(f"{prefix}.down.{d}", f"{path}/down_conv", bias=False)
    if k != last:
      batch_norm(f"{prefix}.down.{d + 1}", f"{path}/down_norm")
    conv(f"{prefix}.up.1", f"{path}/up_conv", bias=(k == 0), transpose=True)
    batch_norm(f"{prefix}.up.2", f"{path}/up_norm")
    conv(f"{prefix}.predict_flow.1", f"{path}/predict_flow/conv", bias=True)
  conv("predict_vis.1", "predict_vis/conv", bias=True)
  r.finish()

  return check_against_template(tree.variables(), init_template(model), source, reader=r)
