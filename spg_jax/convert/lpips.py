"""torchvision AlexNet + lpips v0.1 heads state dicts -> `spg_jax.metrics.lpips.LPIPS` variables.

Two sources make one LPIPS network:
  * the backbone, torchvision's ImageNet AlexNet (`alexnet-owt-7be5be79.pth`):
    `features.<i>.weight` (O, I, kh, kw) / `features.<i>.bias` -> `params/features/conv_<i>/{kernel, bias}`
    for i ∈ {0, 3, 6, 8, 10} (the other `features` indices are ReLUs and max-pools, without tensors);
  * the heads, `lpips/weights/v0.1/alex.pth` from the `lpips` wheel:
    `lin<k>.model.1.weight` (1, C_k, 1, 1) -> `params/heads/lin<k>/kernel` (1, 1, C_k, 1), k = 0..4
    (`model.0` is lpips's Dropout, which has no tensors).

Deliberately ignored, with the reason recorded in the reader:
  * `classifier.*` of the AlexNet file: the ImageNet classifier (after the last max-pool and the 6×6
    average pool) is never evaluated by LPIPS, which reads `features[0:12]` only.
Any other key is reported as unexpected. Head weights must be non-negative, as lpips keeps them
(it clamps them at 0 while training); a negative one means the file is not a trained LPIPS head.

The state dicts arrive as numpy arrays; `run` reads the `.pth` files with `spg_jax.convert.torch_io`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Mapping

import numpy as np

from spg_jax.convert.state_dict import ConversionError, StateDictReader, check_against_template
from spg_jax.convert.torch_io import load_torch_state_dict
from spg_jax.metrics.lpips import CHANNELS, CONV_INDICES, NETWORK_NAME, lpips_template
from spg_jax.weights import file_sha256


def _sources(source: str | tuple[str, str]) -> tuple[str, str]:
  if isinstance(source, str):
    return f"{source} (AlexNet backbone)", f"{source} (LPIPS heads)"
  backbone, heads = source
  return backbone, heads


def convert(
    backbone_state: Mapping[str, np.ndarray],
    heads_state: Mapping[str, np.ndarray],
    source: str | tuple[str, str],
) -> dict[str, Any]:
  """Maps the AlexNet and lpips-head state dicts onto the `LPIPS` variables.

  Args:
    backbone_state: torchvision AlexNet state_dict as numpy arrays (`features.*`, `classifier.*`).
    heads_state: lpips v0.1 AlexNet heads as numpy arrays (`lin0.model.1.weight` … `lin4.model.1.weight`).
    source: origin named in error messages; one string for both, or (backbone file, heads file).

  Returns:
    {'params': {'features': {'conv_<i>': {'kernel', 'bias'}}, 'heads': {'lin<k>': {'kernel'}}}} as
    float32 numpy arrays (layouts in the module docstring).

  Raises:
    ConversionError: naming every missing, unexpected or mis-shaped key, or a negative head weight.
  """
  backbone_source, heads_source = _sources(source)
  template = lpips_template()

  r = StateDictReader(backbone_state, backbone_source)
  features = {f"conv_{i}": r.conv(f"features.{i}", bias=True) for i in CONV_INDICES}
  r.ignore(["classifier.*"], "ImageNet classifier head; LPIPS reads AlexNet features[0:12] only")
  r.finish()
  features = check_against_template(
      {"params": {"features": features}}, {"params": {"features": template["params"]["features"]}},
      backbone_source, reader=r)

  h = StateDictReader(heads_state, heads_source)
  heads = {f"lin{k}": h.conv(f"lin{k}.model.1", bias=False) for k in range(len(CHANNELS))}
  h.finish()
  heads = check_against_template(
      {"params": {"heads": heads}}, {"params": {"heads": template["params"]["heads"]}},
      heads_source, reader=h)
  negative = [f"{k}.model.1.weight (min {v['kernel'].min():.3g})"
              for k, v in sorted(heads["params"]["heads"].items()) if (v["kernel"] < 0).any()]
  if negative:
    raise ConversionError(f"{heads_source}: LPIPS head weights must be non-negative (lpips clamps them "
                          f"at 0); negative values in: {', '.join(negative)}")
  # Each part was checked against its own subtree with its own key names; this final check only
  # guards against the network gaining variables outside `features` and `heads`.
  return check_against_template({"params": {**features["params"], **heads["params"]}}, template,
                                f"{backbone_source} + {heads_source}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds `--alexnet` and `--heads` to the `lpips` subcommand.

  `--output` is left to the command line's common arguments; the subcommand reads no `--input`.
  """
  parser.add_argument("--alexnet", required=True, metavar="PTH",
                      help="torchvision ImageNet AlexNet state_dict (alexnet-owt-7be5be79.pth, from "
                           "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)")
  parser.add_argument("--heads", required=True, metavar="PTH",
                      help="lpips v0.1 AlexNet heads: lpips/weights/v0.1/alex.pth inside the PyPI lpips wheel")



def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads `args.alexnet` and `args.heads` (.pth, with torch) and converts them.

  Returns:
    (variables, metadata) with metadata {'network': 'lpips_alex', 'config': {...}} plus the absolute
    paths and SHA-256 of both source files (`alexnet_source`, `alexnet_sha256`, `heads_source`,
    `heads_sha256`).

  Raises:
    FileNotFoundError: a source file is missing (named).
    ConversionError: the files do not fit the network.
  """
  backbone = load_torch_state_dict(args.alexnet)
  heads = load_torch_state_dict(args.heads)
  variables = convert(backbone, heads, (args.alexnet, args.heads))
  metadata = {
      "network": NETWORK_NAME,
      "config": {"net": "alex", "version": "0.1", "lpips": True, "spatial": False},
      "alexnet_source": os.path.abspath(args.alexnet),
      "alexnet_sha256": file_sha256(args.alexnet),
      "heads_source": os.path.abspath(args.heads),
      "heads_sha256": file_sha256(args.heads),
  }
  return variables, metadata
