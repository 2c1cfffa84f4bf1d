"""What the SPGNet pair datasets (`spg_deepfashion`, `spg_market1501`) have in common.

Both builders read the official SPGNet layout from a manual directory and write one example per
(source, target) pair of `label/split.json`, in split.json order (shuffling is disabled so that
record `i` of a split is pair `i`, and `test[:2000]` is the official validation subset), in the
`array_record` file format (random access by index: `builder.as_data_source(split)[i]`).

Features of an example (H × W = the dataset's image size; 256 × 256 DeepFashion, 128 × 64 Market):

  source_id, target_id          Text: the image ids (sid1, sid2) of the split.json pair.
  pair_index                    int64 scalar: the pair's index in split.json's list for its split
                                (equal to the record index unless bad pairs were skipped).
  source_image, target_image    Image (H, W, 3) uint8 RGB; the JPEG file's bytes are stored unchanged
                                (no re-encoding; a grayscale JPEG decodes to 3 equal channels).
  source_parsing,               Image (H, W, 1) uint8 CIHP labels 0..19, stored as 8-bit grayscale
  target_parsing                PNG (lossless re-encoding of the validated label map).
  source_keypoints,             Tensor (18, 2) float32 (x, y) pixels, OpenPose-18 order, exactly as in
  target_keypoints              the keypoint file; a joint with x < 0 or y < 0 is missing (−1).
  flow                          with_flow configs only: Tensor (H, W, 2) float32 (zlib-compressed),
                                target → source in pixels, channel 0 = x, exactly 0 on the
                                background of the raw visibility (`formats.corr_to_flow`).
  visibility                    with_flow configs only: Tensor (H, W) uint8 (zlib-compressed),
                                0 visible / 1 invisible / 2 background, after the 5×5 median
                                smoothing on the body of the Intr-Flow loader
                                (`formats.smooth_visibility`).
  predicted_target_parsing      DeepFashion with_predicted_parsing configs only: Image (H, W, 1)
                                uint8, the stage-1 prediction `pred_seg/<sid1>___<sid2>.png`.

Builder configs (`PairConfig`), named `<keypoints>[_flow][_predparsing]`:
  keypoints                     'pkl' (default): `label/pose_label.pkl`; 'csv': the PATN CSVs
                                (`label/*-annotation-{train,test}.csv`, (y, x) converted to (x, y),
                                the names' '.jpg' extension dropped).
  with_flow                     also read `3d/hmr/corr/<sid2>_<sid1>.corr`; a pair without its file
                                is a bad pair.
  with_predicted_parsing        (DeepFashion) also read `pred_seg/<sid1>___<sid2>.png`; a pair without
                                its file is a bad pair (never replaced by anything else). The release
                                holds predictions for the test pairs only, so these configs build the
                                `test` split only.

Bad-input policy. Before anything is generated, the layout is checked: a missing split.json, keypoint
file or image / parsing / flow folder stops with `MissingFilesError` listing every expected path,
present or not, and where it comes from. While generating, every pair is validated (images: readable,
complete JPEG, RGB or grayscale, the dataset's size; parsings: readable PNG, 8-bit single channel or
gray, the expected size, labels 0..19; keypoints: an entry for both ids, present joints inside the
image; flows: readable `.corr` of the image size, finite on the body). A bad pair raises
`BadPairError` naming the split, index, ids and every offending file. With the builder keyword
`skip_bad_pairs=True` (`python -m input_pipeline.prepare ... --skip_bad_pairs`) bad pairs are
skipped instead: each is logged, and all are counted and listed in `preparation_report.json` in the
dataset's directory (`<data_dir>/<name>/<config>/<version>/`) and counted in the dataset's metadata.
The report is written for every preparation, skipped pairs or not.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import inspect
import io
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image as PILImage
from PIL import ImageFile

from input_pipeline import formats

NUM_CLASSES = 20  # CIHP parsing labels 0..19
NUM_KEYPOINTS = formats.NUM_KEYPOINTS
REPORT_FILENAME = "preparation_report.json"
KEYPOINT_SOURCES = ("pkl", "csv")
CORR_DIR = "3d/hmr/corr"

SPGNET_SOURCE = ("the SPGNet authors' Google-Drive folder linked from the README of "
                 "https://github.com/cszy98/SPGNet")
INTRFLOW_SOURCE = ("the Intr-Flow release (https://github.com/ly015/intrinsic_flow), "
                   "3d/hmr/corr of its DeepFashion / Market-1501 data")
PATN_SOURCE = "the PATN release (https://github.com/tengteng95/Pose-Transfer)"

SKIP_HINT = ("fix the files, remove the pair from label/split.json, or prepare with --skip_bad_pairs "
             f"(builder keyword skip_bad_pairs=True) to skip bad pairs and list them in {REPORT_FILENAME}")


class MissingFilesError(FileNotFoundError):
  """Whole files or folders of the manual-download layout are missing; the message lists them all."""


class BadPairError(ValueError):
  """A pair's files are missing or invalid; the message names the pair and every offending file."""


class _Problem(Exception):
  """One file of a pair is bad; the message starts with the file's path."""


# ---------------------------------------------------------------------------------------------
# Layout check.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Expected:
  """One file or folder of the manual directory.

  Attributes:
    path: relative to the manual directory; a trailing '/' marks a folder.
    what: what it holds, for messages.
    source: where the user gets it.
  """
  path: str
  what: str
  source: str

  @property
  def is_dir(self) -> bool:
    return self.path.endswith("/")

  def exists_in(self, root: os.PathLike | str) -> bool:
    full = os.path.join(os.fspath(root), self.path)
    return os.path.isdir(full) if self.is_dir else os.path.isfile(full)


def check_layout(dataset: str, manual_dir: os.PathLike | str, expected: Sequence[Expected]) -> None:
  """Raises `MissingFilesError` if any entry of `expected` is absent from `manual_dir`.

  The message lists every expected path (marked present or MISSING), what it holds and where it comes
  from, so that one run tells the user everything to fetch.
  """
  root = os.fspath(manual_dir)
  missing = [e for e in expected if not e.exists_in(root)]
  if not missing:
    return
  lines = [f"{dataset}: {len(missing)} of the {len(expected)} expected files / folders are missing "
           f"from the manual directory {root}"
           + ("" if os.path.isdir(root) else " (which does not exist)") + ":"]
  for e in expected:
    mark = "MISSING" if e in missing else "present"
    lines.append(f"  [{mark}] {os.path.join(root, e.path)}  -- {e.what}; from {e.source}")
  raise MissingFilesError("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Configs and features.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class PairConfig(tfds.core.BuilderConfig):
  """A builder config of the pair datasets (see the module docstring).

  Attributes:
    keypoints: 'pkl' (`label/pose_label.pkl`) or 'csv' (the PATN CSVs).
    with_flow: add `flow` and `visibility` from the Intr-Flow `.corr` files.
    with_predicted_parsing: add `predicted_target_parsing` from `pred_seg/` (DeepFashion).
    splits: the splits of split.json that are built.
  """
  keypoints: str = "pkl"
  with_flow: bool = False
  with_predicted_parsing: bool = False
  splits: tuple[str, ...] = ("train", "test")


def config_name(keypoints: str = "pkl", with_flow: bool = False,
                with_predicted_parsing: bool = False) -> str:
  """The registered config name, e.g. 'pkl', 'csv_flow', 'pkl_flow_predparsing'."""
  if keypoints not in KEYPOINT_SOURCES:
    raise ValueError(f"keypoints must be one of {KEYPOINT_SOURCES}, got {keypoints!r}")
  return keypoints + ("_flow" if with_flow else "") + ("_predparsing" if with_predicted_parsing else "")


def make_configs(predicted_parsing: bool) -> list[PairConfig]:
  """All configs of a builder; the first ('pkl') is the default."""
  out = []
  for pred in ((False, True) if predicted_parsing else (False,)):
    for keypoints in KEYPOINT_SOURCES:
      for flow in (False, True):
        kp_text = ("label/pose_label.pkl" if keypoints == "pkl"
                   else "the PATN keypoint CSVs, (y, x) converted to (x, y)")
        desc = f"Keypoints from {kp_text}"
        if flow:
          desc += "; Intr-Flow ground-truth flow and visibility from 3d/hmr/corr"
        if pred:
          desc += "; stage-1 predicted target parsing from pred_seg (test split only)"
        out.append(PairConfig(name=config_name(keypoints, flow, pred), description=desc + ".",
                              keypoints=keypoints, with_flow=flow, with_predicted_parsing=pred,
                              splits=("test",) if pred else ("train", "test")))
  return out


def features_dict(height: int, width: int, config: PairConfig) -> tfds.features.FeaturesDict:
  """The feature spec of a config for images of height × width (see the module docstring)."""
  image = lambda: tfds.features.Image(shape=(height, width, 3), encoding_format="jpeg")
  labels = lambda: tfds.features.Image(shape=(height, width, 1), encoding_format="png")
  keypoints = lambda: tfds.features.Tensor(shape=(NUM_KEYPOINTS, 2), dtype=np.float32)
  spec: dict[str, Any] = {
      "source_id": tfds.features.Text(),
      "target_id": tfds.features.Text(),
      "pair_index": tfds.features.Scalar(dtype=np.int64),
      "source_image": image(),
      "target_image": image(),
      "source_parsing": labels(),
      "target_parsing": labels(),
      "source_keypoints": keypoints(),
      "target_keypoints": keypoints(),
  }
  if config.with_flow:
    # zlib: the flow is exactly 0 and the visibility 2 on the background (most of the image).
    spec["flow"] = tfds.features.Tensor(shape=(height, width, 2), dtype=np.float32,
                                        encoding=tfds.features.Encoding.ZLIB)
    spec["visibility"] = tfds.features.Tensor(shape=(height, width), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.ZLIB)
  if config.with_predicted_parsing:
    spec["predicted_target_parsing"] = labels()
  return tfds.features.FeaturesDict(spec)


# ---------------------------------------------------------------------------------------------
# File readers that validate. Each raises `_Problem` starting with the file's path.
# ---------------------------------------------------------------------------------------------


def _problem(path: os.PathLike | str, msg: str) -> _Problem:
  return _Problem(f"{os.fspath(path)}: {msg}")


def _open_fully(path: str, expected_format: str) -> tuple[PILImage.Image, bytes]:
  """(the fully decoded image, the file's bytes); truncation and corruption surface here."""
  if not os.path.isfile(path):
    raise _problem(path, "file not found")
  # PIL can be told (globally) to pad truncated files silently; a truncated file must fail here.
  previous = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    with open(path, "rb") as f:
      data = f.read()
    if not data:
      raise _problem(path, "empty file")
    try:
      img = PILImage.open(io.BytesIO(data))
    except PILImage.UnidentifiedImageError:
      raise _problem(path, f"not a {expected_format} file (unrecognised or corrupt header)") from None
    if img.format != expected_format:
      raise _problem(path, f"not a {expected_format} file (detected {img.format})")
    img.load()
  except _Problem:
    raise
  except Exception as e:  # noqa: BLE001 -- PIL raises OSError, SyntaxError, ValueError, ...
    raise _problem(path, f"corrupt or truncated {expected_format} ({type(e).__name__}: {e})") from e
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = previous
  return img, data


def read_jpeg(path: str, size: tuple[int, int]) -> bytes:
  """The bytes of a complete RGB / grayscale JPEG of `size` = (H, W); raises `_Problem` otherwise."""
  img, data = _open_fully(path, "JPEG")
  height, width = size
  if img.size != (width, height):
    raise _problem(path, f"image is {img.size[1]}x{img.size[0]} (HxW), expected {height}x{width}")
  if img.mode not in ("RGB", "L"):
    raise _problem(path, f"JPEG colour mode {img.mode!r}, expected RGB (or grayscale)")
  return data


def read_labels(path: str, size: tuple[int, int]) -> np.ndarray:
  """A parsing PNG of `size` = (H, W) → (H, W) uint8 labels, checked to lie in 0..NUM_CLASSES-1.

  The official loaders read these files with `cv2.imread(path, cv2.IMREAD_GRAYSCALE)`; that equals
  the pixel value for 8-bit grayscale PNGs and for colour / palette PNGs whose colours are gray
  (R = G = B), which are the forms accepted here. Other colours (a colour-coded parsing), 16-bit and
  1-bit files would be read as something other than their labels by the official code and are errors.
  """
  img, _ = _open_fully(path, "PNG")
  height, width = size
  if img.size != (width, height):
    raise _problem(path, f"parsing is {img.size[1]}x{img.size[0]} (HxW), expected {height}x{width}")
  if img.mode == "L":
    labels = np.asarray(img, np.uint8)
  elif img.mode in ("P", "RGB", "RGBA", "LA", "PA"):
    rgb = np.asarray(img.convert("RGB"), np.uint8)
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
      raise _problem(path, f"parsing PNG in mode {img.mode!r} has non-gray colours; expected an 8-bit "
                           "single-channel label map")
    labels = rgb[..., 0]
  else:
    raise _problem(path, f"parsing PNG in mode {img.mode!r}; expected an 8-bit single-channel label map")
  bad = labels >= NUM_CLASSES
  if bad.any():
    y, x = np.argwhere(bad)[0]
    raise _problem(path, f"parsing label {int(labels[y, x])} at (row {y}, col {x}) is outside "
                         f"0..{NUM_CLASSES - 1} ({int(bad.sum())} such pixels)")
  return np.ascontiguousarray(labels)


def encode_labels_png(labels: np.ndarray) -> bytes:
  """(H, W) uint8 labels → 8-bit grayscale PNG bytes (lossless)."""
  buf = io.BytesIO()
  PILImage.fromarray(np.ascontiguousarray(labels, np.uint8), mode="L").save(buf, format="PNG")
  return buf.getvalue()


def check_keypoints(keypoints: np.ndarray, sid: str, source: str, size: tuple[int, int]) -> None:
  """Raises `_Problem` if a present joint (x ≥ 0 and y ≥ 0) lies outside the H × W image.

  A joint with x < 0 or y < 0 is missing (the official `kp_to_map` rule; −1 in the files).
  """
  height, width = size
  kp = np.asarray(keypoints, np.float32)
  present = (kp[:, 0] >= 0) & (kp[:, 1] >= 0)
  outside = present & ((kp[:, 0] > width - 1) | (kp[:, 1] > height - 1))
  if outside.any():
    joints = ", ".join(f"joint {j} at (x={kp[j, 0]:g}, y={kp[j, 1]:g})" for j in np.flatnonzero(outside))
    raise _problem(source, f"keypoints of id {sid!r}: {joints} outside the {height}x{width} (HxW) image "
                           f"(x must be <= {width - 1}, y <= {height - 1}; -1 marks a missing joint)")


def read_flow(path: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """An Intr-Flow `.corr` file → (flow (H, W, 2) float32, visibility (H, W) uint8), as its loader.

  Intr-Flow's `read_flow`: the flow is computed from the raw visibility (zero on its background),
  then the visibility is median-smoothed on the body (`formats.smooth_visibility`, size 5).
  """
  if not os.path.isfile(path):
    raise _problem(path, "file not found")
  try:
    corr, vis = formats.read_corr(path)
  except formats.FormatError as e:
    raise _Problem(str(e)) from e
  height, width = size
  if vis.shape != (height, width):
    raise _problem(path, f"correspondence is {vis.shape[0]}x{vis.shape[1]} (HxW), expected {height}x{width}")
  body = vis != formats.VIS_BACKGROUND
  if not np.all(np.isfinite(corr[body])):
    raise _problem(path, f"{int((~np.isfinite(corr[body])).any(-1).sum())} body pixels have non-finite "
                         "correspondences")
  return formats.corr_to_flow(corr, vis), formats.smooth_visibility(vis, 5)


def read_keypoints(root: str, keypoints: str, csv_names: Sequence[str]) -> tuple[dict[str, np.ndarray], str]:
  """({id: (18, 2) float32 (x, y)}, the source's description for messages).

  Args:
    root: the manual directory.
    keypoints: 'pkl' or 'csv'.
    csv_names: the PATN CSVs under `label/`, merged; a name's '.jpg' extension is dropped (PATN names
      files, SPGNet ids do not carry the extension). An id listed twice with different keypoints is
      an error.
  """
  if keypoints == "pkl":
    path = os.path.join(root, "label", "pose_label.pkl")
    return formats.read_pose_labels(path), path
  if keypoints != "csv":
    raise ValueError(f"keypoints must be one of {KEYPOINT_SOURCES}, got {keypoints!r}")
  merged: dict[str, np.ndarray] = {}
  origin: dict[str, str] = {}
  paths = [os.path.join(root, "label", n) for n in csv_names]
  for path in paths:
    for name, kp in formats.read_patn_annotations(path).items():
      sid = name[:-4] if name.lower().endswith(".jpg") else name
      if sid in merged and not np.array_equal(merged[sid], kp):
        raise formats.FormatError(f"{path}: id {sid!r} also listed in {origin[sid]} with other keypoints")
      merged[sid] = kp
      origin[sid] = path
  return merged, " / ".join(paths)


# ---------------------------------------------------------------------------------------------
# The builder.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParsingFile:
  """Where a parsing feature comes from.

  Attributes:
    path: the PNG file.
    size: its (H, W) as stored.
    transform: stored labels (H, W) → the example's labels (the dataset's H × W); None = as stored.
  """
  path: str
  size: tuple[int, int]
  transform: Callable[[np.ndarray], np.ndarray] | None = None


@dataclasses.dataclass
class _Cached:
  value: Any = None
  problem: str | None = None


def _cached_reader(fn: Callable[..., Any], maxsize: int) -> Callable[..., _Cached]:
  """An LRU-cached `fn` that also caches its `_Problem`s (ids recur across many pairs)."""

  @functools.lru_cache(maxsize=maxsize)
  def read(*args):
    try:
      return _Cached(value=fn(*args))
    except _Problem as e:
      return _Cached(problem=str(e))

  return read


class PairBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the SPGNet pair builders; subclasses describe their layout.

  Keyword `skip_bad_pairs` (constructor): False (default) raises `BadPairError` on the first bad pair;
  True skips bad pairs, logging each and listing all in `preparation_report.json` (module docstring).
  The file format defaults to array_record.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Pairs of label/split.json in order; array_record."}
  IMAGE_SIZE: tuple[int, int] = (0, 0)  # (H, W)
  CSV_NAMES: tuple[str, ...] = ()
  DESCRIPTION = ""

  def __init__(self, *, skip_bad_pairs: bool = False, **kwargs):
    kwargs.setdefault("file_format", tfds.core.FileFormat.ARRAY_RECORD)
    super().__init__(**kwargs)
    self.skip_bad_pairs = bool(skip_bad_pairs)
    self._skipped: list[dict[str, Any]] = []
    self._counts: dict[str, dict[str, int]] = {}
    self._root: str | None = None

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 resolves the class's file through `importlib_resources`, a backport it declares
    # for Python < 3.9 only (a ModuleNotFoundError on newer Pythons without it); the result is the
    # file of the class in either case.
    return epath.Path(inspect.getfile(cls))

  # --- what a subclass provides ---------------------------------------------------------------

  @abc.abstractmethod
  def expected_files(self) -> list[Expected]:
    """The files / folders of the manual directory this config needs."""

  @abc.abstractmethod
  def image_file(self, split: str, sid: str) -> str:
    """Relative path of an image."""

  @abc.abstractmethod
  def parsing_files(self, split: str, sid1: str, sid2: str) -> dict[str, ParsingFile]:
    """Feature name → where its labels come from (relative paths)."""

  # --- TFDS -----------------------------------------------------------------------------------

  def _info(self) -> tfds.core.DatasetInfo:
    height, width = self.IMAGE_SIZE
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION,
        features=features_dict(height, width, self.builder_config),
        # Record i of a split is pair i of split.json: the official validation subset is the first
        # 2000 test pairs, and a reader by index needs a stable order.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/cszy98/SPGNet",
    )

  def download_and_prepare(self, **kwargs):  # pylint: disable=arguments-differ
    """TFDS's `download_and_prepare`, after checking the manual directory's layout.

    The check runs before TFDS writes anything (it creates the dataset folders first), when the
    manual directory is given and the dataset is to be (re)generated.
    """
    download_config = kwargs.get("download_config")
    manual_dir = download_config.manual_dir if download_config is not None else None
    regenerate = download_config is not None and download_config.download_mode.overwrite_dataset
    if manual_dir and (regenerate or not self.is_prepared()):
      check_layout(self.name, manual_dir, self.expected_files())
    return super().download_and_prepare(**kwargs)

  def _download_and_prepare(self, dl_manager, download_config):  # pylint: disable=arguments-differ
    root = download_config.manual_dir if download_config and download_config.manual_dir else None
    # Without an explicit manual_dir, TFDS's own check (default folder, with the instructions)
    # applies first.
    self._root = os.fspath(root) if root is not None else os.fspath(dl_manager.manual_dir)
    check_layout(self.name, self._root, self.expected_files())
    self._skipped, self._counts = [], {}
    super()._download_and_prepare(dl_manager, download_config)
    self._write_report()

  def _split_generators(self, dl_manager):
    del dl_manager  # the manual directory was resolved in `_download_and_prepare`
    root = self._root
    split_path = os.path.join(root, "label", "split.json")
    pairs = formats.read_split(split_path, required=tuple(self.builder_config.splits))
    keypoints, kp_source = read_keypoints(root, self.builder_config.keypoints, self.CSV_NAMES)
    return {split: self._generate_examples(split, pairs[split], keypoints, kp_source)
            for split in self.builder_config.splits}

  def _generate_examples(self, split: str, pairs: Sequence[tuple[str, str]],
                         keypoints: Mapping[str, np.ndarray],
                         kp_source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    root = self._root
    size = self.IMAGE_SIZE
    if not pairs:
      raise BadPairError(f"{self.name}: split {split!r} of {os.path.join(root, 'label', 'split.json')} "
                         "has no pairs")
    read_image = _cached_reader(lambda p: read_jpeg(p, size), 2048)

    def labels_png(path, stored_size, transform):
      labels = read_labels(path, stored_size)
      return encode_labels_png(transform(labels) if transform is not None else labels)

    read_parsing = _cached_reader(labels_png, 2048)
    counts = self._counts[split] = {"pairs": len(pairs), "examples": 0, "skipped": 0}
    start = last_log = time.monotonic()
    for index, (sid1, sid2) in enumerate(pairs):
      problems: list[str] = []
      example: dict[str, Any] = {"source_id": sid1, "target_id": sid2, "pair_index": index}
      for role, sid in (("source", sid1), ("target", sid2)):
        kp = keypoints.get(sid)
        if kp is None:
          problems.append(f"{kp_source}: no keypoints for id {sid!r}")
        else:
          try:
            check_keypoints(kp, sid, kp_source, size)
            example[f"{role}_keypoints"] = kp
          except _Problem as e:
            problems.append(str(e))
        image = read_image(os.path.join(root, self.image_file(split, sid)))
        if image.problem:
          problems.append(image.problem)
        example[f"{role}_image"] = image.value
      for feature, spec in self.parsing_files(split, sid1, sid2).items():
        parsed = read_parsing(os.path.join(root, spec.path), spec.size, spec.transform)
        if parsed.problem:
          problems.append(parsed.problem)
        example[feature] = parsed.value
      if self.builder_config.with_flow:
        try:
          example["flow"], example["visibility"] = read_flow(
              os.path.join(root, CORR_DIR, f"{sid2}_{sid1}.corr"), size)
        except _Problem as e:
          problems.append(str(e))

      if problems:
        where = f"split={split!r}, index={index}, sid1={sid1!r}, sid2={sid2!r}"
        if not self.skip_bad_pairs:
          raise BadPairError(f"{self.name}: bad pair ({where}):\n  " + "\n  ".join(problems)
                             + f"\nTo go on: {SKIP_HINT}.")
        logging.warning("%s: skipping bad pair (%s): %s", self.name, where, "; ".join(problems))
        self._skipped.append(dict(split=split, index=index, source_id=sid1, target_id=sid2,
                                  problems=problems))
        counts["skipped"] += 1
      else:
        counts["examples"] += 1
        yield index, example

      now = time.monotonic()
      if now - last_log > 30 or index + 1 == len(pairs):
        last_log = now
        logging.info("%s %s: %d / %d pairs (%d skipped), %.0f s", self.name, split, index + 1,
                     len(pairs), counts["skipped"], now - start)
    if counts["examples"] == 0:
      raise BadPairError(f"{self.name}: all {len(pairs)} pairs of split {split!r} are bad "
                         f"(listed in the log); nothing to write")

  # --- report ---------------------------------------------------------------------------------

  def _write_report(self) -> None:
    report = {
        "dataset": f"{self.name}/{self.builder_config.name}",
        "version": str(self.version),
        "manual_dir": self._root,
        "keypoints": self.builder_config.keypoints,
        "skip_bad_pairs": self.skip_bad_pairs,
        "splits": self._counts,
        "num_skipped": len(self._skipped),
        "skipped_pairs": self._skipped,
    }
    self.info.metadata.update({
        "skip_bad_pairs": self.skip_bad_pairs,
        "skipped_pairs": {s: c["skipped"] for s, c in self._counts.items()},
        "report": REPORT_FILENAME,
    })
    # `self.data_dir` is the temporary directory that TFDS renames into place once the preparation
    # succeeds, so the report lands beside the records.
    path = os.path.join(os.fspath(self.data_dir), REPORT_FILENAME)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)

  def _post_download_and_prepare_hook(self) -> None:
    # Runs once the records are in place, so `self.data_dir` is the final directory.
    path = os.path.join(os.fspath(self.data_dir), REPORT_FILENAME)
    if self._skipped:
      logging.warning("%s: skipped %d bad pairs (%s); listed in %s", self.name, len(self._skipped),
                      ", ".join(f"{s}: {c['skipped']}" for s, c in self._counts.items()), path)
    else:
      logging.info("%s: no bad pairs; report in %s", self.name, path)
