"""Test-set evaluation of a trained checkpoint: every pair generated, PNGs, and the results table.

`launch.py --mode eval --config C --workdir W` restores the latest checkpoint in W and writes
<W>/eval_<step>/:
  images/<pair index>.png   every generated test image (pair i of the split's pair list, i.e. of
                            the authors' `split.json`), centre-cropped to `eval.crop_width` when set
                            (DeepFashion: the official 176 × 256 crop of the 256 × 256 output)
  contact_sheet.png         the first `eval.num_sample_pairs` pairs: source | target pose | predicted
                            parsing | generated | ground truth
  results.json, results.md  every metric with its protocol and variant, the number of pairs, and
                            the paper's figure beside it
  pckh_keypoints.csv        with PCKh: the keypoints detected on each generated image

Inference is what users run: stage 1's arg-max parsing feeds stage 2 (`StepFunctions.predict`).
Every pair counts (no "drop the last N mod 64", unless `eval.fid_drop_remainder` asks for it in FID).
SSIM, L1 and PSNR are computed on the uint8 images (the official float → uint8 truncation) at the
network's resolution, as the official test script does. On the saved (uint8, cropped) images:
  * LPIPS, when `eval.lpips_weights` names a converted AlexNet-LPIPS file;
  * FID in each protocol whose Inception weights are set: `eval.fid_legacy_weights` (torchvision
    Inception, the legacy protocol behind SPGNet's published FID) and `eval.fid_weights` (pytorch-fid
    weights, standard FID). Generated features are computed batch by batch on the device while the
    pairs are generated. The real set follows the official protocol (generated test images against
    real TRAINING images): the prepared datasets hold pairs rather than the image folder, so it is
    every distinct image (by content) of the training split's pairs, once, in pair order (source,
    then target), cropped like the generated ones. Its statistics take a long pass on real data
    (tens of thousands of images, logged as it goes), so they are cached in `eval.fid_cache_dir`
    (default `$XDG_CACHE_HOME/spg_jax/fid_stats`, i.e. ~/.cache/spg_jax/fid_stats), keyed by the
    protocol, the weights file's SHA-256, the data (`real_set_identity`), the crop, the image size
    and the remainder rule; a changed key recomputes.
Market-1501's mask-SSIM (`eval.mask_ssim`) multiplies both uint8 images by PATN's person mask drawn
from the target keypoints (`spg_jax.metrics.pose_mask`) before PATN's SSIM.
PCKh (`eval.pckh_weights`, a converted OpenPose COCO file) follows the PCKh scripts of PATN / SPGNet
(`spg_jax.metrics.pckh`): the pose estimator runs, with the scripts' multi-scale inference
(`eval.pckh_scale_search`), on every generated image at the network's resolution, uncropped (SPGNet
runs it on its 256 × 256 outputs), as the uint8 values the PNG holds before any crop; the single best
person's keypoints are scored against the pair's target keypoints (the annotation the data gives,
a joint with a negative coordinate missing) by the per-axis head-box rule, summed over the whole set.
The network runs batch by batch on the device; its maps are decoded on the host by a thread pool,
which also encodes the PNGs, while the device generates the next batch. The detected keypoints go to
pckh_keypoints.csv in the PATN annotation format that the scripts exchange (`name:keypoints_y:
keypoints_x`, −1 = missing). Metrics not computed (those not configured) are listed in the table with
the reason.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
import time
from concurrent import futures
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from spg_jax import jax_setup, sharding, visualize
from spg_jax.metrics import fid, inception, lpips, pose_estimator, pose_mask, segmentation, ssim
from spg_jax.metrics import pckh as pckh_lib
from spg_jax.metrics import image as image_metrics
from spg_jax.train_step import NUM_CLASSES, StepFunctions, TrainState, Frozen, parsing_labels
from spg_jax.weights import file_sha256

# SPGNet (CVPR 2021) Table 1, S1∥S2, DeepFashion 256 × 176; stage-1 mIoU from the supplementary.
PAPER = {"deepfashion": {"ssim_official": 0.782, "fid_legacy": 12.243, "lpips": 0.2105, "pckh": 0.97,
                         "miou": 0.539}}

# metric key → (name in the table, protocol / variant, higher is better).
METRICS = {
    "ssim_official": ("SSIM", "official test script: scikit-image defaults (7×7 uniform window, "
                      "sample covariance), uint8 images, network resolution", True),
    "ssim_patn": ("SSIM (PATN)", "Gaussian σ = 1.5, population covariance, data range of the "
                  "generated image", True),
    "ssim_gfla": ("SSIM (GFLA)", "51×51 uniform window on [0, 1] images", True),
    "ssim_mask": ("mask-SSIM", "Market-1501: both uint8 images times PATN's person mask from the target "
                  "keypoints (limb rectangles and joint discs of radius 4, 5×5 closing), then SSIM (PATN)",
                  True),
    "l1": ("L1", "mean absolute difference on [−1, 1] images", False),
    "psnr": ("PSNR (dB)", "on 0..255 uint8 values", True),
    "miou": ("stage-1 mIoU", "20 CIHP classes, over classes present in truth or prediction", True),
    "fid_legacy": ("FID (legacy)", "torchvision Inception-v3 and the pre-2019 pytorch-fid preprocessing, "
                   "the protocol of SPGNet's published FID; saved test images against the training split's", False),
    "fid": ("FID (standard)", "pytorch-fid (TF-ported) Inception weights; saved test images against the "
            "training split's", False),
    "lpips": ("LPIPS", "AlexNet, v0.1 heads, on the saved (uint8, cropped) images", False),
    "pckh": ("PCKh", "OpenPose COCO estimator (the PCKh scripts' multi-scale inference) on the uncropped "
             "uint8 generated images against the target keypoints; per-axis head-box rule, α = 0.5", True),
}
GFLA_WINDOW = 51  # the GFLA SSIM window: smaller images have no valid SSIM region
NOT_COMPUTED = {
    "ssim_gfla": f"not computed: the images are smaller than GFLA's {GFLA_WINDOW}×{GFLA_WINDOW} window",
    "ssim_mask": "not computed: set config.eval.mask_ssim=True (the Market-1501 protocol; needs OpenPose-18 "
                 "target keypoints)",
    "fid_legacy": "not computed: set config.eval.fid_legacy_weights (python -m spg_jax.convert inception "
                  "--variant torchvision ...)",
    "fid": "not computed: set config.eval.fid_weights (python -m spg_jax.convert inception --variant "
           "pytorch_fid ...)",
    "lpips": "not computed: set config.eval.lpips_weights (python -m spg_jax.convert lpips ...)",
    "pckh": "not computed: set config.eval.pckh_weights (python -m spg_jax.convert pose_estimator --input "
            "pose_estimator.h5 --output ...)",
}
PCKH_COUNTS = ("correct", "total", "images_used", "images_skipped")
# FID metric key → (Inception variant, the config.eval key of its weights file).
FID_PROTOCOLS = {"fid_legacy": ("torchvision", "fid_legacy_weights"), "fid": ("pytorch_fid", "fid_weights")}
REAL_SET_SELECTION = ("each distinct image (by content) of the split's pairs once, in pair order, source "
                      "then target")


def crop_width(images: np.ndarray, width: int | None) -> np.ndarray:
  """Centre crop (…, H, W, C) to `width` columns (DeepFashion: 256 → 176 drops 40 on each side)."""
  if width is None or width >= images.shape[-2]:
    return images
  left = (images.shape[-2] - width) // 2
  return images[..., left:left + width, :]


def make_test_step(fn: StepFunctions, crop: int | None):
  """(state, frozen, batch) → per-pair metrics (B,), generated images, labels, the confusion, and
  the batch's pair indices and validity.

  generated: (B, H, W, 3) in [-1, 1]; saved_uint8: (B, H, W', 3) uint8, the official uint8
  conversion of it centre-cropped to `crop` (W' = min(W, crop)): the saved PNGs' values.
  `lpips_variables` None: no LPIPS; else LPIPS of the `crop`-wide centre crops. A batch with a
  `target_mask` ((B, H, W) bool, `pose_mask.person_masks` of the target keypoints) also gets
  mask-SSIM.
  """

  def test_step(state: TrainState, frozen: Frozen, batch: dict, lpips_variables) -> dict[str, jax.Array]:
    out = fn.predict(state, frozen, batch)
    generated, target = out["generated"], batch["target_image"]
    gen_u8 = image_metrics.to_uint8_values(generated)
    tgt_u8 = image_metrics.to_uint8_values(target)
    truth = jnp.where(batch["valid"][:, None, None], parsing_labels(batch["target_parsing"]), -1)
    extra = {}
    if min(generated.shape[1:3]) >= GFLA_WINDOW:
      extra["ssim_gfla"] = ssim.ssim_gfla(generated, target, quantize=True)
    if lpips_variables is not None:
      # On the saved images (uint8 values, cropped), as the official script reads them back.
      to_unit = lambda u8: crop_width(u8, crop) / 127.5 - 1
      extra["lpips"] = lpips.lpips_distance(lpips_variables, to_unit(gen_u8), to_unit(tgt_u8))
    if "target_mask" in batch:
      extra["ssim_mask"] = ssim.masked_ssim(generated, target, batch["target_mask"], quantize=True)
    return dict(
        **extra,
        ssim_official=ssim.ssim_spgnet(generated, target, quantize=True),
        ssim_patn=ssim.ssim_patn(generated, target, quantize=True),
        l1=image_metrics.l1_distance(gen_u8 / 127.5 - 1, tgt_u8 / 127.5 - 1),
        psnr=image_metrics.psnr(gen_u8, tgt_u8, 255.0),
        confusion=segmentation.confusion_matrix(out["parsing"], truth, NUM_CLASSES),
        generated=generated, saved_uint8=crop_width(gen_u8, crop).astype(jnp.uint8), parsing=out["parsing"],
        index=batch["index"], valid=batch["valid"])

  return test_step


# ---------------------------------------------------------------------------------------------
# FID: the Inception models, the real set and its cached statistics.


@dataclasses.dataclass(frozen=True)
class FidModel:
  """One configured FID protocol.

  Attributes:
    metric: 'fid_legacy' or 'fid' (the results key).
    variant: its Inception variant, 'torchvision' or 'pytorch_fid'.
    weights: the converted weights file (`python -m spg_jax.convert inception`).
    variables: the Inception variables, replicated on the mesh.
  """
  metric: str
  variant: str
  weights: str
  variables: Any


def load_fid_models(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> list[FidModel]:
  """The FID protocols whose weights `config.eval` names (none, one or both), weights on the mesh."""
  models = []
  for metric, (variant, key) in FID_PROTOCOLS.items():
    path = config.eval.get(key)
    if path:
      variables = inception.load_inception_weights(path, variant)  # clear errors for a wrong file
      models.append(FidModel(metric, variant, os.fspath(path),
                             jax.device_put(variables, sharding.replicated(mesh))))
  return models


@functools.lru_cache(maxsize=None)
def fid_feature_function(variant: str, mesh: jax.sharding.Mesh) -> Callable[[Any, Any], jax.Array]:
  """The jitted (variables, images) → (B, 2048) float32 Inception pool features of `variant`'s protocol.

  images: (B, H, W, 3) uint8, e.g. the saved images, read as the official scripts read the files
  (here via [-1, 1], which `inception.preprocess` maps to [0, 1]). Both arguments and the result are
  replicated on `mesh`; the batch is split over its devices inside (B must divide evenly). One
  function per (variant, mesh), so that the generated and the real images, and repeated evaluations
  in one process, share one compiled program per image shape.
  """
  model = inception.InceptionV3Features(variant=variant)
  batch_sharding = sharding.batch_sharding(mesh)

  def features(variables, images):
    images = jax.lax.with_sharding_constraint(images, batch_sharding)
    return model.apply(variables, inception.preprocess(images.astype(jnp.float32) / 127.5 - 1.0, variant))

  replicated = sharding.replicated(mesh)
  return jax.jit(features, in_shardings=(replicated, replicated), out_shardings=replicated)


def default_fid_cache_dir() -> str:
  """`$XDG_CACHE_HOME/spg_jax/fid_stats` (~/.cache/spg_jax/fid_stats): shared by all workdirs, since
  the real-set statistics depend on the data and the weights only, never on the model."""
  return jax_setup.user_cache_dir("fid_stats")


def _tfds_name(config: ml_collections.ConfigDict) -> str:
  # The dataset `train._tfds_source` reads for this config.
  names = {"deepfashion": "spg_deepfashion", "market1501": "spg_market1501"}
  return names[config.data.name] + (f"/{config.data.tfds_config}" if config.data.tfds_config else "")


def _pair_images(source, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(source images, target images) of every pair of `source` in order, each (n, H, W, 3) uint8."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def images(index):
    pair = source.fetch(index)  # unused features (parsings, flows) are pruned from the graph
    return pair["source_image"], pair["target_image"]

  ds = tf.data.Dataset.range(source.num_pairs).map(images, num_parallel_calls=tf.data.AUTOTUNE,
                                                   deterministic=True)
  yield from ds.batch(batch_size).prefetch(2).as_numpy_iterator()


def real_set_identity(config: ml_collections.ConfigDict, source) -> dict[str, Any]:
  """What identifies the real image set (the training split `source` of `config`) in the cache key.

  Prepared TFDS datasets: the full name with version, the split, its number of pairs, and the
  split's byte count and shard lengths from the dataset's metadata (a re-preparation from other
  files changes them; moving the data directory does not). Synthetic persons: the seed, the number
  of pairs, the size, and a SHA-256 of every image (rendering is cheap; a change of the renderer
  changes it).
  """
  d = config.data
  if d.name == "synthetic":
    digest = hashlib.sha256()
    for src, tgt in _pair_images(source):
      for i in range(len(src)):
        digest.update(src[i].tobytes())
        digest.update(tgt[i].tobytes())
    return dict(data="synthetic", seed=int(d.synthetic.train_seed), num_pairs=int(source.num_pairs),
                image_size=list(source.image_size), images_sha256=digest.hexdigest())
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from input_pipeline import datasets  # pylint: disable=g-import-not-at-top,unused-import  (registers)

  builder = tfds.builder(_tfds_name(config), data_dir=d.data_dir)
  split = builder.info.splits[str(d.train_split).split("[")[0]]
  return dict(data=builder.info.full_name, split=str(d.train_split), num_pairs=int(source.num_pairs),
              split_num_bytes=int(split.num_bytes), shard_lengths=[int(n) for n in split.shard_lengths])


def real_set_key(config: ml_collections.ConfigDict, source, variant: str, weights: str,
                 identity: dict[str, Any] | None = None) -> dict[str, Any]:
  """The cache key material of the real-set statistics (`fid.cached_statistics`).

  Args:
    config: the evaluation config (crop, remainder rule, data).
    source: the training split's `PairSource`.
    variant: the Inception variant (protocol).
    weights: its weights file; the key holds the file's SHA-256, not its name.
    identity: `real_set_identity(config, source)`, when already computed.
  """
  height, width = source.image_size
  crop = config.eval.crop_width
  drop = config.eval.get("fid_drop_remainder")
  return dict(protocol=variant, weights_sha256=file_sha256(weights),
              real_set=identity if identity is not None else real_set_identity(config, source),
              selection=REAL_SET_SELECTION, crop_width=crop,
              image_size=[int(height), int(width if crop is None else min(crop, width))],
              network_input=inception.INPUT_SIZE,
              drop_remainder_batch=None if drop is None else int(drop))


@dataclasses.dataclass(frozen=True)
class RealStatistics:
  """Real-set statistics of one protocol.

  Attributes:
    mu, sigma: (2048,) and (2048, 2048) float64; None on processes other than 0.
    num_images: the number of images they summarise (before any remainder drop); None if the cache
      file came without its description.
    cache_file: where they are cached.
    reused: read from the cache rather than computed.
  """
  mu: np.ndarray
  sigma: np.ndarray
  num_images: int | None
  cache_file: str
  reused: bool


class _CacheMiss(Exception):
  pass


def _read_cache(cache_dir: str, key: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
  """The cached (mu, sigma) of `key`, or None."""

  def miss():
    raise _CacheMiss

  try:
    # Reading through `cached_statistics` keeps its checks (stored key compared, unreadable files
    # ignored); the raising compute function turns a miss into None instead of a computation.
    return fid.cached_statistics(cache_dir, key, miss)
  except _CacheMiss:
    return None


def _real_features(source, crop: int | None, batch_size: int, models: list[FidModel],
                   mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  """Features of the real set (`REAL_SET_SELECTION`) for each model, in one pass over the data.

  Every process reads every pair (the set of distinct images must be the same everywhere) and feeds
  the same replicated batches of `batch_size` (the global evaluation batch, whose program the
  generated images compile anyway); the features come back replicated. Returns
  {metric: (N, 2048) float32} in image order.
  """
  fns = {m.metric: fid_feature_function(m.variant, mesh) for m in models}
  replicated = sharding.replicated(mesh)
  features: dict[str, list[np.ndarray]] = {m.metric: [] for m in models}
  seen: set[bytes] = set()
  pending: list[np.ndarray] = []
  pairs = 0
  start = last_log = time.monotonic()

  def flush():
    n = len(pending)
    batch = np.stack(pending + [np.zeros_like(pending[0])] * (batch_size - n))
    batch = jax.make_array_from_process_local_data(replicated, batch)
    out = jax.device_get({m.metric: fns[m.metric](m.variables, batch) for m in models})
    for k, v in out.items():
      features[k].append(np.asarray(v)[:n])
    pending.clear()

  for src, tgt in _pair_images(source):
    for i in range(len(src)):
      for image in (src[i], tgt[i]):
        digest = hashlib.blake2b(image.tobytes(), digest_size=16).digest()
        if digest in seen:
          continue
        seen.add(digest)
        pending.append(crop_width(image, crop))
        if len(pending) == batch_size:
          flush()
    pairs += len(src)
    if time.monotonic() - last_log > 30 or pairs == source.num_pairs:
      last_log = time.monotonic()
      logging.info("FID real set: %d / %d pairs read, %d distinct images, %.0f s", pairs, source.num_pairs,
                   len(seen), last_log - start)
  if pending:
    flush()
  return {k: np.concatenate(v) for k, v in features.items()}


def real_set_statistics(config: ml_collections.ConfigDict, source, models: list[FidModel],
                        mesh: jax.sharding.Mesh) -> dict[str, RealStatistics]:
  """Real-set statistics of each FID model: from the cache, or computed (one pass for all) and cached.

  Args:
    config: the evaluation config: `eval.fid_cache_dir` (None = `default_fid_cache_dir()`),
      `eval.fid_drop_remainder`, `eval.crop_width`, `eval.batch_size` and the data.
    source: the training split's `PairSource` (`train.setup_run(...).train_source`).
    models: `load_fid_models(config, mesh)`.
    mesh: the evaluation mesh.

  Returns:
    {metric: RealStatistics}; mu and sigma are None on processes other than 0 (only it writes the
    table and the cache).
  """
  if not models:
    return {}
  cache_dir = config.eval.get("fid_cache_dir") or default_fid_cache_dir()
  drop = config.eval.get("fid_drop_remainder")
  identity = real_set_identity(config, source)
  keys = {m.metric: real_set_key(config, source, m.variant, m.weights, identity) for m in models}
  is_chief = jax.process_index() == 0
  found = {k: _read_cache(cache_dir, key) if is_chief else None for k, key in keys.items()}
  hits = np.array([found[m.metric] is not None for m in models])
  if jax.process_count() > 1:
    # Process 0 decides (its cache may be the only one): a miss is a collective computation.
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    hits = np.asarray(multihost_utils.broadcast_one_to_all(hits))
  out = {}
  for model, hit in zip(models, hits):
    if hit:
      path = fid.cache_path(cache_dir, keys[model.metric])
      mu, sigma = found[model.metric] if is_chief else (None, None)
      num = _read_description(path).get("num_images") if is_chief else None
      logging.info("FID real set (%s): reusing the statistics of %s images in %s", model.variant,
                   num if num is not None else "?", path)
      out[model.metric] = RealStatistics(mu, sigma, num, str(path), reused=True)
  missing = [m for m, hit in zip(models, hits) if not hit]
  if missing:
    logging.info("FID real set: computing the statistics of %s (%s) for %s; cache %s", source.name,
                 REAL_SET_SELECTION, ", ".join(m.variant for m in missing), cache_dir)
    features = _real_features(source, config.eval.crop_width, int(config.eval.batch_size), missing, mesh)
    for model in missing:
      feats = features[model.metric]
      path = fid.cache_path(cache_dir, keys[model.metric])
      mu = sigma = None
      if is_chief:  # the only process that needs them (it writes the table) and writes the cache
        mu, sigma = fid.statistics(feats, drop)
        fid.cached_statistics(cache_dir, keys[model.metric], lambda: (mu, sigma))  # pylint: disable=cell-var-from-loop
        _write_description(path, keys[model.metric], len(feats))
      logging.info("FID real set (%s): %d images; statistics cached in %s", model.variant, len(feats), path)
      out[model.metric] = RealStatistics(mu, sigma, len(feats), str(path), reused=False)
  return out


def _description_path(cache_file) -> str:
  return os.path.splitext(os.fspath(cache_file))[0] + ".json"


def _write_description(cache_file, key: dict[str, Any], num_images: int) -> None:
  # A readable account of a cache file beside it (its key, and the image count for the table).
  with open(_description_path(cache_file), "w") as f:
    json.dump(dict(num_images=int(num_images), key=json.loads(fid.canonical_key(key))), f, indent=2)


def _read_description(cache_file) -> dict[str, Any]:
  try:
    with open(_description_path(cache_file)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _target_keypoints(source) -> np.ndarray:
  """(num_pairs, 18, 2) float32 target keypoints of every pair of `source`, in pair order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  ds = tf.data.Dataset.range(source.num_pairs).map(lambda i: source.fetch(i)["target_keypoints"],
                                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return np.concatenate(list(ds.batch(1024).as_numpy_iterator()))


# ---------------------------------------------------------------------------------------------
# PCKh: the pose estimator on the device, the keypoints decoded on the host.


@dataclasses.dataclass(frozen=True)
class PoseModel:
  """The configured PCKh pose estimator.

  Attributes:
    weights: the converted weights file (`python -m spg_jax.convert pose_estimator`).
    variables: the `OpenPoseCOCO` variables, replicated on the mesh.
    scale_search: the factors x of the multi-scale inference (multipliers x · 368 / H, with the
      scripts' Python 2 arithmetic: see `pose_estimator.scale_multipliers`); the scripts' own are
      `pose_estimator.SCALE_SEARCH`.
  """
  weights: str
  variables: Any
  scale_search: tuple[float, ...] = pose_estimator.SCALE_SEARCH


def pckh_scale_search(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  """`config.eval.pckh_scale_search` (None or absent: the scripts' (0.5, 1, 1.5, 2)), checked."""
  scales = config.eval.get("pckh_scale_search")
  scales = pose_estimator.SCALE_SEARCH if scales is None else tuple(scales)
  if not scales or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x <= 0 for x in scales):
    raise ValueError(f"config.eval.pckh_scale_search must be a non-empty tuple of positive numbers, got {scales!r}")
  return scales


def load_pose_model(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> PoseModel | None:
  """The pose estimator of `config.eval.pckh_weights` with its weights on the mesh; None when unset."""
  path = config.eval.get("pckh_weights")
  if not path:
    return None
  scales = pckh_scale_search(config)
  variables = pose_estimator.load_pose_estimator_weights(path)  # clear errors for a missing or wrong file
  return PoseModel(os.fspath(path), jax.device_put(variables, sharding.replicated(mesh)), scales)


def pose_map_function(scale_search: Sequence[float],
                      mesh: jax.sharding.Mesh) -> Callable[[Any, Any], tuple[jax.Array, jax.Array]]:
  """The jitted (variables, generated) → (heatmaps, PAFs) of the PCKh scripts' multi-scale inference.

  generated: (B, H, W, 3) RGB in [-1, 1], the generator's output. The network sees its official uint8
  conversion (`to_uint8_values`: the values of the saved PNG before any crop) as BGR, at each scale of
  `scale_search` (`pose_estimator.multiscale_maps`). Returns heatmaps (B, H, W, 18) averaged over the
  scales (the 18 parts; the decoder never reads the background channel, so it stays on the device)
  and PAFs (B, H, W, 38) summed over them, as the scripts have them; float32 at image resolution, for
  `pckh.decode_keypoints`. Arguments and results are replicated on `mesh`; the batch is split over
  its devices inside (B must divide evenly). One function per (scales, mesh), so that repeated
  evaluations in one process share its compiled program.
  """
  # Keyed with each entry's type: 1 == 1.0, but the scripts' Python 2 arithmetic floors ⌊368 / H⌋ for
  # the int alone.
  return _pose_map_function(tuple((type(x) is int, x) for x in scale_search), mesh)


@functools.lru_cache(maxsize=None)
def _pose_map_function(key: tuple[tuple[bool, float], ...], mesh: jax.sharding.Mesh):
  scale_search = tuple(int(x) if is_int else float(x) for is_int, x in key)
  model = pose_estimator.OpenPoseCOCO()
  batch_sharding = sharding.batch_sharding(mesh)

  def maps(variables, generated):
    generated = jax.lax.with_sharding_constraint(generated, batch_sharding)
    bgr = image_metrics.to_uint8_values(generated)[..., ::-1]
    heatmaps, pafs = pose_estimator.multiscale_maps(functools.partial(model.apply, variables), bgr, scale_search)
    return heatmaps[..., :pose_estimator.NUM_PARTS], pafs

  replicated = sharding.replicated(mesh)
  return jax.jit(maps, in_shardings=(replicated, replicated), out_shardings=replicated)


def pckh_targets(keypoints: Any) -> np.ndarray:
  """(…, 18, 2) (x, y) keypoints in spg_jax's convention → the PCKh scripts': missing = exactly −1.

  spg_jax (and the official loaders' `kp_to_map`) treat a joint with any negative coordinate as
  missing; the scripts test each coordinate for −1. Such a joint becomes (−1, −1). The prepared
  datasets hold present joints inside the image and missing ones as −1 (as the annotation files do),
  so this only changes a joint marked missing in one coordinate alone, which the scripts would have
  counted in the denominator (its y ≠ −1) but never as correct.
  """
  kp = np.asarray(keypoints, np.float64)
  return np.where((kp < 0).any(axis=-1, keepdims=True), float(pckh_lib.MISSING), kp)


def write_pckh_keypoints(path: str, keypoints: Mapping[int, np.ndarray]) -> None:
  """The detected keypoints as the PATN annotation CSV that the PCKh scripts exchange.

  Header `name:keypoints_y:keypoints_x`, then one row per pair in index order: `<index>.png` (the
  PNG's name), the 18 y, then the 18 x, as JSON lists of ints, −1 for a missing joint.

  Args:
    path: the file to write.
    keypoints: pair index → (18, 2) int (x, y) (`pckh.decode_keypoints`).
  """
  lines = ["name:keypoints_y:keypoints_x"]
  for index in sorted(keypoints):
    kp = np.asarray(keypoints[index], np.int64)
    lines.append(f"{int(index):05d}.png:{json.dumps(kp[:, 1].tolist())}:{json.dumps(kp[:, 0].tolist())}")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# One batch: the device step, and the host side of the loop.


@dataclasses.dataclass(frozen=True)
class MetricModels:
  """The optional metric networks of the test-set evaluation (None / empty: not computed).

  Attributes:
    lpips_variables: AlexNet-LPIPS variables replicated on the mesh, or None.
    fid: the FID protocols (`load_fid_models`).
    pose: the PCKh pose estimator (`load_pose_model`), or None.
  """
  lpips_variables: Any = None
  fid: tuple[FidModel, ...] = ()
  pose: PoseModel | None = None


def load_metric_models(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> MetricModels:
  """The metric networks whose weights `config.eval` names, each loaded once, on the mesh."""
  lpips_variables = None
  if config.eval.get("lpips_weights"):
    lpips_variables = jax.device_put(lpips.load_lpips_weights(config.eval.lpips_weights), sharding.replicated(mesh))
  return MetricModels(lpips_variables, tuple(load_fid_models(config, mesh)), load_pose_model(config, mesh))


def make_batch_step(fn: StepFunctions, crop: int | None, mesh: jax.sharding.Mesh, in_shardings: Sequence[Any],
                    models: MetricModels) -> Callable[[TrainState, Frozen, dict], dict[str, Any]]:
  """Everything the device does for one test batch, as one call.

  Args:
    fn: the run's step functions.
    crop: `eval.crop_width` (None = uncropped).
    mesh: the evaluation mesh.
    in_shardings: the (state, frozen, batch) shardings.
    models: the metric networks (`load_metric_models`).

  Returns:
    step(state, frozen, batch) → `make_test_step`'s outputs, plus `fid/<metric>` (B, 2048) Inception
    features of the saved images per FID protocol, and with a pose estimator `pose_heatmaps`
    (B, H, W, 18) and `pose_pafs` (B, H, W, 38) of the uncropped generated images
    (`pose_map_function`); all replicated device arrays, dispatched and not waited for
    (`BatchCollector.add` waits), so that the next batch can be queued meanwhile.
  """
  replicated = sharding.replicated(mesh)
  test_step = jax.jit(make_test_step(fn, crop), in_shardings=tuple(in_shardings) + (replicated,),
                      out_shardings=replicated)
  fid_fns = {m.metric: fid_feature_function(m.variant, mesh) for m in models.fid}
  pose_fn = None if models.pose is None else pose_map_function(models.pose.scale_search, mesh)

  def step(state: TrainState, frozen: Frozen, batch: dict) -> dict[str, Any]:
    out = dict(test_step(state, frozen, batch, models.lpips_variables))
    # Inception on the saved images, on the device, before anything comes back to the host.
    for m in models.fid:
      out[f"fid/{m.metric}"] = fid_fns[m.metric](m.variables, out["saved_uint8"])
    if pose_fn is not None:
      out["pose_heatmaps"], out["pose_pafs"] = pose_fn(models.pose.variables, out["generated"])
    return out

  return step


@dataclasses.dataclass
class Collected:
  """What `BatchCollector.finish` returns.

  Attributes:
    per_pair: metric → (N,) values of the valid pairs, in the order evaluated.
    confusion: (NUM_CLASSES, NUM_CLASSES) int64 stage-1 confusion matrix.
    fid_features: FID metric → (N, 2048) features of the saved images, in pair order (the PNGs' names).
    pckh: summed `pckh.pckh` counts, or None without PCKh.
    pckh_keypoints: pair index → (18, 2) int64 detected (x, y), −1 missing (empty without PCKh).
    seconds: `BatchCollector.seconds`.
  """
  per_pair: dict[str, np.ndarray]
  confusion: np.ndarray
  fid_features: dict[str, np.ndarray]
  pckh: dict[str, int] | None
  pckh_keypoints: dict[int, np.ndarray]
  seconds: dict[str, float]


class BatchCollector:
  """The host side of the test-set loop: per-pair metrics, the stage-1 confusion, FID features, the
  PNGs and PCKh, from each batch's `make_batch_step` output in turn.

  PNG encoding and keypoint decoding go to a thread pool, so that they overlap the device's next
  batch. zlib releases the GIL, so PNGs encode in parallel; keypoint decoding is mostly Python and
  small NumPy calls that hold it, so decoding threads run about one at a time (kept cheap by
  `pckh.smoothed_box`; BENCHMARKS.md, eval of 8,570 pairs). At most
  `max_pending_batches` batches of that work wait: each holds its pose maps (56 floats a pixel,
  15 MB per 256 × 256 image).

  Attributes:
    seconds: wall seconds in `add` / `finish` waiting for the device ('device'), copying its outputs
      to the host ('transfer') and waiting for queued host work ('host_wait'); and the thread-seconds
      of the pool's tasks: 'png' (encoding and writing) and 'pckh_decode' (`pckh.decode_keypoints`).
  """

  def __init__(self, *, per_pair_keys: Sequence[str], fid_metrics: Sequence[str] = (),
               image_dir: str | None = None, target_keypoints: np.ndarray | None = None,
               workers: int | None = None, max_pending_batches: int = 2):
    """Starts the thread pool.

    Args:
      per_pair_keys: the (B,) per-pair metrics of the outputs to keep (their valid rows).
      fid_metrics: the FID metrics whose features (`fid/<metric>`) to keep.
      image_dir: where to write `<pair index>.png` of each valid row's `saved_uint8`; None = no PNGs
        (processes other than 0).
      target_keypoints: (num_pairs, 18, 2) (x, y) target keypoints of every pair, by pair index
        (negative = missing): PCKh of the outputs' pose maps against them. None = no PCKh (processes
        other than 0, or no pose estimator); the pose maps then stay on the device.
      workers: the pool's threads (default: the CPU count).
      max_pending_batches: batches of host work queued before `add` waits for the oldest.
    """
    self.per_pair = {k: [] for k in per_pair_keys}
    self.fid_features = {k: [] for k in fid_metrics}
    self.index: list[np.ndarray] = []
    self.confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    self.image_dir = image_dir
    self.targets = None if target_keypoints is None else np.asarray(target_keypoints)
    self.pckh = dict.fromkeys(PCKH_COUNTS, 0) if self.targets is not None else None
    self.pckh_keypoints: dict[int, np.ndarray] = {}
    self.max_pending_batches = max_pending_batches
    self.seconds: dict[str, float] = collections.defaultdict(float)
    self._lock = threading.Lock()
    self._pool = futures.ThreadPoolExecutor(workers or os.cpu_count() or 1, thread_name_prefix="eval_host")
    self._pending: collections.deque = collections.deque()

  def _submit(self, part: str, fn: Callable[..., Any], *args: Any) -> futures.Future:
    def timed():
      start = time.perf_counter()
      try:
        return fn(*args)
      finally:
        with self._lock:
          self.seconds[part] += time.perf_counter() - start
    return self._pool.submit(timed)

  def add(self, out: Mapping[str, Any]) -> dict[str, Any]:
    """Takes one batch's outputs (waiting for the device); returns their host copy without pose maps."""
    out = dict(out)
    if self.targets is None:  # nobody decodes them here: no transfer
      out.pop("pose_heatmaps", None)
      out.pop("pose_pafs", None)
    start = time.perf_counter()
    jax.block_until_ready(out)
    ready = time.perf_counter()
    out = jax.device_get(out)
    self.seconds["device"] += ready - start
    self.seconds["transfer"] += time.perf_counter() - ready
    # Replicated outputs: process 0 sees every process's rows, with their pair indices.
    index, valid = np.asarray(out["index"]), np.asarray(out["valid"]).astype(bool)
    rows = np.flatnonzero(valid)
    self.confusion += out["confusion"]
    for k in self.per_pair:
      self.per_pair[k].append(np.asarray(out[k])[valid])
    for k in self.fid_features:
      self.fid_features[k].append(np.asarray(out[f"fid/{k}"])[valid])
    self.index.append(index[valid])
    # The PNGs hold the values the metrics saw (the official truncating conversion).
    writes = [] if self.image_dir is None else [
        self._submit("png", visualize.write_png, os.path.join(self.image_dir, f"{int(index[i]):05d}.png"),
                     out["saved_uint8"][i]) for i in rows]
    decoded = None
    if self.targets is not None:
      heatmaps, pafs = out.pop("pose_heatmaps"), out.pop("pose_pafs")
      decoded = [self._submit("pckh_decode", pckh_lib.decode_keypoints, heatmaps[i], pafs[i]) for i in rows]
    self._pending.append((index[rows], writes, decoded))
    self._drain(self.max_pending_batches)
    return out

  def _drain(self, keep: int) -> None:
    """Finishes the oldest queued batches until at most `keep` remain."""
    start = time.perf_counter()
    while len(self._pending) > keep:
      index, writes, decoded = self._pending.popleft()
      for f in writes:
        f.result()  # raises a failed write here
      if decoded is not None:
        predicted = np.stack([f.result() for f in decoded]).reshape(-1, pose_estimator.NUM_PARTS, 2)
        counts = pckh_lib.pckh(predicted, pckh_targets(self.targets[index]))
        for k in PCKH_COUNTS:
          self.pckh[k] += counts[k]
        self.pckh_keypoints.update(zip(index.tolist(), predicted))
    self.seconds["host_wait"] += time.perf_counter() - start

  def finish(self) -> Collected:
    """Waits for the queued host work; the collected values."""
    self._drain(0)
    self.close()
    index = np.concatenate(self.index) if self.index else np.zeros(0, np.int64)
    order = np.argsort(index, kind="stable")  # pair order: the PNGs' names, which a remainder drop cuts
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)
    return Collected(per_pair={k: cat(v) for k, v in self.per_pair.items()}, confusion=self.confusion,
                     fid_features={k: cat(v)[order] for k, v in self.fid_features.items()},
                     pckh=None if self.pckh is None else dict(self.pckh), pckh_keypoints=self.pckh_keypoints,
                     seconds=dict(self.seconds))

  def close(self) -> None:
    """Stops the pool (queued tasks that have not started are dropped); `finish` calls it."""
    self._pool.shutdown(wait=True, cancel_futures=True)


def run_test_batches(batch_step: Callable[[TrainState, Frozen, dict], dict[str, Any]], state: TrainState,
                     frozen: Frozen, host_batches: Iterable[dict[str, np.ndarray]], mesh: jax.sharding.Mesh,
                     collector: BatchCollector,
                     on_output: Callable[[int, dict[str, np.ndarray], dict[str, Any]], None] | None = None
                     ) -> Collected:
  """The test-set loop: every host batch through `batch_step` and `collector`.

  Batch b + 1 is queued on the device before batch b's outputs are collected, so that the device
  does not wait for the host's share of a batch (the copies, the queueing of PNG writes and decoding).

  Args:
    batch_step: `make_batch_step(...)`.
    state, frozen: the model, sharded as `batch_step` expects.
    host_batches: this process's NumPy batches (`pipeline.padded_batches`), in order.
    mesh: the evaluation mesh.
    collector: receives each batch's outputs in order.
    on_output: called as on_output(b, host batch, host outputs) after batch b is collected.

  Returns:
    `collector.finish()`; the collector's threads are stopped on errors too.
  """
  in_flight = None

  def collect(b, host_batch, dispatched):
    out = collector.add(dispatched)
    if on_output is not None:
      on_output(b, host_batch, out)

  try:
    for b, host_batch in enumerate(host_batches):
      dispatched = batch_step(state, frozen, sharding.global_batch(host_batch, mesh))
      if in_flight is not None:
        collect(*in_flight)
      in_flight = (b, host_batch, dispatched)
    if in_flight is not None:
      collect(*in_flight)
    return collector.finish()
  finally:
    collector.close()


# ---------------------------------------------------------------------------------------------
# The table and the evaluation.


def results_markdown(results: dict[str, Any]) -> str:
  """The results table as Markdown (metric | value | protocol | pairs | paper)."""
  lines = [f"# Test-set evaluation: {results['dataset']}, step {results['step']}", "",
           f"{results['num_pairs']} pairs (all of `{results['source']}`), scheme {results['scheme']}.", "",
           "| metric | value | protocol / variant | pairs | paper (S1∥S2) |", "| --- | ---: | --- | ---: | ---: |"]
  for key, (name, protocol, _) in METRICS.items():
    entry = results["metrics"][key]
    value = f"{entry['value']:.4f}" if entry.get("value") is not None else entry["note"]
    paper = entry.get("paper")
    detail = f"; {entry['detail']}" if entry.get("detail") else ""
    lines.append(f"| {name} | {value} | {protocol}{detail} | {entry.get('num_pairs', '')} | "
                 f"{'' if paper is None else paper} |")
  return "\n".join(lines) + "\n"


def evaluate_test_set(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Generates every pair of the test split with the latest checkpoint; writes images and tables."""
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from spg_jax import train  # pylint: disable=g-import-not-at-top

  run = train.setup_run(config, workdir)
  step = run.checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {run.checkpointer.directory}; train first")
  state, _ = run.restore(step)
  run.checkpointer.close()
  source = train.test_source(config)
  out_dir = os.path.join(workdir, f"eval_{step}")
  image_dir = os.path.join(out_dir, "images")
  is_chief = jax.process_index() == 0
  if is_chief:
    os.makedirs(image_dir, exist_ok=True)

  bsz = sharding.check_batch_size(config.eval.batch_size, run.mesh)
  features = pipeline.Features.from_config(config, train=False)
  ds = pipeline.eval_dataset(source, features, batch_size=bsz, process_index=jax.process_index(),
                             process_count=jax.process_count())
  num_batches = pipeline.num_eval_batches(source.num_pairs, bsz, jax.process_count())
  # Every weights file is read before the long passes: a missing or wrong one fails at once.
  models = load_metric_models(config, run.mesh)
  # The real-set statistics first: a missing training split fails before the long generation, and
  # on a cache miss their pass over the training images logs its progress.
  real_stats = real_set_statistics(config, run.train_source, list(models.fid), run.mesh)
  mask_ssim = bool(config.eval.get("mask_ssim"))
  target_keypoints = _target_keypoints(source) if mask_ssim or models.pose is not None else None
  batch_step = make_batch_step(run.fn, config.eval.crop_width, run.mesh,
                               (run.state_sharding, run.frozen_sharding, run.batch_sharding), models)
  per_pair_keys = ["ssim_official", "ssim_patn", "l1", "psnr"]
  if models.lpips_variables is not None:
    per_pair_keys.append("lpips")
  if mask_ssim:
    per_pair_keys.append("ssim_mask")
  if min(source.image_size) >= GFLA_WINDOW:
    per_pair_keys.append("ssim_gfla")
  # Only process 0 writes the PNGs and the table, so only it decodes keypoints.
  collector = BatchCollector(
      per_pair_keys=per_pair_keys, fid_metrics=[m.metric for m in models.fid],
      image_dir=image_dir if is_chief else None,
      target_keypoints=target_keypoints if is_chief and models.pose is not None else None)
  sheet_rows, sheet_n = [], int(config.eval.num_sample_pairs)  # from the first batch
  logging.info("evaluating step %d on %s: %d pairs in %d batches of %d%s", step, source.name,
               source.num_pairs, num_batches, bsz,
               f"; PCKh at scales {models.pose.scale_search}" if models.pose is not None else "")
  start = time.monotonic()

  def host_batches() -> Iterator[dict[str, np.ndarray]]:
    for host_batch in pipeline.padded_batches(ds, bsz, num_batches):
      if mask_ssim:
        # Padding rows (index 0, valid False) get pair 0's mask; they count nowhere.
        host_batch["target_mask"] = pose_mask.person_masks(target_keypoints[host_batch["index"]],
                                                           *source.image_size)
      yield host_batch

  def on_output(b: int, host_batch: dict[str, np.ndarray], out: dict[str, Any]) -> None:
    if is_chief and b == 0:
      n = min(sheet_n, int(out["valid"].sum()), len(host_batch["valid"]))
      sheet_rows.append(visualize.sample_grid(
          host_batch["source_image"][:n], host_batch["target_pose"][:n], out["parsing"][:n],
          out["generated"][:n], host_batch["target_image"][:n]))
    if (b + 1) % 50 == 0 or b + 1 == num_batches:
      elapsed = time.monotonic() - start
      logging.info("evaluated %d / %d batches in %.0f s (%.1f pairs/s)", b + 1, num_batches, elapsed,
                   (b + 1) * int(config.eval.batch_size) / max(elapsed, 1e-9))

  collected = run_test_batches(batch_step, state, run.frozen, host_batches(), run.mesh, collector, on_output)
  logging.info("test-set pass: %.0f s; host %s", time.monotonic() - start,
               ", ".join(f"{k} {v:.1f} s" for k, v in sorted(collected.seconds.items())))

  values = collected.per_pair
  num_pairs = int(len(values["l1"]))
  if num_pairs != source.num_pairs:
    raise RuntimeError(f"evaluated {num_pairs} pairs, the split has {source.num_pairs}")
  paper = PAPER.get(config.data.name, {})
  metrics = {k: dict(value=float(np.mean(v)), num_pairs=num_pairs, paper=paper.get(k))
             for k, v in values.items()}
  metrics["miou"] = dict(value=float(segmentation.mean_iou(collected.confusion)), num_pairs=num_pairs,
                         paper=paper.get("miou"))
  if models.fid and is_chief:
    drop = config.eval.get("fid_drop_remainder")
    for model in models.fid:
      generated = collected.fid_features[model.metric]  # in pair order: what a remainder drop cuts
      real = real_stats[model.metric]
      value = fid.frechet_distance(*fid.statistics(generated, drop), real.mu, real.sigma)
      used = len(fid.apply_drop_remainder(generated, drop))
      metrics[model.metric] = dict(
          value=value, num_pairs=used, paper=paper.get(model.metric), weights=model.weights,
          real_set=run.train_source.name, num_real_images=real.num_images, drop_remainder_batch=drop,
          statistics_cache=real.cache_file,
          detail=f"real set: {real.num_images if real.num_images is not None else 'the'} distinct images of "
                 f"`{run.train_source.name}`" + (f"; the last N mod {drop} of each set dropped" if drop else ""))
      logging.info("%s = %.4f (%d generated images, %s real)", model.metric, value, used, real.num_images)
  if models.pose is not None and is_chief:
    counts = collected.pckh
    scales = models.pose.scale_search
    official = tuple(scales) == tuple(pose_estimator.SCALE_SEARCH)
    keypoints_file = os.path.join(out_dir, "pckh_keypoints.csv")
    write_pckh_keypoints(keypoints_file, collected.pckh_keypoints)
    metrics["pckh"] = dict(
        value=pckh_lib.pckh_score(counts) if counts["total"] else None, num_pairs=num_pairs,
        paper=paper.get("pckh"), weights=models.pose.weights, scale_search=list(scales),
        keypoints_file=keypoints_file, **counts,
        detail=(f"scales {tuple(scales)} × 368 / H" + ("" if official else " (the scripts': (0.5, 1, 1.5, 2))")
                + f"; {counts['correct']} of {counts['total']} target joints correct in {counts['images_used']} "
                  f"images; {counts['images_skipped']} skipped (fewer than 2 head joints in the target)"))
    if not counts["total"]:
      metrics["pckh"]["note"] = "not computed: no target joint counted (every image skipped)"
    logging.info("pckh = %s (%d / %d joints, %d images skipped)", metrics["pckh"]["value"], counts["correct"],
                 counts["total"], counts["images_skipped"])
  for key, note in NOT_COMPUTED.items():
    if key not in metrics:
      metrics[key] = dict(value=None, note=note, paper=paper.get(key))
  results = dict(dataset=config.data.name, source=source.name, step=int(step), scheme=config.scheme,
                 num_pairs=num_pairs, crop_width=config.eval.crop_width,
                 metrics={k: dict(metrics[k], protocol=METRICS[k][1]) for k in METRICS})
  if is_chief:
    with open(os.path.join(out_dir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
      f.write(results_markdown(results))
    if sheet_rows:
      visualize.write_png(os.path.join(out_dir, "contact_sheet.png"), np.concatenate(sheet_rows))
  logging.info("test-set results written to %s", out_dir)
  return results
