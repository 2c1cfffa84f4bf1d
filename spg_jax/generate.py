"""Generate a person in a new pose, with region-wise style control.

  python -m spg_jax.generate --config configs/synthetic.py --workdir workdirs/synthetic \\
      --source_image a.png --source_parsing a_parsing.png --source_keypoints a.json \\
      --target_keypoints b.json --output out.png \\
      [--style upper-clothes=c.png:c_parsing.png --style pants=d.png:d_parsing.png] \\
      [--contact_sheet sheet.png]
  python -m spg_jax.generate --config ... --workdir ... --pairs pairs.csv   # batch mode

The model is the latest checkpoint in `--workdir`. Inference is deterministic (no SEAN noise,
running statistics): stage 1 predicts the target parsing from the source parsing and both poses;
the flow comes from the frozen flow network (`data.flow='network'`) or, otherwise, from the
keypoint-driven geometric flow between the source parsing and the predicted target parsing; stage 2
renders the target.

Region-wise style control: SEAN modulates every decoder layer with one style code per parsing
class, pooled from the source image over that class's region. `--style REGION=IMAGE:PARSING`
replaces the codes of REGION (a CIHP class name from `CIHP_CLASSES`, or its number) by the codes
of another image's same region; regions the donor lacks get its zero code, as SEAN gives a class
absent from the source. The appearance encoder still sees the source image.

Inputs: images are RGB files of the config's `data.image_size`; parsings are single-channel PNGs of
CIHP labels 0..19; keypoints are JSON (a list of 18 [x, y] pairs, negative = missing, or OpenPose
output `{"people": [{"pose_keypoints_2d": [x, y, c, ...]}]}` in the COCO-18 order, c = 0 =
missing) or a PATN CSV line `name: [y0, ...]: [x0, ...]` (-1 = missing). Batch mode reads a CSV
with a header `source_image,source_parsing,source_keypoints,target_keypoints,output[,style]`
(style: `REGION=IMAGE:PARSING` entries separated by ';').
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# CIHP parsing classes (the 20 labels of the SPGNet parsings), by label.
CIHP_CLASSES = ("background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat",
                "socks", "pants", "torso-skin", "scarf", "skirt", "face", "left-arm", "right-arm",
                "left-leg", "right-leg", "left-shoe", "right-shoe")


class InputError(ValueError):
  """A bad input file: the message names the file and what was expected."""


def region_index(name: str) -> int:
  """CIHP class name (e.g. 'upper-clothes', 'upper_clothes') or number → label 0..19."""
  key = name.strip().lower().replace("_", "-")
  if key.isdigit() and int(key) < len(CIHP_CLASSES):
    return int(key)
  if key not in CIHP_CLASSES:
    raise InputError(f"unknown region {name!r}; expected one of {', '.join(CIHP_CLASSES)} or 0..19")
  return CIHP_CLASSES.index(key)


def read_image(path: str, size: tuple[int, int]) -> np.ndarray:
  """RGB file → (H, W, 3) float32 in [-1, 1]; its size must be `size` = (H, W)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  if not os.path.exists(path):
    raise InputError(f"{path}: no such image file")
  image = np.asarray(Image.open(path).convert("RGB"))
  if image.shape[:2] != tuple(size):
    raise InputError(f"{path}: image is {image.shape[0]}x{image.shape[1]}, the model takes {size[0]}x{size[1]}")
  return image.astype(np.float32) / 127.5 - 1.0


def read_parsing(path: str, size: tuple[int, int]) -> np.ndarray:
  """Single-channel PNG of CIHP labels → (H, W) int32 in 0..19."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  if not os.path.exists(path):
    raise InputError(f"{path}: no such parsing file")
  labels = np.asarray(Image.open(path))
  if labels.ndim != 2:
    raise InputError(f"{path}: a parsing must be a single-channel label image, got shape {labels.shape}")
  if labels.shape != tuple(size):
    raise InputError(f"{path}: parsing is {labels.shape[0]}x{labels.shape[1]}, the model takes {size[0]}x{size[1]}")
  if labels.max() >= len(CIHP_CLASSES):
    raise InputError(f"{path}: label {int(labels.max())} outside the CIHP labels 0..19")
  return labels.astype(np.int32)


def read_keypoints(path: str) -> np.ndarray:
  """Keypoint JSON / OpenPose JSON / PATN CSV line (module docstring) → (18, 2) float32 (x, y)."""
  if not os.path.exists(path):
    raise InputError(f"{path}: no such keypoint file")
  text = open(path, encoding="utf-8").read().strip()
  try:
    if path.endswith(".json"):
      data = json.loads(text)
      if isinstance(data, dict):
        flat = np.asarray(data["people"][0]["pose_keypoints_2d"], np.float32).reshape(-1, 3)
        keypoints = np.where(flat[:, 2:3] > 0, flat[:, :2], -1.0)
      else:
        keypoints = np.asarray(data, np.float32)
    else:
      line = [l for l in text.splitlines() if l.strip() and not l.startswith("name")][0]
      _, ys, xs = line.split(":")
      y, x = np.asarray(json.loads(ys), np.float32), np.asarray(json.loads(xs), np.float32)
      keypoints = np.where(((x == -1) | (y == -1))[:, None], -1.0, np.stack([x, y], -1))
  except (KeyError, IndexError, ValueError, TypeError) as e:
    raise InputError(f"{path}: not a keypoint file of a format in `python -m spg_jax.generate --help` ({e})") from e
  if keypoints.shape != (18, 2):
    raise InputError(f"{path}: expected 18 (x, y) keypoints in the OpenPose-18 order, got shape {keypoints.shape}")
  return keypoints.astype(np.float32)


def parse_style(spec: str) -> tuple[int, str, str]:
  """'REGION=IMAGE:PARSING' → (label, image path, parsing path)."""
  try:
    region, files = spec.split("=", 1)
    image, parsing = files.rsplit(":", 1)
  except ValueError as e:
    raise InputError(f"--style {spec!r}: expected REGION=IMAGE:PARSING") from e
  return region_index(region), image, parsing


def swap_region_codes(codes: jax.Array, donors: Sequence[tuple[int, jax.Array]]) -> jax.Array:
  """codes (B, 20, D) with class `label`'s code replaced by the donor's, for each (label, donor codes)."""
  for label, donor in donors:
    codes = codes.at[:, label].set(donor[:, label])
  return codes


class Generator:
  """The latest checkpoint of a workdir, ready to generate (jitted pieces, deterministic)."""

  def __init__(self, config, workdir: str):
    from spg_jax import train  # pylint: disable=g-import-not-at-top
    from spg_jax.models import generator as generator_lib  # pylint: disable=g-import-not-at-top

    self.config = config
    run = train.setup_run(config, workdir)
    step = run.checkpointer.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {run.checkpointer.directory}; train first")
    self.state, _ = run.restore(step)
    run.checkpointer.close()
    self.step, self.fn, self.frozen = step, run.fn, run.frozen
    self.size = tuple(config.data.image_size)
    gen_config = run.fn.nets.generator.config
    variables = {"params": self.state.params["generator"], "batch_stats": self.state.batch_stats["generator"]}
    self._encode = jax.jit(lambda image, parsing: generator_lib.encode_style(
        gen_config, variables, image, _onehot(parsing)))
    self._stage1 = jax.jit(self._predict_parsing)
    self._render = jax.jit(self._render_image)

  def _predict_parsing(self, batch):
    stage1 = self.fn.stage1_variables(self.state, self.frozen)
    logits, _ = self.fn._stage1(stage1, batch, train=False)  # pylint: disable=protected-access
    return jnp.argmax(logits, -1).astype(jnp.int32)

  def _render_image(self, batch, labels, flow, vis, codes):
    raw = self.fn.nets.generator.apply(
        {"params": self.state.params["generator"], "batch_stats": self.state.batch_stats["generator"]},
        target_pose=batch["target_pose"], source_image=batch["source_image"],
        source_parsing=_onehot(batch["source_parsing"]), target_parsing=_onehot(labels), flow=flow,
        visibility=vis, train=False, deterministic=True, style_codes=codes)
    return jnp.tanh(raw)

  def features(self, source_keypoints: np.ndarray, target_keypoints: np.ndarray) -> dict[str, jax.Array]:
    """Joint and distance maps (1, H, W, ·) of both poses, as the pipeline computes them."""
    from spg_jax.ops import pose_maps  # pylint: disable=g-import-not-at-top

    d, (h, w) = self.config.data, self.size
    kp = jnp.asarray(np.stack([source_keypoints, target_keypoints])[None])
    joints = pose_maps.keypoint_maps(kp, h, w, mode=d.joint_mode, radius=float(d.joint_radius))
    out = dict(source_pose=joints[:, 0], target_pose=joints[:, 1])
    if self.config.model.parsing.use_distance_maps:
      dist = pose_maps.distance_maps(kp, h, w, kappa=float(d.distance_map_kappa))
      out.update(source_distance=dist[:, 0], target_distance=dist[:, 1])
    return out

  def __call__(self, source_image, source_parsing, source_keypoints, target_keypoints,
               styles: Sequence[tuple[int, np.ndarray, np.ndarray]] = ()) -> dict[str, np.ndarray]:
    """One pair → generated (H, W, 3) in [-1, 1], parsing (H, W) labels, target_pose (H, W, 18).

    Args:
      source_image: (H, W, 3) in [-1, 1]; source_parsing: (H, W) labels; *_keypoints: (18, 2).
      styles: (label, donor image, donor parsing) per region whose style comes from the donor.
    """
    from spg_jax.train_step import flow_inputs  # pylint: disable=g-import-not-at-top

    batch = dict(source_image=jnp.asarray(source_image)[None], source_parsing=jnp.asarray(source_parsing)[None],
                 **self.features(source_keypoints, target_keypoints))
    labels = self._stage1(batch)
    if self.config.data.flow == "network":
      flow, vis = flow_inputs(self.fn.nets, self.frozen, batch)
    else:
      # The geometric flow from the keypoints and the source / predicted target parsings.
      from input_pipeline import geometric_flow  # pylint: disable=g-import-not-at-top  (TensorFlow)
      f, v = geometric_flow.geometric_flow(source_keypoints, target_keypoints, np.asarray(source_parsing),
                                           np.asarray(labels[0]))
      flow, vis = jnp.asarray(f.numpy())[None], jnp.asarray(v.numpy(), jnp.float32)[None, ..., None]
    codes = self._encode(batch["source_image"], batch["source_parsing"])
    donors = [(label, self._encode(jnp.asarray(image)[None], jnp.asarray(parsing)[None]))
              for label, image, parsing in styles]
    generated = self._render(batch, labels, flow, vis, swap_region_codes(codes, donors))
    return dict(generated=np.asarray(generated[0]), parsing=np.asarray(labels[0]),
                target_pose=np.asarray(batch["target_pose"][0]))


def _onehot(labels: jax.Array) -> jax.Array:
  return jax.nn.one_hot(labels, len(CIHP_CLASSES), dtype=jnp.float32)


JOB_FIELDS = ("source_image", "source_parsing", "source_keypoints", "target_keypoints", "output")


def _jobs(args) -> list[dict[str, Any]]:
  need = JOB_FIELDS
  if args.pairs:
    with open(args.pairs, newline="", encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
      missing = [k for k in need if not row.get(k)]
      if missing:
        raise InputError(f"{args.pairs}: row {i + 2} lacks {missing} (header: {','.join(need)}[,style])")
      row["style"] = [s for s in (row.get("style") or "").split(";") if s.strip()]
    return rows
  missing = [f"--{k}" for k in need if getattr(args, k) is None]
  if missing:
    raise InputError(f"missing {', '.join(missing)} (or give --pairs)")
  return [dict({k: getattr(args, k) for k in need}, style=args.style or [])]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="the config file the workdir was trained with")
  parser.add_argument("--workdir", required=True, help="a training workdir (its latest checkpoint is used)")
  for name in JOB_FIELDS:
    parser.add_argument(f"--{name}")
  parser.add_argument("--style", action="append", help="REGION=IMAGE:PARSING (repeatable)")
  parser.add_argument("--pairs", help="CSV of pairs (batch mode)")
  parser.add_argument("--contact_sheet", help="also write source | pose | parsing | output rows here")
  args = parser.parse_args(argv)

  import importlib.util  # pylint: disable=g-import-not-at-top
  from spg_jax import visualize  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location("config_module", args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  try:
    jobs = _jobs(args)
    generator = Generator(config, args.workdir)
    size = generator.size
    rows = []
    for job in jobs:
      styles = [(label, read_image(image, size), read_parsing(parsing, size))
                for label, image, parsing in (parse_style(s) for s in job["style"])]
      source_image = read_image(job["source_image"], size)
      out = generator(source_image, read_parsing(job["source_parsing"], size),
                      read_keypoints(job["source_keypoints"]), read_keypoints(job["target_keypoints"]), styles)
      os.makedirs(os.path.dirname(os.path.abspath(job["output"])), exist_ok=True)
      visualize.write_png(job["output"], visualize.to_uint8(out["generated"]))
      print(f"wrote {job['output']}", flush=True)
      rows.append(np.concatenate([visualize.to_uint8(source_image), visualize.pose_image(out["target_pose"]),
                                  visualize.colorize_parsing(out["parsing"]), visualize.to_uint8(out["generated"])],
                                 axis=1))
    if args.contact_sheet:
      visualize.write_png(args.contact_sheet, np.concatenate(rows, axis=0))
      print(f"wrote {args.contact_sheet}")
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
