"""Shared pieces of the trainer tests: a tiny config, a training subprocess, flattened states.

`tiny_config()` is the synthetic config shrunk so that a few steps run on a two-core CPU. It is
also a config file for `launch.py`: `--config tests/train_helpers.py:6` is `tiny_config(6)`.

`python -m tests.train_helpers WORKDIR STEPS [OVERRIDES_JSON]` trains `tiny_config(STEPS)` (with
dotted-key overrides) into WORKDIR with `train.train_and_evaluate`, then restores the latest
checkpoint and writes its whole `TrainState` flattened to `WORKDIR/final_state.npz`. With
`SPG_NUM_PROCESSES`, `SPG_PROCESS_ID` and `SPG_COORDINATOR` in the environment it first joins a
multi-process run with `jax.distributed.initialize`. `training_command` / `training_env` build the
command line and environment (fake CPU devices, a shared compilation cache).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Any

import ml_collections
import numpy as np

from configs import synthetic

REPO = pathlib.Path(__file__).resolve().parent.parent
FINAL_STATE = "final_state.npz"


def tiny_config(num_train_steps: int = 4, gan_start_epoch: int = 1) -> ml_collections.ConfigDict:
  """The synthetic config shrunk so that a few steps run on two CPU cores in 1–2 minutes (compiling).

  32×32 images, 16 training pairs in batches of 8 (2 steps per epoch), 8 validation pairs in one
  batch, no perceptual loss (no VGG19), the official learning rates, a log line every step, checkpoints every 2 steps (the last
  2 kept, plus the best), validation only at the end, no profiler.
  """
  config = synthetic.get_config()
  config.data.image_size = (32, 32)
  config.data.synthetic.train_pairs = 16
  config.data.synthetic.eval_pairs = 8
  config.eval.num_pairs = 8
  config.eval.batch_size = 8
  config.eval.num_sample_pairs = 4
  config.loss.perceptual = 0.0
  # The official optimiser settings (the synthetic default's short-schedule rate would make the
  # cross-layout tolerances of tests/test_train.py looser than they need to be).
  config.optim.lr_g = 2e-4
  config.optim.lr_decay_epochs = 100
  config.train.batch_size = 8
  config.train.num_train_steps = num_train_steps
  config.train.gan_start_epoch = gan_start_epoch
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 2
  config.train.keep_checkpoints = 2
  config.train.eval_every_steps = 1000
  config.train.profile_first_step = -1
  return config


def get_config(num_train_steps: str | None = None) -> ml_collections.ConfigDict:
  """`launch.py --config tests/train_helpers.py[:STEPS]`."""
  return tiny_config(int(num_train_steps)) if num_train_steps else tiny_config()


def flatten_state(state: Any) -> dict[str, np.ndarray]:
  """Every leaf of a (possibly sharded, multi-process) pytree as a host array, keyed by its path."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def host(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    if x.sharding.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  flat, _ = jax.tree_util.tree_flatten_with_path(state)
  return {jax.tree_util.keystr(path, simple=True, separator="/"): host(leaf) for path, leaf in flat}


def load_state(workdir: str | os.PathLike) -> dict[str, np.ndarray]:
  with np.load(os.path.join(workdir, FINAL_STATE)) as data:
    return {k: data[k] for k in data.files}


def training_env(cache_dir: str | os.PathLike | None, devices: int = 1,
                 **extra: str) -> dict[str, str]:
  """Environment of a training subprocess: `devices` fake CPU devices, maybe a compilation cache.

  The persistent cache only spares recompiling identical programs (same HLO, devices, flags and
  options); a hit runs the executable a fresh compilation builds. Multi-process runs must go
  without it: on CPU the cache key includes a device-topology fingerprint that differs between the
  processes of one run, and only process 0 writes entries, so with a warm cache process 0 loads
  while process 1 compiles, and their first collective times out (Gloo waits 30 s).
  """
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_DEFAULT_MATMUL_PRECISION="highest", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
  if cache_dir is not None:
    env.update(JAX_COMPILATION_CACHE_DIR=os.fspath(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.update(extra)
  return env


def training_command(workdir: str | os.PathLike, steps: int,
                     overrides: dict[str, Any] | None = None) -> list[str]:
  return [sys.executable, "-m", "tests.train_helpers", os.fspath(workdir), str(steps),
          json.dumps(overrides or {})]


def _main(argv: list[str]) -> int:
  import logging  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  for name in ("absl", "orbax"):
    logging.getLogger(name).setLevel(logging.WARNING)
  num_processes = int(os.environ.get("SPG_NUM_PROCESSES", "1"))
  if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=os.environ["SPG_COORDINATOR"],
                               num_processes=num_processes,
                               process_id=int(os.environ["SPG_PROCESS_ID"]))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from spg_jax import train  # pylint: disable=g-import-not-at-top

  workdir, steps = argv[1], int(argv[2])
  config = tiny_config(steps)
  config.update_from_flattened_dict(json.loads(argv[3]) if len(argv) > 3 else {})
  logging.info("%d processes, %d devices", jax.process_count(), jax.device_count())
  metrics = train.train_and_evaluate(config, workdir)
  run = train.setup_run(config, workdir)
  step = run.checkpointer.latest_step()
  state, _ = run.restore(step)
  flat = flatten_state(state)
  run.checkpointer.close()
  if jax.process_index() == 0:
    np.savez(os.path.join(workdir, FINAL_STATE), **flat)
  print(json.dumps(dict(final_step=step, metrics=metrics)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(_main(sys.argv))
