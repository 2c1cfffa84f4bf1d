"""CPU throughput of the tf.data training input pipeline at DeepFashion size (256 × 256).

Measures pairs per second of `input_pipeline.pipeline.train_dataset(...)` read with
`as_numpy_iterator()` (batch 8), with the features of a DeepFashion run plus the expensive options:
binary joint maps (r = 8), limb distance maps, parsing labels, and flow
  'geometric'     `geometric_flow` from keypoints and parsings, computed per pair on the CPU;
  'network'       no flow on the host (the frozen flow network predicts it on the device);
  'ground_truth'  the source's stored flow and visibility (synthetic source only).

Sources:
  synthetic  `--pairs` synthetic persons rendered into memory (`sources.in_memory_source`); the
             pipeline gathers raw uint8 pairs from tensors, so this is the feature computation alone.
  tfds       `spg_deepfashion/pkl` prepared from a dummy layout (`tests/dummy_layouts.py`: real JPEG
             images and PNG parsings, 256 × 256) into a temporary directory; adds array_record reads
             and JPEG / PNG decoding (`sources.tfds_source`).
Rendering, writing and preparing are not timed. The pairs are reused across epochs.

Each (source, flow) is run twice: with tf.data on one thread (`num_parallel_calls=1`,
`threading.private_threadpool_size=1`, `threading.max_intra_op_parallelism=1`), which gives the cost
per core, and with the pipeline's defaults (AUTOTUNE parallelism on tf.data's shared pool, i.e. all
cores). After `--warmup` batches, `--repeats` windows of `--batches` batches each are timed; the table
gives the median window's pairs/s, the slowest and fastest window, ms per pair (wall), CPU ms per pair
(this process's CPU time, all threads; pairs/s × CPU ms/pair / 1000 = cores needed), the cores the
process kept busy (CPU time / wall time) and the most cores other processes kept busy in a window
(machine CPU time from /proc/stat minus this process's). On a shared machine a window in which other
processes used more than `--max_other_cores` is discarded and redone (at most `--max_redo` times per
row) with a fresh iterator, after waiting up to `--max_wait_s` for them to go quiet; rows that still
exceed it are flagged after the table. CPU ms/pair is the figure least affected by other load.

  python -m benchmarks.input_pipeline [--pairs 64] [--batches 16] [--repeats 3] [--warmup 2] \\
      [--sources synthetic,tfds] [--flows geometric,network,ground_truth] [--threads 1,all]

Run it from the repository root with the project's environment active.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
# Run as a script, this file's folder would come first on sys.path and its name would hide the
# `input_pipeline` package; the repository root takes its place.
if sys.path and pathlib.Path(sys.path[0] or ".").resolve() == REPO / "benchmarks":
  sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGE_SIZE = (256, 256)
SOURCES = ("synthetic", "tfds")
FLOWS = ("geometric", "network", "ground_truth")
THREADS = ("1", "all")


@dataclasses.dataclass
class Result:
  source: str
  flow: str
  threads: str
  pairs_per_s: list[float]
  cores_busy: list[float]
  cpu_ms_per_pair: list[float]
  other_busy: list[float]

  @property
  def median(self) -> float:
    return statistics.median(self.pairs_per_s)

  @property
  def ms_per_pair(self) -> float:
    return 1000.0 / self.median

  @property
  def busy(self) -> float:
    return statistics.median(self.cores_busy)

  @property
  def cpu_ms(self) -> float:
    return statistics.median(self.cpu_ms_per_pair)


def _csv(choices):
  def parse(text):
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in choices]
    if bad or not items:
      raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated subset of {choices}")
    return items
  return parse


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m benchmarks.input_pipeline",
                              description="CPU throughput of the tf.data training pipeline at 256x256.")
  p.add_argument("--pairs", type=int, default=64, help="pairs per source, reused across epochs")
  p.add_argument("--batches", type=int, default=16, help="batches per timed window")
  p.add_argument("--repeats", type=int, default=3, help="timed windows; the median is reported")
  p.add_argument("--warmup", type=int, default=2, help="batches read before timing")
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--sources", type=_csv(SOURCES), default=list(SOURCES))
  p.add_argument("--flows", type=_csv(FLOWS), default=list(FLOWS),
                 help="flow modes; ground_truth runs on the synthetic source only")
  p.add_argument("--threads", type=_csv(THREADS), default=list(THREADS),
                 help="'1': tf.data on one thread; 'all': the pipeline's defaults (all cores)")
  p.add_argument("--max_other_cores", type=float, default=0.2,
                 help="a timed window in which other processes used more cores is redone")
  p.add_argument("--max_redo", type=int, default=4, help="windows redone at most per row")
  p.add_argument("--max_wait_s", type=float, default=30.0,
                 help="before a (re)started iterator, wait up to this long for other processes to idle")
  return p


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def synthetic_source(num_pairs: int):
  from input_pipeline import sources  # pylint: disable=g-import-not-at-top

  arrays = sources.synthetic_arrays(seed=0, num_pairs=num_pairs, height=IMAGE_SIZE[0],
                                    width=IMAGE_SIZE[1])
  return sources.in_memory_source(arrays, name="synthetic 256x256")


def tfds_source(num_pairs: int, workdir: pathlib.Path):
  """`spg_deepfashion/pkl` with exactly `num_pairs` train pairs, prepared under `workdir`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from input_pipeline import datasets, sources  # pylint: disable=g-import-not-at-top
  from tests import dummy_layouts  # pylint: disable=g-import-not-at-top

  if num_pairs % 2:
    raise ValueError(f"--pairs={num_pairs}: the dummy DeepFashion layout holds an even number of "
                     "train pairs (both directions of each identity)")
  # k identities give 2 (k − 1) train pairs and 2 test pairs.
  layout = dummy_layouts.write_deepfashion(workdir / "manual", num_identities=num_pairs // 2 + 1,
                                           with_flow=False, with_pred_seg=False, with_csv=False)
  data_dir = os.fspath(workdir / "data")
  tfds.disable_progress_bar()
  builder = datasets.SpgDeepfashion(config="pkl", data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(layout.root), compute_stats=tfds.download.ComputeStatsMode.SKIP))
  source = sources.tfds_source("spg_deepfashion/pkl", "train", data_dir=data_dir)
  if source.num_pairs != num_pairs or source.image_size != IMAGE_SIZE:
    raise RuntimeError(f"prepared {source.num_pairs} pairs of {source.image_size}, expected "
                       f"{num_pairs} of {IMAGE_SIZE}")
  return source


def dataset(source, flow: str, threads: str, batch_size: int):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top

  features = pipeline.Features(joint_mode="binary", joint_radius=8.0, distance_maps=True,
                               parsing_format="labels", flow=flow, augment=False)
  one = threads == "1"
  ds = pipeline.train_dataset(source, features, global_batch_size=batch_size, seed=0,
                              num_parallel_calls=1 if one else tf.data.AUTOTUNE)
  if one:
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    ds = ds.with_options(options)
    got = ds.options().threading
    if got.private_threadpool_size != 1 or got.max_intra_op_parallelism != 1:
      raise RuntimeError(f"single-thread options not applied: {got}")
  return ds


def _cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def _system_cpu_seconds() -> float:
  """CPU time of the whole machine (all processes), from /proc/stat; NaN where unavailable."""
  try:
    with open("/proc/stat", encoding="utf-8") as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except (OSError, ValueError):
    return float("nan")
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
  busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
  return busy / os.sysconf("SC_CLK_TCK")


def _other_cores(sys0: float, own0: float, t0: float) -> float:
  """Cores other processes kept busy since (sys0, own0, t0)."""
  wall = time.perf_counter() - t0
  return max(0.0, (_system_cpu_seconds() - sys0 - (_cpu_seconds() - own0)) / wall)


def wait_until_quiet(max_other: float, max_wait_s: float) -> bool:
  """Waits (up to `max_wait_s`) for 2 s in a row in which other processes use <= `max_other` cores."""
  deadline, quiet = time.monotonic() + max_wait_s, 0
  while quiet < 2:
    if time.monotonic() > deadline:
      return False
    sys0, own0, t0 = _system_cpu_seconds(), _cpu_seconds(), time.perf_counter()
    time.sleep(1.0)
    quiet = quiet + 1 if _other_cores(sys0, own0, t0) <= max_other else 0
  return True


def measure(source, name: str, flow: str, threads: str, args) -> tuple[Result, int]:
  """(the result, the number of windows redone because other processes were busy)."""
  ds = dataset(source, flow, threads, args.batch_size)
  expected = (args.batch_size,) + IMAGE_SIZE
  rates, busy, cpu_ms, other, redone, it = [], [], [], [], 0, None
  while len(rates) < args.repeats:
    if it is None:
      # A fresh iterator after any pause: batches made ahead while waiting must not be timed.
      wait_until_quiet(args.max_other_cores, args.max_wait_s)
      it = ds.as_numpy_iterator()
      for _ in range(args.warmup):
        batch = next(it)
      if (batch["source_distance"].shape != expected + (12,)
          or ("flow" in batch) != (flow != "network")):
        raise RuntimeError(f"unexpected batch: { {k: v.shape for k, v in batch.items()} }")
    sys0, cpu0, t0 = _system_cpu_seconds(), _cpu_seconds(), time.perf_counter()
    for _ in range(args.batches):
      next(it)
    wall = time.perf_counter() - t0
    own = _cpu_seconds() - cpu0
    others = max(0.0, (_system_cpu_seconds() - sys0 - own) / wall)
    if others > args.max_other_cores and redone < args.max_redo:
      redone += 1
      it = None
      continue
    pairs = args.batches * args.batch_size
    rates.append(pairs / wall)
    busy.append(own / wall)
    cpu_ms.append(1000.0 * own / pairs)
    other.append(others)
  del it, ds
  return Result(name, flow, threads, rates, busy, cpu_ms, other), redone


def table(results: list[Result]) -> str:
  cores = os.cpu_count()
  lines = ["| source | flow | tf.data threads | pairs/s (median) | min – max | ms/pair | "
           "CPU ms/pair | CPU cores busy | other processes |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in results:
    threads = "1" if r.threads == "1" else f"all ({cores})"
    lines.append(f"| {r.source} | {r.flow} | {threads} | {r.median:.1f} | "
                 f"{min(r.pairs_per_s):.1f} – {max(r.pairs_per_s):.1f} | {r.ms_per_pair:.1f} | "
                 f"{r.cpu_ms:.1f} | {r.busy:.2f} | {max(r.other_busy):.2f} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if min(args.pairs, args.batches, args.repeats, args.batch_size) < 1 or args.warmup < 1:
    print("--pairs, --batches, --repeats, --batch_size and --warmup must be >= 1", file=sys.stderr)
    return 2
  argv = sys.argv[1:] if argv is None else argv
  command = shlex.join(["python", "-m", "benchmarks.input_pipeline", *argv])

  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  print(f"command: {command}")
  print(f"os.cpu_count() = {os.cpu_count()}; CPU: {cpu_model()}; TensorFlow {tf.__version__}; "
        f"Python {platform.python_version()}")
  print(f"{args.pairs} pairs of {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, batch {args.batch_size}, "
        f"warm-up {args.warmup} batches, {args.repeats} x {args.batches} timed batches", flush=True)

  results = []
  with tempfile.TemporaryDirectory(prefix="spg_bench_") as tmp:
    for name in args.sources:
      start = time.monotonic()
      if name == "synthetic":
        source = synthetic_source(args.pairs)
      else:
        source = tfds_source(args.pairs, pathlib.Path(tmp))
      print(f"[{name}] source ready in {time.monotonic() - start:.1f} s (not timed)", flush=True)
      for flow in args.flows:
        if flow == "ground_truth" and not source.has_flow:
          continue
        for threads in args.threads:
          start = time.monotonic()
          r, redone = measure(source, name, flow, threads, args)
          results.append(r)
          print(f"[{name}] flow={flow} threads={threads}: {r.median:.1f} pairs/s "
                f"(windows {', '.join(f'{x:.1f}' for x in r.pairs_per_s)}), cores busy {r.busy:.2f}, "
                f"CPU {r.cpu_ms:.1f} ms/pair, other processes {max(r.other_busy):.2f}, "
                f"{redone} windows redone; "
                f"{time.monotonic() - start:.0f} s", flush=True)

  print()
  print(table(results))
  disturbed = [r for r in results if max(r.other_busy) > args.max_other_cores]
  if disturbed:
    print(f"\nwarning: in {len(disturbed)} rows other processes kept more than "
          f"{args.max_other_cores} cores busy in a timed window; those rows are not those of an idle "
          "machine")
  return 0


if __name__ == "__main__":
  sys.exit(main())
