"""Fréchet Inception Distance from feature statistics, as pytorch-fid computes it, plus a statistics cache.

FID = |mu1 - mu2|² + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 · sigma2)), in float64 NumPy with
`scipy.linalg.sqrtm`. Features come from `spg_jax.metrics.inception` (either protocol; never mix
statistics of the two). All functions here run on the host.

The real-image statistics are expensive (the SPGNet protocol uses the whole DeepFashion training set)
and the official scripts cache them as `statistics.npz` inside the image folder, reusing a stale file
silently. `cached_statistics` instead names the cache file
by a hash of everything that determines the statistics and checks the stored key on every read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import tempfile
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from scipy import linalg

from spg_jax.weights import file_sha256

LEGACY_BATCH_SIZE = 64  # SPGNet/GFLA scripts: n_batches = N // 64, the remainder never enters the statistics
DEFAULT_EPS = 1e-6
CACHE_FORMAT = 1  # bump when the cache file layout changes; part of the hashed key


def _as_features(features: Any) -> np.ndarray:
  x = np.asarray(features, dtype=np.float64)
  if x.ndim != 2:
    raise ValueError(f"expected (N, D) features, got shape {x.shape}")
  return x


def apply_drop_remainder(features: Any, drop_remainder_batch: int | None) -> np.ndarray:
  """The rows that enter the statistics: all of them, or the first N // b * b for the legacy behaviour.

  Args:
    features: (N, D).
    drop_remainder_batch: None (keep all N rows, the default and the recommended protocol) or a batch
      size b; then only the first ⌊N / b⌋ · b rows are kept, as the official scripts' `N // 64`
      batches do (8,512 of 8,570 DeepFashion test images with b = 64). Which rows are last depends on
      the order the caller lists the images in (the legacy scripts used directory order).

  Returns:
    (N', D) float64.
  """
  x = _as_features(features)
  if drop_remainder_batch is None:
    return x
  b = int(drop_remainder_batch)
  if b < 1:
    raise ValueError(f"drop_remainder_batch must be a positive batch size, got {drop_remainder_batch}")
  keep = x.shape[0] // b * b
  if keep == 0:
    raise ValueError(f"{x.shape[0]} feature rows are fewer than one batch of {b}; nothing would remain")
  return x[:keep]


def statistics(features: Any, drop_remainder_batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of feature rows, in float64 as pytorch-fid.

  Args:
    features: (N, D) features (any float dtype), N >= 2.
    drop_remainder_batch: see `apply_drop_remainder`; None (default) uses every row.

  Returns:
    mu (D,) float64 and sigma (D, D) float64, `np.cov(rowvar=False)` (divisor N - 1).
  """
  x = apply_drop_remainder(features, drop_remainder_batch)
  if x.shape[0] < 2:
    raise ValueError(f"need at least 2 feature rows for a covariance, got {x.shape[0]}")
  return np.mean(x, axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = DEFAULT_EPS) -> float:
  """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2), pytorch-fid's algorithm.

  sqrtm(sigma1 · sigma2) by `scipy.linalg.sqrtm`; if that is not finite (a singular product, e.g.
  from fewer samples than dimensions), it is recomputed on (sigma1 + eps·I)(sigma2 + eps·I). A complex
  result (round-off) keeps its real part, unless an imaginary diagonal entry exceeds 1e-3.

  Args:
    mu1, mu2: (D,) means.
    sigma1, sigma2: (D, D) covariances.
    eps: diagonal offset of the fallback.

  Returns:
    The distance as a Python float (float64 arithmetic).

  Raises:
    ValueError: on mismatched shapes, or a significant imaginary component.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape:
    raise ValueError(f"mean vectors have different shapes: {mu1.shape} vs {mu2.shape}")
  if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
    raise ValueError(f"covariances {sigma1.shape}, {sigma2.shape} do not fit means of shape {mu1.shape}")
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    logging.warning("fid: sqrtm(sigma1 · sigma2) is not finite (singular product); adding %g to the diagonals", eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"sqrtm has a significant imaginary component: max |Im| = {np.max(np.abs(covmean.imag)):.3g}")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(features1: Any, features2: Any, drop_remainder_batch: int | None = None) -> float:
  """FID of two (N_i, D) feature sets; `drop_remainder_batch` applies to both, as in the legacy scripts."""
  return frechet_distance(*statistics(features1, drop_remainder_batch), *statistics(features2, drop_remainder_batch))


# ---------------------------------------------------------------------------------------------------
# Statistics cache.


def files_digest(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
  """Hex SHA-256 over (name, content SHA-256) of each file, in sorted name order.

  A content hash of an image set for the cache key: it changes when a file is added, removed,
  renamed or re-encoded (e.g. a JPEG re-saved at another quality), and not when files are touched.
  Names are relative to `root` when given, so a moved dataset keeps its key.
  """
  entries = []
  for p in paths:
    name = os.path.relpath(p, root) if root is not None else os.fspath(p)
    entries.append((pathlib.PurePath(name).as_posix(), file_sha256(p)))
  digest = hashlib.sha256()
  for name, content in sorted(entries):
    digest.update(f"{name}\0{content}\n".encode())
  return digest.hexdigest()


def _json_default(value: Any) -> Any:
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  if isinstance(value, (set, frozenset)):
    raise TypeError("sets have no canonical order; pass a sorted list")
  raise TypeError(f"cache key material of type {type(value).__name__} is not JSON-serialisable")


def canonical_key(key_material: Mapping[str, Any]) -> str:
  """Canonical JSON of the key material: sorted keys, no whitespace, ASCII only."""
  if not isinstance(key_material, Mapping):
    raise TypeError(f"key_material must be a mapping, got {type(key_material).__name__}")
  material = {"cache_format": CACHE_FORMAT, **dict(key_material)}
  return json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                    allow_nan=False, default=_json_default)


def cache_path(cache_dir: str | os.PathLike, key_material: Mapping[str, Any]) -> pathlib.Path:
  """`<cache_dir>/fid_stats_<sha256 of canonical_key(key_material)>.npz`."""
  digest = hashlib.sha256(canonical_key(key_material).encode("ascii")).hexdigest()
  return pathlib.Path(cache_dir) / f"fid_stats_{digest}.npz"


def _read_cache(path: pathlib.Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
  try:
    with np.load(path, allow_pickle=False) as data:
      if str(data["key"]) != key:  # a hash collision or a hand-copied file: never trust the name alone
        logging.warning("fid: %s holds statistics for another key; recomputing", path)
        return None
      return np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
  except (OSError, KeyError, ValueError) as e:
    logging.warning("fid: unreadable statistics cache %s (%s); recomputing", path, e)
    return None


def cached_statistics(
    cache_dir: str | os.PathLike,
    key_material: Mapping[str, Any],
    compute_fn: Callable[[], tuple[Any, Any]],
) -> tuple[np.ndarray, np.ndarray]:
  """Statistics from the cache when `key_material` matches exactly, else from `compute_fn` (then stored).

  Put into `key_material` everything the statistics depend on, e.g. {'protocol': 'torchvision',
  'weights_sha256': file_sha256(weights), 'images': files_digest(paths, root), 'num_images': N,
  'image_size': [256, 176], 'preprocessing': 'cv2 crop + JPEG q75', 'drop_remainder_batch': None}.
  The file name is the SHA-256 of the canonical JSON of that dict, and the JSON itself is stored and
  compared on every read, so a changed key recomputes instead of silently reusing stale statistics.
  Writes go to a temporary file in `cache_dir` that is renamed into place, so concurrent or killed
  runs never leave a truncated cache file.

  Args:
    cache_dir: directory of the cache files (created if needed).
    key_material: JSON-serialisable mapping (numpy scalars / arrays and paths are converted).
    compute_fn: () -> (mu (D,), sigma (D, D)), called only on a cache miss.

  Returns:
    (mu, sigma) as float64 arrays.
  """
  key = canonical_key(key_material)
  path = cache_path(cache_dir, key_material)
  if path.exists():
    hit = _read_cache(path, key)
    if hit is not None:
      return hit
  mu, sigma = compute_fn()
  mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0],) * 2:
    raise ValueError(f"compute_fn returned mu {mu.shape} and sigma {sigma.shape}; expected (D,) and (D, D)")
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, mu=mu, sigma=sigma, key=np.array(key))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return mu, sigma
