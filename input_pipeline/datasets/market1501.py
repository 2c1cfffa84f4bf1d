"""`spg_market1501`: Market-1501 pairs at 128 × 64 (H × W) in the SPGNet layout (TFDS, manual download).

Features, configs and the bad-input policy: `input_pipeline.datasets.pairs`. Market-1501 specifics,
as the official loader (`pose_transfer_parsing_market_dataset.py`):

* images: `img/train/<sid>.jpg` for the train split, `img/test/<sid>.jpg` for the test split;
* parsings are stored per pair on a 256 × 256 canvas: the source parsing is
  `seg/<sid1>___<sid1>.png`, the target parsing `seg/<sid1>___<sid2>.png`; each is cropped to
  columns 64:192 (256 × 128) and resized to 128 × 64 by nearest neighbour, which (OpenCV's
  INTER_NEAREST at scale 1/2, `src = floor(2 * dst)`) keeps the even rows and columns:
  `canvas[0::2, 64:192:2]` (`crop_and_resize`);
* keypoint CSVs `label/market-annotation-{train,test}.csv`.

  python -m input_pipeline.prepare market1501 --manual_dir DIR --data_dir DIR [--with_flow] ...
  tfds.builder('spg_market1501/pkl', data_dir=DIR).as_data_source('train')[i]
"""

from __future__ import annotations

import os

import numpy as np

from input_pipeline.datasets import pairs

IMAGE_SIZE = (128, 64)  # (H, W)
CANVAS_SIZE = (256, 256)  # (H, W) of the parsing files
CROP_COLUMNS = (64, 192)

_LAYOUT = f"""\
Put the SPGNet Market-1501 data in the manual directory (--manual_dir), laid out as:

  img/train/<sid>.jpg, img/test/<sid>.jpg
                               128x64 (HxW) RGB images of the train / test pairs
  seg/<sid1>___<sid2>.png      CIHP parsing labels 0..19 on a 256x256 canvas (single-channel PNG);
                               <sid1>___<sid1>.png is the source parsing of a pair
  label/split.json             {{"train": [[sid1, sid2], ...], "test": [...]}}
  label/pose_label.pkl         {{sid: 18x2 (x, y), -1 missing}} (Python-2 pickle; 'pkl' configs)
  label/market-annotation-train.csv, label/market-annotation-test.csv
                               PATN keypoint CSVs ('csv' configs)
  3d/hmr/corr/<sid2>_<sid1>.corr
                               Intr-Flow ground-truth correspondences (only for the *_flow configs)

Sources: img, seg and label from {pairs.SPGNET_SOURCE}; the .corr files from
{pairs.INTRFLOW_SOURCE}; the CSVs from {pairs.PATN_SOURCE}.
"""


def crop_and_resize(canvas: np.ndarray) -> np.ndarray:
  """(256, 256) parsing canvas → (128, 64) labels: columns 64:192, then nearest ×1/2 as cv2 does."""
  c0, c1 = CROP_COLUMNS
  return np.ascontiguousarray(canvas[0::2, c0:c1:2])


class SpgMarket1501(pairs.PairBuilder):
  """Market-1501 person pairs of SPGNet (128 × 64)."""

  name = "spg_market1501"
  BUILDER_CONFIGS = pairs.make_configs(predicted_parsing=False)
  MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT
  IMAGE_SIZE = IMAGE_SIZE
  CSV_NAMES = ("market-annotation-train.csv", "market-annotation-test.csv")
  DESCRIPTION = ("Market-1501 (source, target) person pairs of SPGNet (Lv et al., CVPR 2021) at 128x64: "
                 "images, CIHP parsings, OpenPose-18 keypoints; optionally Intr-Flow flows.")

  def expected_files(self) -> list[pairs.Expected]:
    config = self.builder_config
    out = [pairs.Expected("label/split.json", "the train / test pairs", pairs.SPGNET_SOURCE)]
    out += [pairs.Expected(f"img/{s}/", f"the 128x64 JPEG images of the {s} pairs", pairs.SPGNET_SOURCE)
            for s in config.splits]
    out.append(pairs.Expected("seg/", "the parsing label PNGs <sid1>___<sid2>.png", pairs.SPGNET_SOURCE))
    if config.keypoints == "pkl":
      out.append(pairs.Expected("label/pose_label.pkl", "the keypoints (Python-2 pickle)",
                                pairs.SPGNET_SOURCE))
    else:
      out += [pairs.Expected(f"label/{n}", "PATN keypoints", pairs.PATN_SOURCE) for n in self.CSV_NAMES]
    if config.with_flow:
      out.append(pairs.Expected(pairs.CORR_DIR + "/", "the correspondences <sid2>_<sid1>.corr",
                                pairs.INTRFLOW_SOURCE))
    return out

  def image_file(self, split: str, sid: str) -> str:
    return os.path.join("img", split, sid + ".jpg")

  def parsing_files(self, split: str, sid1: str, sid2: str) -> dict[str, pairs.ParsingFile]:
    del split
    return {
        "source_parsing": pairs.ParsingFile(os.path.join("seg", f"{sid1}___{sid1}.png"), CANVAS_SIZE,
                                            crop_and_resize),
        "target_parsing": pairs.ParsingFile(os.path.join("seg", f"{sid1}___{sid2}.png"), CANVAS_SIZE,
                                            crop_and_resize),
    }
