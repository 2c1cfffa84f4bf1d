"""Host cost of PCKh's keypoint decoding (`spg_jax.metrics.pckh.decode_keypoints`) per image.

Decoding runs on the host once per generated image (8,570 times for DeepFashion's test set), in Python
threads that share the GIL, so its single-thread cost bounds `--mode eval`. Three kinds of maps at
256 × 256 (18 heatmaps, 38 PAFs, float32 as the device returns them):
  zero      no part above the threshold (what the random-weight pose network of
            `benchmarks/eval_throughput.py` yields, its last convolutions zeroed)
  person    one planted person: a Gaussian blob (σ = 4 px, amplitude 0.9) per part on a skeleton
            of DeepFashion's proportions, with a PAF stripe along each limb, what a trained network
            gives for an image with one clear person
  noise     `person` plus N(0, 0.02) noise on every map, so that the smoothed box of a part is as
            large as its blob and not smaller
Each figure is the median of `--repeats` calls on one thread.

  python benchmarks/pckh_decode.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from spg_jax.metrics import pckh  # pylint: disable=g-import-not-at-top,wrong-import-position

# (x, y) of the 18 COCO parts of a standing person in a 176 × 256 crop, centred in a 256 × 256 image.
SKELETON = np.array([
    (128, 40), (128, 64), (106, 64), (100, 100), (96, 134), (150, 64), (156, 100), (160, 134), (114, 132),
    (112, 180), (110, 226), (142, 132), (144, 180), (146, 226), (122, 34), (134, 34), (116, 38), (140, 38)])


def planted_maps(size: int = 256, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(heatmaps (size, size, 18), pafs (size, size, 38)) float32 holding one person (module docstring)."""
  yy, xx = np.mgrid[:size, :size]
  heat = np.zeros((size, size, 18), np.float32)
  pafs = np.zeros((size, size, 38), np.float32)
  for part, (x, y) in enumerate(SKELETON):
    heat[..., part] = 0.9 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0 ** 2))
  for (a, b), (cx, cy) in zip(pckh.LIMBS, pckh.PAF_CHANNELS):
    d = (SKELETON[b] - SKELETON[a]).astype(float)
    length = np.hypot(*d)
    t = np.clip(((xx - SKELETON[a][0]) * d[0] + (yy - SKELETON[a][1]) * d[1]) / length ** 2, 0, 1)
    near = np.hypot(xx - SKELETON[a][0] - t * d[0], yy - SKELETON[a][1] - t * d[1]) <= 3.0
    pafs[..., cx][near], pafs[..., cy][near] = d[0] / length, d[1] / length
  if noise:
    rng = np.random.default_rng(seed)
    heat += rng.normal(0, noise, heat.shape).astype(np.float32)
    pafs += rng.normal(0, noise, pafs.shape).astype(np.float32)
  return heat, pafs


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  cases = {"zero": (np.zeros((256, 256, 18), np.float32), np.zeros((256, 256, 38), np.float32)),
           "person": planted_maps(), "noise": planted_maps(noise=0.02)}
  print("| maps | ms / image (median) | parts found |\n| --- | ---: | ---: |")
  for name, (heat, pafs) in cases.items():
    times = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      keypoints = pckh.decode_keypoints(heat, pafs)
      times.append(time.perf_counter() - t)
    found = int((keypoints[:, 0] >= 0).sum())
    if name != "zero" and not np.array_equal(keypoints, SKELETON):
      raise RuntimeError(f"{name}: decoded {keypoints.tolist()}, planted {SKELETON.tolist()}")
    print(f"| {name} | {1e3 * np.median(times):.1f} | {found} |")


if __name__ == "__main__":
  main()
