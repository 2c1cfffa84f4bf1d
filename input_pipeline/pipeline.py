"""The tf.data pipeline: raw pairs → model-ready batches, deterministic and resumable by step.

Order. Training reads an endless stream of global positions p = 0, 1, 2, …; position p is pair
`index_shuffle(p mod N)` of the permutation of epoch ⌊p / N⌋ (a stateless permutation keyed by
(seed, epoch)), and global step s consists of positions [s·G, (s+1)·G) for global batch size G.
Process k of P builds rows [k·G/P, (k+1)·G/P) of every global batch. Hence
  * the order is a pure function of (seed, G): the same for 1 process or 64;
  * resuming at step s starts reading at position s·G: no data is read twice, none skipped;
  * per-pair randomness (augmentation) is keyed by (seed, p), so parallel decoding does not
    change results.
Evaluation reads a split once, in order, each process its share `tfds.split_for_jax_process`, and
pads the last batch (`valid` marks real pairs) so that every pair counts exactly once.

Batch (leading dimension B = this process's share; H × W the source's image size):
  source_image, target_image          (B, H, W, 3) float32 in [-1, 1]
  source_pose, target_pose            (B, H, W, 18) float32 joint maps (binary discs or Gaussian)
  source_distance, target_distance    (B, H, W, 12) float32 limb distance maps exp(κ·d); only
                                      with `distance_maps=True`
  source_parsing, target_parsing      (B, H, W) int32 labels, or (B, H, W, 20) float32 one-hot
  predicted_target_parsing            same format; only when the source has it
  flow, visibility                    (B, H, W, 2) float32 target→source pixels and (B, H, W) int32
                                      0 visible / 1 invisible / 2 background; only with
                                      flow='ground_truth' or 'geometric'
  index                               (B,) int64 pair index in the source
  valid                               (B,) bool; False only on evaluation padding
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import tensorflow as tf

from input_pipeline import augment, geometric_flow, pose_maps_tf
from input_pipeline.sources import PairSource, PREDICTED_PARSING_KEY

NUM_CLASSES = 20
FLOW_MODES = ("network", "ground_truth", "geometric")
PARSING_FORMATS = ("labels", "onehot")
JOINT_MODES = ("binary", "gaussian")
# Salt that separates the augmentation stream from the order stream of the same seed.
_AUGMENT_SALT = 0x5A17


@dataclasses.dataclass(frozen=True)
class Features:
  """What the pipeline computes for each pair.

  Attributes:
    joint_mode, joint_radius: joint maps (`pose_maps_tf.keypoint_maps`); official: binary, r = 8
      at 256×256 and 4 at 128×64.
    distance_maps: emit the 12-channel limb distance maps (stage 1 with distance maps).
    kappa: their decay κ < 0.
    parsing_format: 'labels' (int32, 20× less host→device traffic) or 'onehot'.
    flow: 'network' — no flow here, the frozen flow network predicts it on the device;
      'ground_truth' — the source's flow and visibility (synthetic persons, Intr-Flow .corr);
      'geometric' — `geometric_flow.geometric_flow` from keypoints and parsings.
    augment: the official Market-1501 target-side scale-and-shift augmentation (training only).
  """
  joint_mode: str = "binary"
  joint_radius: float = 8.0
  distance_maps: bool = True
  kappa: float = -0.1
  parsing_format: str = "labels"
  flow: str = "network"
  augment: bool = False

  def __post_init__(self):
    for field, allowed in (("joint_mode", JOINT_MODES), ("parsing_format", PARSING_FORMATS),
                           ("flow", FLOW_MODES)):
      if getattr(self, field) not in allowed:
        raise ValueError(f"data.{field}={getattr(self, field)!r}; expected one of {allowed}")
    if self.kappa >= 0:
      raise ValueError(f"data.distance_map_kappa={self.kappa} must be < 0 (maps decay away from limbs)")
    if self.augment and self.flow == "ground_truth":
      # A ground-truth flow would have to be resampled and re-based with the target; not done, and
      # using it unchanged would be silently wrong.
      raise ValueError("data.augment=True cannot be combined with data.flow='ground_truth'")

  @classmethod
  def from_config(cls, config, *, train: bool) -> "Features":
    """From a full config: `config.data.*`; distance maps iff stage 1 uses them; augmentation
    only when `train`."""
    data = config.data
    return cls(joint_mode=data.joint_mode, joint_radius=float(data.joint_radius),
               distance_maps=bool(config.model.parsing.use_distance_maps),
               kappa=float(data.distance_map_kappa), parsing_format=data.parsing_format,
               flow=data.flow, augment=bool(data.augment) and train)


def _check_source(source: PairSource, features: Features) -> None:
  if source.num_pairs <= 0:
    raise ValueError(f"{source.name}: no pairs")
  if features.flow == "ground_truth" and not source.has_flow:
    raise ValueError(f"{source.name} has no ground-truth flow; data.flow='ground_truth' needs a "
                     "source with flows (synthetic persons, or a dataset prepared --with_flow)")


def _parsing(labels: tf.Tensor, fmt: str) -> tf.Tensor:
  labels = tf.cast(labels, tf.int32)
  return labels if fmt == "labels" else tf.one_hot(labels, NUM_CLASSES, dtype=tf.float32)


def make_features(pair: dict[str, tf.Tensor], position: tf.Tensor, features: Features,
                  image_size: tuple[int, int], seed: int) -> dict[str, tf.Tensor]:
  """One raw pair (sources module docstring) → one model-ready example (this module's docstring).

  Args:
    pair: the raw pair.
    position: int64 scalar, the pair's global stream position (keys its augmentation).
    features: what to compute.
    image_size: (H, W).
    seed: the pipeline seed.
  """
  height, width = image_size
  target_image = pair["target_image"]
  target_parsing = pair["target_parsing"]
  target_keypoints = pair["target_keypoints"]
  if features.augment:
    aug_seed = tf.stack([tf.constant(seed ^ _AUGMENT_SALT, tf.int64), position])
    target_image, target_parsing, target_keypoints = augment.augment_target(
        target_image, target_parsing, target_keypoints, aug_seed)

  def image(x):
    return tf.cast(x, tf.float32) / 127.5 - 1.0

  def joints(kp):
    return pose_maps_tf.keypoint_maps(kp, height, width, mode=features.joint_mode,
                                      radius=features.joint_radius)

  out = dict(
      source_image=image(pair["source_image"]), target_image=image(target_image),
      source_pose=joints(pair["source_keypoints"]), target_pose=joints(target_keypoints),
      source_parsing=_parsing(pair["source_parsing"], features.parsing_format),
      target_parsing=_parsing(target_parsing, features.parsing_format),
  )
  if features.distance_maps:
    out["source_distance"] = pose_maps_tf.distance_maps(pair["source_keypoints"], height, width,
                                                        kappa=features.kappa)
    out["target_distance"] = pose_maps_tf.distance_maps(target_keypoints, height, width,
                                                        kappa=features.kappa)
  if PREDICTED_PARSING_KEY in pair:
    out[PREDICTED_PARSING_KEY] = _parsing(pair[PREDICTED_PARSING_KEY], features.parsing_format)
  if features.flow == "ground_truth":
    out["flow"] = tf.cast(pair["flow"], tf.float32)
    out["visibility"] = tf.cast(pair["visibility"], tf.int32)
  elif features.flow == "geometric":
    out["flow"], out["visibility"] = geometric_flow.geometric_flow(
        pair["source_keypoints"], target_keypoints, pair["source_parsing"], target_parsing)
  return out


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  options.threading.private_threadpool_size = 0  # tf.data's shared pool, sized to the host
  return options


def train_dataset(source: PairSource, features: Features, *, global_batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1,
                  num_parallel_calls: int = tf.data.AUTOTUNE, prefetch: int = 2) -> tf.data.Dataset:
  """The endless training stream of this process's batches, from global step `start_step` on.

  Args:
    source: the pairs.
    features: what to compute per pair.
    global_batch_size: G, the batch over all processes; must be a multiple of `process_count`.
    seed: determines the order (per-epoch permutations) and the augmentation.
    start_step: the first global step to produce (resume without reading earlier data).
    process_index, process_count: this process and the number of processes (`jax.process_*`).
    num_parallel_calls: parallelism of the per-pair map.
    prefetch: batches prepared ahead.

  Returns:
    A dataset of batches with leading dimension G / process_count (module docstring).
  """
  _check_source(source, features)
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} is not a multiple of the "
                     f"{process_count} processes")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} outside [0, {process_count})")
  local = global_batch_size // process_count
  num = source.num_pairs

  def position(q):  # q-th pair this process reads → global stream position
    return (q // local) * global_batch_size + process_index * local + q % local

  def example(q):
    p = position(q)
    epoch = p // num
    index = tf.random.experimental.index_shuffle(
        p % num, seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
        max_index=num - 1)
    out = make_features(source.fetch(index), p, features, source.image_size, seed)
    out["index"] = index
    out["valid"] = tf.constant(True)
    return out

  ds = tf.data.Dataset.range(start_step * local, np.iinfo(np.int64).max)
  ds = ds.map(example, num_parallel_calls=num_parallel_calls, deterministic=True)
  ds = ds.batch(local, drop_remainder=True)
  return ds.prefetch(prefetch).with_options(_options())


def process_share(num_pairs: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, stop) of the pairs this process evaluates: TFDS's `split_for_jax_process` rule."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  split = tfds.split_for_jax_process("pairs", process_index=process_index,
                                     process_count=process_count)
  infos = {"pairs": tfds.core.SplitInfo(name="pairs", shard_lengths=[num_pairs], num_bytes=0)}
  (instruction,) = split.to_absolute(infos)
  start = 0 if instruction.from_ is None else instruction.from_
  stop = num_pairs if instruction.to is None else instruction.to
  return start, stop


def eval_dataset(source: PairSource, features: Features, *, batch_size: int,
                 process_index: int = 0, process_count: int = 1,
                 num_parallel_calls: int = tf.data.AUTOTUNE, prefetch: int = 2) -> tf.data.Dataset:
  """This process's share of `source`, once, in order, in batches of `batch_size` (last one short).

  Use `padded_batches` to pad the short batch so that every step has the same shape. No
  augmentation: `features.augment` must be False.
  """
  _check_source(source, features)
  if features.augment:
    raise ValueError("evaluation data must not be augmented (Features.augment=True)")
  start, stop = process_share(source.num_pairs, process_index, process_count)

  def example(index):
    out = make_features(source.fetch(index), index, features, source.image_size, seed=0)
    out["index"] = index
    out["valid"] = tf.constant(True)
    return out

  ds = tf.data.Dataset.range(start, stop)
  ds = ds.map(example, num_parallel_calls=num_parallel_calls, deterministic=True)
  return ds.batch(batch_size).prefetch(prefetch).with_options(_options())


def num_eval_batches(num_pairs: int, batch_size: int, process_count: int) -> int:
  """Batches every process must run: its largest share (process 0's) divided into `batch_size`."""
  start, stop = process_share(num_pairs, 0, process_count)
  return -(-(stop - start) // batch_size)


def padded_batches(ds: tf.data.Dataset, batch_size: int,
                   num_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """NumPy batches of exactly `batch_size`, zero-padded with valid=False.

  A short last batch is padded; with `num_batches`, all-padding batches follow until there are
  that many, so that every process runs the same number of (collective) evaluation steps.
  """
  count, template = 0, None
  for batch in ds.as_numpy_iterator():
    n = len(batch["valid"])
    if n < batch_size:
      batch = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    template = batch
    count += 1
    yield batch
  if num_batches is not None and count < num_batches:
    if template is None:
      template = {k: np.zeros((batch_size,) + tuple(s.shape[1:]), s.dtype.as_numpy_dtype)
                  for k, s in ds.element_spec.items()}
    for _ in range(num_batches - count):
      yield {k: np.zeros_like(v) for k, v in template.items()}
