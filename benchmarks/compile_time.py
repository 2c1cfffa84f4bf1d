"""Compile time of SPGNet at DeepFashion size: each network, the state initialiser, the train step.

For each network (stage-2 generator, stage-1 SPATN, flow network, VGG19, discriminator) it times
`jit(...).lower(...).compile()` of the forward pass and of forward + backward (gradient of the mean
output with respect to the parameters; the frozen networks' with respect to their input), on random
weights at batch `--batch`, 256 × 256, in `--dtype`. Compile options come from the environment
(`XLA_FLAGS`), so runs with different flags compare them. `init_state` is the trainer's jitted
random initialisation of the whole state; `train_step` the trainer's step with the GAN on.
`--threefry_kernel` sets `jax_threefry_gpu_kernel_lowering` (one CUDA kernel for the threefry
random bits instead of an XLA expansion per parameter).

  python -m benchmarks.compile_time
  XLA_FLAGS=--xla_gpu_autotune_level=0 python -m benchmarks.compile_time --what init_state,train_step
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import deepfashion
from spg_jax.models import generator as generator_lib
from spg_jax.models import parsing as parsing_lib
from spg_jax.models.from_config import networks_from_config


def _timed_compile(fn, *args) -> float:
  t = time.perf_counter()
  jax.jit(fn).lower(*args).compile()
  return time.perf_counter() - t


def network_cases(config, batch: int):
  """(name, variables, apply(variables, x) → output, input) per network; apply in training mode."""
  nets = networks_from_config(config)
  h, w = config.data.image_size
  key = jax.random.key(0)
  gen_inputs = generator_lib.dummy_inputs(nets.generator.config, batch, h, w)
  gen_vars = jax.eval_shape(lambda: generator_lib.init_variables(nets.generator, key, (1, h, w)))

  def generator(variables, inputs):
    out, _ = nets.generator.apply(variables, **inputs, train=True, mutable=["batch_stats"],
                                  rngs={"noise": jax.random.key(1)})
    return out

  par_vars = jax.eval_shape(lambda: parsing_lib.init_variables(nets.parsing, key, (1, h, w)))
  z = lambda c: jnp.zeros((batch, h, w, c), jnp.float32)
  par_inputs = dict(source_parsing=z(20), source_pose=z(18), target_pose=z(18), source_distance=z(12),
                    target_distance=z(12))

  def parsing(variables, inputs):
    out, _ = nets.parsing.apply(variables, **inputs, train=True, mutable=["batch_stats"])
    return out

  flow_vars = jax.eval_shape(lambda: nets.flownet.init(key, z(nets.flownet.input_nc)[:1], train=False))
  vgg_vars = jax.eval_shape(lambda: nets.vgg.init(key, jnp.zeros((1, 32, 32, 3))))
  d_vars = jax.eval_shape(lambda: nets.discriminator.init(key, z(nets.discriminator.input_nc)[:1], train=False))

  def discriminator(variables, x):
    out, _ = nets.discriminator.apply(variables, x, train=True, mutable=["batch_stats"])
    return out

  return [
      ("generator", gen_vars, generator, gen_inputs, "params"),
      ("parsing (SPATN)", par_vars, parsing, par_inputs, "params"),
      ("flow network", flow_vars, lambda v, x: nets.flownet.apply(v, x, train=False).flow,
       z(nets.flownet.input_nc), "input"),
      ("VGG19", vgg_vars, lambda v, x: nets.vgg.apply(v, x)[-1], z(3), "input"),
      ("discriminator", d_vars, discriminator, z(nets.discriminator.input_nc), "params"),
  ]


def trainer_cases(config, batch: int) -> list[tuple[str, float]]:
  """(name, compile seconds) of the trainer's jitted `init_state` and `train_step` (GAN on)."""
  import functools  # pylint: disable=g-import-not-at-top

  from benchmarks.train_step import _batch  # pylint: disable=g-import-not-at-top
  from spg_jax.train_step import Frozen, LossWeights, StepFunctions, init_state, make_optimizers  # pylint: disable=g-import-not-at-top

  nets = networks_from_config(config)
  tx_g, tx_d, lr_g, lr_d = make_optimizers(config, steps_per_epoch=1000)
  fn = StepFunctions(nets=nets, scheme="parallel", use_distance_maps=True,
                     weights=LossWeights(**config.loss.to_dict()), tx_g=tx_g, tx_d=tx_d, lr_g=lr_g, lr_d=lr_d,
                     seed=0)
  init = functools.partial(init_state, config, nets, fn)
  key = jax.random.key(0)
  rows = [("init_state", _timed_compile(init, key))]
  h, w = config.data.image_size
  state = jax.eval_shape(init, key)
  frozen = jax.eval_shape(lambda: Frozen(
      flownet=nets.flownet.init(key, jnp.zeros((1, h, w, nets.flownet.input_nc)), train=False),
      vgg=nets.vgg.init(key, jnp.zeros((1, 32, 32, 3)))))
  batch = _batch(config, batch)
  rows.append(("train_step", _timed_compile(functools.partial(fn.train_step, with_gan=True), state, frozen, batch)))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--what", default="networks,init_state,train_step")
  parser.add_argument("--only", default=None, help="comma-separated network names (prefixes)")
  parser.add_argument("--threefry_kernel", action="store_true")
  args = parser.parse_args()
  if args.threefry_kernel:
    jax.config.update("jax_threefry_gpu_kernel_lowering", True)
  config = deepfashion.get_config()
  config.compute_dtype = args.dtype
  what = args.what.split(",")
  rows = []
  for name, variables, apply, x, wrt in (network_cases(config, args.batch) if "networks" in what else []):
    if args.only and not any(name.startswith(p) for p in args.only.split(",")):
      continue
    # Abstract variables: compilation needs only shapes.
    variables = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), variables)
    forward = _timed_compile(lambda v, x: jnp.mean(apply(v, x).astype(jnp.float32)), variables, x)
    if wrt == "params":
      grad = jax.grad(lambda p, rest, x: jnp.mean(apply({"params": p, **rest}, x).astype(jnp.float32)))
      rest = {k: v for k, v in variables.items() if k != "params"}
      backward = _timed_compile(grad, variables["params"], rest, x)
    else:
      grad = jax.grad(lambda x, v: jnp.mean(apply(v, x).astype(jnp.float32)))
      backward = _timed_compile(grad, x, variables)
    rows.append(dict(network=name, forward_s=forward, forward_backward_s=backward))
    print(json.dumps(rows[-1]), flush=True)
  trainer = []
  if "init_state" in what or "train_step" in what:
    for name, seconds in trainer_cases(config, args.batch):
      trainer.append((name, seconds))
      print(json.dumps({name: seconds}), flush=True)
  flags = f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, threefry kernel {args.threefry_kernel}"
  print(f"\n{jax.devices()[0].device_kind}, batch {args.batch}, {args.dtype}, {flags}")
  if rows:
    print("| network | compile forward s | compile forward + backward s |\n| --- | ---: | ---: |")
    for r in rows:
      print(f"| {r['network']} | {r['forward_s']:.1f} | {r['forward_backward_s']:.1f} |")
    print(f"| total | {sum(r['forward_s'] for r in rows):.1f} | {sum(r['forward_backward_s'] for r in rows):.1f} |")
  for name, seconds in trainer:
    print(f"{name}: compile {seconds:.1f} s")


if __name__ == "__main__":
  np.set_printoptions(precision=3)
  main()
