"""`spg_jax.evaluate` on a prepared TFDS dataset: the FID real set and mask-SSIM's keypoints.

Inception is replaced by a stand-in that returns each image's pixels, so the pass over the training
images (each distinct image once, in pair order, cropped) is checked image for image without the
network's cost; the eval-mode test in tests/test_train.py runs the network end to end on synthetic
persons.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from configs import market1501
from input_pipeline import datasets
from spg_jax import evaluate, sharding, train
from tests import dummy_layouts


def test_real_set_and_keypoints_of_a_prepared_dataset(tmp_path, monkeypatch):
  layout = dummy_layouts.write_market1501(tmp_path / "manual")
  builder = datasets.SpgMarket1501(config="pkl", data_dir=os.fspath(tmp_path / "data"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(layout.root), compute_stats=tfds.download.ComputeStatsMode.SKIP))
  config = market1501.get_config()
  config.data.data_dir = os.fspath(tmp_path / "data")
  config.data.tfds_config = "pkl"
  source = train._tfds_source(config, "train")  # pylint: disable=protected-access

  identity = evaluate.real_set_identity(config, source)
  assert identity["data"] == builder.info.full_name == "spg_market1501/pkl/1.0.0"
  assert identity["split"] == "train" and identity["num_pairs"] == 4 and identity["split_num_bytes"] > 0

  # The pairs share images: (a, b), (b, a), (c, d), (d, c) hold 4 distinct ones, read in that order.
  pair_of = {}
  for k, (sid1, sid2) in enumerate(layout.splits["train"]):
    for sid, role in ((sid1, "source_image"), (sid2, "target_image")):
      pair_of.setdefault(sid, (k, role))
  assert len(pair_of) == 4
  expected = np.stack([source.fetch(np.int64(k))[role].numpy()[:, 12:52] for k, role in pair_of.values()])
  monkeypatch.setattr(evaluate, "fid_feature_function",
                      lambda variant, mesh: lambda v, x: np.asarray(x).reshape(len(x), -1).astype(np.float32))
  model = evaluate.FidModel("fid", "pytorch_fid", "unused.npz", None)
  features = evaluate._real_features(source, 40, 3, [model], sharding.make_mesh(1))  # pylint: disable=protected-access
  np.testing.assert_array_equal(features["fid"], expected.reshape(4, -1))

  test_source = train.test_source(config)
  keypoints = evaluate._target_keypoints(test_source)  # pylint: disable=protected-access
  reference = builder.as_data_source("test")
  np.testing.assert_array_equal(keypoints, np.stack([reference[i]["target_keypoints"] for i in range(2)]))
