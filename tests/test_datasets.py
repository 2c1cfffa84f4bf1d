"""`input_pipeline.datasets`: the spg_deepfashion / spg_market1501 TFDS builders and the prepare CLI.

Each test writes a tiny dummy copy of the official layout (`tests/dummy_layouts.py`: 6 ids, 4 train +
2 test pairs, real JPEG / PNG / Python-2 pickle / PATN CSV / .corr files at the real sizes), prepares
it in array_record format and reads it back by index.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from input_pipeline import datasets, formats, prepare
from input_pipeline.datasets import market1501, pairs
from tests import dummy_layouts

# A JPEG at quality 90 of the synthetic persons stays within this of the rendered pixels.
JPEG_MAE = 4.0


def _prepare(cls, config: str, manual_dir, data_dir, **kwargs):
  builder = cls(config=config, data_dir=os.fspath(data_dir), **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir), compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


@pytest.fixture(scope="module")
def df_layout(tmp_path_factory):
  return dummy_layouts.write_deepfashion(tmp_path_factory.mktemp("df") / "manual")


@pytest.fixture(scope="module")
def market_layout(tmp_path_factory):
  return dummy_layouts.write_market1501(tmp_path_factory.mktemp("market") / "manual")


def _decode_file(path) -> np.ndarray:
  with Image.open(path) as img:
    return np.asarray(img.convert("RGB"))


def _check_example(ex, layout: dummy_layouts.Layout, config: pairs.PairConfig, split: str, index: int):
  sid1, sid2 = layout.splits[split][index]
  assert ex["source_id"].decode() == sid1 and ex["target_id"].decode() == sid2
  assert int(ex["pair_index"]) == index
  kps = layout.keypoints if config.keypoints == "pkl" else layout.csv_keypoints
  for role, sid in (("source", sid1), ("target", sid2)):
    np.testing.assert_array_equal(ex[f"{role}_keypoints"], kps[sid])
    assert ex[f"{role}_keypoints"].dtype == np.float32
    image = ex[f"{role}_image"]
    assert image.shape == layout.size + (3,) and image.dtype == np.uint8
    # The stored JPEG decodes as the file does (slack for OpenCV, which TFDS prefers when installed).
    np.testing.assert_allclose(image, _decode_file(layout.image_files[sid]), atol=2)
    assert np.abs(image.astype(np.float32) - layout.images[sid]).mean() < JPEG_MAE
  h, w = layout.size
  if layout.dataset == "deepfashion":
    files = {"source_parsing": f"seg/{sid1}.png", "target_parsing": f"seg/{sid2}.png"}
    expected = {k: layout.parsings[v] for k, v in files.items()}
    if config.with_predicted_parsing:
      expected["predicted_target_parsing"] = layout.parsings[f"pred_seg/{sid1}___{sid2}.png"]
  else:
    # The official loader: canvas[:, 64:192], then cv2.resize to (64, 128) with INTER_NEAREST,
    # whose source index is floor(dst * scale) (scale 2 both ways).
    rows = np.floor(np.arange(h) * 256 / h).astype(int)
    cols = np.floor(np.arange(w) * 128 / w).astype(int)
    def reference(rel):
      return layout.parsings[rel][:, 64:192][rows[:, None], cols[None, :]]
    expected = {"source_parsing": reference(f"seg/{sid1}___{sid1}.png"),
                "target_parsing": reference(f"seg/{sid1}___{sid2}.png")}
  assert ("predicted_target_parsing" in ex) == config.with_predicted_parsing
  for key, labels in expected.items():
    assert ex[key].shape == (h, w, 1) and ex[key].dtype == np.uint8
    np.testing.assert_array_equal(ex[key][..., 0], labels, err_msg=key)
  assert ("flow" in ex) == ("visibility" in ex) == config.with_flow
  if config.with_flow:
    corr, vis = layout.corrs[f"3d/hmr/corr/{sid2}_{sid1}.corr"]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float32)
    body = vis < 2
    assert ex["flow"].shape == (h, w, 2) and ex["flow"].dtype == np.float32
    np.testing.assert_allclose(ex["flow"][body], (corr - grid)[body], atol=1e-5)
    np.testing.assert_array_equal(ex["flow"][~body], 0.0)
    assert ex["visibility"].shape == (h, w) and ex["visibility"].dtype == np.uint8
    np.testing.assert_array_equal(ex["visibility"], formats.smooth_visibility(vis, 5))
    assert (ex["visibility"] == 1).any() and (ex["visibility"] == 0).any()


def _check_dataset(builder, layout, config_name):
  config = builder.builder_config
  assert config.name == config_name
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  for split in config.splits:
    source = builder.as_data_source(split)
    n = len(layout.splits[split])
    assert len(source) == n == builder.info.splits[split].num_examples
    # Random access, out of order and repeated: record i is pair i of split.json.
    for index in list(range(n - 1, -1, -1)) + [0]:
      _check_example(source[index], layout, config, split, index)


@pytest.mark.parametrize("config", ["pkl", "csv_flow", "pkl_flow_predparsing"])
def test_deepfashion_prepare_and_read(df_layout, tmp_path, config):
  builder = _prepare(datasets.SpgDeepfashion, config, df_layout.root, tmp_path / "data")
  _check_dataset(builder, df_layout, config)
  assert list(builder.info.splits) == (["test"] if "predparsing" in config else ["train", "test"])
  report = json.loads((pathlib.Path(builder.data_dir) / pairs.REPORT_FILENAME).read_text())
  assert report["num_skipped"] == 0 and report["skipped_pairs"] == []
  assert report["splits"]["test"] == {"pairs": 2, "examples": 2, "skipped": 0}


@pytest.mark.parametrize("config", ["pkl_flow", "csv"])
def test_market_prepare_and_read(market_layout, tmp_path, config):
  builder = _prepare(datasets.SpgMarket1501, config, market_layout.root, tmp_path / "data")
  _check_dataset(builder, market_layout, config)


def test_market_crop_keeps_even_rows_and_columns():
  canvas = np.arange(256 * 256, dtype=np.int64).reshape(256, 256)
  out = market1501.crop_and_resize(canvas)
  assert out.shape == (128, 64)
  assert out[0, 0] == canvas[0, 64] and out[1, 1] == canvas[2, 66] and out[-1, -1] == canvas[254, 190]


def test_images_are_stored_without_reencoding(df_layout, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  builder = _prepare(datasets.SpgDeepfashion, "pkl", df_layout.root, tmp_path / "data")
  records = builder.as_data_source("train").data_source
  example = tf.train.Example.FromString(records[2])
  sid1, sid2 = df_layout.splits["train"][2]
  for key, sid in (("source_image", sid1), ("target_image", sid2)):
    stored = example.features.feature[key].bytes_list.value[0]
    assert stored == df_layout.image_files[sid].read_bytes()


def test_tfds_source_reads_prepared_dataset(market_layout, tmp_path):
  """The training input (`sources.tfds_source`, graph decoding) agrees with the NumPy data source."""
  from input_pipeline import sources  # pylint: disable=g-import-not-at-top

  builder = _prepare(datasets.SpgMarket1501, "pkl_flow", market_layout.root, tmp_path / "data")
  source = sources.tfds_source("spg_market1501/pkl_flow", "train", data_dir=os.fspath(tmp_path / "data"))
  assert source.num_pairs == 4 and source.image_size == (128, 64) and source.has_flow
  expected = builder.as_data_source("train")[3]
  pair = {k: v.numpy() for k, v in source.fetch(np.int64(3)).items()}
  np.testing.assert_array_equal(pair["target_parsing"], expected["target_parsing"][..., 0])
  np.testing.assert_array_equal(pair["source_keypoints"], expected["source_keypoints"])
  np.testing.assert_array_equal(pair["flow"], expected["flow"])
  np.testing.assert_array_equal(pair["visibility"], expected["visibility"])
  # TensorFlow's JPEG decoder (chroma upsampling, IDCT) differs from PIL's by a few levels.
  sid1 = market_layout.splits["train"][3][0]
  assert np.abs(pair["source_image"].astype(np.float32) - market_layout.images[sid1]).mean() < JPEG_MAE
  assert np.abs(pair["source_image"].astype(np.float32) - expected["source_image"]).mean() < 2.0


# ---------------------------------------------------------------------------------------------
# Bad inputs.
# ---------------------------------------------------------------------------------------------


def _copy(layout: dummy_layouts.Layout, dst: pathlib.Path) -> pathlib.Path:
  shutil.copytree(layout.root, dst)
  return dst


def _rewrite_pose_labels(root: pathlib.Path, edit) -> None:
  path = root / "label" / "pose_label.pkl"
  labels = formats.read_pose_labels(path)
  edit(labels)
  formats.write_pose_labels_py2(path, labels)


def _truncate(path: pathlib.Path) -> None:
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def _write_bad_labels(path: pathlib.Path) -> None:
  labels = np.asarray(Image.open(path)).copy()
  labels[40:44, 30:34] = 23
  dummy_layouts.write_png(path, labels)


def _small_jpeg(path: pathlib.Path) -> None:
  dummy_layouts.write_jpeg(path, np.full((128, 128, 3), 120, np.uint8))


# name → (edit(root, sid1, sid2) returning the offending file, config). The victim is train pair 2,
# (id 2, id 3): the first pair that uses the files of ids 2 and 3.
_DF_CASES = {
    "corrupt_image": (lambda r, a, b: _garbage(r / f"img/img/{a}.jpg"), "pkl"),
    "truncated_image": (lambda r, a, b: _truncate_ret(r / f"img/img/{b}.jpg"), "pkl"),
    "missing_image": (lambda r, a, b: _unlink(r / f"img/img/{b}.jpg"), "pkl"),
    "missing_parsing": (lambda r, a, b: _unlink(r / f"seg/{a}.png"), "pkl"),
    "wrong_image_size": (lambda r, a, b: _apply(_small_jpeg, r / f"img/img/{a}.jpg"), "pkl"),
    "parsing_label_out_of_range": (lambda r, a, b: _apply(_write_bad_labels, r / f"seg/{b}.png"), "pkl"),
    "keypoints_outside_image": (lambda r, a, b: _kp_outside(r, b), "pkl"),
    "id_without_keypoints": (lambda r, a, b: _kp_remove(r, a), "pkl"),
    "missing_corr": (lambda r, a, b: _unlink(r / f"3d/hmr/corr/{b}_{a}.corr"), "pkl_flow"),
    "truncated_corr": (lambda r, a, b: _truncate_ret(r / f"3d/hmr/corr/{b}_{a}.corr"), "csv_flow"),
}


def _apply(fn, path):
  fn(path)
  return path


def _garbage(path):
  path.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 10)
  return path


def _truncate_ret(path):
  _truncate(path)
  return path


def _unlink(path):
  path.unlink()
  return path


def _kp_outside(root, sid):
  def edit(labels):
    labels[sid][1] = (256.0, 10.0)  # x = W: one past the last column
  _rewrite_pose_labels(root, edit)
  return root / "label" / "pose_label.pkl"


def _kp_remove(root, sid):
  _rewrite_pose_labels(root, lambda labels: labels.pop(sid))
  return root / "label" / "pose_label.pkl"


def _assert_names_pair(message: str, path: pathlib.Path, split: str, index: int, sid1: str, sid2: str):
  assert os.fspath(path) in message, message
  assert f"split={split!r}, index={index}, sid1={sid1!r}, sid2={sid2!r}" in message, message


@pytest.mark.parametrize("case", sorted(_DF_CASES))
def test_deepfashion_bad_pair_is_an_error_naming_file_and_pair(df_layout, tmp_path, case):
  edit, config = _DF_CASES[case]
  root = _copy(df_layout, tmp_path / "manual")
  sid1, sid2 = df_layout.splits["train"][2]
  bad_file = edit(root, sid1, sid2)
  with pytest.raises(pairs.BadPairError) as info:
    _prepare(datasets.SpgDeepfashion, config, root, tmp_path / "data")
  _assert_names_pair(str(info.value), bad_file, "train", 2, sid1, sid2)
  assert "--skip_bad_pairs" in str(info.value)
  assert not list((tmp_path / "data").rglob("*array_record*"))


def test_deepfashion_missing_predicted_parsing_is_an_error(df_layout, tmp_path):
  root = _copy(df_layout, tmp_path / "manual")
  sid1, sid2 = df_layout.splits["test"][1]
  bad_file = _unlink(root / f"pred_seg/{sid1}___{sid2}.png")
  with pytest.raises(pairs.BadPairError) as info:
    _prepare(datasets.SpgDeepfashion, "pkl_predparsing", root, tmp_path / "data")
  _assert_names_pair(str(info.value), bad_file, "test", 1, sid1, sid2)


def test_pair_naming_unknown_id_is_an_error(df_layout, tmp_path):
  root = _copy(df_layout, tmp_path / "manual")
  splits = {k: list(v) for k, v in df_layout.splits.items()}
  sid1 = splits["test"][0][0]
  splits["test"].append((sid1, "fashionMENnobody"))
  dummy_layouts.write_split(root, splits)
  with pytest.raises(pairs.BadPairError) as info:
    _prepare(datasets.SpgDeepfashion, "pkl", root, tmp_path / "data")
  message = str(info.value)
  _assert_names_pair(message, root / "img/img/fashionMENnobody.jpg", "test", 2, sid1, "fashionMENnobody")
  assert "no keypoints for id 'fashionMENnobody'" in message
  assert os.fspath(root / "seg/fashionMENnobody.png") in message


@pytest.mark.parametrize("case", ["parsing_label_out_of_range", "wrong_image_size", "missing_target_parsing"])
def test_market_bad_pair_is_an_error_naming_file_and_pair(market_layout, tmp_path, case):
  root = _copy(market_layout, tmp_path / "manual")
  sid1, sid2 = market_layout.splits["test"][0]
  if case == "parsing_label_out_of_range":
    bad_file = _apply(_write_bad_labels, root / f"seg/{sid1}___{sid1}.png")
  elif case == "wrong_image_size":  # the DeepFashion size in the Market folder
    bad_file = root / f"img/test/{sid2}.jpg"
    dummy_layouts.write_jpeg(bad_file, np.zeros((256, 256, 3), np.uint8))
  else:
    bad_file = _unlink(root / f"seg/{sid1}___{sid2}.png")
  with pytest.raises(pairs.BadPairError) as info:
    _prepare(datasets.SpgMarket1501, "pkl", root, tmp_path / "data")
  _assert_names_pair(str(info.value), bad_file, "test", 0, sid1, sid2)


def test_skip_bad_pairs_skips_counts_and_reports(df_layout, tmp_path, caplog):
  root = _copy(df_layout, tmp_path / "manual")
  train_bad = df_layout.splits["train"][2]
  test_bad = df_layout.splits["test"][0]
  # Pair 2 is (id 2, id 3) and pair 3 is (id 3, id 2): a bad image of id 3 makes both bad.
  _truncate(root / f"img/img/{train_bad[1]}.jpg")
  _unlink(root / f"3d/hmr/corr/{test_bad[1]}_{test_bad[0]}.corr")
  with caplog.at_level("WARNING"):
    builder = _prepare(datasets.SpgDeepfashion, "pkl_flow", root, tmp_path / "data", skip_bad_pairs=True)
  assert builder.info.splits["train"].num_examples == 2 and builder.info.splits["test"].num_examples == 1
  report = json.loads((pathlib.Path(builder.data_dir) / pairs.REPORT_FILENAME).read_text())
  assert report["skip_bad_pairs"] is True and report["num_skipped"] == 3
  assert report["splits"] == {"train": {"pairs": 4, "examples": 2, "skipped": 2},
                              "test": {"pairs": 2, "examples": 1, "skipped": 1}}
  skipped = {(p["split"], p["index"]): p for p in report["skipped_pairs"]}
  assert sorted(skipped) == [("test", 0), ("train", 2), ("train", 3)]
  assert (skipped[("train", 2)]["source_id"], skipped[("train", 2)]["target_id"]) == train_bad
  assert os.fspath(root / f"img/img/{train_bad[1]}.jpg") in skipped[("train", 2)]["problems"][0]
  assert "corr" in skipped[("test", 0)]["problems"][0]
  assert builder.info.metadata["skipped_pairs"] == {"train": 2, "test": 1}
  assert sum("skipping bad pair" in r.getMessage() for r in caplog.records) == 3
  # The kept pairs keep their split.json index.
  kept = builder.as_data_source("train")
  assert [int(kept[i]["pair_index"]) for i in range(len(kept))] == [0, 1]
  _check_example(builder.as_data_source("test")[0], df_layout, builder.builder_config, "test", 1)


# ---------------------------------------------------------------------------------------------
# Missing files and the CLI.
# ---------------------------------------------------------------------------------------------


def test_missing_files_are_listed_before_generating(tmp_path):
  root = tmp_path / "manual"
  (root / "img" / "img").mkdir(parents=True)
  with pytest.raises(pairs.MissingFilesError) as info:
    _prepare(datasets.SpgDeepfashion, "pkl_flow", root, tmp_path / "data")
  message = str(info.value)
  for rel in ("label/split.json", "label/pose_label.pkl", "seg/", "3d/hmr/corr/"):
    assert f"[MISSING] {os.path.join(root, rel)}" in message, message
  assert f"[present] {os.path.join(root, 'img/img/')}" in message
  assert "github.com/cszy98/SPGNet" in message and "github.com/ly015/intrinsic_flow" in message
  assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]  # nothing written


def test_prepare_cli(market_layout, tmp_path, capsys):
  argv = ["market1501", "--manual_dir", os.fspath(market_layout.root), "--data_dir",
          os.fspath(tmp_path / "data"), "--keypoints", "csv", "--with_flow"]
  assert prepare.main(argv) == 0
  out = capsys.readouterr().out
  assert "train: 4 examples of 4 pairs (0 bad pairs skipped)" in out
  assert "test: 2 examples of 2 pairs (0 bad pairs skipped)" in out
  assert "spg_market1501/csv_flow" in out
  assert prepare.main(argv) == 0
  assert "already prepared" in capsys.readouterr().out
  # Missing files: status 2 and the list of expected paths.
  empty = tmp_path / "empty"
  empty.mkdir()
  argv = ["deepfashion", "--manual_dir", os.fspath(empty), "--data_dir", os.fspath(tmp_path / "data")]
  assert prepare.main(argv) == 2
  err = capsys.readouterr().err
  assert f"[MISSING] {os.path.join(empty, 'label/pose_label.pkl')}" in err


def test_configs_and_layout_instructions():
  df = {c.name for c in datasets.SpgDeepfashion.BUILDER_CONFIGS}
  assert df == {"pkl", "csv", "pkl_flow", "csv_flow", "pkl_predparsing", "csv_predparsing",
                "pkl_flow_predparsing", "csv_flow_predparsing"}
  assert datasets.SpgDeepfashion.BUILDER_CONFIGS[0].name == "pkl"  # the default
  assert {c.name for c in datasets.SpgMarket1501.BUILDER_CONFIGS} == {"pkl", "csv", "pkl_flow", "csv_flow"}
  assert datasets.SpgDeepfashion.name == "spg_deepfashion"
  assert datasets.SpgMarket1501.name == "spg_market1501"
  for cls in (datasets.SpgDeepfashion, datasets.SpgMarket1501):
    assert "label/split.json" in cls.MANUAL_DOWNLOAD_INSTRUCTIONS
    assert "3d/hmr/corr" in cls.MANUAL_DOWNLOAD_INSTRUCTIONS
