"""`spg_deepfashion`: DeepFashion In-shop pairs at 256 × 256 in the SPGNet layout (TFDS, manual download).

Features, configs and the bad-input policy: `input_pipeline.datasets.pairs`. DeepFashion specifics:
images `img/img/<sid>.jpg`, parsings `seg/<sid>.png` (source `seg/<sid1>.png`, target
`seg/<sid2>.png`), keypoint CSVs `label/fasion-annotation-{train,test}.csv` (PATN's spelling), and the
`*_predparsing` configs, which add `predicted_target_parsing` = `pred_seg/<sid1>___<sid2>.png` and
build the `test` split only.

  python -m input_pipeline.prepare deepfashion --manual_dir DIR --data_dir DIR [--with_flow] ...
  tfds.builder('spg_deepfashion/pkl', data_dir=DIR).as_data_source('train')[i]
"""

from __future__ import annotations

import os

from input_pipeline.datasets import pairs

IMAGE_SIZE = (256, 256)  # (H, W)

_LAYOUT = f"""\
Put the SPGNet DeepFashion data in the manual directory (--manual_dir), laid out as:

  img/img/<sid>.jpg            256x256 RGB images
  seg/<sid>.png                CIHP parsing labels 0..19, single-channel PNG, 256x256
  pred_seg/<sid1>___<sid2>.png stage-1 predicted target parsing of the test pairs
                               (only for the *_predparsing configs)
  label/split.json             {{"train": [[sid1, sid2], ...], "test": [...]}}
  label/pose_label.pkl         {{sid: 18x2 (x, y), -1 missing}} (Python-2 pickle; 'pkl' configs)
  label/fasion-annotation-train.csv, label/fasion-annotation-test.csv
                               PATN keypoint CSVs ('csv' configs)
  3d/hmr/corr/<sid2>_<sid1>.corr
                               Intr-Flow ground-truth correspondences (only for the *_flow configs)

Sources: img, seg, pred_seg and label from {pairs.SPGNET_SOURCE}; the .corr files from
{pairs.INTRFLOW_SOURCE}; the CSVs from {pairs.PATN_SOURCE}.
"""


class SpgDeepfashion(pairs.PairBuilder):
  """DeepFashion In-shop person pairs of SPGNet (256 × 256)."""

  name = "spg_deepfashion"
  BUILDER_CONFIGS = pairs.make_configs(predicted_parsing=True)
  MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT
  IMAGE_SIZE = IMAGE_SIZE
  CSV_NAMES = ("fasion-annotation-train.csv", "fasion-annotation-test.csv")
  DESCRIPTION = ("DeepFashion In-shop (source, target) person pairs of SPGNet (Lv et al., CVPR 2021) at "
                 "256x256: images, CIHP parsings, OpenPose-18 keypoints; optionally Intr-Flow flows and "
                 "stage-1 predicted target parsings.")

  def expected_files(self) -> list[pairs.Expected]:
    config = self.builder_config
    out = [
        pairs.Expected("label/split.json", "the train / test pairs", pairs.SPGNET_SOURCE),
        pairs.Expected("img/img/", "the 256x256 JPEG images <sid>.jpg", pairs.SPGNET_SOURCE),
        pairs.Expected("seg/", "the parsing label PNGs <sid>.png", pairs.SPGNET_SOURCE),
    ]
    if config.keypoints == "pkl":
      out.append(pairs.Expected("label/pose_label.pkl", "the keypoints (Python-2 pickle)",
                                pairs.SPGNET_SOURCE))
    else:
      out += [pairs.Expected(f"label/{n}", "PATN keypoints", pairs.PATN_SOURCE) for n in self.CSV_NAMES]
    if config.with_predicted_parsing:
      out.append(pairs.Expected("pred_seg/", "the predicted target parsings <sid1>___<sid2>.png",
                                pairs.SPGNET_SOURCE))
    if config.with_flow:
      out.append(pairs.Expected(pairs.CORR_DIR + "/", "the correspondences <sid2>_<sid1>.corr",
                                pairs.INTRFLOW_SOURCE))
    return out

  def image_file(self, split: str, sid: str) -> str:
    del split  # one image folder for both splits
    return os.path.join("img", "img", sid + ".jpg")

  def parsing_files(self, split: str, sid1: str, sid2: str) -> dict[str, pairs.ParsingFile]:
    del split
    out = {
        "source_parsing": pairs.ParsingFile(os.path.join("seg", sid1 + ".png"), IMAGE_SIZE),
        "target_parsing": pairs.ParsingFile(os.path.join("seg", sid2 + ".png"), IMAGE_SIZE),
    }
    if self.builder_config.with_predicted_parsing:
      out["predicted_target_parsing"] = pairs.ParsingFile(
          os.path.join("pred_seg", f"{sid1}___{sid2}.png"), IMAGE_SIZE)
    return out
