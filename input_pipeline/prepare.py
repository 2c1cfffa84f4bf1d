"""Prepares `spg_deepfashion` / `spg_market1501` once, ahead of training (array_record files).

  python -m input_pipeline.prepare {deepfashion,market1501} --manual_dir DIR --data_dir DIR \\
      [--keypoints {pkl,csv}] [--with_flow] [--with_predicted_parsing] [--skip_bad_pairs] [--overwrite]

  --manual_dir              the downloaded data in the official SPGNet layout (see
                            `input_pipeline.datasets.deepfashion` / `.market1501`).
  --data_dir                the TFDS data directory to write into (config.data.data_dir).
  --keypoints               'pkl' (default): label/pose_label.pkl; 'csv': the PATN CSVs.
  --with_flow               also store the Intr-Flow ground-truth flow and visibility (3d/hmr/corr).
  --with_predicted_parsing  DeepFashion: also store pred_seg/<sid1>___<sid2>.png as
                            predicted_target_parsing (builds the test split only).
  --skip_bad_pairs          skip invalid pairs instead of stopping at the first; they are logged,
                            counted and listed in preparation_report.json beside the records.
  --overwrite               regenerate a dataset that is already prepared.

The flags pick the builder config, `<keypoints>[_flow][_predparsing]`; the command prints the name to
load it with, e.g. `tfds.builder('spg_deepfashion/pkl_flow', data_dir=DIR)`. Before anything is
written, a missing split.json, keypoint file or image / parsing / flow folder stops the command with
the list of everything expected. Exit status: 0 prepared (or already prepared), 1 a bad pair (without
--skip_bad_pairs) or another data error, 2 missing files or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m input_pipeline.prepare",
                              description="Prepare an SPGNet pair dataset (TFDS, array_record).")
  p.add_argument("dataset", choices=("deepfashion", "market1501"))
  p.add_argument("--manual_dir", required=True, help="the downloaded data, official SPGNet layout")
  p.add_argument("--data_dir", required=True, help="the TFDS data directory to write into")
  p.add_argument("--keypoints", choices=("pkl", "csv"), default="pkl",
                 help="pkl: label/pose_label.pkl (default); csv: the PATN annotation CSVs")
  p.add_argument("--with_flow", action="store_true", help="also store the Intr-Flow flow and visibility")
  p.add_argument("--with_predicted_parsing", action="store_true",
                 help="DeepFashion: also store pred_seg/<sid1>___<sid2>.png (test split only)")
  p.add_argument("--skip_bad_pairs", action="store_true",
                 help="skip invalid pairs (logged and listed in preparation_report.json)")
  p.add_argument("--overwrite", action="store_true", help="regenerate an already prepared dataset")
  return p


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.with_predicted_parsing and args.dataset != "deepfashion":
    print("--with_predicted_parsing exists for deepfashion only", file=sys.stderr)
    return 2
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

  # TensorFlow is imported here, after argument parsing, so that --help is fast.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from input_pipeline import datasets  # pylint: disable=g-import-not-at-top
  from input_pipeline.datasets import pairs  # pylint: disable=g-import-not-at-top
  from input_pipeline import formats  # pylint: disable=g-import-not-at-top

  cls = datasets.BUILDERS[args.dataset]
  config = pairs.config_name(args.keypoints, args.with_flow, args.with_predicted_parsing)
  full_name = f"{cls.name}/{config}"
  builder = cls(config=config, data_dir=args.data_dir, skip_bad_pairs=args.skip_bad_pairs)
  manual_dir = os.path.abspath(args.manual_dir)

  if builder.is_prepared() and not args.overwrite:
    print(f"{full_name} is already prepared in {builder.data_dir} (--overwrite regenerates it)")
    _print_counts(builder)
    return 0
  try:
    pairs.check_layout(cls.name, manual_dir, builder.expected_files())
  except pairs.MissingFilesError as e:
    print(e, file=sys.stderr)
    return 2

  tfds.display_progress_bar(True)
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if args.overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  start = time.monotonic()
  print(f"preparing {full_name} from {manual_dir} into {args.data_dir}", flush=True)
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, download_mode=mode))
  except pairs.MissingFilesError as e:
    print(e, file=sys.stderr)
    return 2
  except (pairs.BadPairError, formats.FormatError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"prepared {full_name} in {time.monotonic() - start:.0f} s: {builder.data_dir}")
  _print_counts(builder)
  print(f"load with tfds.builder({full_name!r}, data_dir={args.data_dir!r}) after "
        "`import input_pipeline.datasets`")
  return 0


def _print_counts(builder) -> None:
  """Examples per split, and the skipped pairs of the preparation report."""
  report_path = os.path.join(os.fspath(builder.data_dir), "preparation_report.json")
  report = {}
  if os.path.isfile(report_path):
    with open(report_path, encoding="utf-8") as f:
      report = json.load(f)
  for name in builder.builder_config.splits:
    split = builder.info.splits[name]
    line = f"  {name}: {split.num_examples} examples"
    counts = report.get("splits", {}).get(name)
    if counts:
      line += f" of {counts['pairs']} pairs ({counts['skipped']} bad pairs skipped)"
    print(line)
  if report.get("num_skipped"):
    print(f"  {report['num_skipped']} skipped pairs listed in {report_path}")


if __name__ == "__main__":
  sys.exit(main())
