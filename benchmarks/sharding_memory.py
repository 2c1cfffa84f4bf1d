"""Per-device memory of the DeepFashion train step under pure data parallelism and with the `fsdp` axis.

Compiles the trainer's step (GAN on, frozen flow network and VGG19 inside, `configs/deepfashion.py`
networks at 256 × 256, bf16 compute) for a mesh of `--devices` devices, `data × fsdp` with each
`--fsdp` size, the batch split over every device (`--per_device_batch` pairs each), with the
trainer's shardings (`spg_jax.sharding.state_shardings`: with fsdp > 1 each state leaf is split
along its largest dimension divisible by fsdp). Nothing runs: the figures are XLA's memory analysis
of the compiled per-device program, and its collectives counted in the optimised HLO.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
      python benchmarks/sharding_memory.py --devices 8 --fsdp 1,2,4,8

On a GPU host, leave out the two variables. Reported per fsdp size: the state's bytes per device
(parameters, batch statistics, both Adam states), XLA's argument / output / temporary bytes and
their total less donated buffers (the step's peak), and the number of all-reduce, all-gather and
reduce-scatter ops. On CPU the buffer assignment differs from the GPU one in detail (fusion
decisions, no cuDNN workspace), so compare the columns with each other rather than with a card.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

GIB = 1024**3


def state_bytes_per_device(abstract_state, shardings) -> int:
  """Bytes of one device's shard of every state leaf."""
  total = 0
  for leaf, sh in zip(jax.tree.leaves(abstract_state), jax.tree.leaves(shardings)):
    shard = sh.shard_shape(leaf.shape)
    total += int(np.prod(shard, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
  return total


def collective_counts(hlo_text: str) -> dict[str, int]:
  return {op: len(re.findall(rf"= \S+ {op}(-start)?\(", hlo_text))
          for op in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")}


def measure(devices: int, fsdp: int, per_device_batch: int, dtype: str) -> dict:
  """Compiles the step for one mesh and returns its per-device figures."""
  from benchmarks.train_step import Bench, synthetic_batch  # pylint: disable=g-import-not-at-top
  from spg_jax import sharding  # pylint: disable=g-import-not-at-top
  from spg_jax.train_step import init_state  # pylint: disable=g-import-not-at-top

  bench = Bench(dtype)
  mesh = sharding.make_mesh(fsdp, jax.devices()[:devices])
  abstract = jax.eval_shape(functools.partial(init_state, bench.config, bench.nets, bench.fn), jax.random.key(0))
  state_sh = sharding.state_shardings(abstract, mesh)
  frozen_sh = jax.tree.map(lambda _: sharding.replicated(mesh), bench.frozen)
  batch = synthetic_batch(bench.config, per_device_batch * devices)
  batch_sh = sharding.batch_sharding(mesh)
  as_abstract = lambda tree, sh: jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, sh)
  step = jax.jit(functools.partial(bench.fn.train_step, with_gan=True),
                 in_shardings=(state_sh, frozen_sh, batch_sh),
                 out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)
  t = time.perf_counter()
  compiled = step.lower(as_abstract(abstract, state_sh), as_abstract(bench.frozen, frozen_sh),
                        as_abstract(batch, jax.tree.map(lambda _: batch_sh, batch))).compile()
  compile_s = time.perf_counter() - t
  m = compiled.memory_analysis()
  peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  return dict(devices=devices, fsdp=fsdp, data=devices // fsdp, global_batch=per_device_batch * devices,
              dtype=dtype, state_gib=state_bytes_per_device(abstract, state_sh) / GIB,
              argument_gib=m.argument_size_in_bytes / GIB, output_gib=m.output_size_in_bytes / GIB,
              temp_gib=m.temp_size_in_bytes / GIB, peak_gib=peak / GIB, compile_s=compile_s,
              **collective_counts(compiled.as_text()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", type=int, default=len(jax.devices()))
  parser.add_argument("--fsdp", default="1,2,4,8")
  parser.add_argument("--per_device_batch", type=int, default=1)
  parser.add_argument("--dtype", default="bfloat16")
  args = parser.parse_args()
  if args.devices > len(jax.devices()):
    sys.exit(f"sharding_memory: --devices {args.devices} but only {len(jax.devices())} devices; on CPU set "
             f"XLA_FLAGS=--xla_force_host_platform_device_count={args.devices}")
  from spg_jax import jax_setup  # pylint: disable=g-import-not-at-top
  jax_setup.configure_jax("")  # as launch.py, without a cache: every compile is timed cold
  rows = []
  for fsdp in (int(f) for f in args.fsdp.split(",")):
    print(f"compiling for data={args.devices // fsdp} × fsdp={fsdp} ...", file=sys.stderr, flush=True)
    rows.append(measure(args.devices, fsdp, args.per_device_batch, args.dtype))
    print("RESULT " + json.dumps(rows[-1]), flush=True)
  print(f"\n{jax.devices()[0].device_kind} × {args.devices}, {args.dtype}, {args.per_device_batch} pair(s) per "
        f"device; GiB per device\n")
  print("| data × fsdp | global batch | state | arguments | outputs | temporaries | peak (− donated) | "
        "all-reduce | all-gather | reduce-scatter | compile s |")
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  for r in rows:
    print(f"| {r['data']} × {r['fsdp']} | {r['global_batch']} | {r['state_gib']:.3f} | {r['argument_gib']:.3f} | "
          f"{r['output_gib']:.3f} | {r['temp_gib']:.3f} | {r['peak_gib']:.3f} | {r['all-reduce']} | "
          f"{r['all-gather']} | {r['reduce-scatter']} | {r['compile_s']:.0f} |")


if __name__ == "__main__":
  main()
