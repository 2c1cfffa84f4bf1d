"""torchvision / pytorch-fid Inception-v3 state_dicts -> `InceptionV3Features` variables.

Both official files use torchvision's module names (pytorch-fid builds torchvision's `Inception3` and
swaps in patched blocks with the same submodules), so one mapping serves both variants:

  `<block>.conv.weight` (O, I, kh, kw)              -> params/<block>/conv/kernel (kh, kw, I, O)
  `<block>.bn.weight` / `.bn.bias`                   -> params/<block>/bn/{scale, bias}
  `<block>.bn.running_mean` / `.bn.running_var`      -> batch_stats/<block>/bn/{mean, var}

for every BasicConv2d `<block>` (`Conv2d_1a_3x3`, `Mixed_6b.branch7x7_2`, ...): 94 convolutions.
The variant is not visible in these keys; it only changes the pooling of the network, and it is
recorded in the weights file's metadata so that the two protocols cannot be mixed up later.

Deliberately ignored, with the reason recorded in the reader:
  * `fc.weight`, `fc.bias`: the classifier after the pool features (1000 ImageNet classes in
    torchvision, 1008 in the TF port); FID reads the 2048-d pool output. Its row count is checked
    against the variant, since it is the one tensor that tells the two files apart.
  * `AuxLogits.*`: torchvision's auxiliary classifier on Mixed_6e, used only for training.
  * `*.num_batches_tracked`: BatchNorm step counter, never read in eval mode.
Any other key is reported as unexpected.

The state_dicts come in as numpy arrays (`spg_jax.convert.torch_io.load_torch_state_dict`); this
module itself does not import torch.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from spg_jax.convert.state_dict import ConversionError, StateDictReader, VariableTree, check_against_template
from spg_jax.metrics.inception import MIN_INPUT_SIZE, NETWORK, VARIANTS, WEIGHT_SOURCES, InceptionV3Features

# Classifier width of each variant's official file: the TF graph has 1008 outputs (1001 classes, padded).
FC_CLASSES = {"torchvision": 1000, "pytorch_fid": 1008}

HELP = ("Inception-v3 for FID: torchvision `inception_v3_google-*.pth` (legacy SPGNet/GFLA protocol, "
        "--variant torchvision) or pytorch-fid `pt_inception-2015-12-05-6726825d.pth` (--variant pytorch_fid)")


def basic_conv_prefixes(variant: str = "torchvision") -> list[str]:
  """The '/'-separated module paths of all BasicConv2d layers (`Mixed_5b/branch1x1`), in sorted order."""
  template = _template(variant)
  flat = traverse_util.flatten_dict(template["params"], sep="/")
  return sorted(k[: -len("/conv/kernel")] for k in flat if k.endswith("/conv/kernel"))


@functools.lru_cache(maxsize=None)
def _template(variant: str) -> Any:
  model = InceptionV3Features(variant=variant)
  # Shapes only; the smallest valid input keeps even the abstract trace cheap.
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, MIN_INPUT_SIZE, MIN_INPUT_SIZE, 3), jnp.float32))


def infer_variant(state: Mapping[str, np.ndarray], source: str) -> str:
  """The variant whose official file has `state`'s classifier width (`fc.weight` rows)."""
  if "fc.weight" not in state:
    raise ConversionError(f"{source}: no fc.weight to tell the variant from; pass --variant torchvision|pytorch_fid")
  rows = int(np.shape(state["fc.weight"])[0])
  for variant, classes in FC_CLASSES.items():
    if rows == classes:
      return variant
  raise ConversionError(f"{source}: fc.weight has {rows} rows; torchvision's ImageNet weights have 1000 and "
                        "pytorch-fid's TF port 1008. Pass --variant if this file is meant anyway")


def convert(state: Mapping[str, np.ndarray], variant: str, source: str) -> dict[str, Any]:
  """Maps a torchvision-format Inception-v3 state_dict onto `InceptionV3Features(variant)` variables.

  Args:
    state: PyTorch state_dict as numpy arrays (torchvision names).
    variant: 'torchvision' or 'pytorch_fid'.
    source: name of the state_dict's origin, for error messages.

  Returns:
    {'params': {<block>: {'conv': {'kernel'}, 'bn': {'scale', 'bias'}}},
     'batch_stats': {<block>: {'bn': {'mean', 'var'}}}} as float32 numpy arrays.

  Raises:
    ConversionError: naming every missing, unexpected or mis-shaped key, or a classifier width that
      belongs to the other variant's file.
  """
  if variant not in VARIANTS:
    raise ConversionError(f"{source}: unknown Inception variant {variant!r}; expected one of {VARIANTS}")
  if "fc.weight" in state:
    rows = int(np.shape(state["fc.weight"])[0])
    if rows != FC_CLASSES[variant]:
      other = [v for v, c in FC_CLASSES.items() if c == rows]
      hint = f"; it looks like the {other[0]!r} file" if other else ""
      raise ConversionError(f"{source}: fc.weight has {rows} rows, but the {variant!r} weights "
                            f"({WEIGHT_SOURCES[variant]['file']}) have {FC_CLASSES[variant]}{hint}")
  prefixes = basic_conv_prefixes(variant)
  needed = [f"{p.replace('/', '.')}.{leaf}" for p in prefixes
            for leaf in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")]
  missing = [k for k in needed if k not in state]
  if missing:
    # All at once rather than the first one the reader trips over: a wrong file misses many.
    shown = "\n  ".join(missing[:50]) + ("\n  ..." if len(missing) > 50 else "")
    raise ConversionError(f"{source}: {len(missing)} missing key(s) of the Inception-v3 network:\n  {shown}")

  r = StateDictReader(state, source)
  tree = VariableTree()
  for prefix in prefixes:
    torch_prefix = prefix.replace("/", ".")
    tree.put(f"{prefix}/conv", r.conv(f"{torch_prefix}.conv", bias=False))
    params, stats = r.batch_norm(f"{torch_prefix}.bn")
    tree.put(f"{prefix}/bn", params, stats)
  r.ignore(["fc.weight", "fc.bias"], "classifier after the pool features; FID reads the 2048-d pool output")
  r.ignore(["AuxLogits.*"], "auxiliary classifier on Mixed_6e, used only in training")
  r.finish()
  return check_against_template(tree.variables(), _template(variant), source, reader=r)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds this converter's options (besides the shared --input / --output) to its CLI subparser."""
  parser.add_argument(
      "--variant", choices=VARIANTS, default=None,
      help="'torchvision' for inception_v3_google-*.pth (legacy FID of SPGNet/GFLA), 'pytorch_fid' for "
           "pt_inception-2015-12-05-6726825d.pth (standard FID); default: detected from fc.weight (1000 vs 1008 rows)")


def run(args: argparse.Namespace, state: Mapping[str, np.ndarray] | None = None) -> tuple[dict, dict]:
  """CLI entry: converts `args.input` (or an already loaded `state`) for `args.variant`.

  Has the `(args, state)` signature of the `_convert_*` functions of `spg_jax.convert.__main__`, so it
  can be registered there directly; without `state` it reads `args.input` itself.

  Returns:
    (variables, metadata) with metadata {'network': 'inception_v3_features', 'config': {'variant': ...}}.
  """
  if state is None:
    from spg_jax.convert.torch_io import load_torch_state_dict  # pylint: disable=import-outside-toplevel
    state = load_torch_state_dict(args.input)
  variant = getattr(args, "variant", None) or infer_variant(state, args.input)
  variables = convert(state, variant, args.input)
  protocol = "legacy FID (SPGNet/GFLA)" if variant == "torchvision" else "standard pytorch-fid FID"
  return variables, {"network": NETWORK, "config": {"variant": variant}, "protocol": protocol}
