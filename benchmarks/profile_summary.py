"""Summarises a JAX profiler trace of a few train steps: where the GPU time goes.

Reads the `*.trace.json.gz` that `jax.profiler.start_trace(DIR)` writes (pure JSON, no TensorFlow or
profiler plugin needed) and prints, per step:
  * GPU kernel time (sum of kernel durations on the device's streams) and the number of kernels;
  * the wall time of the step's XLA module;
  * kernel time by category (cuDNN convolutions, matmuls, XLA fusions, copies, other);
  * the most expensive kernels, layers (the JAX name stack each kernel carries) and networks, and
    HLO ops (the device's "XLA Ops" line, where the trace has one), with counts.

  python -m benchmarks.profile_summary DIR --steps 3
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re

# Kernel-name patterns of each category, checked in order (cuDNN / cuBLAS / XLA naming).
CATEGORIES = (
    ("convolution (cuDNN)", re.compile(r"conv|xmma|implicit_gemm|fprop|dgrad|wgrad|cudnn", re.I)),
    ("matmul", re.compile(r"gemm|cutlass|cublas|nvjet", re.I)),
    ("copy / memset", re.compile(r"memcpy|memset|copy", re.I)),
    ("XLA fusion", re.compile(r"fusion|loop_|input_|reduce|transpose|concatenate|slice|scatter|gather", re.I)),
)


def category(kernel_name: str) -> str:
  for name, pattern in CATEGORIES:
    if pattern.search(kernel_name):
      return name
  return "other"


def load_trace(directory: str) -> dict:
  paths = sorted(glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True))
  if not paths:
    raise FileNotFoundError(f"no *.trace.json.gz under {directory} (expected jax.profiler.start_trace output)")
  with gzip.open(paths[-1]) as f:
    return json.load(f)


def summarise(trace: dict, steps: int, top: int = 25) -> str:
  """A plain-text report of the GPU events of `trace`, per step."""
  events = trace["traceEvents"]
  processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
  threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  gpu_pids = {pid for pid, name in processes.items() if name.startswith("/device:GPU")}
  if not gpu_pids:
    raise ValueError(f"the trace has no GPU device (processes: {sorted(processes.values())})")
  kernels, ops, modules = [], [], []
  for e in events:
    if e.get("ph") != "X" or e["pid"] not in gpu_pids:
      continue
    line = threads.get((e["pid"], e["tid"]), "")
    if line.startswith("Stream"):
      kernels.append(e)
    elif line == "XLA Ops":
      ops.append(e)
    elif line == "XLA Modules":
      modules.append(e)

  out = []
  kernel_us = sum(e["dur"] for e in kernels)
  out.append(f"steps: {steps}; GPU kernels per step: {len(kernels) / steps:.0f}; "
             f"kernel time per step: {kernel_us / steps / 1e3:.1f} ms")
  if modules:
    longest = collections.defaultdict(float)
    for e in modules:
      longest[e["name"]] += e["dur"]
    for name, us in sorted(longest.items(), key=lambda kv: -kv[1])[:3]:
      out.append(f"XLA module {name[:80]}: {us / steps / 1e3:.1f} ms per step")

  by_category = collections.Counter()
  for e in kernels:
    by_category[category(e["name"])] += e["dur"]
  out.append("\n| category | ms / step | share |\n| --- | ---: | ---: |")
  for name, us in by_category.most_common():
    out.append(f"| {name} | {us / steps / 1e3:.2f} | {100 * us / max(kernel_us, 1e-9):.1f}% |")

  def table(items, title):
    total, count = collections.Counter(), collections.Counter()
    for e in items:
      total[e["name"]] += e["dur"]
      count[e["name"]] += 1
    out.append(f"\n{title}\n| ms / step | calls / step | mean µs | name |\n| ---: | ---: | ---: | --- |")
    for name, us in total.most_common(top):
      out.append(f"| {us / steps / 1e3:.2f} | {count[name] / steps:.0f} | {us / count[name]:.1f} | {name[:110]} |")

  table(kernels, "Top kernels")
  # Kernels carry the JAX name stack of the op that launched them (args.name, e.g.
  # "jit(train_step)/transpose(jvp(SPATN))/up_1/conv_general_dilated"): the layer and the pass.
  scoped = [dict(e, name=e.get("args", {}).get("name") or "(no scope: XLA fusion or copy)") for e in kernels]
  table(scoped, "Top layers (forward: jvp(...), backward: transpose(jvp(...)))")
  network = collections.Counter()
  for e in scoped:
    m = re.search(r"(transpose\()?jvp\((\w+)\)", e["name"])
    network[(m.group(2) + (" backward" if m.group(1) else " forward")) if m else
            (e["name"].split("/")[1] if e["name"].count("/") > 1 else "other")] += e["dur"]
  out.append("\n| network and pass | ms / step |\n| --- | ---: |")
  for name, us in network.most_common():
    out.append(f"| {name} | {us / steps / 1e3:.2f} |")
  if ops:
    # HLO op names end in a number (fusion.123); grouping by the stem shows which kind of op costs.
    stems = [dict(e, name=re.sub(r"[.\d]+$", "", e["name"])) for e in ops]
    table(stems, "HLO ops by kind")
    table(ops, "Top HLO ops")
  return "\n".join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("directory")
  parser.add_argument("--steps", type=int, default=3, help="steps recorded in the trace")
  parser.add_argument("--top", type=int, default=25)
  args = parser.parse_args()
  print(summarise(load_trace(args.directory), args.steps, args.top))


if __name__ == "__main__":
  main()
