"""Orbax checkpoints of a training run: asynchronous, keep-last-N plus the best, resumable anywhere.

A checkpoint (one directory per step under `<workdir>/checkpoints`) holds
  state  the `TrainState` pytree (parameters, batch statistics, both optimizers, step), restored
         directly onto the shardings of the current mesh, so a run written on N devices resumes on M;
  meta   JSON: step, global batch size and pairs consumed (the data position: the input pipeline
         reads by position, see `input_pipeline.pipeline`), and the config the run was started with.
The RNG needs no saving: each step's key is `fold_in(seed, step)`.

Preservation: the latest `keep` checkpoints, plus the one with the best validation SSIM among those
saved with metrics. Writes are atomic (Orbax renames a finished temporary directory), so a run
killed mid-save resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = "ssim"


class Checkpointer:
  """Saves and restores `TrainState` + metadata under `directory`."""

  def __init__(self, directory: str | os.PathLike, keep: int):
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep),
        checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
                                  keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=True,
                                           create=True)
    directory = os.fspath(directory)
    # Orbax's TensorStore writer wants absolute local paths: a relative one fails only in the
    # asynchronous writer thread, when the next save waits for it.
    self.directory = directory if "://" in directory else os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any], metrics: dict[str, float] | None = None,
           force: bool = False) -> None:
    """Starts an asynchronous save of `state` and `meta` at `step` (no-op if it exists)."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)),
                       metrics=metrics, force=force)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores checkpoint `step` onto the shardings carried by `abstract_state`.

    Args:
      step: which checkpoint.
      abstract_state: a pytree of `jax.ShapeDtypeStruct` with `.sharding` (e.g. from `jax.eval_shape`
        with shardings attached) describing where every array goes on the current mesh.
    """
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    logging.info("restored checkpoint %d from %s", step, self.directory)
    return restored["state"], restored["meta"]

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """Attaches shardings to a pytree of `jax.ShapeDtypeStruct` (the restore target)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
