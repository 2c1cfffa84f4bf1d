"""Random-access collections of raw pairs, the input of the tf.data pipeline.

A `PairSource` holds `num_pairs` pairs and fetches pair `i` inside a tf.data graph. Random access
(rather than a stream) is what makes the pipeline's order a pure function of (seed, step): any step
can be resumed without reading the data before it, and the global batch of a step is the same for
any number of processes.

Raw pair (what `PairSource.fetch` returns; H × W = `image_size`):
  source_image, target_image          (H, W, 3) uint8 RGB
  source_parsing, target_parsing      (H, W) uint8 CIHP labels 0..19
  source_keypoints, target_keypoints  (18, 2) float32 (x, y), negative = missing
  flow, visibility                    (H, W, 2) float32 target→source pixels, (H, W) uint8 0/1/2;
                                      only where `has_flow`
  predicted_target_parsing            (H, W) uint8; only where `has_predicted_parsing`

Sources: `in_memory_source` (NumPy arrays, e.g. synthetic persons), `synthetic_source` and
`tfds_source` (the prepared `spg_deepfashion` / `spg_market1501` datasets in array_record format).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Mapping

import numpy as np
import tensorflow as tf

from input_pipeline import synthetic

REQUIRED_KEYS = ("source_image", "target_image", "source_parsing", "target_parsing",
                 "source_keypoints", "target_keypoints")
FLOW_KEYS = ("flow", "visibility")
PREDICTED_PARSING_KEY = "predicted_target_parsing"


@dataclasses.dataclass(frozen=True)
class PairSource:
  """`num_pairs` raw pairs of size `image_size` = (H, W), fetched by index inside tf.data.

  Attributes:
    name: for messages, e.g. 'synthetic(seed=0)' or 'spg_deepfashion:train'.
    num_pairs: number of pairs.
    image_size: (H, W).
    fetch: int64 scalar tensor i ∈ [0, num_pairs) → raw pair (see the module docstring).
    has_flow: the pairs carry ground-truth `flow` and `visibility`.
    has_predicted_parsing: the pairs carry `predicted_target_parsing`.
  """
  name: str
  num_pairs: int
  image_size: tuple[int, int]
  fetch: Callable[[tf.Tensor], dict[str, tf.Tensor]]
  has_flow: bool = False
  has_predicted_parsing: bool = False


def in_memory_source(arrays: Mapping[str, np.ndarray], name: str = "in-memory") -> PairSource:
  """A source over stacked NumPy arrays (leading dimension = pair index), held as tensors.

  Args:
    arrays: the raw-pair keys (module docstring) with a leading pair dimension N; `flow` and
      `visibility` optional (both or neither), `predicted_target_parsing` optional.
    name: for messages.
  """
  missing = [k for k in REQUIRED_KEYS if k not in arrays]
  if missing:
    raise KeyError(f"{name}: arrays lack {missing}; a pair needs {list(REQUIRED_KEYS)}")
  has_flow = all(k in arrays for k in FLOW_KEYS)
  if not has_flow and any(k in arrays for k in FLOW_KEYS):
    raise KeyError(f"{name}: 'flow' and 'visibility' come together; got only one of them")
  keys = list(REQUIRED_KEYS) + (list(FLOW_KEYS) if has_flow else [])
  if PREDICTED_PARSING_KEY in arrays:
    keys.append(PREDICTED_PARSING_KEY)
  num = len(arrays["source_image"])
  for k in keys:
    if len(arrays[k]) != num:
      raise ValueError(f"{name}: {k!r} has {len(arrays[k])} pairs, 'source_image' has {num}")
  height, width = arrays["source_image"].shape[1:3]
  tensors = {k: tf.constant(arrays[k]) for k in keys}

  def fetch(index):
    return {k: tf.gather(v, index) for k, v in tensors.items()}

  return PairSource(name=name, num_pairs=num, image_size=(int(height), int(width)), fetch=fetch,
                    has_flow=has_flow, has_predicted_parsing=PREDICTED_PARSING_KEY in arrays)


def synthetic_arrays(seed: int, num_pairs: int, height: int, width: int) -> dict[str, np.ndarray]:
  """`num_pairs` synthetic pairs (`synthetic.make_pairs`) stacked into arrays; logs progress."""
  start, pairs = time.monotonic(), []
  for i, pair in enumerate(synthetic.make_pairs(seed, num_pairs, height, width)):
    pairs.append(pair)
    if (i + 1) % 1000 == 0:
      logging.info("synthetic persons: %d / %d pairs (%.0f s)", i + 1, num_pairs,
                   time.monotonic() - start)
  return {k: np.stack([p[k] for p in pairs]) for k in pairs[0]}


def synthetic_source(seed: int, num_pairs: int, image_size: tuple[int, int]) -> PairSource:
  """Synthetic persons with exact flow and visibility, rendered up front into memory.

  Pair i is `synthetic.make_pair(synthetic.pair_seed(seed, i), H, W)`; use different seeds for the
  training and validation sets.
  """
  arrays = synthetic_arrays(seed, num_pairs, *image_size)
  return in_memory_source(arrays, name=f"synthetic(seed={seed}, {image_size[0]}x{image_size[1]})")


def tfds_source(name: str, split, data_dir: str | None = None) -> PairSource:
  """A prepared TFDS pair dataset (array_record format) read by index.

  The records are fetched as serialized bytes in Python (array_record random access takes
  microseconds) and decoded in the tf.data graph, where JPEG/PNG decoding runs in parallel.

  Args:
    name: 'spg_deepfashion' or 'spg_market1501' (optionally with a config, 'name/config').
    split: a split name or TFDS split object, e.g. 'train', 'test[:2000]', or
      `tfds.split_for_jax_process('test')`.
    data_dir: the TFDS data directory the dataset was prepared into (`input_pipeline.prepare`).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from input_pipeline import datasets  # pylint: disable=g-import-not-at-top,unused-import  (registers)

  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"TFDS dataset {name!r} is not prepared in data_dir={builder.data_dir_root!r}; run "
        f"`python -m input_pipeline.prepare ...` first (see README, 'Preparing the datasets')")
  records = builder.as_data_source(split=split).data_source  # raw bytes by index
  features = builder.info.features
  feature_names = set(features.keys())
  height, width = features["source_image"].shape[:2]

  def read(index):
    return records[int(index)]

  def fetch(index):
    serialized = tf.numpy_function(read, [index], tf.string, stateful=False)
    example = features.deserialize_example(tf.reshape(serialized, []))
    pair = {k: example[k] for k in REQUIRED_KEYS}
    for k in ("source_parsing", "target_parsing"):
      pair[k] = pair[k][..., 0]
    for k in FLOW_KEYS + (PREDICTED_PARSING_KEY,):
      if k in feature_names:
        pair[k] = example[k][..., 0] if k == PREDICTED_PARSING_KEY else example[k]
    return pair

  return PairSource(name=f"{name}:{split}", num_pairs=len(records), image_size=(height, width),
                    fetch=fetch, has_flow=all(k in feature_names for k in FLOW_KEYS),
                    has_predicted_parsing=PREDICTED_PARSING_KEY in feature_names)
