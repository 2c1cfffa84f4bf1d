"""Process-wide JAX settings shared by `launch.py` and the benchmarks.

Two settings, both about start-up time on GPUs, neither changing a number:
  * `jax_threefry_gpu_kernel_lowering`: one CUDA kernel for the threefry random bits rather than an
    XLA expansion per parameter. The same numbers; the state initialiser compiles minutes faster at
    DeepFashion size (BENCHMARKS.md, compile time).
  * the persistent compilation cache: compiled executables, and XLA's per-fusion autotuning results,
    are written under a directory and reused by every later process that compiles the same program
    with the same flags, jax version and device kind. A DeepFashion train step takes minutes to
    compile, most of it convolution autotuning; a resumed run, `--mode eval` after training, or a
    second job on the same machine then starts in seconds (BENCHMARKS.md has the figures). The cache
    is keyed by the whole program, so it can only hit or miss: it never changes what runs.
"""

from __future__ import annotations

import logging
import os

import jax



def user_cache_dir(name: str) -> str:
  """`$XDG_CACHE_HOME/spg_jax/<name>` (~/.cache/spg_jax/<name> without it): spg_jax's caches."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "spg_jax", name)


def resolve_compilation_cache_dir(path: str | None, multi_process: bool = False) -> str | None:
  """The cache directory a config value means; None: no cache.

  Args:
    path: a directory ('~' expanded); '' for no cache; None for the default: the environment's
      `JAX_COMPILATION_CACHE_DIR` if set, else `user_cache_dir('jax_compilation')` in a single-process
      run and no cache in a multi-process one. Processes whose cache keys differ (on CPU the key
      holds a per-process device fingerprint) would load and compile at different speeds and meet
      their first collective minutes apart, so several processes share a cache only when asked to.
    multi_process: whether this process is one of several (`jax.distributed`).
  """
  if path is None:
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or ("" if multi_process else user_cache_dir("jax_compilation"))
  return os.path.abspath(os.path.expanduser(path)) if path else None


def configure_jax(compilation_cache_dir: str | None = None, multi_process: bool = False) -> str | None:
  """Applies the settings above; returns the compilation cache directory in use (None: none).

  Call it before the first compilation. Arguments: see `resolve_compilation_cache_dir`; the
  directory may be on a shared file system and is created if missing.
  """
  jax.config.update("jax_threefry_gpu_kernel_lowering", True)
  cache_dir = resolve_compilation_cache_dir(compilation_cache_dir, multi_process)
  if cache_dir:
    os.makedirs(cache_dir, exist_ok=True)
  # JAX caches programs that took at least `jax_persistent_cache_min_compile_time_secs` (1 s by
  # default) to compile: the train step, the state initialiser and the evaluation step.
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  logging.info("persistent compilation cache: %s", cache_dir or "off")
  return cache_dir
