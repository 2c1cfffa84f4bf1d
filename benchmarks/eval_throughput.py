"""Throughput of `--mode eval` at DeepFashion size: every test pair generated and every metric computed.

The target: DeepFashion's 8,570 test pairs, generation and all metrics, in at most 5 minutes on one H100.
This runs the loop of `spg_jax.evaluate.evaluate_test_set` on in-memory random batches of DeepFashion's
shapes (`benchmarks.train_step.synthetic_batch`, 256 × 256) instead of the TFDS test split, so that it
needs no TensorFlow, TFDS or clu. Every network has random weights built in memory from its template
(no files): the generator, stage 1 and the flow network of `configs/deepfashion.py` (its compute dtype,
bfloat16 unless `--dtype`), both Inception-v3 protocols, AlexNet-LPIPS and the OpenPose pose estimator.
What runs is evaluate's own code:
  device step   `evaluate.make_batch_step`: inference (stage 1 → flow network → generator), SSIM in
                three variants, L1, PSNR, the stage-1 confusion, LPIPS on the 176-wide crops, both
                Inception feature sets of the saved (cropped uint8) images, and the pose maps of the
                uncropped images at the PCKh scripts' four scales (`--pckh_scales` to try others)
  the loop      `evaluate.run_test_batches`: each batch dispatched one batch ahead of collecting the
                previous one (`evaluate.BatchCollector`): device → host copies, a PNG per pair
                (`visualize.write_png`, into a temporary directory removed at the end) and the PCKh
                keypoint decoding of each image (`pckh.decode_keypoints`), both on the collector's
                thread pool
  the end       per FID protocol the 2048-d statistics of the generated features and the Fréchet
                distance to (random) real-set statistics (scipy's sqrtm), and the PCKh score
Not included: reading and decoding the test split (tf.data; BENCHMARKS.md's input-pipeline table has
≈ 44 pairs/s per core for DeepFashion's records without host flow), restoring the checkpoint, and the
training set's FID statistics, which evaluate computes once and caches.

Random weights change two host costs. The pose network's last convs are zeroed, so that its maps hold
no peak: decoding then only finds that no part reaches the threshold (1.6 ms an image on one core of
the 2-core development machine), where trained maps with one person cost 6.7 ms (Gaussian smoothing
around each part, limb matching; `benchmarks/pckh_decode.py`); plain random maps instead hold many
peaks, whose all-pairs matching would take seconds per image. And PNG encoding time depends on the
content (zlib).

Reported (a markdown table, a `RESULT {json}` line, and `--json PATH`): the total seconds and pairs/s of
the loop and the end; compile seconds (the first batch minus a warm one: every jitted function of the
step compiles there); the warm device step per batch (median of `--device_steps`, dispatch to ready,
host → device copy of the batch included) and that times the number of batches; and where the loop's
main thread waited (device, device → host copies, queued host work) with the thread-seconds of the PNG
writes and the PCKh decoding. Usage:

  python benchmarks/eval_throughput.py --pairs 8570 --batch_size 32 --json eval_throughput.json

CPU smoke test (the generator needs sides that are multiples of 128; one small PCKh scale keeps the pose
network cheap):

  JAX_PLATFORMS=cpu python benchmarks/eval_throughput.py --pairs 16 --batch_size 4 --image_size 128,128 \
      --pckh_scales 0.25

Needs jax, flax, optax, numpy, ml_collections, Pillow (the PNGs) and scipy (PCKh's Gaussian smoothing
and FID's matrix square root are part of what is measured; without scipy it stops and says so).
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

PCKH_TARGET_MISSING = 0.1  # fraction of target joints marked missing in the random annotation


def progress(msg: str, start=time.perf_counter()) -> None:
  print(f"[{time.perf_counter() - start:7.1f} s] {msg}", file=sys.stderr, flush=True)


def random_like(template, seed: int, zero=lambda path: False):
  """NumPy arrays of `template`'s shapes and dtypes (a pytree of ShapeDtypeStructs), random by name.

  Kernels (last key ending in 'kernel'): He-normal over their fan-in; normalisation scales and
  variances: U(0.8, 1.2) (positive, near 1); other floats: N(0, 0.05); integers, and the leaves whose
  key path `zero(path string)` selects: zeros. Values only have to keep activations finite: the
  benchmark measures time, not quality.
  """
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    dtype = np.dtype(x.dtype)
    if not np.issubdtype(dtype, np.floating) or zero(jax.tree_util.keystr(path)):
      return np.zeros(x.shape, dtype)
    last = path[-1]
    name = str(getattr(last, "key", getattr(last, "name", "")))
    if name.endswith("kernel") and len(x.shape) >= 2:
      fan_in = int(np.prod(x.shape[:-1]))
      return (rng.standard_normal(x.shape, np.float32) * np.float32(math.sqrt(2.0 / fan_in))).astype(dtype)
    if name in ("scale", "var", "noise_var"):
      return rng.uniform(0.8, 1.2, x.shape).astype(dtype)
    return (0.05 * rng.standard_normal(x.shape, np.float32)).astype(dtype)

  return jax.tree_util.tree_map_with_path(leaf, template)


def build(args):
  """The config, step functions, mesh, random state / frozen networks and metric models."""
  from configs import deepfashion  # pylint: disable=g-import-not-at-top
  from spg_jax import evaluate, sharding  # pylint: disable=g-import-not-at-top
  from spg_jax.metrics import inception, lpips, pose_estimator  # pylint: disable=g-import-not-at-top
  from spg_jax.models.from_config import networks_from_config  # pylint: disable=g-import-not-at-top
  from spg_jax.train_step import (Frozen, LossWeights, StepFunctions, init_state,  # pylint: disable=g-import-not-at-top
                                  make_optimizers)

  config = deepfashion.get_config()
  if args.image_size:
    config.data.image_size = tuple(int(s) for s in args.image_size.split(","))
  if args.dtype:
    config.compute_dtype = args.dtype
  if args.pckh_scales:
    config.eval.pckh_scale_search = tuple(ast.literal_eval(f"({args.pckh_scales},)"))
  h, w = config.data.image_size
  mesh = sharding.make_mesh(config.mesh.fsdp)
  nets = networks_from_config(config)
  # As `train.setup_run` builds them (the optimisers only shape the state; inference ignores them).
  tx_g, tx_d, lr_g, lr_d = make_optimizers(config, steps_per_epoch=1000)
  fn = StepFunctions(nets=nets, scheme=config.scheme, use_distance_maps=bool(config.model.parsing.use_distance_maps),
                     weights=LossWeights(**config.loss.to_dict()), tx_g=tx_g, tx_d=tx_d, lr_g=lr_g, lr_d=lr_d,
                     seed=int(config.seed))
  key = jax.random.key(0)
  abstract = jax.eval_shape(functools.partial(init_state, config, nets, fn), key)
  state_sh = sharding.state_shardings(abstract, mesh)
  # Host-made random values: no initialiser to compile (that takes ~45 s on a GPU); Adam moments zero.
  state = jax.device_put(random_like(abstract, 1, zero=lambda p: p.startswith(".opt_")), state_sh)
  flownet = None
  if config.data.flow == "network":
    flownet = random_like(jax.eval_shape(
        lambda: nets.flownet.init(key, np.zeros((1, h, w, nets.flownet.input_nc), np.float32), train=False)), 2)
  replicated = sharding.replicated(mesh)
  frozen = jax.device_put(Frozen(flownet=flownet), replicated)  # inference needs no VGG19
  frozen_sh = jax.tree.map(lambda _: replicated, frozen)

  def inception_variables(variant, seed):
    size = inception.MIN_INPUT_SIZE
    template = jax.eval_shape(inception.InceptionV3Features(variant=variant).init, key,
                              jax.ShapeDtypeStruct((1, size, size, 3), np.float32))
    return jax.device_put(random_like(template, seed), replicated)

  fid_models = tuple(evaluate.FidModel(metric, variant, "random weights", inception_variables(variant, 3 + i))
                     for i, (metric, (variant, _)) in enumerate(evaluate.FID_PROTOCOLS.items()))
  lpips_variables = jax.tree.map(np.abs, random_like(lpips.lpips_template(), 5))  # heads ≥ 0, as trained
  # The pose network's two output convs are zeroed (the compute is unchanged): maps of exactly 0 hold
  # no peak. Random maps can hold hundreds of peaks per part, whose all-pairs limb matching would
  # time the decoder on inputs no trained network produces (see the module docstring).
  pose_variables = random_like(pose_estimator.pose_estimator_template(), 6)
  for name in ("Mconv7_stage6_L1", "Mconv7_stage6_L2"):
    pose_variables["params"][name] = jax.tree.map(np.zeros_like, pose_variables["params"][name])
  pose = evaluate.PoseModel("random weights", jax.device_put(pose_variables, replicated),
                            evaluate.pckh_scale_search(config))
  models = evaluate.MetricModels(jax.device_put(lpips_variables, replicated), fid_models, pose)
  shardings = (state_sh, frozen_sh, sharding.batch_sharding(mesh))
  return config, fn, mesh, state, frozen, models, shardings


def host_batches(templates, num_pairs: int, batch_size: int):
  """Batches of `batch_size` covering pairs 0 .. num_pairs − 1, the last one padded (valid False), as
  `pipeline.padded_batches` yields them; the images etc. cycle through `templates`."""
  for b in range(math.ceil(num_pairs / batch_size)):
    index = np.arange(b * batch_size, (b + 1) * batch_size)
    batch = dict(templates[b % len(templates)])
    batch["valid"] = index < num_pairs
    batch["index"] = np.where(batch["valid"], index, 0).astype(np.int32)
    yield batch


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--pairs", type=int, default=8570, help="test pairs (DeepFashion's test split: 8570)")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--image_size", default=None, help="H,W instead of DeepFashion's 256,256 (smoke tests)")
  parser.add_argument("--dtype", default=None, help="compute dtype of the networks (default: the config's)")
  parser.add_argument("--pckh_scales", default=None,
                      help="comma-separated PCKh scale factors (default: the scripts' 0.5,1,1.5,2)")
  parser.add_argument("--device_steps", type=int, default=3, help="warm device steps timed alone")
  parser.add_argument("--workers", type=int, default=None, help="host threads (default: the CPU count)")
  parser.add_argument("--keep_images", default=None, help="write the PNGs here and keep them")
  parser.add_argument("--json", default=None, help="write the result here")
  parser.add_argument("--compilation_cache_dir", default="",
                      help="persistent compilation cache (default: none, so that compilation is timed cold)")
  args = parser.parse_args()

  missing = [m for m in ("scipy", "PIL", "ml_collections") if importlib.util.find_spec(m) is None]
  if missing:
    sys.exit(f"eval_throughput: {', '.join(missing)} not installed; spg_jax.evaluate needs scipy (PCKh's "
             "Gaussian smoothing, FID's matrix square root), Pillow (the PNGs) and ml_collections (the config)")
  import scipy  # pylint: disable=g-import-not-at-top

  from benchmarks.train_step import synthetic_batch  # pylint: disable=g-import-not-at-top
  from spg_jax import evaluate, jax_setup, sharding  # pylint: disable=g-import-not-at-top
  from spg_jax.metrics import fid, pckh  # pylint: disable=g-import-not-at-top

  jax_setup.configure_jax(args.compilation_cache_dir)  # as launch.py

  progress(f"building random networks on {jax.devices()[0].device_kind}")
  config, fn, mesh, state, frozen, models, shardings = build(args)
  h, w = config.data.image_size
  crop = config.eval.crop_width
  batch_step = evaluate.make_batch_step(fn, crop, mesh, shardings, models)
  templates = [dict(synthetic_batch(config, args.batch_size, seed=s), index=np.zeros(args.batch_size, np.int32))
               for s in range(2)]
  rng = np.random.default_rng(7)
  targets = np.stack([rng.uniform(0, w - 1, (args.pairs, 18)), rng.uniform(0, h - 1, (args.pairs, 18))], -1)
  targets[rng.random((args.pairs, 18)) < PCKH_TARGET_MISSING] = -1
  # Stand-ins for the cached real-set statistics (evaluate reads them from its cache).
  real_statistics = fid.statistics(rng.standard_normal((4096, 2048)))
  num_batches = math.ceil(args.pairs / args.batch_size)

  def device_step(batch):
    return jax.block_until_ready(batch_step(state, frozen, sharding.global_batch(batch, mesh)))

  first = next(host_batches(templates, args.pairs, args.batch_size))
  progress(f"compiling the batch step ({h}×{w}, batch {args.batch_size}, {config.compute_dtype}, PCKh scales "
           f"{models.pose.scale_search})")
  t = time.perf_counter()
  device_step(first)
  first_s = time.perf_counter() - t
  times = []
  for _ in range(args.device_steps):
    t = time.perf_counter()
    device_step(first)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  compile_s = first_s - step_s
  progress(f"compiled in {compile_s:.1f} s; warm device step {1e3 * step_s:.0f} ms per batch; running "
           f"{args.pairs} pairs in {num_batches} batches")

  image_dir = args.keep_images or tempfile.mkdtemp(prefix="eval_throughput_")
  os.makedirs(image_dir, exist_ok=True)
  per_pair_keys = ["ssim_official", "ssim_patn", "l1", "psnr", "lpips"]
  if min(h, w) >= evaluate.GFLA_WINDOW:
    per_pair_keys.append("ssim_gfla")
  collector = evaluate.BatchCollector(per_pair_keys=per_pair_keys, fid_metrics=[m.metric for m in models.fid],
                                        image_dir=image_dir, target_keypoints=targets, workers=args.workers)
  loop_start = time.perf_counter()

  def log(b, host_batch, out):
    del host_batch, out
    if (b + 1) % 50 == 0 or b + 1 == num_batches:
      elapsed = time.perf_counter() - loop_start
      progress(f"{b + 1} / {num_batches} batches, {(b + 1) * args.batch_size / elapsed:.1f} pairs/s")

  try:
    batches = host_batches(templates, args.pairs, args.batch_size)
    collected = evaluate.run_test_batches(batch_step, state, frozen, batches, mesh, collector, on_output=log)
    loop_s = time.perf_counter() - loop_start
    t = time.perf_counter()
    fid_values = {}
    for model in models.fid:
      fid_values[model.metric] = fid.frechet_distance(*fid.statistics(collected.fid_features[model.metric]),
                                                      *real_statistics)
    fid_s = time.perf_counter() - t
    pckh_value = pckh.pckh_score(collected.pckh)
    end_s = time.perf_counter() - t
    num_pngs = len(os.listdir(image_dir))
  finally:
    if not args.keep_images:
      shutil.rmtree(image_dir, ignore_errors=True)
  evaluated = len(collected.per_pair["l1"])
  if evaluated != args.pairs or num_pngs != args.pairs:
    raise RuntimeError(f"evaluated {evaluated} pairs and wrote {num_pngs} PNGs, expected {args.pairs}")

  seconds = collected.seconds
  total_s = loop_s + end_s
  result = dict(
      device=jax.devices()[0].device_kind, num_devices=mesh.devices.size, pairs=args.pairs,
      batch_size=args.batch_size, image_size=[h, w], crop_width=crop, compute_dtype=config.compute_dtype,
      pckh_scales=list(models.pose.scale_search), workers=args.workers or os.cpu_count(),
      total_s=total_s, pairs_per_s=args.pairs / total_s, compile_s=compile_s,
      total_with_compile_s=total_s + compile_s,
      device_step_s=step_s, device_steps_total_s=step_s * num_batches, loop_s=loop_s,
      wait_device_s=seconds.get("device", 0.0), transfer_s=seconds.get("transfer", 0.0),
      wait_host_s=seconds.get("host_wait", 0.0),
      png_thread_s=seconds.get("png", 0.0), pckh_decode_thread_s=seconds.get("pckh_decode", 0.0),
      fid_end_s=fid_s, end_s=end_s, scipy=scipy.__version__, jax=jax.__version__,
      heavy_modules_imported=[m for m in ("tensorflow", "tensorflow_datasets", "clu") if m in sys.modules],
      values=dict(fid={k: float(v) for k, v in fid_values.items()}, pckh=float(pckh_value),
                  people_found=int(sum((kp[:, 0] >= 0).any() for kp in collected.pckh_keypoints.values())),
                  ssim_official=float(np.mean(collected.per_pair["ssim_official"]))))
  result["main_thread_other_s"] = loop_s - result["wait_device_s"] - result["transfer_s"] - result["wait_host_s"]
  print("RESULT " + json.dumps(result), flush=True)
  n = num_batches
  threads = f"thread-seconds on {result['workers']} threads"
  rows = [
      ("total: loop + end", total_s,
       f"**{result['pairs_per_s']:.1f} pairs/s**; {args.pairs} pairs, batch {args.batch_size}"),
      ("compile (first batch − a warm one)", compile_s, f"total with compile: {total_s + compile_s:.1f} s"),
      ("device step, warm", step_s * n,
       f"{1e3 * step_s:.0f} ms per batch (median of {args.device_steps}) × {n} batches"),
      ("loop wall", loop_s, "dispatch one batch ahead, collect, host work on the thread pool"),
      ("· waiting for the device", result["wait_device_s"], "main thread"),
      ("· device → host copies", result["transfer_s"], "main thread: outputs incl. pose maps (56 floats a pixel)"),
      ("· waiting for queued host work", result["wait_host_s"], "main thread"),
      ("· other main-thread work", result["main_thread_other_s"], "host → device batches, bookkeeping"),
      ("PNG encode + write", result["png_thread_s"], threads),
      ("PCKh decoding", result["pckh_decode_thread_s"], threads),
      ("end: FID statistics + Fréchet distance", fid_s,
       f"{len(models.fid)} protocols, 2048-d, scipy {scipy.__version__}"),
  ]
  print("\n| part | seconds | note |\n| --- | ---: | --- |")
  for name, value, note in rows:
    print(f"| {name} | {value:.1f} | {note} |")
  print(f"\ndevice: {result['device']} × {result['num_devices']}; {h}×{w}, crop {crop}, {config.compute_dtype}; "
        f"PCKh scales {tuple(models.pose.scale_search)}; random weights (values: FID {result['values']['fid']}, "
        f"PCKh {pckh_value:.3f}, images with a person found: {result['values']['people_found']}); "
        f"TensorFlow / TFDS / clu imported: {result['heavy_modules_imported'] or 'none'}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
