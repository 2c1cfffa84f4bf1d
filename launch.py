"""Entry point: `python launch.py --config configs/<name>.py [--config.key=value ...] --mode MODE`.

Kept thin on purpose: flags in, library calls out, so everything stays importable and testable.
Modes:
  describe  print the networks the config builds and their parameter counts.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from spg_jax.models.from_config import parameter_counts

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
_MODE = flags.DEFINE_enum("mode", "describe", ["describe"], "What to run.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if _MODE.value == "describe":
    h, w = config.data.image_size
    print(f"{config.data.name}: {h}x{w}, compute dtype {config.compute_dtype}")
    for name, count in parameter_counts(config).items():
      print(f"  {name:34s} {count:>12,d} parameters")
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  sys.exit(app.run(main))
