"""Pictures for people: colourised parsings, pose maps, and the sample grid written during training.

All functions take and return NumPy arrays on the host. Images are (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import os

import numpy as np

# A colour per CIHP class (index = label): the palette of the official visualiser.
PARSING_PALETTE = np.array(
    [[0, 0, 0], [128, 0, 0], [255, 0, 0], [0, 85, 0], [170, 0, 51], [255, 85, 0], [0, 0, 85],
     [0, 119, 221], [85, 85, 0], [0, 85, 85], [85, 51, 0], [52, 86, 128], [0, 128, 0],
     [0, 0, 255], [51, 170, 221], [0, 255, 255], [85, 255, 170], [170, 255, 85], [255, 255, 0],
     [255, 170, 0]], np.uint8)

GRID_COLUMNS = ("source", "target pose", "predicted parsing", "generated", "ground truth")


def colorize_parsing(parsing: np.ndarray) -> np.ndarray:
  """(..., H, W) CIHP labels 0..19 → (..., H, W, 3) uint8 RGB."""
  return PARSING_PALETTE[np.asarray(parsing)]


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Images in [-1, 1] → uint8 0..255 (clipped, rounded)."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def pose_image(pose_maps: np.ndarray) -> np.ndarray:
  """(..., H, W, 18) joint maps in [0, 1] → (..., H, W, 3) uint8, one hue per joint on black."""
  k = pose_maps.shape[-1]
  hues = np.linspace(0.0, 1.0, k, endpoint=False)
  # HSV (h, 1, 1) → RGB, vectorised over the joints.
  rgb = np.clip(np.abs(((hues[:, None] * 6.0 + np.array([0.0, 4.0, 2.0])) % 6.0) - 3.0) - 1.0, 0, 1)
  picture = np.max(np.asarray(pose_maps, np.float32)[..., :, None] * rgb, axis=-2)
  return np.clip(np.round(picture * 255.0), 0, 255).astype(np.uint8)


def sample_grid(source_image, target_pose, parsing, generated, target_image) -> np.ndarray:
  """One row per pair: source | target pose | predicted parsing | generated | ground truth.

  Args:
    source_image, generated, target_image: (N, H, W, 3) in [-1, 1].
    target_pose: (N, H, W, 18) joint maps.
    parsing: (N, H, W) predicted labels.

  Returns:
    (N·H, 5·W, 3) uint8.
  """
  columns = [to_uint8(source_image), pose_image(target_pose), colorize_parsing(parsing),
             to_uint8(generated), to_uint8(target_image)]
  rows = np.concatenate(columns, axis=2)  # (N, H, 5W, 3)
  return rows.reshape(-1, *rows.shape[2:])


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
  """Writes an (H, W, 3) uint8 image as PNG, atomically (a finished file or none)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  tmp = f"{os.fspath(path)}.tmp"
  Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")
  os.replace(tmp, path)
