"""Brute-force NumPy references for the pose maps, shared by the JAX and the TensorFlow tests.

Both references work pixel by pixel in float64, independently of any vectorised formulation:
  * `brute_keypoint_maps` evaluates the disc test or the Gaussian at every pixel (X, Y) with a
    Python loop;
  * `brute_limb_distances` approximates the distance from every pixel to every limb segment by the
    minimum over `num_samples` evenly spaced points of the segment. That sampled minimum is never
    below the true distance and exceeds it by at most half the sample spacing,
    L / (2 (num_samples − 1)) for a segment of length L; the callers turn this into their bounds.
`random_keypoints` draws the keypoint sets both test modules use, with the tricky cases planted.
"""

from __future__ import annotations

import numpy as np

from spg_jax.ops.pose_maps import LIMBS, NUM_LIMBS, NUM_KEYPOINTS


def random_keypoints(rng: np.random.Generator, batch: int, height: int, width: int) -> np.ndarray:
  """(B, 18, 2) float32 keypoints (B ≥ 2): mostly inside, some outside the frame, some missing.

  Planted cases: example 0 misses the nose, the R-elbow (limbs 1, 2 vanish) and the L-knee through y
  only (limbs 10, 11 vanish); example 1 misses the R-hip through x only (limbs 6, 7 vanish), has the
  R-knee present but outside the frame and the L-shoulder on the neck (degenerate limb 3).
  """
  kp = np.stack([rng.uniform(-4, width + 4, (batch, NUM_KEYPOINTS)),
                 rng.uniform(-4, height + 4, (batch, NUM_KEYPOINTS))], axis=-1)
  kp = np.abs(kp)  # keep coordinates ≥ 0 (some still beyond W / H: outside but present)
  kp[0, 3] = (-1, -1)                     # R-elbow missing: limbs 1 and 2 vanish
  kp[0, 12] = (7.0, -1)                   # L-knee missing through y only: limbs 10 and 11 vanish
  kp[1, 8] = (-3.5, 4.0)                  # R-hip missing through x only (any negative coordinate)
  kp[1, 9] = (width + 10.0, height + 3)   # R-knee outside the image, still present
  kp[1, 5] = kp[1, 1]                     # L-shoulder on the neck: degenerate limb 3
  kp[0, 0] = (-1, -1)                     # the nose belongs to no limb
  return kp.astype(np.float32)


def brute_keypoint_maps(kp: np.ndarray, height: int, width: int, mode: str, radius: float) -> np.ndarray:
  """Per-pixel loop version of `keypoint_maps`.

  Args:
    kp: (B, K, 2) (x, y) keypoints; a negative coordinate marks a missing joint.
    height, width: output size.
    mode: 'binary' (1 where the squared distance is ≤ radius²) or 'gaussian' (exp(−d² / radius²)).
    radius: disc radius / Gaussian width in pixels.

  Returns:
    (B, H, W, K) float64 maps, zero channels for missing joints.
  """
  out = np.zeros((kp.shape[0], height, width, kp.shape[1]), np.float64)
  for b in range(kp.shape[0]):
    for k in range(kp.shape[1]):
      x, y = float(kp[b, k, 0]), float(kp[b, k, 1])
      if x < 0 or y < 0:
        continue
      for row in range(height):
        for col in range(width):
          d2 = (col - x) ** 2 + (row - y) ** 2
          out[b, row, col, k] = float(d2 <= radius ** 2) if mode == "binary" else np.exp(-d2 / radius ** 2)
  return out


def brute_limb_distances(kp: np.ndarray, height: int, width: int,
                         num_samples: int) -> tuple[np.ndarray, np.ndarray]:
  """Sampled pixel-to-limb distances.

  Args:
    kp: (B, 18, 2) (x, y) keypoints; a negative coordinate marks a missing joint.
    height, width: output size.
    num_samples: points per segment (the sampling error is at most L / (2 (num_samples − 1))).

  Returns:
    (distances (B, H, W, 12) float64, +inf for a limb with a missing endpoint;
     segment lengths (B, 12) float64, 0 for missing limbs).
  """
  t = np.linspace(0.0, 1.0, num_samples)
  dist = np.full((kp.shape[0], height, width, NUM_LIMBS), np.inf)
  lengths = np.zeros((kp.shape[0], NUM_LIMBS))
  for b in range(kp.shape[0]):
    for m, (i, j) in enumerate(LIMBS):
      a, e = kp[b, i].astype(np.float64), kp[b, j].astype(np.float64)
      if min(a.min(), e.min()) < 0:
        continue
      lengths[b, m] = np.linalg.norm(e - a)
      points = a[None] + t[:, None] * (e - a)[None]  # (N, 2) points on the segment
      for row in range(height):
        for col in range(width):
          dist[b, row, col, m] = np.sqrt(((points[:, 0] - col) ** 2 + (points[:, 1] - row) ** 2).min())
  return dist, lengths
