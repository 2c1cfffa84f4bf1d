"""Command line: official SPGNet / Intr-Flow / torchvision checkpoints -> spg_jax weights files.

Examples:
  python -m spg_jax.convert generator \\
      --input checkpoints/PoseTransfer_deepfashion/latest_net_netG.pth --output weights/generator_df.npz
  python -m spg_jax.convert flownet --input checkpoints/FlowReg_deepfashion/best_net_netF.pth \\
      --options checkpoints/FlowReg_deepfashion/train_opt.json --output weights/flownet_df.npz
  python -m spg_jax.convert discriminator --input checkpoints/PoseTransfer_deepfashion/latest_net_netD.pth \\
      --output weights/discriminator_df.npz
  python -m spg_jax.convert vgg19 --input vgg19-dcbb9e9d.pth --output weights/vgg19.npz
  python -m spg_jax.convert inception --input inception_v3_google-0cc3c7bd.pth --output weights/inception_tv.npz
  python -m spg_jax.convert lpips --alexnet alexnet-owt-7be5be79.pth \\
      --heads lpips/weights/v0.1/alex.pth --output weights/lpips_alex.npz
  python -m spg_jax.convert pose_estimator --input pose_estimator.h5 --output weights/pose_estimator.npz

Each run reads one `.pth` (with torch, `weights_only=True`), maps every key onto the Flax network,
stops with the list of missing, unexpected or mis-shaped keys if the file does not fit, and writes an
`.npz` weights file (see `spg_jax.weights`) whose metadata records the network, its configuration
and the SHA-256 of the source file.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from typing import Any, Sequence

import jax
import numpy as np

from spg_jax.convert.state_dict import ConversionError
from spg_jax.convert.torch_io import load_torch_state_dict
from spg_jax.weights import file_sha256, save_weights



def _convert_generator(args, state) -> tuple[dict, dict]:
  from spg_jax.convert import generator  # pylint: disable=import-outside-toplevel

  config = generator.infer_generator_config(state, args.input)
  if args.variant and args.variant != config.variant:
    raise ConversionError(
        f"{args.input}: --variant {args.variant} given, but the file is a {config.variant} generator "
        f"({'has' if config.variant == 'deepfashion' else 'lacks'} the dec_<l>_upsample.3 BatchNorm)")
  variables = generator.convert(state, config, args.input)
  return variables, {"network": "spgnet_generator", "config": dataclasses.asdict(config)}


def _convert_flownet(args, state) -> tuple[dict, dict]:
  from spg_jax.convert import flownet  # pylint: disable=import-outside-toplevel

  if not args.options:
    raise ConversionError("flownet: --options (the Intr-Flow train_opt.json beside best_net_netF.pth) is required")
  if not os.path.exists(args.options):
    raise FileNotFoundError(f"options file not found: {args.options}")
  with open(args.options) as f:
    try:
      options = json.load(f)
    except json.JSONDecodeError as e:
      raise ConversionError(f"{args.options}: not valid JSON ({e})") from None
  model = flownet.flownet_from_options(options, source=args.options)
  variables = flownet.convert(state, model, args.input)
  config = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in ("parent", "name", "dtype")}
  return variables, {"network": "flownet", "config": _jsonable(config), "train_opt": options}


def _convert_discriminator(args, state) -> tuple[dict, dict]:
  from spg_jax.convert import discriminator  # pylint: disable=import-outside-toplevel
  from spg_jax.models.discriminator import PatchDiscriminator  # pylint: disable=import-outside-toplevel

  model = PatchDiscriminator()
  return discriminator.convert(state, model, args.input), {"network": "patch_discriminator"}


def _convert_vgg19(args, state) -> tuple[dict, dict]:
  from spg_jax.convert import vgg  # pylint: disable=import-outside-toplevel
  from spg_jax.models.vgg import VGG19Features  # pylint: disable=import-outside-toplevel

  model = VGG19Features()
  return vgg.convert(state, model, args.input), {"network": "vgg19_features"}


def _convert_inception(args, state) -> tuple[dict, dict]:
  from spg_jax.convert import inception  # pylint: disable=import-outside-toplevel

  return inception.run(args, state)


def _jsonable(tree: Any) -> Any:
  return json.loads(json.dumps(tree, default=str))


CONVERTERS = {
    "generator": (_convert_generator, "official stage-2 generator `latest_net_netG.pth` "
                  "(DeepFashion or Market-1501 variant, detected from the keys)"),
    "flownet": (_convert_flownet, "Intr-Flow flow/visibility network `best_net_netF.pth` with its `train_opt.json`"),
    "discriminator": (_convert_discriminator, "official PatchGAN discriminator `latest_net_netD.pth`"),
    "vgg19": (_convert_vgg19, "torchvision ImageNet VGG19 (`vgg19-dcbb9e9d.pth`) for the perceptual loss"),
    "inception": (_convert_inception, "Inception-v3 for FID: torchvision `inception_v3_google-*.pth` "
                  "(legacy protocol) or pytorch-fid `pt_inception-2015-12-05-6726825d.pth` (standard)"),
}


# Converters that read several files or need options of their own: module with
# `add_arguments(parser)` and `run(args) -> (variables, metadata)`, and the help text.
MODULE_CONVERTERS = {
    "lpips": ("spg_jax.convert.lpips", "LPIPS v0.1: torchvision ImageNet AlexNet (`alexnet-owt-7be5be79.pth`) "
              "and the lpips wheel's heads (`lpips/weights/v0.1/alex.pth`)"),
    "pose_estimator": ("spg_jax.convert.pose_estimator", "the PCKh pose estimator: CMU OpenPose COCO model as "
                       "the Keras `pose_estimator.h5` (Deformable-GAN / PATN / SPGNet downloads)"),
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m spg_jax.convert", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="network", required=True, metavar="NETWORK")
  for name, (_, help_text) in CONVERTERS.items():
    p = sub.add_parser(name, help=help_text, description=f"Convert the {help_text}.")
    p.add_argument("--input", required=True, metavar="PTH", help="official PyTorch state_dict file (.pth)")
    p.add_argument("--output", required=True, metavar="NPZ", help="spg_jax weights file to write (.npz)")
    if name == "generator":
      p.add_argument("--variant", choices=("deepfashion", "market"), default=None,
                     help="expected variant; the conversion stops if the file is the other one (default: accept either)")
    if name == "inception":
      from spg_jax.convert import inception  # pylint: disable=import-outside-toplevel
      inception.add_arguments(p)
    if name == "flownet":
      p.add_argument("--options", metavar="JSON", default=None,
                     help="required: the Intr-Flow `train_opt.json` saved beside the .pth (gives the architecture)")
  for name, (module, help_text) in MODULE_CONVERTERS.items():
    p = sub.add_parser(name, help=help_text, description=f"Convert {help_text}.")
    importlib.import_module(module).add_arguments(p)
    p.add_argument("--output", required=True, metavar="NPZ", help="spg_jax weights file to write (.npz)")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.network in MODULE_CONVERTERS:
      variables, meta = importlib.import_module(MODULE_CONVERTERS[args.network][0]).run(args)
      read = "sources and their SHA-256 in the metadata"
    else:
      convert_fn, _ = CONVERTERS[args.network]
      state = load_torch_state_dict(args.input)
      variables, meta = convert_fn(args, state)
      meta.update(source=os.path.abspath(args.input), source_sha256=file_sha256(args.input))
      read = f"{len(state)} official tensors read"
  except (ConversionError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  meta.update(num_parameters=int(sum(np.size(x) for x in jax.tree.leaves(variables.get("params", {})))))
  out_dir = os.path.dirname(os.path.abspath(args.output))
  os.makedirs(out_dir, exist_ok=True)
  save_weights(args.output, variables, meta)
  print(f"wrote {args.output}: {meta['network']}, {meta['num_parameters']:,} parameters, {read}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
