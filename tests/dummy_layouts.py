"""Tiny dummy copies of the official SPGNet data layouts, written with real file formats.

`write_deepfashion(root)` and `write_market1501(root)` write, under `root`, the files the builders of
`input_pipeline.datasets` read — JPEG images at the real sizes, single-channel parsing PNGs (Market:
on the 256 × 256 canvas), a Python-2 `label/pose_label.pkl`, the ':'-separated PATN CSVs, Intr-Flow
`.corr` files, DeepFashion `pred_seg/` — and return a `Layout` holding what was written, so that a
test can compare what it reads back. Content comes from `input_pipeline.synthetic.make_pair`
(identity k is shown in two poses as ids 2k and 2k + 1).

Default pairs (6 ids): train (0, 1), (1, 0), (2, 3), (3, 2); test (4, 5), (5, 4). Market keeps ids
0..3 in `img/train` and 4..5 in `img/test`, as its split folders require.

Values are chosen so that mistakes show: keypoints are integers with some joints missing; the CSV
keypoints differ from the pickle's (joint 0 is missing there); the Market canvas carries different
labels at odd rows / columns and outside the crop columns, and each pair's target parsing file has a
pair-specific mark; `.corr` correspondences are NaN on the background.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np
from PIL import Image

from input_pipeline import formats, synthetic

DEEPFASHION_SIZE = (256, 256)  # (H, W)
MARKET_SIZE = (128, 64)
MARKET_CANVAS = (256, 256)
JPEG_QUALITY = 90


@dataclasses.dataclass
class Layout:
  """What a writer put on disk.

  Attributes:
    root: the manual directory.
    dataset: 'deepfashion' or 'market1501'.
    size: (H, W) of the images.
    splits: split name → [(sid1, sid2), ...] as in label/split.json.
    images: sid → (H, W, 3) uint8 RGB as rendered (before JPEG compression).
    image_files: sid → path of its JPEG.
    parsings: path relative to `root` → the (h, w) uint8 labels stored in that PNG.
    keypoints: sid → (18, 2) float32 (x, y) of label/pose_label.pkl.
    csv_keypoints: sid → (18, 2) float32 (x, y) of the PATN CSVs (empty if none were written).
    corrs: path relative to `root` → (corr (H, W, 2) float32, vis (H, W) uint8) of that .corr file.
  """
  root: pathlib.Path
  dataset: str
  size: tuple[int, int]
  splits: dict[str, list[tuple[str, str]]]
  images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  image_files: dict[str, pathlib.Path] = dataclasses.field(default_factory=dict)
  parsings: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  keypoints: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  csv_keypoints: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  corrs: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)

  def pairs(self):
    """Yields (split, index, sid1, sid2) over all pairs."""
    for split, pairs in self.splits.items():
      for i, (sid1, sid2) in enumerate(pairs):
        yield split, i, sid1, sid2


def deepfashion_id(k: int) -> str:
  return f"fashionWOMENDressesid{k:08d}_{k % 7 + 1}{('front', 'side', 'back', 'full')[k % 4]}"


def market_id(k: int) -> str:
  return f"{k + 2:04d}_c{k % 6 + 1}s1_{451 + 13 * k:06d}_0{k % 3 + 1}"


def default_splits(ids: list[str]) -> dict[str, list[tuple[str, str]]]:
  """Pairs of the two poses of each identity, both ways; the last identity is the test split."""
  n = len(ids) // 2
  pairs = [[(ids[2 * k], ids[2 * k + 1]), (ids[2 * k + 1], ids[2 * k])] for k in range(n)]
  return {"train": [p for k in range(n - 1) for p in pairs[k]], "test": pairs[n - 1]}


def write_png(path: os.PathLike | str, labels: np.ndarray) -> None:
  """(h, w) uint8 → 8-bit grayscale PNG."""
  os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
  Image.fromarray(np.ascontiguousarray(labels, np.uint8), mode="L").save(path, format="PNG")


def write_jpeg(path: os.PathLike | str, image: np.ndarray, quality: int = JPEG_QUALITY) -> None:
  os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
  Image.fromarray(np.ascontiguousarray(image, np.uint8), mode="RGB").save(path, format="JPEG",
                                                                         quality=quality)


def write_split(root: pathlib.Path, splits: dict[str, list[tuple[str, str]]]) -> None:
  (root / "label").mkdir(parents=True, exist_ok=True)
  (root / "label" / "split.json").write_text(
      json.dumps({k: [list(p) for p in v] for k, v in splits.items()}))


def write_patn_csv(path: os.PathLike | str, keypoints: dict[str, np.ndarray]) -> None:
  """PATN format: `name:keypoints_y:keypoints_x`, y list FIRST, names with '.jpg', −1 missing."""
  lines = ["name:keypoints_y:keypoints_x"]
  for sid, kp in keypoints.items():
    ys = [int(v) for v in kp[:, 1]]
    xs = [int(v) for v in kp[:, 0]]
    lines.append(f"{sid}.jpg: {json.dumps(ys)}: {json.dumps(xs)}")
  pathlib.Path(path).write_text("\n".join(lines) + "\n")


def _integer_keypoints(kp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Rounded inside the image (as the released files hold), −1 = missing, plus one more missing."""
  out = np.where(kp < 0, -1.0, np.floor(kp)).astype(np.float32)
  out[(out < 0).any(-1)] = -1
  out[rng.integers(2, 18)] = -1
  return out


def _corr_for(target_parsing: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A plausible target→source correspondence: smooth offsets on the body, NaN on the background."""
  h, w = target_parsing.shape
  rng = np.random.default_rng(seed)
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  a, b, c = rng.uniform(-0.1 * w, 0.1 * w, 3).astype(np.float32)
  dx = a + b * np.sin(ys / h * 6.0) + c * np.cos(xs / w * 4.0)
  dy = rng.uniform(-0.05 * h, 0.05 * h) + 0.03 * h * np.sin(xs / w * 5.0)
  corr = np.stack([xs + dx, ys + dy], axis=-1).astype(np.float32)
  body = target_parsing > 0
  vis = np.where(body, 0, formats.VIS_BACKGROUND).astype(np.uint8)
  vis[body & (((ys // 6 + xs // 6) % 5) == 0)] = formats.VIS_INVISIBLE  # patches without a match
  corr[~body] = np.nan  # background correspondences mean nothing (and must not leak into the flow)
  return corr, vis


def _render(num_identities: int, size: tuple[int, int], seed: int, name_fn) -> tuple[list[str], dict]:
  ids, people = [], {}
  for k in range(num_identities):
    pair = synthetic.make_pair(synthetic.pair_seed(seed, k), *size)
    for j, role in enumerate(("source", "target")):
      sid = name_fn(2 * k + j)
      ids.append(sid)
      people[sid] = dict(image=pair[f"{role}_image"], parsing=pair[f"{role}_parsing"],
                         keypoints=pair[f"{role}_keypoints"])
  return ids, people


def _write_keypoints(layout: Layout, people: dict, rng: np.random.Generator, with_csv: bool,
                     csv_names: tuple[str, str]) -> None:
  root = layout.root
  for sid, person in people.items():
    layout.keypoints[sid] = _integer_keypoints(person["keypoints"], rng)
  # Both value forms that `formats.read_pose_labels` accepts: NumPy arrays and nested int lists.
  pkl = {sid: (kp.astype(np.float64) if n % 2 else kp.astype(int).tolist())
         for n, (sid, kp) in enumerate(layout.keypoints.items())}
  formats.write_pose_labels_py2(root / "label" / "pose_label.pkl", pkl)
  if with_csv:
    for sid, kp in layout.keypoints.items():
      csv_kp = kp.copy()
      csv_kp[0] = -1  # differs from the pickle: a test can tell which source was read
      layout.csv_keypoints[sid] = csv_kp
    train_ids = {s for p in layout.splits["train"] for s in p}
    for name, chosen in zip(csv_names, (train_ids, set(layout.csv_keypoints) - train_ids)):
      write_patn_csv(root / "label" / name, {s: layout.csv_keypoints[s] for s in sorted(chosen)})


def write_deepfashion(root: os.PathLike | str, *, num_identities: int = 3, seed: int = 0,
                      with_flow: bool = True, with_pred_seg: bool = True, with_csv: bool = True) -> Layout:
  """Writes a DeepFashion layout (256 × 256) under `root`; see the module docstring.

  `pred_seg/<sid1>___<sid2>.png` is written for the test pairs only (as in the release): the target's
  parsing with labels 5 and 9 swapped, so that it differs from `seg/<sid2>.png`.
  """
  root = pathlib.Path(root)
  ids, people = _render(num_identities, DEEPFASHION_SIZE, seed, deepfashion_id)
  layout = Layout(root=root, dataset="deepfashion", size=DEEPFASHION_SIZE, splits=default_splits(ids))
  write_split(root, layout.splits)
  rng = np.random.default_rng(seed)
  for sid, person in people.items():
    path = root / "img" / "img" / f"{sid}.jpg"
    write_jpeg(path, person["image"])
    layout.images[sid], layout.image_files[sid] = person["image"], path
    rel = f"seg/{sid}.png"
    write_png(root / rel, person["parsing"])
    layout.parsings[rel] = person["parsing"]
  _write_keypoints(layout, people, rng, with_csv,
                   ("fasion-annotation-train.csv", "fasion-annotation-test.csv"))
  if with_pred_seg:
    for sid1, sid2 in layout.splits["test"]:
      tgt = people[sid2]["parsing"]
      pred = np.where(tgt == 5, 9, np.where(tgt == 9, 5, tgt)).astype(np.uint8)
      rel = f"pred_seg/{sid1}___{sid2}.png"
      write_png(root / rel, pred)
      layout.parsings[rel] = pred
  if with_flow:
    _write_corrs(layout, lambda sid1, sid2: people[sid2]["parsing"])
  return layout


def market_canvas(labels: np.ndarray, mark: int | None = None) -> np.ndarray:
  """(128, 64) labels → the (256, 256) canvas of a Market parsing file.

  Columns 64:192 hold the labels upsampled ×2, except that odd rows and odd columns carry other
  labels (so reading the wrong phase of the ×1/2 resize shows), columns outside the crop carry label
  3 stripes, and `mark` (if given) paints a pair-specific 8 × 8 block of label 19.
  """
  canvas = np.zeros(MARKET_CANVAS, np.uint8)
  up = np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1)
  odd = np.zeros(up.shape, bool)
  odd[1::2, :] = True
  odd[:, 1::2] = True
  up = np.where(odd & (up > 0), (up.astype(np.int32) % 19) + 1, up).astype(np.uint8)
  canvas[:, 64:192] = up
  canvas[::16, :64] = 3
  canvas[::16, 192:] = 3
  if mark is not None:
    r = 16 + 16 * (mark % 12)
    canvas[r:r + 8, 96:104] = 19
  return canvas


def write_market1501(root: os.PathLike | str, *, num_identities: int = 3, seed: int = 0,
                     with_flow: bool = True, with_csv: bool = True) -> Layout:
  """Writes a Market-1501 layout (128 × 64 images, 256 × 256 parsing canvases) under `root`."""
  root = pathlib.Path(root)
  ids, people = _render(num_identities, MARKET_SIZE, seed, market_id)
  layout = Layout(root=root, dataset="market1501", size=MARKET_SIZE, splits=default_splits(ids))
  write_split(root, layout.splits)
  rng = np.random.default_rng(seed)
  for split, pairs in layout.splits.items():
    for sid in sorted({s for p in pairs for s in p}):
      path = root / "img" / split / f"{sid}.jpg"
      write_jpeg(path, people[sid]["image"])
      layout.images[sid], layout.image_files[sid] = people[sid]["image"], path
  for n, (_, _, sid1, sid2) in enumerate(layout.pairs()):
    for rel, labels, mark in ((f"seg/{sid1}___{sid1}.png", people[sid1]["parsing"], None),
                              (f"seg/{sid1}___{sid2}.png", people[sid2]["parsing"], n)):
      if rel not in layout.parsings:
        canvas = market_canvas(labels, mark)
        write_png(root / rel, canvas)
        layout.parsings[rel] = canvas
  _write_keypoints(layout, people, rng, with_csv,
                   ("market-annotation-train.csv", "market-annotation-test.csv"))
  if with_flow:
    _write_corrs(layout, lambda sid1, sid2: people[sid2]["parsing"])
  return layout


def _write_corrs(layout: Layout, target_parsing) -> None:
  (layout.root / "3d" / "hmr" / "corr").mkdir(parents=True, exist_ok=True)
  for n, (_, _, sid1, sid2) in enumerate(layout.pairs()):
    rel = f"3d/hmr/corr/{sid2}_{sid1}.corr"
    corr, vis = _corr_for(target_parsing(sid1, sid2), seed=n)
    formats.write_corr(layout.root / rel, corr, vis)
    layout.corrs[rel] = (corr, vis)
