"""Train-step and inference throughput of SPGNet at DeepFashion size on one accelerator.

Measures, for each compute dtype and batch size, the trainer's own jitted step
(`StepFunctions.train_step` with the GAN on: a discriminator update, then a generator update with the
frozen flow network and VGG19 inside, as `configs/deepfashion.py` trains) on in-memory batches
(no TensorFlow needed):
  pairs/s      batch ÷ the median step time over timed steps after 3 warm-up steps, the host
               synchronised once per step
  compile s    `jit(...).lower(...).compile()` wall time of the train step
  GiB          XLA's memory analysis of the compiled step: arguments + outputs + temporaries −
               donated (aliased) buffers, i.e. the step's peak device memory
  TFLOP/step   XLA's cost analysis of the lowered step, counted in a CPU-only subprocess
               (`count_flops`) while the accelerator runs
  MFU          TFLOP/step ÷ step time ÷ the dense bf16 matmul rate measured in the same process
and generator inference pairs/s at the first batch size (stage 1, the flow network and stage 2 in
eval mode: the `predict` path that `--mode eval` runs).

Everything runs in one process that initialises the state once (the parameters do not depend on
the batch size or the compute dtype) and then compiles and times one configuration after another.
`--max_batch` then tries larger batches until one does not fit. Results are printed as they come
(`RESULT {json}` lines) and as a markdown table at the end. Usage:

  python benchmarks/train_step.py --dtypes bfloat16,float32 --batches 4,16,32 --max_batch 48,64

`--profile DIR` also records a profiler trace of 3 steps of the first configuration
(summarise it with `python -m benchmarks.profile_summary DIR`). `--timing_lock FILE` lets several
benchmark processes (e.g. with different `XLA_FLAGS`) compile at the same time but time their
steps one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def synthetic_batch(config, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A training batch of random images, parsings and keypoint maps at the config's image size."""
  from spg_jax.ops import pose_maps  # pylint: disable=g-import-not-at-top

  h, w = config.data.image_size
  rng = np.random.default_rng(seed)
  keypoints = np.stack([rng.uniform(0, w - 1, (batch_size, 2, 18)), rng.uniform(0, h - 1, (batch_size, 2, 18))], -1)
  pose = np.asarray(pose_maps.keypoint_maps(keypoints.astype(np.float32), h, w, radius=config.data.joint_radius))
  dist = np.asarray(pose_maps.distance_maps(keypoints.astype(np.float32), h, w))
  return dict(
      source_image=rng.uniform(-1, 1, (batch_size, h, w, 3)).astype(np.float32),
      target_image=rng.uniform(-1, 1, (batch_size, h, w, 3)).astype(np.float32),
      source_pose=pose[:, 0], target_pose=pose[:, 1], source_distance=dist[:, 0], target_distance=dist[:, 1],
      source_parsing=rng.integers(0, 20, (batch_size, h, w)).astype(np.int32),
      target_parsing=rng.integers(0, 20, (batch_size, h, w)).astype(np.int32),
      valid=np.ones(batch_size, bool))


def matmul_tflops(dtype=jnp.bfloat16, n: int = 8192) -> float:
  """Dense n × n matmul rate in TFLOP/s (median of 10), the MFU denominator."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a, b: a @ b)
  f(a, a).block_until_ready()
  return 2 * n**3 / median_seconds(lambda: f(a, a), 10) / 1e12


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `fn()` (its outputs waited for) over `repeats` calls."""
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def step_flops(jitted, *args) -> float:
  """FLOPs of one call of `jitted` from XLA's cost analysis of the lowered program (run on the CPU).

  On GPUs the compiled program's cost analysis misses the convolutions (they become cuDNN custom
  calls) and the lowered one's is unavailable, so `count_flops` runs this in a CPU-only process:
  the same program, before backend-specific rewrites.
  """
  cost = jitted.trace(*args).lower().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def count_flops(configs: list[tuple[str, int]], image_size, sean_style_conv) -> dict[str, float]:
  """TFLOP per train step of each (dtype, batch), on abstract shapes (nothing is allocated)."""
  from spg_jax.train_step import init_state  # pylint: disable=g-import-not-at-top

  out = {}
  for dtype, batch_size in configs:
    bench = Bench(dtype, image_size, sean_style_conv)
    state = jax.eval_shape(functools.partial(init_state, bench.config, bench.nets, bench.fn), jax.random.key(0))
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in synthetic_batch(bench.config, batch_size).items()}
    step = jax.jit(functools.partial(bench.fn.train_step, with_gan=True))
    out[f"{dtype}:{batch_size}"] = step_flops(step, state, bench.frozen, batch) / 1e12
  return out


def start_flop_count(configs, args) -> subprocess.Popen:
  """Counts FLOPs in a CPU-only subprocess while this one uses the accelerator."""
  cmd = [sys.executable, __file__, "--count_flops", ",".join(f"{d}:{b}" for d, b in configs)]
  if args.image_size:
    cmd += ["--image_size", args.image_size]
  if args.sean_style_conv:
    cmd += ["--sean_style_conv", args.sean_style_conv]
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def step_memory_gib(compiled) -> float:
  """Peak device memory of a compiled program from XLA's memory analysis, GiB."""
  m = compiled.memory_analysis()
  if m is None:
    return float("nan")
  total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  return total / 2**30


def progress(msg: str, start=time.perf_counter()) -> None:
  print(f"[{time.perf_counter() - start:7.1f} s] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def exclusive(lock_path: str | None):
  """Holds an exclusive file lock (no-op without a path): one process times at a time."""
  if not lock_path:
    yield
    return
  with open(lock_path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def is_out_of_memory(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


class Bench:
  """Builds the trainer's step functions for one compute dtype over a shared initial state."""

  def __init__(self, dtype: str, image_size: tuple[int, int] | None = None, sean_style_conv: str | None = None):
    from configs import deepfashion  # pylint: disable=g-import-not-at-top
    from spg_jax.models.from_config import networks_from_config  # pylint: disable=g-import-not-at-top
    from spg_jax.train_step import Frozen, LossWeights, StepFunctions, make_optimizers  # pylint: disable=g-import-not-at-top

    self.config = config = deepfashion.get_config()
    config.compute_dtype = dtype
    if image_size:
      config.data.image_size = image_size
    if sean_style_conv:
      config.model.generator.sean_style_conv = sean_style_conv
    h, w = config.data.image_size
    self.nets = nets = networks_from_config(config)
    tx_g, tx_d, lr_g, lr_d = make_optimizers(config, steps_per_epoch=1000)
    self.fn = StepFunctions(nets=nets, scheme="parallel", use_distance_maps=True,
                            weights=LossWeights(**config.loss.to_dict()), tx_g=tx_g, tx_d=tx_d, lr_g=lr_g,
                            lr_d=lr_d, seed=0)
    # Random weights in the real architectures: the flow network and VGG19 run as in training.
    self.frozen = Frozen(
        flownet=nets.flownet.init(jax.random.key(1), jnp.zeros((1, h, w, nets.flownet.input_nc)), train=False),
        vgg=nets.vgg.init(jax.random.key(2), jnp.zeros((1, 32, 32, 3))))

  def init_state(self):
    from spg_jax.train_step import init_state  # pylint: disable=g-import-not-at-top
    return jax.jit(functools.partial(init_state, self.config, self.nets, self.fn))(jax.random.key(0))


def run_config(bench: Bench, state, batch_size: int, steps: int, lock: str | None, inference: bool,
               profile_dir: str | None) -> tuple[dict, object]:
  """Compiles and times one (dtype, batch) train step; returns its figures and the advanced state."""
  out = {"dtype": bench.config.compute_dtype, "batch": batch_size}
  batch = jax.device_put(synthetic_batch(bench.config, batch_size))
  step = jax.jit(functools.partial(bench.fn.train_step, with_gan=True), donate_argnums=0)
  progress(f"{out['dtype']} batch {batch_size}: compiling the train step")
  t = time.perf_counter()
  compiled = step.lower(state, bench.frozen, batch).compile()
  out["compile_s"] = time.perf_counter() - t
  out["gib"] = step_memory_gib(compiled)
  progress(f"compiled in {out['compile_s']:.0f} s; timing")
  with exclusive(lock):
    for _ in range(3):
      state, metrics = compiled(state, bench.frozen, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
      t = time.perf_counter()
      state, metrics = compiled(state, bench.frozen, batch)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t)
    if profile_dir:
      jax.profiler.start_trace(profile_dir)
      for _ in range(3):
        state, metrics = compiled(state, bench.frozen, batch)
      jax.block_until_ready(metrics)
      jax.profiler.stop_trace()
  out["step_s"] = float(np.median(times))
  out["pairs_per_s"] = batch_size / out["step_s"]
  out["loss_finite"] = bool(np.isfinite(float(metrics["g_loss"])))
  if inference:
    predict = jax.jit(bench.fn.predict)
    t = time.perf_counter()
    predict_c = predict.lower(state, bench.frozen, batch).compile()
    out["inference_compile_s"] = time.perf_counter() - t
    with exclusive(lock):
      jax.block_until_ready(predict_c(state, bench.frozen, batch))
      out["inference_pairs_per_s"] = batch_size / median_seconds(lambda: predict_c(state, bench.frozen, batch), steps)
  return out, state


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dtypes", default="bfloat16,float32")
  parser.add_argument("--batches", default="4,16,32")
  parser.add_argument("--max_batch", default="", help="larger batches to try in order, until one does not fit")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--no_flops", action="store_true", help="skip the FLOP count (and MFU)")
  parser.add_argument("--no_inference", action="store_true", help="skip the inference figure")
  parser.add_argument("--count_flops", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--profile", default=None, help="write a profiler trace of the first configuration here")
  parser.add_argument("--timing_lock", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--image_size", default=None, help="H,W instead of DeepFashion's 256,256 (smoke tests)")
  parser.add_argument("--sean_style_conv", default=None, help="'direct' or 'per_sample' (default: the config's)")
  parser.add_argument("--label", default="", help="a name for this run in the results (e.g. the XLA flags)")
  parser.add_argument("--json", default=None, help="write all results here (rewritten after each one)")
  parser.add_argument("--compilation_cache_dir", default="",
                      help="persistent compilation cache (default: none, so that compilation is timed cold)")
  args = parser.parse_args()

  image_size = tuple(int(s) for s in args.image_size.split(",")) if args.image_size else None
  if args.count_flops:
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.count_flops.split(",")]
    print("FLOPS " + json.dumps(count_flops(configs, image_size, args.sean_style_conv)), flush=True)
    return
  from spg_jax import jax_setup  # pylint: disable=g-import-not-at-top
  jax_setup.configure_jax(args.compilation_cache_dir)  # as launch.py
  batches = [int(b) for b in args.batches.split(",")]
  extra = [int(b) for b in args.max_batch.split(",") if b]
  flop_counter = None if args.no_flops else start_flop_count(
      [(d, b) for d in args.dtypes.split(",") for b in batches + extra], args)
  results = []

  def record(r):
    r["label"] = args.label
    r["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    r["device"] = jax.devices()[0].device_kind
    print("RESULT " + json.dumps(r), flush=True)
    results.append(r)
    if args.json:
      with open(args.json, "w") as f:
        json.dump(results, f, indent=2)

  state = host_state = None
  first = True
  for dtype in args.dtypes.split(","):
    bench = Bench(dtype, image_size, args.sean_style_conv)
    if state is None:
      progress("initialising the state")
      t = time.perf_counter()
      state = bench.init_state()
      jax.block_until_ready(state)
      progress(f"initialised in {time.perf_counter() - t:.0f} s")
      # The step donates its state; a step that runs out of memory may leave it deleted.
      host_state = jax.device_get(state)
    for i, batch_size in enumerate(batches + extra):
      try:
        r, state = run_config(bench, state, batch_size, args.steps if batch_size in batches else 3, args.timing_lock,
                              inference=(i == 0 and not args.no_inference), profile_dir=args.profile if first else None)
      except Exception as e:  # pylint: disable=broad-except
        if not is_out_of_memory(e):
          raise
        record({"dtype": dtype, "batch": batch_size, "error": "out of memory"})
        state = jax.device_put(host_state)
        if batch_size in extra:
          break
        continue
      first = False
      record(r)

  matmul = matmul_tflops()
  flops = {}
  if flop_counter is not None:
    progress("waiting for the FLOP count")
    stdout, _ = flop_counter.communicate()
    lines = [l for l in stdout.splitlines() if l.startswith("FLOPS ")]
    flops = json.loads(lines[-1][len("FLOPS "):]) if lines else {}
  print("\n| dtype | batch | pairs/s | step ms | compile s | GiB | TFLOP/step | MFU | inference pairs/s |")
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  for r in results:
    if "error" in r:
      print(f"| {r['dtype']} | {r['batch']} | {r['error']} | | | | | | |")
      continue
    r["matmul_bf16_tflops"] = matmul
    r["tflop_per_step"] = flops.get(f"{r['dtype']}:{r['batch']}", float("nan"))
    r["mfu"] = r.get("tflop_per_step", float("nan")) / r["step_s"] / matmul
    inf = f"{r['inference_pairs_per_s']:.1f}" if "inference_pairs_per_s" in r else ""
    print(f"| {r['dtype']} | {r['batch']} | {r['pairs_per_s']:.1f} | {1e3 * r['step_s']:.1f} | "
          f"{r['compile_s']:.0f} | {r['gib']:.1f} | {r.get('tflop_per_step', float('nan')):.2f} | "
          f"{100 * r['mfu']:.1f}% | {inf} |")
  print(f"\ndevice: {jax.devices()[0].device_kind}; dense bf16 matmul: {matmul:.0f} TFLOP/s; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
