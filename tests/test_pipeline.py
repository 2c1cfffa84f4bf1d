"""The tf.data pipeline: contents, order, resumption, process split, evaluation padding, devices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from input_pipeline import pipeline, sources
from tests.conftest import REPO

H = W = 32
NUM_PAIRS = 10


@pytest.fixture(scope="module")
def arrays():
  return sources.synthetic_arrays(seed=3, num_pairs=NUM_PAIRS, height=H, width=W)


@pytest.fixture(scope="module")
def source(arrays):
  return sources.in_memory_source(arrays, name="tiny")


def _take(ds, n):
  return [b for _, b in zip(range(n), ds.as_numpy_iterator())]


def _train(source, batch=4, **kwargs):
  features = kwargs.pop("features", pipeline.Features(joint_radius=3, flow="ground_truth"))
  return pipeline.train_dataset(source, features, global_batch_size=batch, seed=kwargs.pop("seed", 0),
                                **kwargs)


def test_batch_holds_the_indexed_pairs(arrays, source):
  (batch,) = _take(_train(source), 1)
  assert batch["source_image"].shape == (4, H, W, 3) and batch["source_image"].dtype == np.float32
  assert batch["source_pose"].shape == (4, H, W, 18)
  assert batch["target_distance"].shape == (4, H, W, 12)
  assert batch["target_parsing"].shape == (4, H, W) and batch["target_parsing"].dtype == np.int32
  assert batch["flow"].shape == (4, H, W, 2) and batch["visibility"].dtype == np.int32
  assert batch["valid"].all()
  for row, i in enumerate(batch["index"]):
    np.testing.assert_allclose(batch["source_image"][row], arrays["source_image"][i] / 127.5 - 1,
                               atol=1e-6)
    np.testing.assert_array_equal(batch["target_parsing"][row], arrays["target_parsing"][i])
    np.testing.assert_array_equal(batch["flow"][row], arrays["flow"][i])
    np.testing.assert_array_equal(batch["visibility"][row], arrays["visibility"][i])
    # Each present joint's disc is centred on its keypoint.
    for k, (x, y) in enumerate(arrays["target_keypoints"][i]):
      if x >= 0 and y >= 0:
        assert batch["target_pose"][row, int(round(y)), int(round(x)), k] == 1.0
      else:
        assert not batch["target_pose"][row, ..., k].any()


def test_onehot_parsing_and_no_distance_maps(arrays, source):
  features = pipeline.Features(joint_radius=3, distance_maps=False, parsing_format="onehot")
  (batch,) = _take(_train(source, features=features), 1)
  assert "source_distance" not in batch and "flow" not in batch
  assert batch["source_parsing"].shape == (4, H, W, 20)
  np.testing.assert_array_equal(batch["source_parsing"].argmax(-1),
                                arrays["source_parsing"][batch["index"]])
  np.testing.assert_array_equal(batch["source_parsing"].sum(-1), 1.0)


def test_each_epoch_is_a_permutation_and_order_is_deterministic(source):
  # Batch 5 over 10 pairs: steps (0, 1) are epoch 0 and (2, 3) epoch 1.
  indices = np.concatenate([b["index"] for b in _take(_train(source, batch=5), 4)])
  epoch0, epoch1 = indices[:NUM_PAIRS], indices[NUM_PAIRS:]
  assert sorted(epoch0) == list(range(NUM_PAIRS)) and sorted(epoch1) == list(range(NUM_PAIRS))
  assert list(epoch0) != list(epoch1), "epochs should be shuffled differently"
  again = np.concatenate([b["index"] for b in _take(_train(source, batch=5), 4)])
  np.testing.assert_array_equal(indices, again)
  other = np.concatenate([b["index"] for b in _take(_train(source, batch=5, seed=1), 4)])
  assert list(other) != list(indices)


def test_resume_at_a_step_continues_the_same_stream(source):
  full = _take(_train(source, batch=4), 7)
  resumed = _take(_train(source, batch=4, start_step=4), 3)
  for a, b in zip(full[4:], resumed):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["target_image"], b["target_image"])


def test_processes_build_disjoint_rows_of_the_same_global_batch(source):
  single = _take(_train(source, batch=6), 3)
  parts = [_take(_train(source, batch=6, process_index=k, process_count=3), 3) for k in range(3)]
  for step in range(3):
    joined = np.concatenate([parts[k][step]["index"] for k in range(3)])
    np.testing.assert_array_equal(joined, single[step]["index"])
    np.testing.assert_array_equal(
        np.concatenate([parts[k][step]["source_pose"] for k in range(3)]),
        single[step]["source_pose"])


def test_augmentation_changes_only_the_target_and_is_deterministic(arrays, source):
  features = pipeline.Features(joint_radius=3, augment=True, flow="geometric")
  a, b = (_take(_train(source, features=features), 2) for _ in range(2))
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
  rows = a[0]["index"]
  np.testing.assert_allclose(a[0]["source_image"], arrays["source_image"][rows] / 127.5 - 1, atol=1e-6)
  raw_targets = arrays["target_image"][rows] / 127.5 - 1
  assert not np.allclose(a[0]["target_image"], raw_targets, atol=1e-3)


def test_evaluation_covers_every_pair_once_with_padding(source):
  features = pipeline.Features(joint_radius=3, flow="ground_truth")
  seen = []
  num_batches = pipeline.num_eval_batches(NUM_PAIRS, batch_size=2, process_count=3)
  assert num_batches == 2  # shares of 10 over 3 processes: 4, 3, 3
  for k in range(3):
    ds = pipeline.eval_dataset(source, features, batch_size=2, process_index=k, process_count=3)
    batches = list(pipeline.padded_batches(ds, 2, num_batches))
    assert len(batches) == num_batches
    for batch in batches:
      assert batch["source_image"].shape[0] == 2
      seen.extend(batch["index"][batch["valid"]])
  assert sorted(seen) == list(range(NUM_PAIRS))


@pytest.mark.parametrize("kwargs,match", [
    (dict(flow="optical"), "data.flow"),
    (dict(parsing_format="rgb"), "parsing_format"),
    (dict(kappa=0.1), "kappa"),
    (dict(augment=True, flow="ground_truth"), "augment"),
])
def test_bad_features_are_rejected(kwargs, match):
  with pytest.raises(ValueError, match=match):
    pipeline.Features(**kwargs)


def test_ground_truth_flow_needs_a_source_with_flow(arrays):
  no_flow = {k: v for k, v in arrays.items() if k not in ("flow", "visibility")}
  src = sources.in_memory_source(no_flow, name="no-flow")
  with pytest.raises(ValueError, match="no ground-truth flow"):
    _train(src)
  with pytest.raises(KeyError, match="come together"):
    sources.in_memory_source({**no_flow, "flow": arrays["flow"]})


def test_global_batches_on_eight_cpu_devices():
  """On 8 fake CPU devices the host batch becomes one global array split row-wise over them."""
  script = textwrap.dedent("""
      import jax, numpy as np
      from input_pipeline import pipeline, sources
      from spg_jax import sharding
      assert jax.device_count() == 8
      arrays = sources.synthetic_arrays(seed=3, num_pairs=10, height=32, width=32)
      source = sources.in_memory_source(arrays)
      features = pipeline.Features(joint_radius=3, flow="ground_truth")
      mesh = sharding.make_mesh(fsdp=2)
      local = sharding.check_batch_size(16, mesh)
      ds = pipeline.train_dataset(source, features, global_batch_size=16, seed=0,
                                  process_index=jax.process_index(), process_count=jax.process_count())
      host = next(ds.as_numpy_iterator())
      assert len(host["index"]) == local == 16
      batch = sharding.global_batch(host, mesh)
      image = batch["source_image"]
      assert image.shape == (16, 32, 32, 3), image.shape
      assert len(image.addressable_shards) == 8
      assert {s.data.shape[0] for s in image.addressable_shards} == {2}
      np.testing.assert_array_equal(np.asarray(image), host["source_image"])
      total = jax.jit(lambda x: x.sum(axis=(1, 2, 3)))(image)
      np.testing.assert_allclose(np.asarray(total), host["source_image"].sum(axis=(1, 2, 3)), rtol=1e-5)
      print("ok")
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
