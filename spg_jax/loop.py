"""The step loop both trainers share (`spg_jax.train`, `spg_jax.train_flownet`).

It owns the cadence and nothing model-specific: read a batch (timing the wait), run the step,
fire the CLU hooks (progress with ETA, profiler window), average the step metrics over each logging
interval with a single device→host transfer (no host sync in between), validate and checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
from clu import periodic_actions

PyTree = Any


def num_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """`train.num_train_steps` when > 0, else `train.num_epochs` × `steps_per_epoch`."""
  if config.train.num_train_steps > 0:
    return int(config.train.num_train_steps)
  return int(config.train.num_epochs) * steps_per_epoch


def eval_every_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """`train.eval_every_steps` when > 0, else once per epoch (the official cadence)."""
  return int(config.train.eval_every_steps) if config.train.eval_every_steps > 0 else steps_per_epoch


def check_resumable(meta: dict[str, Any], global_batch_size: int, workdir: str) -> None:
  """Refuses to resume with another global batch: the data position is counted in batches."""
  if meta["global_batch_size"] != global_batch_size:
    raise ValueError(f"{workdir} was trained with global batch {meta['global_batch_size']}; resuming with "
                     f"{global_batch_size} would change the data order (set train.batch_size back)")
  logging.info("resuming at step %d (%d pairs consumed)", meta["step"], meta["pairs_consumed"])


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`<workdir>/config.json`, by process 0."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


def hooks(config: ml_collections.ConfigDict, num_steps: int, writer, workdir: str) -> list[Callable[[int], Any]]:
  """Console/TensorBoard progress (steps/s, ETA) and, on process 0, a profiler window."""
  result = [periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                            every_steps=config.train.log_every_steps)]
  if jax.process_index() == 0 and config.train.profile_first_step >= 0:
    result.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=config.train.profile_num_steps,
                                           first_profile=config.train.profile_first_step, every_secs=None))
  return result


def run(state: PyTree, *, config: ml_collections.ConfigDict, start: int, num_steps: int,
        batches: Iterator[dict[str, np.ndarray]], step: Callable[[int, PyTree, dict], tuple[PyTree, dict]],
        validate: Callable[[PyTree, int], dict[str, float]],
        save: Callable[[int, PyTree, dict[str, float] | None], None], writer, workdir: str,
        eval_every: int) -> tuple[PyTree, dict[str, float] | None]:
  """Steps `start` → `num_steps`; returns the final state and the last validation metrics.

  Args:
    step: (step index, state, host batch) → (state, device metrics); must not sync with the host.
    validate: (state, steps done) → metrics; runs every `eval_every` steps and at the end (or once
      when a resumed run has nothing left to train).
    save: (steps done, state, validation metrics or None) → None; runs every
      `train.checkpoint_every_steps`, after each validation and at the end.
  """
  loop_hooks = hooks(config, num_steps, writer, workdir)
  pending, data_wait, metrics = [], 0.0, None
  for i in range(start, num_steps):
    with jax.profiler.StepTraceAnnotation("train", step_num=i):
      t0 = time.perf_counter()
      host_batch = next(batches)
      data_wait += time.perf_counter() - t0
      state, step_metrics = step(i, state, host_batch)
      pending.append(step_metrics)
    done = i + 1
    for hook in loop_hooks:
      hook(done)
    if done % config.train.log_every_steps == 0 or done == num_steps:
      history = jax.device_get(pending)
      # Keys absent from some steps (the discriminator's, before the GAN starts) average where present.
      scalars = {k: float(np.mean([m[k] for m in history if k in m])) for k in history[-1]}
      scalars["data_wait_s_per_step"] = data_wait / len(history)
      writer.write_scalars(done, scalars)
      pending, data_wait = [], 0.0
    metrics = None
    if done % eval_every == 0 or done == num_steps:
      metrics = validate(state, done)
    if done % config.train.checkpoint_every_steps == 0 or done == num_steps or metrics is not None:
      save(done, state, metrics)
  if start >= num_steps:
    logging.info("nothing to train: checkpoint %d already reaches %d steps", start, num_steps)
    metrics = validate(state, start)
  return state, metrics
