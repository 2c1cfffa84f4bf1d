"""Entry point: `python launch.py --config configs/<name>.py --workdir DIR [--config.key=value ...]`.

Kept thin on purpose: flags in, library calls out, so everything stays importable and testable.
Modes:
  train     (default) train, or resume from the checkpoints in --workdir; validates as it goes.
  eval      evaluate the latest checkpoint in --workdir on the whole test split: generated PNGs and
            the results table (`spg_jax.evaluate`); the flow network: its validation metrics.
  validate  the training-time validation of the latest checkpoint (validation subset).
  describe  print the networks the config builds and their parameter counts.
A config with `job = 'flownet'` (configs/flownet_*.py) trains the flow / visibility network
(`spg_jax.train_flownet`) instead of SPGNet (`spg_jax.train`).
Multi-host runs (TPU pods, several GPU hosts) call `jax.distributed.initialize()` first; on one host
it is skipped.
"""

from __future__ import annotations

import logging
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "validate", "describe"], "What to run.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host; arguments from the environment).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  flownet_job = config.get("job") == "flownet"
  if _MODE.value == "describe":
    if flownet_job:
      from spg_jax.train_flownet import parameter_counts  # pylint: disable=g-import-not-at-top
    else:
      from spg_jax.models.from_config import parameter_counts  # pylint: disable=g-import-not-at-top
    h, w = config.data.image_size
    print(f"{config.data.name}: {h}x{w}, compute dtype {config.compute_dtype}")
    for name, count in parameter_counts(config).items():
      print(f"  {name:34s} {count:>12,d} parameters")
    return 0
  if _WORKDIR.value is None:
    raise app.UsageError(f"--workdir is required for --mode={_MODE.value}")
  import jax  # pylint: disable=g-import-not-at-top
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  # tf.data must not grab accelerators; TensorFlow only ever runs the input pipeline on the host.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  logging.getLogger().setLevel(logging.INFO)
  # Orbax narrates every save at INFO; keep its warnings and errors only.
  logging.getLogger().handlers[0].addFilter(
      lambda record: record.levelno >= logging.WARNING or "/orbax/" not in record.pathname)
  from spg_jax import jax_setup  # pylint: disable=g-import-not-at-top
  jax_setup.configure_jax(config.get("compilation_cache_dir"), multi_process=_DISTRIBUTED.value)
  if flownet_job:
    from spg_jax import train_flownet as trainer  # pylint: disable=g-import-not-at-top
  else:
    from spg_jax import train as trainer  # pylint: disable=g-import-not-at-top
  if _MODE.value == "train":
    metrics = trainer.train_and_evaluate(config, _WORKDIR.value)
  elif _MODE.value == "eval" and not flownet_job:
    from spg_jax import evaluate  # pylint: disable=g-import-not-at-top
    results = evaluate.evaluate_test_set(config, _WORKDIR.value)
    metrics = {k: v["value"] for k, v in results["metrics"].items() if v["value"] is not None}
  else:
    metrics = trainer.evaluate_checkpoint(config, _WORKDIR.value)
  print({k: round(v, 4) if isinstance(v, float) else v for k, v in (metrics or {}).items()})
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  sys.exit(app.run(main))
