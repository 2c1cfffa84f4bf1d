"""PCKh of PATN / SPGNet: OpenPose keypoints of generated images against the target's keypoints.

Two parts, both host NumPy (the network side is `spg_jax.metrics.pose_estimator`):

Keypoint decoding (`decode_keypoints`), the `compute_cordinates` function of the PCKh script
(`tool/compute_coordinates.py` of PATN, identical in Deformable-GAN and SPGNet), on the multi-scale maps
at image resolution, heatmaps (H, W, 19) and PAFs (H, W, 38):
  1. Peaks, per part p < 18: the heatmap is smoothed with `scipy.ndimage.gaussian_filter(σ = 3)` (mode
     'reflect', truncate 4). A pixel is a peak iff its smoothed value is > 0.1 and ≥ each of its four
     neighbours (a neighbour outside the image counts as 0; ties all count, so a plateau yields several
     peaks). A peak's score is the *unsmoothed* heatmap value there. Peaks are listed per part in
     row-major order and numbered consecutively over parts 0..17.
  2. Limb candidates, for each of the 19 limbs (`LIMBS`, with PAF channels `PAF_CHANNELS`) and every pair
     (a, b) of peaks of its two parts: u = (b − a)/‖b − a‖; 10 points evenly spaced from a to b (ends
     included) are rounded half away from zero (Python 2 `round`) and the PAF (x, y) read there;
     s_i = PAF_i · u. The pair is a candidate iff more than 8 of the s_i exceed 0.05 and
     score = mean(s_i) + min(0.5 · H / ‖b − a‖ − 1, 0) > 0. Coincident peaks (‖b − a‖ = 0) never
     qualify (the script's division by zero yields NaN scores).
  3. Limbs: candidates sorted by score (descending, stable), taken greedily while neither endpoint is
     used yet, until min(#a, #b) are taken.
  4. People: the script's row-merging assembly, limb by limb; a limb whose two ends are in no person
     starts a new person only for the first 17 limbs (not for the two ear–shoulder limbs). A person's
     score is the sum of its peak scores and limb scores.
  5. People with fewer than 4 parts or a mean score (score / parts) below 0.4 are dropped; the keypoints
     are those of the remaining person with the highest score (the first on ties), (x, y) integer pixel
     coordinates, −1 for a part it lacks; all −1 if nobody remains.
One corner the script cannot reach is handled: if a limb's ends lie in more than two people (possible
only after an overlapping merge) the script fails with an IndexError; here the first two are used.

PCKh (`pckh`), `tool/calPCKH_fashion.py` / `calPCKH_market.py` (identical rules):
  * A coordinate equal to −1 marks a missing joint, exactly as the scripts test it (`== -1`). Other
    negative values count as present there, and here too (PATN's resized DeepFashion annotations do
    hold such values, for joints in the 40-pixel borders cropped away). This differs from the rest of
    spg_jax, where any negative coordinate is missing; keypoints from `decode_keypoints` use exactly −1.
  * Head box, from the *target* keypoints: over the present joints among {0 nose, 1 neck, 14, 15 eyes,
    16, 17 ears} (a joint is present when neither coordinate is −1), w = max x − min x and
    h = max y − min y. With fewer than 2 of them the image is skipped: it adds nothing to either count.
  * A joint is correct iff neither predicted nor target coordinate is −1 and |px − tx| < α · w and
    |py − ty| < α · h, α = 0.5, strict inequalities per axis (so a head box of width 0 makes every joint
    of that image wrong). Missing predictions are wrong.
  * Denominator: target joints whose y is not −1 (the scripts count `tycords` only), over the images not
    skipped. PCKh = total correct / total valid joints over the whole set (a micro average), so `pckh`
    returns counts that add up over batches.
The scripts pair predictions and targets by file name; here they come as aligned arrays.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from spg_jax.metrics.pose_estimator import NUM_HEATMAPS, NUM_PAFS, NUM_PARTS

MISSING = -1
PEAK_THRESHOLD = 0.1
PAF_THRESHOLD = 0.05
HEATMAP_SIGMA = 3.0
NUM_SAMPLES = 10  # points sampled along a candidate limb
MIN_PARTS = 4
MIN_MEAN_SCORE = 0.4
HEAD_PARTS = (0, 1, 14, 15, 16, 17)
PCKH_ALPHA = 0.5

# The 19 limbs of the CMU COCO model as (part a, part b), 0-based (the script's `limbSeq` minus 1), and the
# PAF channels (x, y) of each (its `mapIdx` minus 19, the number of heatmap channels).
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))
PAF_CHANNELS: tuple[tuple[int, int], ...] = (
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9),
    (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27))
NUM_PERSON_LIMBS = 17  # limbs 17, 18 (ear–shoulder) never start a person


def _greater(values: np.ndarray, bound: float) -> np.ndarray:
  """values > bound as float64 compares them, without a float64 copy of float32 values."""
  if values.dtype == np.float32:
    # For float32 v: float64(v) > bound ⟺ v > the largest float32 ≤ bound.
    bound32 = np.float32(bound)
    if float(bound32) > bound:
      bound32 = np.nextafter(bound32, np.float32(-np.inf))
    return values > bound32
  return np.asarray(values, np.float64) > bound


def smoothed_box(heatmap: np.ndarray, threshold: float = PEAK_THRESHOLD,
                 sigma: float = HEATMAP_SIGMA) -> tuple[int, int, np.ndarray] | None:
  """The script's smoothed heatmap, computed only on the box where it can exceed `threshold`.

  The Gaussian's weights are positive and sum to one, and every value it averages at a pixel (the
  'reflect' border included) lies within its radius r = round(4σ) in both axes, so a smoothed value can
  exceed `threshold` only within r of an unsmoothed value that does. The filter runs on the bounding
  box of those pixels, one pixel larger for the neighbour test, from an input crop r larger again
  wherever the image allows: each value it returns is computed from the same inputs in the same order
  as by the filter on the whole image, so it is bitwise that value.

  Args:
    heatmap: (H, W) float32 or float64 heatmap at image resolution; smoothed in float64, as the script
      smooths its float64 average of the scales.

  Returns:
    None if no value can exceed the threshold, else (y0, x0, z): z (h + 2, w + 2) holds the smoothed
    values of rows y0 − 1 .. y0 + h and columns x0 − 1 .. x0 + w, 0 outside the image (the script's
    shifted copies are zero-filled), and [y0, y0 + h) × [x0, x0 + w) holds every pixel whose smoothed
    value exceeds `threshold`.
  """
  radius = int(4.0 * sigma + 0.5)  # scipy's truncate=4.0
  height, width = heatmap.shape
  # Below this bound no value smooths to > threshold, whatever the rounding of the weights' sum.
  above = _greater(heatmap, threshold * (1.0 - 1e-9))
  rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
  if not len(rows):
    return None
  y0, y1 = max(rows[0] - radius, 0), min(rows[-1] + radius + 1, height)
  x0, x1 = max(cols[0] - radius, 0), min(cols[-1] + radius + 1, width)
  oy0, oy1, ox0, ox1 = max(y0 - 1, 0), min(y1 + 1, height), max(x0 - 1, 0), min(x1 + 1, width)
  iy0, iy1 = max(oy0 - radius, 0), min(oy1 + radius, height)
  ix0, ix1 = max(ox0 - radius, 0), min(ox1 + radius, width)
  smooth = ndimage.gaussian_filter(np.asarray(heatmap[iy0:iy1, ix0:ix1], np.float64), sigma=sigma)
  z = np.zeros((y1 - y0 + 2, x1 - x0 + 2))
  z[oy0 - y0 + 1:oy1 - y0 + 1, ox0 - x0 + 1:ox1 - x0 + 1] = smooth[oy0 - iy0:oy1 - iy0, ox0 - ix0:ox1 - ix0]
  return y0, x0, z


def find_peaks(heatmaps: np.ndarray, threshold: float = PEAK_THRESHOLD,
               sigma: float = HEATMAP_SIGMA) -> list[np.ndarray]:
  """Step 1 of the module docstring; smoothing only where a peak can be (`smoothed_box`).

  For trained maps that is a few small boxes per image instead of 18 whole-image filters, with the
  same peaks.

  Args:
    heatmaps: (H, W, ≥ 18) heatmaps at image resolution (channels 0..17 are read).

  Returns:
    18 arrays, one per part, of shape (n_p, 4): rows (x, y, score, id), float64, in row-major order,
    ids numbered consecutively across parts.
  """
  peaks, next_id = [], 0
  heatmaps = np.asarray(heatmaps)
  for part in range(NUM_PARTS):
    ys = xs = np.zeros(0, np.int64)
    original = heatmaps[..., part]
    box = smoothed_box(original, threshold, sigma)
    if box is not None:
      y0, x0, z = box
      inner = z[1:-1, 1:-1]
      is_peak = ((inner > threshold) & (inner >= z[:-2, 1:-1]) & (inner >= z[2:, 1:-1])
                 & (inner >= z[1:-1, :-2]) & (inner >= z[1:-1, 2:]))
      ys, xs = np.nonzero(is_peak)  # row-major within a rectangle is row-major in the image
      ys, xs = ys + y0, xs + x0
    ids = np.arange(next_id, next_id + len(xs))
    next_id += len(xs)
    peaks.append(np.stack([xs, ys, original[ys, xs], ids], axis=-1).astype(np.float64).reshape(-1, 4))
  return peaks


def _round_half_away(v: np.ndarray) -> np.ndarray:
  """Python 2 `round` for non-negative values: halves go up (Python 3 would round them to even)."""
  floor = np.floor(v)
  return (floor + (v - floor >= 0.5)).astype(np.int64)


def limb_score(paf_x: np.ndarray, paf_y: np.ndarray, a: np.ndarray, b: np.ndarray, image_height: int,
               threshold: float = PAF_THRESHOLD) -> float | None:
  """Step 2 for one pair: the limb score of peaks a = (x, y) and b = (x, y), or None if not a candidate."""
  dx, dy = float(b[0] - a[0]), float(b[1] - a[1])
  norm = float(np.sqrt(dx * dx + dy * dy))
  if norm == 0.0:
    return None
  ux, uy = dx / norm, dy / norm
  xs = _round_half_away(np.linspace(a[0], b[0], num=NUM_SAMPLES))
  ys = _round_half_away(np.linspace(a[1], b[1], num=NUM_SAMPLES))
  # float64 like the script's maps; converted after sampling (exact for float32 maps).
  dots = np.asarray(paf_x[ys, xs], np.float64) * ux + np.asarray(paf_y[ys, xs], np.float64) * uy
  # Python's sequential sum, as the script's `sum(...) / len(...)` (np.mean sums pairwise).
  score = sum(dots.tolist()) / NUM_SAMPLES + min(0.5 * image_height / norm - 1.0, 0.0)
  if np.count_nonzero(dots > threshold) > 0.8 * NUM_SAMPLES and score > 0:
    return score
  return None


def connect_limbs(peaks: Sequence[np.ndarray], pafs: np.ndarray,
                  threshold: float = PAF_THRESHOLD) -> list[np.ndarray | None]:
  """Steps 2–3: per limb, (n, 3) rows (id a, id b, limb score), or None when a part has no peak."""
  height = pafs.shape[0]
  connections: list[np.ndarray | None] = []
  for (part_a, part_b), (cx, cy) in zip(LIMBS, PAF_CHANNELS):
    cand_a, cand_b = peaks[part_a], peaks[part_b]
    if len(cand_a) == 0 or len(cand_b) == 0:
      connections.append(None)
      continue
    paf_x, paf_y = pafs[..., cx], pafs[..., cy]  # views; `limb_score` converts the 10 samples it reads
    candidates = []
    for i, a in enumerate(cand_a):
      for j, b in enumerate(cand_b):
        score = limb_score(paf_x, paf_y, a[:2], b[:2], height, threshold)
        if score is not None:
          candidates.append((i, j, score))
    candidates.sort(key=lambda c: c[2], reverse=True)  # stable, like the script's sorted(..., reverse=True)
    rows, used_a, used_b = [], set(), set()
    for i, j, score in candidates:
      if i in used_a or j in used_b:
        continue
      rows.append((cand_a[i][3], cand_b[j][3], score))
      used_a.add(i)
      used_b.add(j)
      if len(rows) >= min(len(cand_a), len(cand_b)):
        break
    connections.append(np.asarray(rows, np.float64).reshape(-1, 3))
  return connections


def assemble_people(connections: Sequence[np.ndarray | None], peak_scores: np.ndarray) -> np.ndarray:
  """Step 4: (n_people, 20) rows: peak id per part (−1 if none), then total score, then part count.

  Args:
    connections: `connect_limbs` output.
    peak_scores: (n_peaks,) score of each peak id.
  """
  people: list[np.ndarray] = []
  for k, ((part_a, part_b), limbs) in enumerate(zip(LIMBS, connections)):
    if limbs is None:
      continue
    for id_a, id_b, score in limbs:
      found = [r for r, row in enumerate(people) if row[part_a] == id_a or row[part_b] == id_b][:2]
      if len(found) == 1:
        row = people[found[0]]
        if row[part_b] != id_b:
          row[part_b] = id_b
          row[-1] += 1
          row[-2] += peak_scores[int(id_b)] + score
      elif len(found) == 2:
        first, second = people[found[0]], people[found[1]]
        overlap = np.any((first[:-2] >= 0) & (second[:-2] >= 0))
        if not overlap:
          # Disjoint people joined by this limb: merge (−1 + id + 1 = id fills the first's empty parts).
          first[:-2] += second[:-2] + 1
          first[-2:] += second[-2:]
          first[-2] += score
          del people[found[1]]
        else:
          first[part_b] = id_b
          first[-1] += 1
          first[-2] += peak_scores[int(id_b)] + score
      elif k < NUM_PERSON_LIMBS:
        row = np.full(NUM_PARTS + 2, -1.0)
        row[part_a], row[part_b] = id_a, id_b
        row[-1] = 2
        row[-2] = peak_scores[int(id_a)] + peak_scores[int(id_b)] + score
        people.append(row)
  return np.asarray(people, np.float64).reshape(-1, NUM_PARTS + 2)


def decode_keypoints(heatmaps: np.ndarray, pafs: np.ndarray, peak_threshold: float = PEAK_THRESHOLD,
                     paf_threshold: float = PAF_THRESHOLD) -> np.ndarray:
  """The PCKh script's keypoints of the single best person in one image (module docstring).

  Args:
    heatmaps: (H, W, 19) (or (H, W, 18)) multi-scale heatmaps at image resolution.
    pafs: (H, W, 38) multi-scale PAFs at image resolution (summed over scales, as the script has them).
    peak_threshold, paf_threshold: 0.1 and 0.05 in the script.

  Returns:
    (18, 2) int64 (x, y) pixel coordinates in the OpenPose COCO-18 order, −1 for missing parts.
  """
  heatmaps, pafs = np.asarray(heatmaps), np.asarray(pafs)
  if heatmaps.ndim != 3 or heatmaps.shape[-1] < NUM_PARTS or pafs.shape != heatmaps.shape[:2] + (NUM_PAFS,):
    raise ValueError(f"decode_keypoints: expected heatmaps (H, W, {NUM_HEATMAPS}) and pafs (H, W, {NUM_PAFS}), "
                     f"got {heatmaps.shape} and {pafs.shape}")
  peaks = find_peaks(heatmaps, peak_threshold)
  all_peaks = np.concatenate(peaks, axis=0)
  people = assemble_people(connect_limbs(peaks, pafs, paf_threshold), all_peaks[:, 2])
  keep = (people[:, -1] >= MIN_PARTS) & (people[:, -2] / np.maximum(people[:, -1], 1) >= MIN_MEAN_SCORE)
  people = people[keep]
  keypoints = np.full((NUM_PARTS, 2), MISSING, np.int64)
  if len(people) == 0:
    return keypoints
  best = people[int(np.argmax(people[:, -2]))]
  for part, peak_id in enumerate(best[:NUM_PARTS]):
    if peak_id >= 0:
      keypoints[part] = all_peaks[int(peak_id), :2].astype(np.int64)
  return keypoints


def keypoints_from_maps(heatmaps: Any, pafs: Any, **kwargs: Any) -> np.ndarray:
  """`decode_keypoints` over a batch: (B, H, W, 19), (B, H, W, 38) -> (B, 18, 2) int64 (x, y), −1 missing."""
  heatmaps, pafs = np.asarray(heatmaps), np.asarray(pafs)
  if heatmaps.ndim != 4 or len(heatmaps) != len(pafs):
    raise ValueError(f"keypoints_from_maps: expected (B, H, W, C) maps, got {heatmaps.shape} and {pafs.shape}")
  out = np.full((len(heatmaps), NUM_PARTS, 2), MISSING, np.int64)
  for b, (h, p) in enumerate(zip(heatmaps, pafs)):
    out[b] = decode_keypoints(h, p, **kwargs)
  return out


def estimate_keypoints(images_uint8_rgb: Any, variables: Mapping[str, Any] | None = None, *,
                       pose_fn: Callable[[Any], tuple[Any, Any]] | None = None, **pose_kwargs: Any) -> np.ndarray:
  """The PCKh script end to end: RGB images -> keypoints of the best person in each.

  Args:
    images_uint8_rgb: (B, H, W, 3) RGB values in [0, 255] (uint8, as the script reads image files).
    variables: `OpenPoseCOCO` variables; a jitted pose function is built from them (and `pose_kwargs`,
      see `spg_jax.metrics.pose_estimator.make_pose_fn`) on every call, so pass `pose_fn` for repeated use.
    pose_fn: instead of `variables`, a function from `make_pose_fn(variables, uint8_input=True)`.

  Returns:
    (B, 18, 2) int64 (x, y), −1 for missing parts.
  """
  from spg_jax.metrics.pose_estimator import make_pose_fn  # pylint: disable=import-outside-toplevel

  if (variables is None) == (pose_fn is None):
    raise ValueError("estimate_keypoints: pass exactly one of variables and pose_fn")
  if pose_fn is None:
    pose_fn = make_pose_fn(variables, uint8_input=True, **pose_kwargs)
  heatmaps, pafs = pose_fn(np.asarray(images_uint8_rgb))
  return keypoints_from_maps(heatmaps, pafs)


def pckh(pred_keypoints: Any, target_keypoints: Any, alpha: float = PCKH_ALPHA) -> dict[str, int]:
  """PCKh counts of a batch, by the rules of calPCKH_*.py (module docstring).

  Args:
    pred_keypoints: (B, 18, 2) (x, y) detected on the generated images, −1 = missing.
    target_keypoints: (B, 18, 2) (x, y) of the targets (the annotation CSV), −1 = missing.
    alpha: 0.5 in the scripts.

  Returns:
    {'correct', 'total', 'images_used', 'images_skipped'} as ints; sum them over batches and report
    `pckh_score`.
  """
  pred = np.asarray(pred_keypoints, np.float64)
  target = np.asarray(target_keypoints, np.float64)
  if pred.shape != target.shape or pred.ndim != 3 or pred.shape[1:] != (NUM_PARTS, 2):
    raise ValueError(f"pckh: expected two (B, {NUM_PARTS}, 2) arrays, got {pred.shape} and {target.shape}")
  tx, ty = target[..., 0], target[..., 1]
  px, py = pred[..., 0], pred[..., 1]
  target_present = (tx != MISSING) & (ty != MISSING)
  head = target_present[:, HEAD_PARTS]
  used = head.sum(axis=1) >= 2
  hx, hy = tx[:, HEAD_PARTS], ty[:, HEAD_PARTS]
  width = np.where(head, hx, -np.inf).max(axis=1) - np.where(head, hx, np.inf).min(axis=1)
  height = np.where(head, hy, -np.inf).max(axis=1) - np.where(head, hy, np.inf).min(axis=1)
  with np.errstate(invalid="ignore"):  # ±inf − ∓inf of skipped images; masked out by `used`
    right = (target_present & (px != MISSING) & (py != MISSING)
             & (np.abs(px - tx) < alpha * width[:, None]) & (np.abs(py - ty) < alpha * height[:, None]))
  return {
      "correct": int(right[used].sum()),
      "total": int((ty != MISSING)[used].sum()),
      "images_used": int(used.sum()),
      "images_skipped": int((~used).sum()),
  }


def pckh_score(counts: Mapping[str, int]) -> float:
  """correct / total of (summed) `pckh` counts; NaN when no joint was counted."""
  return counts["correct"] / counts["total"] if counts["total"] else float("nan")
