"""Train-step and inference throughput of SPGNet at DeepFashion size on one accelerator.

Measures, for each compute dtype and batch size, the trainer's own jitted step
(`StepFunctions.train_step` with the GAN on: a discriminator update, then a generator update with the
frozen flow network and VGG19 inside, as `configs/deepfashion.py` trains) on in-memory batches
(no TensorFlow needed):
  pairs/s      median over timed steps after warm-up, host-synchronised once per step
  compile s    `jit(...).lower(...).compile()` wall time
  peak GiB     the device's peak memory of a fresh process running only that configuration
  TFLOP/step   XLA's cost analysis of the step lowered for the CPU (`step_flops`)
  MFU          TFLOP/step ÷ step time ÷ the dense bf16 matmul rate measured in the same process
and generator inference pairs/s (stage 1 + stage 2 in eval mode, the `predict` path).

Every configuration runs in its own subprocess so that peak memory and failures (out of memory)
are isolated. Usage:

  python benchmarks/train_step.py --dtypes bfloat16,float32 --batches 4,16,32 --max_batch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batch(config, batch_size, seed=0):
  import numpy as np  # pylint: disable=g-import-not-at-top
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


def _matmul_tflops(dtype) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  n = 8192
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a, b: a @ b)
  f(a, a).block_until_ready()
  times = []
  for _ in range(10):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / float(np.median(times)) / 1e12


def step_flops(jitted, *args) -> float:
  """FLOPs of one call of `jitted`, from XLA's cost analysis of the program lowered for the CPU.

  On GPUs the compiled program's cost analysis misses the convolutions (they become cuDNN custom
  calls) and the lowered one's is unavailable, so the count comes from the same program lowered
  for the CPU backend (the same HLO before backend-specific rewrites).
  """
  lowered = jitted.trace(*args).lower(lowering_platforms=("cpu",))
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def _progress(msg: str, start=time.perf_counter()) -> None:
  print(f"[{time.perf_counter() - start:7.1f} s] {msg}", file=sys.stderr, flush=True)


def run_one(dtype: str, batch_size: int, steps: int, inference: bool) -> dict:
  """One configuration in this process; returns its figures."""
  import functools  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from configs import deepfashion  # pylint: disable=g-import-not-at-top
  from spg_jax.models.from_config import networks_from_config  # pylint: disable=g-import-not-at-top
  from spg_jax.train_step import Frozen, LossWeights, StepFunctions, init_state, make_optimizers  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_threefry_gpu_kernel_lowering", True)  # as launch.py
  config = deepfashion.get_config()
  config.compute_dtype = dtype
  h, w = config.data.image_size
  nets = networks_from_config(config)
  tx_g, tx_d, lr_g, lr_d = make_optimizers(config, steps_per_epoch=1000)
  fn = StepFunctions(nets=nets, scheme="parallel", use_distance_maps=True,
                     weights=LossWeights(**config.loss.to_dict()), tx_g=tx_g, tx_d=tx_d, lr_g=lr_g, lr_d=lr_d,
                     seed=0)
  # Random weights in the real architectures: the flow network and VGG19 run as in training.
  frozen = Frozen(
      flownet=nets.flownet.init(jax.random.key(1), jnp.zeros((1, h, w, nets.flownet.input_nc)), train=False),
      vgg=nets.vgg.init(jax.random.key(2), jnp.zeros((1, 32, 32, 3))))
  _progress(f"{dtype} batch {batch_size}: initialising")
  state = jax.jit(functools.partial(init_state, config, nets, fn))(jax.random.key(0))
  batch = jax.device_put(_batch(config, batch_size))
  jax.block_until_ready((state, batch))
  _progress("compiling the train step")
  out = {"dtype": dtype, "batch": batch_size}

  step = jax.jit(functools.partial(fn.train_step, with_gan=True), donate_argnums=0)
  t = time.perf_counter()
  lowered = step.lower(state, frozen, batch)
  compiled = lowered.compile()
  out["compile_s"] = time.perf_counter() - t
  _progress(f"compiled in {out['compile_s']:.0f} s; timing")
  out["tflop_per_step"] = step_flops(step, state, frozen, batch) / 1e12
  for _ in range(3):
    state, metrics = compiled(state, frozen, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, metrics = compiled(state, frozen, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  out["step_s"] = float(np.median(times))
  out["pairs_per_s"] = batch_size / out["step_s"]
  out["loss_finite"] = bool(np.isfinite(float(metrics["g_loss"])))
  if inference:
    predict = jax.jit(fn.predict).lower(state, frozen, batch).compile()
    jax.block_until_ready(predict(state, frozen, batch))
    times = []
    for _ in range(steps):
      t = time.perf_counter()
      jax.block_until_ready(predict(state, frozen, batch))
      times.append(time.perf_counter() - t)
    out["inference_pairs_per_s"] = batch_size / float(np.median(times))
  stats = jax.devices()[0].memory_stats() or {}
  out["peak_gib"] = stats.get("peak_bytes_in_use", float("nan")) / 2**30
  out["matmul_bf16_tflops"] = _matmul_tflops(jnp.bfloat16)
  out["mfu"] = out["tflop_per_step"] / out["step_s"] / out["matmul_bf16_tflops"]
  out["device"] = jax.devices()[0].device_kind
  return out


def _subprocess(dtype, batch, steps, inference, timeout) -> dict:
  cmd = [sys.executable, __file__, "--one", f"{dtype}:{batch}", "--steps", str(steps)]
  if inference:
    cmd.append("--inference")
  try:
    result = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=timeout, check=False)
  except subprocess.TimeoutExpired as e:
    progress = [l for l in (e.stderr or b"").decode(errors="replace").splitlines() if l.startswith("[")]
    return {"dtype": dtype, "batch": batch, "error": f"timeout {timeout}s after: {progress[-1:] or 'start'}"}
  for line in result.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  tail = (result.stderr or "").strip().splitlines()[-3:]
  oom = any("RESOURCE_EXHAUSTED" in l or "out of memory" in l.lower() for l in tail)
  return {"dtype": dtype, "batch": batch, "error": "out of memory" if oom else " | ".join(tail)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dtypes", default="bfloat16,float32")
  parser.add_argument("--batches", default="4,16,32")
  parser.add_argument("--max_batch", action="store_true", help="also search the largest batch that fits")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--timeout", type=int, default=300, help="per configuration, seconds")
  parser.add_argument("--json", default=None, help="write all results here")
  parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--inference", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  sys.path.insert(0, REPO)
  if args.one:
    dtype, batch = args.one.split(":")
    print("RESULT " + json.dumps(run_one(dtype, int(batch), args.steps, args.inference)), flush=True)
    return

  results = []
  for dtype in args.dtypes.split(","):
    for i, batch in enumerate(int(b) for b in args.batches.split(",")):
      r = _subprocess(dtype, batch, args.steps, inference=(i == 0), timeout=args.timeout)
      print(json.dumps(r), flush=True)
      results.append(r)
    if args.max_batch:
      batch = max(int(b) for b in args.batches.split(","))
      while True:
        batch *= 2
        r = _subprocess(dtype, batch, max(3, args.steps // 2), inference=False, timeout=args.timeout)
        print(json.dumps(r), flush=True)
        results.append(r)
        if "error" in r:
          break
  print("\n| dtype | batch | pairs/s | step ms | compile s | peak GiB | TFLOP/step | MFU | inference pairs/s |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in results:
    if "error" in r:
      print(f"| {r['dtype']} | {r['batch']} | {r['error']} | | | | | | |")
      continue
    inf = f"{r['inference_pairs_per_s']:.1f}" if "inference_pairs_per_s" in r else ""
    print(f"| {r['dtype']} | {r['batch']} | {r['pairs_per_s']:.1f} | {1e3 * r['step_s']:.1f} | "
          f"{r['compile_s']:.0f} | {r['peak_gib']:.1f} | {r['tflop_per_step']:.2f} | {100 * r['mfu']:.1f}% | {inf} |")
  ok = [r for r in results if "error" not in r]
  if ok:
    print(f"\ndevice: {ok[0]['device']}; dense bf16 matmul: {ok[0]['matmul_bf16_tflops']:.0f} TFLOP/s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
