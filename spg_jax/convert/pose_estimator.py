"""Keras `pose_estimator.h5` (CMU OpenPose COCO model) -> `spg_jax.metrics.pose_estimator.OpenPoseCOCO`.

The file is read with h5py alone (no Keras or TensorFlow). Both HDF5 layouts Keras writes are accepted:
a whole model (`model.save`, weights under the `model_weights` group, architecture in the `model_config`
attribute) and a weights-only file (`model.save_weights`, layer groups at the root). Each layer group
lists its arrays in its `weight_names` attribute (`conv1_1/kernel:0` in Keras 2, `conv1_1/kernel` in
Keras 3); a weight is keyed `<layer>/<kernel|bias>` by the last two components of that name, which also
covers layers of a nested model.

Mapping, for every conv of `conv_layers()` (92 of them):
  `<layer>/kernel` (kh, kw, I, O) -> params/<layer>/kernel, unchanged (Keras and Flax share the layout;
                                     the Caffe -> Keras conversion already transposed the Caffe blobs)
  `<layer>/bias` (O,)              -> params/<layer>/bias
Stage-1 convs may instead carry their Caffe names, `conv5_<i>_CPM_L<b>` for `Mconv<i>_stage1_L<b>`; the
metadata records which naming the file used. Any other weight is reported as unexpected.

When the file has a `model_config`, the architecture is checked too, since the Flax network can only
reproduce a Keras model built from the same operations: only InputLayer, Conv2D, Activation('relu'),
MaxPooling2D and Concatenate layers (possibly inside a nested model) may appear; convs must be stride 1,
'same' padding, undilated, linear (the ReLUs are separate layers) and biased; pools 2×2 stride 2
'valid'. Anything else, notably a `Lambda` (for example an input normalisation inside the model, which
the PCKh script's own `/ 255 − 0.5` would then be applied on top of), stops the conversion with the
layers named. `--skip-config-check` converts such a file anyway (the weights are still matched key by
key and shape by shape); the metadata records that the check was skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any, Mapping

import numpy as np

from spg_jax.convert.state_dict import ConversionError, StateDictReader, check_against_template
from spg_jax.metrics.pose_estimator import NETWORK_NAME, conv_layers, pose_estimator_template
from spg_jax.weights import file_sha256

_CAFFE_STAGE1 = re.compile(r"^Mconv(\d)_stage1_L(\d)$")
_ALLOWED_CLASSES = ("InputLayer", "Conv2D", "Activation", "MaxPooling2D", "Concatenate")
_NESTED_CLASSES = ("Model", "Functional", "Sequential")


def caffe_stage1_name(name: str) -> str | None:
  """`Mconv<i>_stage1_L<b>` -> the Caffe name `conv5_<i>_CPM_L<b>` (None for other layers)."""
  m = _CAFFE_STAGE1.match(name)
  return f"conv5_{m.group(1)}_CPM_L{m.group(2)}" if m else None


def _text(value: Any) -> str:
  return value.decode("utf8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def read_keras_h5(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
  """Reads every weight of a Keras HDF5 file.

  Args:
    path: a Keras 2 or Keras 3 `.h5` (whole model or weights only).

  Returns:
    (weights, model_config): weights keyed `<layer>/<weight>` (`conv1_1/kernel`, `conv1_1/bias`) as numpy
    arrays; model_config the parsed `model_config` attribute, or None for a weights-only file.

  Raises:
    FileNotFoundError: no file at `path`.
    ConversionError: not an HDF5 file, or not laid out as Keras writes models.
  """
  import h5py  # pylint: disable=import-outside-toplevel

  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"Keras model file not found: {path}")
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise ConversionError(f"{path}: not an HDF5 file ({e})") from None
  with f:
    config = json.loads(_text(f.attrs["model_config"])) if "model_config" in f.attrs else None
    root = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in root.attrs:
      raise ConversionError(f"{path}: no 'layer_names' attribute; not a Keras HDF5 model or weights file")
    weights: dict[str, np.ndarray] = {}
    for layer in (_text(n) for n in root.attrs["layer_names"]):
      group = root[layer]
      for weight_name in (_text(n) for n in group.attrs.get("weight_names", [])):
        parts = weight_name.split(":")[0].split("/")
        key = f"{parts[-2] if len(parts) > 1 else layer}/{parts[-1]}"
        if key in weights:
          raise ConversionError(f"{path}: weight {key!r} appears twice (layer group {layer!r})")
        weights[key] = np.asarray(group[weight_name])
  return weights, config


def _pair(value: Any) -> tuple[int, ...]:
  return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def check_model_config(config: Mapping[str, Any], source: str) -> None:
  """Checks that a Keras `model_config` only uses operations `OpenPoseCOCO` reproduces (module docstring).

  Raises:
    ConversionError: naming every offending layer.
  """
  problems: list[str] = []

  def visit(model: Mapping[str, Any]) -> None:
    for layer in model.get("config", {}).get("layers", []):
      cls, cfg = layer.get("class_name"), layer.get("config", {})
      name = cfg.get("name", layer.get("name", "?"))
      if cls in _NESTED_CLASSES:
        visit(layer)
      elif cls not in _ALLOWED_CLASSES:
        problems.append(f"{name}: layer class {cls} (only {', '.join(_ALLOWED_CLASSES)} are supported)")
      elif cls == "Conv2D":
        if (cfg.get("padding") != "same" or _pair(cfg.get("strides", 1)) != (1, 1)
            or _pair(cfg.get("dilation_rate", 1)) != (1, 1) or cfg.get("activation", "linear") != "linear"
            or not cfg.get("use_bias", True) or cfg.get("groups", 1) != 1):
          problems.append(f"{name}: Conv2D with padding={cfg.get('padding')!r}, strides={cfg.get('strides')}, "
                          f"dilation_rate={cfg.get('dilation_rate')}, activation={cfg.get('activation')!r}, "
                          f"use_bias={cfg.get('use_bias')} (expected 'same', 1, 1, 'linear', True)")
      elif cls == "MaxPooling2D":
        if (_pair(cfg.get("pool_size")) != (2, 2) or _pair(cfg.get("strides") or cfg.get("pool_size")) != (2, 2)
            or cfg.get("padding", "valid") != "valid"):
          problems.append(f"{name}: MaxPooling2D pool_size={cfg.get('pool_size')}, strides={cfg.get('strides')}, "
                          f"padding={cfg.get('padding')!r} (expected 2, 2, 'valid')")
      elif cls == "Activation" and cfg.get("activation") != "relu":
        problems.append(f"{name}: Activation {cfg.get('activation')!r} (expected 'relu')")
      elif cls == "Concatenate" and cfg.get("axis", -1) not in (-1, 3):
        problems.append(f"{name}: Concatenate along axis {cfg.get('axis')} (expected the channel axis)")

  visit(config)
  if problems:
    raise ConversionError(f"{source}: the Keras model is not the OpenPose COCO network this converter "
                          "targets:\n  " + "\n  ".join(problems))


def convert(weights: Mapping[str, np.ndarray], source: str) -> tuple[dict[str, Any], str]:
  """Maps Keras weights onto the `OpenPoseCOCO` variables.

  Args:
    weights: `<layer>/kernel` (kh, kw, I, O) and `<layer>/bias` (O,) arrays (`read_keras_h5`).
    source: origin named in error messages.

  Returns:
    ({'params': {<layer>: {'kernel', 'bias'}}} as float32 numpy arrays, stage-1 naming: 'Mconv' or
    'caffe').

  Raises:
    ConversionError: naming every missing, unexpected or mis-shaped weight, or a mix of both stage-1
      namings.
  """
  r = StateDictReader(weights, source)
  params, namings = {}, set()
  for name, k, cin, cout in conv_layers():
    key = name
    alias = caffe_stage1_name(name)
    if f"{name}/kernel" not in weights and alias is not None and f"{alias}/kernel" in weights:
      key = alias
    if alias is not None:
      namings.add("caffe" if key == alias else "Mconv")
    params[name] = {"kernel": r.take(f"{key}/kernel", (k, k, cin, cout)), "bias": r.take(f"{key}/bias", (cout,))}
  r.finish()
  if len(namings) > 1:
    raise ConversionError(f"{source}: stage-1 convs use both Mconv<i>_stage1_L<b> and conv5_<i>_CPM_L<b> names")
  variables = check_against_template({"params": params}, pose_estimator_template(), source, reader=r)
  return variables, namings.pop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds `--input` to the `pose_estimator` subcommand (`--output` is added by the command line)."""
  parser.add_argument("--input", required=True, metavar="H5",
                      help="Keras pose_estimator.h5 of the PCKh scripts (Deformable-GAN / PATN / SPGNet downloads)")
  parser.add_argument("--skip-config-check", action="store_true",
                      help="convert even if the stored Keras architecture has layers the Flax network lacks "
                           "(the weights are still checked key by key)")


def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads `args.input` (.h5, with h5py), checks its architecture and converts it.

  Returns:
    (variables, metadata) with metadata {'network': 'openpose_coco_pose_estimator', 'config':
    {'stage1_names': ...}, 'keras_version', 'backend', 'has_model_config', 'config_checked', 'source',
    'source_sha256'}.

  Raises:
    FileNotFoundError: the file is missing.
    ConversionError: the file does not fit the network.
  """
  weights, config = read_keras_h5(args.input)
  skip_check = getattr(args, "skip_config_check", False)
  if config is not None and not skip_check:
    check_model_config(config, args.input)
  variables, naming = convert(weights, args.input)
  import h5py  # pylint: disable=import-outside-toplevel
  with h5py.File(args.input, "r") as f:
    attrs = f["model_weights"].attrs if "model_weights" in f else f.attrs
    keras_version = _text(attrs.get("keras_version", f.attrs.get("keras_version", "unknown")))
    backend = _text(attrs.get("backend", f.attrs.get("backend", "unknown")))
  metadata = {
      "network": NETWORK_NAME,
      "config": {"stage1_names": naming},
      "keras_version": keras_version,
      "backend": backend,
      "has_model_config": config is not None,
      "config_checked": config is not None and not skip_check,
      "source": os.path.abspath(args.input),
      "source_sha256": file_sha256(args.input),
  }
  return variables, metadata
