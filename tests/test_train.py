"""The trainer end to end on the tiny synthetic config (`tests.train_helpers.tiny_config`).

Training runs in subprocesses (`python -m tests.train_helpers`, or `launch.py`), so that each can
have its own number of fake CPU devices, processes, or a SIGKILL. The runs that the selected tests
need start together when the first of them asks (compilation is mostly single-threaded, so they
share the cores; the one-device run, which later runs wait for, at a higher priority). Each
writes a persistent XLA compilation cache in the session's temporary directory, which later runs
of the same device layout read, so that they skip compilation. All runs train `RUN_STEPS` = 6
steps of 8 pairs (2 steps per epoch, the GAN on from the first step), checkpoint every 2 steps
keeping the last 2, and validate once at the end. Compiling three device layouts (one device,
8 devices, and two processes, which compile separately) dominates: about 8 minutes on 2 cores.

Why sharded runs are compared as they are. The generator's float32 gradients depend on the order
of reductions at the 1e-3 relative level (permuting the 8 pairs of a batch on one device changes
the L1 loss gradient at initialisation by a median 2e-3 per leaf), and some gradients are exactly
zero in exact arithmetic (biases followed by a normalisation), i.e. pure rounding noise. Adam
turns any gradient larger than its ε into a step of about ±lr whatever its size, so such elements
move by ±lr per step with a sign that depends on the reduction order, and the runs drift apart
step by step. Hence: the first step (identical state, identical batch) must agree tightly, as its
logged losses and gradient norm show; the final states must agree globally to 1e-2, and
element-wise within the ±lr-per-step budget (`_assert_states_close`). A leaf-wise max relative
difference is not a usable criterion: after 6 steps it reaches 2.4 on such leaves (8 devices
against 1).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests import train_helpers
from tests.train_helpers import REPO, flatten_state, load_state, tiny_config

RUN_STEPS = 6
CONTINUE_STEPS = 8
RUN_TIMEOUT_S = 1200
# First-step losses and gradient norm, computed from the same state and batch on another layout.
FIRST_STEP_RTOL = 1e-5
# ‖a − b‖ / ‖b‖ over all float leaves of a group, after RUN_STEPS steps: parameters, batch
# statistics, and the Adam moments of the generator side (G and stage 1) and of D.
GLOBAL_RTOL = {"params": 1e-2, "batch_stats": 1e-2, "opt_g/mu": 0.3, "opt_g/nu": 0.3,
               "opt_d/mu": 0.3, "opt_d/nu": 0.3}
# Logged first-step scalars that are functions of the state and the batch (not timings).
STEP_SCALARS = ("g_loss", "g_l1", "g_gan", "g_parsing_ce", "g_grad_norm", "d_loss", "d_real_bce",
                "d_fake_bce")

# Background runs: name → (devices per process, processes, niceness).
LAYOUTS = {"one_device": (1, 1, 0), "eight_devices": (8, 1, 5), "two_processes": (2, 2, 5)}
# Which background runs each test needs (so that selecting one test starts only its runs).
NEEDS = {
    "test_training_writes_checkpoints_logs_samples_and_reproducible_metrics": ("one_device",),
    "test_eight_devices_match_one_device": ("one_device", "eight_devices"),
    "test_sigkill_then_resume_matches_uninterrupted_run": ("one_device",),
    "test_two_processes_match_one_process": ("one_device", "two_processes"),
    "test_checkpoints_restore_onto_another_device_count": ("one_device", "eight_devices"),
    "test_resuming_with_another_batch_size_is_refused": ("one_device",),
    "test_eval_mode_writes_every_pair_and_a_table_matching_scikit_image": ("one_device",),
    "test_generate_cli_region_style_swap_and_input_errors": ("one_device",),
}


# ---------------------------------------------------------------------------------------------
# Running and reading runs.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _tail(path: pathlib.Path, n: int = 4000) -> str:
  """The first Python traceback in the log at `path` (with what precedes it), else its end."""
  if not path.exists():
    return "(no log)"
  text = path.read_text(errors="replace")
  start = text.find("Traceback (most recent call last)")
  return text[max(0, start - 1500):start + n] if start >= 0 else text[-n:]


@dataclasses.dataclass
class Finished:
  workdir: pathlib.Path
  logs: list[pathlib.Path]

  def log_text(self, process: int = 0) -> str:
    return self.logs[process].read_text(errors="replace")


class Runs:
  """Starts training subprocesses and waits for them; a run starts at most once per module."""

  def __init__(self, root: pathlib.Path):
    self.root = root
    self._procs: dict[str, list[subprocess.Popen]] = {}
    self._runs: dict[str, Finished] = {}
    self._checked: set[str] = set()

  def cache(self, name: str) -> pathlib.Path:
    """The compilation cache that run `name` writes (only it, so no entry is read half-written)."""
    return self.root / "xla_cache" / name

  def start(self, name: str, *, devices: int, processes: int = 1, steps: int = RUN_STEPS,
            workdir: pathlib.Path | None = None, niceness: int = 0,
            cache_of: str | None = None) -> None:
    """Starts `python -m tests.train_helpers` in `processes` processes of `devices` CPU devices.

    A single-process run uses the compilation cache of run `cache_of` (finished by then), else
    its own.
    """
    if name in self._procs:
      return
    workdir = workdir or self.root / name
    command = train_helpers.training_command(workdir, steps)
    if niceness:
      command = ["nice", "-n", str(niceness)] + command
    procs, logs = [], []
    if processes == 1:
      logs.append(self.root / f"{name}.log")
      env = train_helpers.training_env(self.cache(cache_of or name), devices)
      procs.append(self._popen(command, env, logs[-1]))
    else:
      # No compilation cache across processes (see `train_helpers.training_env`).
      coordinator = f"localhost:{_free_port()}"
      for i in range(processes):
        env = train_helpers.training_env(None, devices, SPG_NUM_PROCESSES=str(processes),
                                         SPG_PROCESS_ID=str(i), SPG_COORDINATOR=coordinator)
        logs.append(self.root / f"{name}.{i}.log")
        procs.append(self._popen(command, env, logs[-1]))
    self._procs[name] = procs
    self._runs[name] = Finished(workdir=workdir, logs=logs)

  @staticmethod
  def _popen(command, env, log: pathlib.Path) -> subprocess.Popen:
    with open(log, "w") as f:
      return subprocess.Popen(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)

  def wait(self, name: str) -> Finished:
    """Waits for run `name` and fails unless every one of its processes exited with 0."""
    run = self._runs[name]
    if name in self._checked:
      return run
    deadline = time.monotonic() + RUN_TIMEOUT_S
    for proc in self._procs[name]:
      try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        self.kill(name)
        pytest.fail(f"run {name} did not finish in {RUN_TIMEOUT_S} s:\n{_tail(run.logs[0])}")
    codes = [p.returncode for p in self._procs[name]]
    assert codes == [0] * len(codes), f"run {name} exited with {codes}:\n" + "\n".join(
        f"--- {log.name}\n{_tail(log)}" for log in run.logs)
    self._checked.add(name)
    return run

  def kill(self, name: str) -> None:
    for proc in self._procs.get(name, []):
      if proc.poll() is None:
        proc.kill()
        proc.wait()

  def close(self) -> None:
    for name in list(self._procs):
      self.kill(name)


@pytest.fixture(scope="module", autouse=True)
def runs(request, tmp_path_factory):
  """Starts, at the module's first test, the background runs that the selected tests need."""
  launcher = Runs(tmp_path_factory.mktemp("train_runs"))
  selected = {item.originalname for item in request.session.items
              if getattr(item, "module", None) is not None and item.module.__name__ == __name__}
  for name in LAYOUTS:
    if any(name in NEEDS.get(test, ()) for test in selected):
      devices, processes, niceness = LAYOUTS[name]
      launcher.start(name, devices=devices, processes=processes, niceness=niceness)
  yield launcher
  launcher.close()


def _scalars(workdir: pathlib.Path) -> dict[str, dict[int, float]]:
  """The scalar summaries of the TensorBoard event files in `workdir`: tag → {step: value}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top

  out: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(str(workdir / "events.out.tfevents.*"))):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.HasField("tensor") and not value.tensor.tensor_shape.dim:
          array = tf.make_ndarray(value.tensor)
          if array.dtype.kind == "f":
            out.setdefault(value.tag, {})[event.step] = float(array)
        elif value.HasField("simple_value"):
          out.setdefault(value.tag, {})[event.step] = value.simple_value
  return out


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _restore(workdir: pathlib.Path, step: int, steps: int = RUN_STEPS) -> dict[str, np.ndarray]:
  """Checkpoint `step` of `workdir` restored in this process (one CPU device), flattened."""
  from spg_jax import train  # pylint: disable=g-import-not-at-top

  run = train.setup_run(tiny_config(steps), str(workdir))
  try:
    state, meta = run.restore(step)
    assert meta["step"] == step and meta["global_batch_size"] == 8, meta
    return flatten_state(state)
  finally:
    run.checkpointer.close()


def _first_step_differences(a: pathlib.Path, b: pathlib.Path) -> dict[str, float]:
  sa, sb = _scalars(a), _scalars(b)
  return {tag: abs(sa[tag][1] - sb[tag][1]) / abs(sb[tag][1]) for tag in STEP_SCALARS}


def _group(key: str) -> str:
  parts = key.split("/")
  moment = [p for p in parts if p in ("mu", "nu")]
  return f"{parts[0]}/{moment[0]}" if parts[0].startswith("opt_") and moment else parts[0]


def _group_differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
  out = {}
  for group in GLOBAL_RTOL:
    keys = [k for k in b if _group(k) == group]
    assert keys, group
    diff = math.sqrt(sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in keys))
    norm = math.sqrt(sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in keys))
    out[group] = diff / norm
  return out


def _assert_states_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], steps: int) -> dict:
  """Two runs of the same steps on different layouts: global and element-wise bounds.

  Globally, per group (parameters, batch statistics, each optimizer's state), ‖a − b‖ / ‖b‖ ≤
  `GLOBAL_RTOL`. Element-wise, every parameter differs by at most 1e-2 of its leaf's largest
  magnitude plus 2·lr·steps, the most two Adam trajectories move apart when an element's gradient
  is rounding noise (lr_g for stage 1 and 2, lr_d for the discriminator).
  """
  config = tiny_config()
  assert sorted(a) == sorted(b)
  for k in a:
    assert np.all(np.isfinite(a[k])), k
    if a[k].dtype.kind != "f":  # the step and Adam's counts
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  groups = _group_differences(a, b)
  for group, value in groups.items():
    assert value <= GLOBAL_RTOL[group], (group, value, groups)
  worst = 0.0
  for k in b:
    if not k.startswith("params/"):
      continue
    lr = config.optim.lr_d if k.startswith("params/discriminator/") else config.optim.lr_g
    budget = 2 * lr * steps
    excess = np.max(np.abs(a[k].astype(np.float64) - b[k])) - 1e-2 * np.max(np.abs(b[k]))
    worst = max(worst, excess / budget)
    assert excess <= budget, (k, excess, budget)
  return dict(groups=groups, worst_element_over_budget=worst)


def _assert_validation_close(a: dict, b: dict) -> None:
  """Validation of the final states: |Δ| ≤ 1e-2·|b| + 1e-3 for the model's metrics, and the
  data-only baselines within 1e-6 relative."""
  assert a["num_pairs"] == b["num_pairs"] == 8
  for key in ("ssim", "l1", "miou"):
    assert abs(a[key] - b[key]) <= 1e-2 * abs(b[key]) + 1e-3, (key, a[key], b[key])
  for key in (k for k in b if k.startswith("baseline_")):
    assert a[key] == pytest.approx(b[key], rel=1e-6), key


def _validation(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / "validation.json").read_text())


# ---------------------------------------------------------------------------------------------
# Clear errors (no training).


@pytest.mark.parametrize("overrides,error,match", [
    ({"loss.perceptual": 1.0, "allow_random_vgg": False}, ValueError, r"config\.init\.vgg19"),
    ({"loss.perceptual": 1.0, "init.vgg19": "/nonexistent/vgg19.npz"}, FileNotFoundError,
     r"config\.init\.vgg19"),
    ({"data.flow": "network"}, ValueError, r"config\.init\.flownet"),
    ({"scheme": "sequential"}, ValueError, r"config\.init\.parsing"),
], ids=["perceptual_without_vgg19", "vgg19_file_missing", "flow_network_without_flownet",
        "sequential_without_parsing"])
def test_missing_weights_are_clear_errors(tmp_path, overrides, error, match):
  """Configs that need weights files fail at start-up with an error naming the config field."""
  from spg_jax import train  # pylint: disable=g-import-not-at-top

  config = tiny_config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(error, match=match):
    train.train_and_evaluate(config, str(tmp_path / "workdir"))


def test_resuming_with_another_batch_size_is_refused(runs, tmp_path):
  """A workdir trained with global batch 8 refuses to resume with 16 (the data order would differ)."""
  from spg_jax import train  # pylint: disable=g-import-not-at-top

  workdir = tmp_path / "workdir"
  shutil.copytree(runs.wait("one_device").workdir, workdir)
  config = tiny_config(RUN_STEPS + 2)
  config.train.batch_size = 16
  with pytest.raises(ValueError, match="trained with global batch 8"):
    train.train_and_evaluate(config, str(workdir))
  assert _checkpoint_steps(workdir) == [4, 6]


def test_no_import_race_between_validation_and_checkpoint_writer_threads():
  """Threads importing while the trainer's first validation runs get real modules, not stand-ins.

  Importing `tensorflow_datasets` swaps `builtins.__import__` for etils' lazy importer process-wide
  while its module-level `epy.lazy_imports()` blocks run; an import in another thread meanwhile
  (Orbax's checkpoint writer imports `math.log` through `humanize.naturalsize`) returns a
  `LazyModule`, and the asynchronous save fails. `setup_run` (through `data_sources`) must
  therefore import TFDS before any checkpoint is written, so that the first validation's
  `pipeline.process_share` finds it imported. Four threads import `math.log` in a loop, with a
  1 µs switch interval, while `process_share` runs: no call may fail (without the early import,
  several hundred did).
  """
  script = textwrap.dedent("""
      import sys, threading
      import jax, tensorflow
      from input_pipeline import pipeline
      from spg_jax import train
      from tests.train_helpers import tiny_config
      train.data_sources(tiny_config())  # as setup_run does, before any checkpoint
      sys.setswitchinterval(1e-6)
      errors, calls, stop = [], [0], []

      def writer():
        while not stop:
          try:
            from math import log
            log(1e6, 1000)
            calls[0] += 1
          except Exception as e:  # pylint: disable=broad-except
            errors.append(repr(e))

      threads = [threading.Thread(target=writer) for _ in range(4)]
      for t in threads:
        t.start()
      pipeline.process_share(8, 0, 1)  # the first validation
      stop.append(True)
      for t in threads:
        t.join()
      print(f"{calls[0]} imports, {len(errors)} failed: {errors[:1]}")
      assert calls[0] > 0 and not errors
  """)
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          env=train_helpers.training_env(None, 1), timeout=300, check=False)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


# ---------------------------------------------------------------------------------------------
# One device.


def test_training_writes_checkpoints_logs_samples_and_reproducible_metrics(runs, tmp_path):
  """Six steps on one device: finite losses, changed parameters and the files a run leaves.

  Checkpoints are saved at 2, 4 and 6; with keep_checkpoints=2 only 4 and 6 remain (6 is also
  the best, the only one with metrics). `evaluate_checkpoint` on the workdir must reproduce the
  final validation metrics exactly (same state, same data, same programs).
  """
  from spg_jax import train  # pylint: disable=g-import-not-at-top

  run = runs.wait("one_device")
  workdir = run.workdir
  assert _checkpoint_steps(workdir) == [4, 6]
  assert not [p.name for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]

  scalars = _scalars(workdir)
  for tag in STEP_SCALARS:
    assert sorted(scalars[tag]) == list(range(1, RUN_STEPS + 1)), tag  # logged every step
    assert all(math.isfinite(v) for v in scalars[tag].values()), (tag, scalars[tag])
  assert scalars["d_loss"][1] > 0 and scalars["g_gan"][1] > 0  # the GAN is on from the first step
  assert scalars["g_l1"][RUN_STEPS] < scalars["g_l1"][1]  # and training moves the L1 loss down

  final = load_state(workdir)
  assert int(final["step"]) == RUN_STEPS
  before = _restore(workdir, 4)
  for network in ("generator", "parsing", "discriminator"):
    keys = [k for k in final if k.startswith(f"params/{network}/")]
    changed = [k for k in keys if not np.array_equal(before[k], final[k])]
    assert len(changed) >= 0.9 * len(keys), (network, len(changed), len(keys))
  for k, v in final.items():
    assert np.all(np.isfinite(v)), k

  validation = _validation(workdir)
  assert validation["step"] == RUN_STEPS and validation["num_pairs"] == 8
  for key in ("ssim", "l1", "miou"):
    assert math.isfinite(validation[key])
    assert scalars[f"val_{key}"][RUN_STEPS] == pytest.approx(validation[key], rel=1e-6)
  png = workdir / "samples" / f"step_{RUN_STEPS:08d}.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert glob.glob(str(workdir / "events.out.tfevents.*"))
  assert json.loads((workdir / "config.json").read_text())["train"]["batch_size"] == 8

  copy = tmp_path / "workdir"
  shutil.copytree(workdir, copy)
  metrics = train.evaluate_checkpoint(tiny_config(RUN_STEPS), str(copy))
  assert metrics == {k: v for k, v in validation.items() if k != "step"}


# The eval-mode test projects the Inception features onto FID_DIMS fixed random directions: scipy's
# sqrtm of a 2048 × 2048 matrix takes 10–60 s on a two-core CPU, the pipeline under test (features of
# the saved and of the training images, statistics, cache, distance, table) does not depend on the
# dimension, and the 6 training images of the test give a non-singular covariance in up to 5 (a
# projection rather than a slice, because random weights leave some features at 0 for every image).
FID_DIMS = 5
FID_PROJECTION = np.random.default_rng(0).standard_normal((2048, FID_DIMS)) / np.sqrt(2048)


def _random_inception_weights(path: pathlib.Path, variant: str, seed: int) -> None:
  """An Inception-v3 weights file as `python -m spg_jax.convert inception` writes it, random weights.

  He-normal kernels and batch-norm statistics away from the identity keep the features O(1) and
  varied (the trained file is ~100 MB and not available to the tests).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top

  from spg_jax.metrics import inception  # pylint: disable=g-import-not-at-top
  from spg_jax.weights import save_weights  # pylint: disable=g-import-not-at-top

  template = jax.eval_shape(inception.InceptionV3Features(variant=variant).init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, inception.MIN_INPUT_SIZE, inception.MIN_INPUT_SIZE, 3),
                                                 np.float32))
  rng = np.random.default_rng(seed)
  flat = {}
  for name, leaf in traverse_util.flatten_dict(template, sep="/").items():
    if name.endswith("/kernel"):
      value = rng.standard_normal(leaf.shape, np.float32) * np.float32(np.sqrt(2 / np.prod(leaf.shape[:-1])))
    elif name.endswith(("/scale", "/var")):
      value = rng.uniform(0.8, 1.2, leaf.shape).astype(np.float32)
    else:  # bias, mean
      value = rng.normal(0, 0.1, leaf.shape).astype(np.float32)
    flat[name] = value
  save_weights(path, traverse_util.unflatten_dict(flat, sep="/"),
               {"network": inception.NETWORK, "config": {"variant": variant}})


# The eval-mode test runs the pose estimator at one scale, 0.07 · 368 / 32 = 0.805 (32 × 32 images → 25 × 25
# network inputs, 3 × 3 maps): the scripts' four scales would run it at up to 736 × 736 on each image.
PCKH_SCALES = (0.07,)


def _random_pose_estimator_weights(path: pathlib.Path, seed: int) -> dict:
  """An OpenPose COCO weights file as `python -m spg_jax.convert pose_estimator` writes it, random weights.

  He-normal kernels, small biases; the last PAF and heatmap convs get biases of 1 and 0.5, so that
  every part has peaks above the decoder's threshold and limbs pass its PAF tests, and people are
  found (with plain random weights no map reaches the thresholds: every keypoint would be missing).
  Returns the variables written.
  """
  from flax import traverse_util  # pylint: disable=g-import-not-at-top

  from spg_jax.metrics import pose_estimator  # pylint: disable=g-import-not-at-top
  from spg_jax.weights import save_weights  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  flat = {}
  for name, leaf in traverse_util.flatten_dict(pose_estimator.pose_estimator_template(), sep="/").items():
    if name.endswith("/kernel"):
      flat[name] = rng.standard_normal(leaf.shape, np.float32) * np.float32(np.sqrt(2 / np.prod(leaf.shape[:-1])))
    else:
      flat[name] = rng.normal(0, 0.05, leaf.shape).astype(np.float32)
  flat["params/Mconv7_stage6_L1/bias"] = np.full(pose_estimator.NUM_PAFS, 1.0, np.float32)
  flat["params/Mconv7_stage6_L2/bias"] = np.full(pose_estimator.NUM_HEATMAPS, 0.5, np.float32)
  variables = traverse_util.unflatten_dict(flat, sep="/")
  save_weights(path, variables, {"network": pose_estimator.NETWORK_NAME})
  return variables


def test_eval_mode_writes_every_pair_and_a_table_matching_scikit_image(runs, tmp_path, monkeypatch, caplog):
  """`--mode eval` on the six-step checkpoint: one PNG per test pair, and the table's SSIM, L1,
  PSNR, LPIPS and mask-SSIM recomputed from those PNGs and the ground truth with scikit-image and
  NumPy; both FIDs (random-weight Inception files) recomputed from the features of the PNGs and of
  the training images, with the real-set statistics cached, reused, and keyed by the weights; PCKh
  (a random-weight pose estimator) from keypoints detected on the PNGs and a joint-by-joint count
  against the target keypoints."""
  from scipy import linalg  # pylint: disable=g-import-not-at-top
  from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # pylint: disable=g-import-not-at-top

  from input_pipeline import pipeline, sources  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from spg_jax import evaluate, sharding, train  # pylint: disable=g-import-not-at-top
  from tests.test_metrics_pose_mask import legacy_polygon, reference_mask  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  from spg_jax.metrics import fid, inception, lpips  # pylint: disable=g-import-not-at-top
  from spg_jax.weights import save_weights  # pylint: disable=g-import-not-at-top

  workdir = tmp_path / "workdir"
  shutil.copytree(runs.wait("one_device").workdir, workdir)
  # Random LPIPS weights in the real architecture (heads non-negative, as trained ones are).
  lpips_variables = lpips.LPIPS().init(jax.random.key(3), np.zeros((1, 32, 32, 3), np.float32),
                                       np.zeros((1, 32, 32, 3), np.float32))
  lpips_variables = jax.tree.map(np.abs, jax.device_get(lpips_variables))
  save_weights(tmp_path / "lpips.npz", lpips_variables, {"network": lpips.NETWORK_NAME})
  weights = {"fid_legacy": ("torchvision", tmp_path / "inception_legacy.npz"),
             "fid": ("pytorch_fid", tmp_path / "inception_standard.npz")}
  for seed, (variant, path) in enumerate(weights.values()):
    _random_inception_weights(path, variant, seed)
  config = tiny_config(RUN_STEPS)
  config.eval.batch_size = 3  # 8 pairs: the last batch is padded
  config.eval.lpips_weights = str(tmp_path / "lpips.npz")
  config.eval.fid_legacy_weights = str(weights["fid_legacy"][1])
  config.eval.fid_weights = str(weights["fid"][1])
  config.eval.fid_cache_dir = str(tmp_path / "fid_cache")
  config.eval.mask_ssim = True
  pose_variables = _random_pose_estimator_weights(tmp_path / "pose_estimator.npz", 4)
  config.eval.pckh_weights = str(tmp_path / "pose_estimator.npz")
  config.eval.pckh_scale_search = PCKH_SCALES
  config.data.synthetic.train_pairs = 3  # the FID real set: the training split's 6 images

  # The synthetic persons have every joint: mark some missing (the test split's keypoints feed both
  # mask-SSIM and PCKh), among them one image left with a single head joint, which PCKh skips.
  def with_missing_joints(keypoints):
    keypoints = np.array(keypoints)
    keypoints[1, [1, 14, 15, 16, 17]] = -1
    keypoints[2, 4] = -1
    keypoints[2, 7] = (-3, 12)  # a negative x alone: missing in spg_jax (the PCKh scripts test == -1)
    return keypoints

  target_keypoints_of = evaluate._target_keypoints  # pylint: disable=protected-access
  monkeypatch.setattr(evaluate, "_target_keypoints", lambda source: with_missing_joints(target_keypoints_of(source)))
  feature_fn = evaluate.fid_feature_function
  monkeypatch.setattr(evaluate, "fid_feature_function",
                      lambda variant, mesh: lambda v, x: np.asarray(feature_fn(variant, mesh)(v, x)) @ FID_PROJECTION)
  results = evaluate.evaluate_test_set(config, str(workdir))
  out = workdir / f"eval_{RUN_STEPS}"
  pngs = sorted((out / "images").glob("*.png"))
  assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(8)]
  assert results["num_pairs"] == 8 and (out / "contact_sheet.png").exists()
  assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
  assert "| SSIM |" in (out / "results.md").read_text()

  source = train.test_source(config)
  ds = pipeline.eval_dataset(source, pipeline.Features.from_config(config, train=False), batch_size=8)
  target = next(ds.as_numpy_iterator())["target_image"]
  target_u8 = np.floor(np.clip((target.astype(np.float64) + 1) * 127.5, 0, 255)).astype(np.uint8)
  generated = np.stack([np.asarray(Image.open(p)) for p in pngs])
  ssim = np.mean([structural_similarity(g, t, channel_axis=-1, data_range=255)
                  for g, t in zip(generated, target_u8)])
  l1 = np.mean(np.abs(generated / 127.5 - target_u8 / 127.5))
  psnr = np.mean([peak_signal_noise_ratio(t, g, data_range=255) for g, t in zip(generated, target_u8)])
  m = results["metrics"]
  assert m["ssim_official"]["value"] == pytest.approx(ssim, abs=1e-5)
  assert m["l1"]["value"] == pytest.approx(l1, rel=1e-5)
  assert m["psnr"]["value"] == pytest.approx(psnr, rel=1e-5)
  to_unit = lambda u8: u8.astype(np.float32) / 127.5 - 1
  expected_lpips = np.asarray(lpips.lpips_distance(lpips_variables, to_unit(generated), to_unit(target_u8)))
  assert m["lpips"]["value"] == pytest.approx(float(np.mean(expected_lpips)), rel=1e-5)
  assert m["ssim_gfla"]["value"] is None and "51×51 window" in m["ssim_gfla"]["note"]  # 32×32 images

  # mask-SSIM: PATN's masks (its script's scikit-image polygon rule) on both images, PATN's SSIM.
  target_kp = sources.synthetic_arrays(config.data.synthetic.eval_seed, 8, 32, 32)["target_keypoints"]
  target_kp = with_missing_joints(target_kp)
  mask_ssim = []
  for g, t, kp in zip(generated, target_u8, target_kp):
    mask = reference_mask(kp, 32, 32, polygon_fn=legacy_polygon)[..., None]
    g, t = g * mask, t * mask
    mask_ssim.append(structural_similarity(t, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                           channel_axis=-1, data_range=float(g.max()) - float(g.min())))
  assert m["ssim_mask"]["value"] == pytest.approx(float(np.mean(mask_ssim)), abs=1e-5)

  # PCKh: the pose network on the PNGs (uncropped here), as BGR values, at the test's scale (op by op:
  # cheaper than compiling it again); the maps decoded; the detections written in PATN's CSV format; a
  # joint-by-joint count against the targets.
  import functools  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from spg_jax.metrics import pckh, pose_estimator  # pylint: disable=g-import-not-at-top

  assert config.eval.crop_width is None
  network = functools.partial(pose_estimator.OpenPoseCOCO().apply, pose_variables)
  heatmaps, pafs = pose_estimator.multiscale_maps(network, jnp.asarray(generated[..., ::-1]), PCKH_SCALES)
  detected = pckh.keypoints_from_maps(heatmaps, pafs)
  assert 0 < (detected[..., 0] >= 0).sum() < detected[..., 0].size  # people found, with some parts missing
  rows = (out / "pckh_keypoints.csv").read_text().splitlines()
  assert rows[0] == "name:keypoints_y:keypoints_x" and [r.split(":")[0] for r in rows[1:]] == [p.name for p in pngs]
  written = np.stack([np.stack([json.loads(r.split(":")[2]), json.loads(r.split(":")[1])], -1) for r in rows[1:]])
  np.testing.assert_array_equal(written, detected)
  correct = total = used = 0
  for pred, kp in zip(detected.tolist(), target_kp.tolist()):
    truth = [(-1, -1) if x < 0 or y < 0 else (x, y) for x, y in kp]  # spg_jax's "negative = missing"
    head = [truth[j] for j in (0, 1, 14, 15, 16, 17) if truth[j] != (-1, -1)]
    if len(head) < 2:
      continue
    used += 1
    width = max(x for x, _ in head) - min(x for x, _ in head)
    height = max(y for _, y in head) - min(y for _, y in head)
    for (px, py), (tx, ty) in zip(pred, truth):
      if ty == -1:
        continue
      total += 1
      correct += px != -1 and py != -1 and abs(px - tx) < 0.5 * width and abs(py - ty) < 0.5 * height
  # Image 1 skipped; image 2 without joints 4 and 7: the rest, every joint of 6 images and 16 of one.
  assert (used, total) == (7, 6 * 18 + 16)
  entry = m["pckh"]
  assert (entry["correct"], entry["total"], entry["images_used"], entry["images_skipped"]) == (
      correct, total, used, 8 - used)
  assert entry["value"] == pytest.approx(correct / total, rel=1e-12) and entry["num_pairs"] == 8
  assert entry["scale_search"] == list(PCKH_SCALES) and entry["paper"] is None  # no paper figure off DeepFashion
  assert f"| PCKh | {entry['value']:.4f} |" in (out / "results.md").read_text()

  # FID: features of the PNGs and of the training images (source, then target, of each pair), with
  # the same compiled feature function and projection; statistics and distance recomputed here.
  train_arrays = sources.synthetic_arrays(config.data.synthetic.train_seed, 3, 32, 32)
  real_images = np.stack([train_arrays[k][i] for i in range(3) for k in ("source_image", "target_image")])
  mesh = sharding.make_mesh(config.mesh.fsdp)

  def features(fn, variables, images):  # in the evaluation's batches of 3, zero-padded
    padded = np.concatenate([images, np.zeros((-len(images) % 3,) + images.shape[1:], np.uint8)])
    rows = [np.asarray(fn(variables, padded[i:i + 3])) for i in range(0, len(padded), 3)]
    return np.concatenate(rows)[:len(images)] @ FID_PROJECTION

  fid_values = {}
  for metric, (variant, path) in weights.items():
    variables = jax.device_put(inception.load_inception_weights(path, variant), sharding.replicated(mesh))
    gen_f = features(feature_fn(variant, mesh), variables, generated)
    real_f = features(feature_fn(variant, mesh), variables, real_images)
    entry = m[metric]
    assert entry["num_pairs"] == 8 and entry["num_real_images"] == 6
    with np.load(entry["statistics_cache"]) as cached:
      np.testing.assert_allclose(cached["mu"], np.mean(real_f, axis=0), rtol=1e-6)
      np.testing.assert_allclose(cached["sigma"], np.cov(real_f, rowvar=False), rtol=1e-6, atol=1e-12)
    mu_g, sigma_g = np.mean(gen_f, axis=0), np.cov(gen_f, rowvar=False)
    mu_r, sigma_r = np.mean(real_f, axis=0), np.cov(real_f, rowvar=False)
    expected = (np.sum((mu_g - mu_r) ** 2) + np.trace(sigma_g) + np.trace(sigma_r)
                - 2 * np.trace(linalg.sqrtm(sigma_g @ sigma_r)).real)
    assert entry["value"] == pytest.approx(expected, rel=1e-6)
    fid_values[metric] = entry["value"]
  assert fid_values["fid"] != pytest.approx(fid_values["fid_legacy"], rel=1e-3)  # rows not swapped

  # Another evaluation reuses the cached statistics (no pass over the training images) ...
  train_source = sources.synthetic_source(config.data.synthetic.train_seed, 3, (32, 32))
  models = [evaluate.FidModel(metric, variant, str(path), None) for metric, (variant, path) in weights.items()]
  cache_files = [pathlib.Path(m[k]["statistics_cache"]) for k in weights]
  mtimes = [p.stat().st_mtime_ns for p in cache_files]
  caplog.set_level("INFO")
  caplog.clear()
  again = evaluate.real_set_statistics(config, train_source, models, mesh)
  assert all(s.reused and s.num_images == 6 for s in again.values())
  assert [p.stat().st_mtime_ns for p in cache_files] == mtimes
  assert "reusing the statistics of 6 images" in caplog.text and "FID real set: 3 / 3 pairs" not in caplog.text
  # ... and a changed weights file, protocol or training set makes another key.
  identity = evaluate.real_set_identity(config, train_source)
  other_set = evaluate.real_set_identity(config, sources.synthetic_source(99, 3, (32, 32)))
  key = lambda path=weights["fid_legacy"][1], variant="torchvision", real_set=identity: fid.cache_path(
      config.eval.fid_cache_dir, evaluate.real_set_key(config, train_source, variant, path, real_set))
  assert key() == cache_files[0]
  data = bytearray(weights["fid_legacy"][1].read_bytes())
  data[len(data) // 2] ^= 1  # a file one bit apart: the key holds the content's hash, not the name
  changed = tmp_path / "inception_legacy_changed.npz"
  changed.write_bytes(bytes(data))
  assert len({key(), key(path=changed), key(variant="pytorch_fid"), key(real_set=other_set)}) == 4


def test_generate_cli_region_style_swap_and_input_errors(runs, tmp_path, capsys):
  """`python -m spg_jax.generate` on the six-step checkpoint: deterministic; taking a region's style
  from the source itself changes nothing, from another person changes the image; bad inputs are
  errors that name the file."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from input_pipeline import synthetic  # pylint: disable=g-import-not-at-top
  from spg_jax import generate  # pylint: disable=g-import-not-at-top

  workdir = tmp_path / "workdir"
  shutil.copytree(runs.wait("one_device").workdir, workdir)
  config_file = tmp_path / "config.py"
  config_file.write_text(f"from tests.train_helpers import tiny_config\n\n"
                         f"def get_config():\n  return tiny_config({RUN_STEPS})\n")
  for name, seed in (("a", 11), ("b", 12)):
    pair = synthetic.make_pair(seed, 32, 32)
    Image.fromarray(pair["source_image"]).save(tmp_path / f"{name}.png")
    Image.fromarray(pair["source_parsing"].astype(np.uint8)).save(tmp_path / f"{name}_parsing.png")
    (tmp_path / f"{name}.json").write_text(json.dumps(pair["source_keypoints"].tolist()))
    (tmp_path / f"{name}_target.json").write_text(json.dumps(pair["target_keypoints"].tolist()))
  rows = ["source_image,source_parsing,source_keypoints,target_keypoints,output,style"]
  common = f"{tmp_path}/a.png,{tmp_path}/a_parsing.png,{tmp_path}/a.json,{tmp_path}/a_target.json"
  for out, style in (("plain", ""), ("again", ""), ("self", f"upper-clothes={tmp_path}/a.png:{tmp_path}/a_parsing.png"),
                     ("swap", f"upper-clothes={tmp_path}/b.png:{tmp_path}/b_parsing.png;"
                              f"pants={tmp_path}/b.png:{tmp_path}/b_parsing.png")):
    rows.append(f"{common},{tmp_path}/{out}.png,{style}")
  (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
  args = ["--config", str(config_file), "--workdir", str(workdir)]
  assert generate.main(args + ["--pairs", str(tmp_path / "pairs.csv"),
                               "--contact_sheet", str(tmp_path / "sheet.png")]) == 0
  read = lambda name: np.asarray(Image.open(tmp_path / f"{name}.png")).astype(np.int32)
  assert read("plain").shape == (32, 32, 3) and read("sheet").shape == (4 * 32, 4 * 32, 3)
  np.testing.assert_array_equal(read("plain"), read("again"))
  np.testing.assert_array_equal(read("plain"), read("self"))
  assert np.abs(read("plain") - read("swap")).max() > 0

  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "small.png")
  assert generate.main(args + ["--source_image", str(tmp_path / "small.png"), "--source_parsing",
                               str(tmp_path / "a_parsing.png"), "--source_keypoints", str(tmp_path / "a.json"),
                               "--target_keypoints", str(tmp_path / "a_target.json"),
                               "--output", str(tmp_path / "x.png")]) == 2
  assert "small.png: image is 16x16, the model takes 32x32" in capsys.readouterr().err
  with pytest.raises(generate.InputError, match="unknown region 'sleeves'"):
    generate.parse_style(f"sleeves={tmp_path}/b.png:{tmp_path}/b_parsing.png")


def test_sigkill_then_resume_matches_uninterrupted_run(runs, tmp_path):
  """`launch.py` killed with SIGKILL after its step-2 checkpoint, restarted: bitwise the same run.

  The kill comes as soon as the committed directory `checkpoints/2` appears, i.e. during steps
  3–6 (possibly in the middle of writing checkpoint 4). The restarted run must say it resumes at
  the latest committed step (not 0), and its final state (every leaf: parameters, batch
  statistics, both Adam states) and validation metrics must equal the uninterrupted run's
  bit for bit: the data is read by position, each step's key is fold_in(seed, step), and the
  checkpoint holds float32 values exactly.
  """
  reference = runs.wait("one_device")  # also fills the compilation cache for one device
  workdir = tmp_path / "workdir"
  command = [sys.executable, "launch.py", "--config", f"tests/train_helpers.py:{RUN_STEPS}",
             "--workdir", str(workdir)]
  # Each launch gets its own copy of the one-device cache: JAX writes entries in place, and a
  # process killed while writing one would leave it half-written.
  caches = [tmp_path / f"xla_cache_{i}" for i in range(2)]
  for cache in caches:
    shutil.copytree(runs.cache("one_device"), cache)
  logs = [tmp_path / "killed.log", tmp_path / "resumed.log"]
  with open(logs[0], "w") as log:
    proc = subprocess.Popen(command, cwd=REPO, env=train_helpers.training_env(caches[0], 1),
                            stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (workdir / "checkpoints" / "2").is_dir():
      assert proc.poll() is None, (f"exited with {proc.returncode} before checkpoint 2:\n"
                                   f"{_tail(logs[0])}")
      assert time.monotonic() < deadline, "no checkpoint 2 in time"
      time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  committed = _checkpoint_steps(workdir)
  assert committed and committed[-1] < RUN_STEPS, committed
  left = sorted(p.name for p in (workdir / "checkpoints").iterdir())

  with open(logs[1], "w") as log:
    code = subprocess.run(command, cwd=REPO, env=train_helpers.training_env(caches[1], 1),
                          stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S,
                          check=False).returncode
  output = logs[1].read_text(errors="replace")
  assert code == 0, f"left {left} at the kill; the restart exited with {code}:\n{_tail(logs[1])}"
  assert f"resuming at step {committed[-1]}" in output, output[-4000:]
  assert f"steps {committed[-1]} → {RUN_STEPS}" in output
  assert _checkpoint_steps(workdir) == [4, 6]

  resumed, uninterrupted = _restore(workdir, RUN_STEPS), load_state(reference.workdir)
  assert sorted(resumed) == sorted(uninterrupted)
  unequal = [k for k in uninterrupted if not np.array_equal(resumed[k], uninterrupted[k])]
  assert not unequal, unequal[:10]
  assert _validation(workdir) == _validation(reference.workdir)
  print(f"killed leaving {left}, resumed at {committed[-1]}: all {len(resumed)} leaves equal")


# ---------------------------------------------------------------------------------------------
# Several devices and processes.


def test_eight_devices_match_one_device(runs):
  """The same 6 steps on 8 fake CPU devices (one pair per device) and on one device.

  BatchNorm statistics and losses are over the global batch, so the runs differ only by the order
  of reductions. First step (same state, same batch): the logged losses and gradient norm agree
  within 1e-5 relative (measured ≤ 6.2e-7). After 6 steps, ‖a − b‖ / ‖b‖ (measured, bound):
  parameters 7.8e-4 (1e-2), batch statistics 1.1e-3 (1e-2), Adam μ / ν of G 1.5e-2 / 1.0e-4 and
  of D 7.5e-2 / 1.8e-2 (0.3); every parameter element within 0.59 of the Adam budget of
  `_assert_states_close`; validation SSIM and L1 differ by 2.5e-4 and 1.0e-3.
  """
  one, eight = runs.wait("one_device"), runs.wait("eight_devices")
  assert "1 processes, 8 devices" in eight.log_text()
  first = _first_step_differences(eight.workdir, one.workdir)
  assert max(first.values()) <= FIRST_STEP_RTOL, first
  measured = _assert_states_close(load_state(eight.workdir), load_state(one.workdir), RUN_STEPS)
  _assert_validation_close(_validation(eight.workdir), _validation(one.workdir))
  print(f"8 devices vs 1: first step {max(first.values()):.2g}, final {measured}")


def test_checkpoints_restore_onto_another_device_count(runs, tmp_path):
  """A checkpoint written on 8 devices restores on 1, and one written on 1 restores on 8.

  The 8-device checkpoint restored in this one-device process equals what the 8-device process
  held, bit for bit. Then each run continues for 2 more steps on the other layout (6 → 8): both
  resume at 6 (not 0), write checkpoint 8 and move the parameters, and the two continued runs
  agree as any two layouts do (`_assert_states_close` over 8 steps; measured: parameters 1.3e-3,
  batch statistics 2.6e-3, Adam μ of D 0.11, every element within 0.5 of the Adam budget).
  """
  one, eight = runs.wait("one_device"), runs.wait("eight_devices")
  held = load_state(eight.workdir)
  restored = _restore(eight.workdir, RUN_STEPS)
  unequal = [k for k in held if not np.array_equal(restored[k], held[k])]
  assert not unequal, unequal[:10]

  continued = {}
  for name, source, devices, cache_of in (("eight_then_one", eight, 1, "one_device"),
                                         ("one_then_eight", one, 8, "eight_devices")):
    workdir = tmp_path / name
    shutil.copytree(source.workdir, workdir)
    (workdir / train_helpers.FINAL_STATE).unlink()
    runs.start(name, devices=devices, steps=CONTINUE_STEPS, workdir=workdir, cache_of=cache_of)
  for name in ("eight_then_one", "one_then_eight"):
    workdir = tmp_path / name
    log = runs.wait(name).log_text()
    assert f"resuming at step {RUN_STEPS}" in log, log[-3000:]
    assert f"steps {RUN_STEPS} → {CONTINUE_STEPS}" in log, log[-3000:]
    assert _checkpoint_steps(workdir) == [RUN_STEPS, CONTINUE_STEPS]
    state = load_state(workdir)
    assert int(state["step"]) == CONTINUE_STEPS
    start = load_state((eight if name == "eight_then_one" else one).workdir)
    moved = [k for k in state if k.startswith("params/") and not np.array_equal(state[k], start[k])]
    assert len(moved) >= 0.9 * sum(k.startswith("params/") for k in state)
    assert _validation(workdir)["step"] == CONTINUE_STEPS
    continued[name] = state
  measured = _assert_states_close(continued["eight_then_one"], continued["one_then_eight"],
                                  CONTINUE_STEPS)
  print(f"8→1 vs 1→8 devices after {CONTINUE_STEPS} steps: {measured}")


def test_two_processes_match_one_process(runs):
  """Two processes joined by `jax.distributed.initialize` on localhost, 2 CPU devices each.

  Each process builds its half of every global batch of 8; both checkpoint into one workdir
  (Orbax coordinates them; cross-process collectives on CPU use Gloo, JAX's default
  `jax_cpu_collectives_implementation`). Both must exit 0; the checkpoint must restore in this
  single one-device process exactly as the processes held it; and the run must match the
  one-process run of the same global batch as the 8-device run does, with the same bounds
  (measured: first step ≤ 6.2e-7; after 6 steps parameters 7.8e-4, batch statistics 1.1e-3,
  Adam μ of D 7.5e-2; validation SSIM and L1 differ by 4.6e-4 and 1.4e-3).
  """
  one, two = runs.wait("one_device"), runs.wait("two_processes")
  for process in range(2):
    assert "2 processes, 4 devices" in two.log_text(process)
  assert _checkpoint_steps(two.workdir) == [4, 6]
  gathered = load_state(two.workdir)
  restored = _restore(two.workdir, RUN_STEPS)
  unequal = [k for k in gathered if not np.array_equal(restored[k], gathered[k])]
  assert not unequal, unequal[:10]
  first = _first_step_differences(two.workdir, one.workdir)
  assert max(first.values()) <= FIRST_STEP_RTOL, first
  measured = _assert_states_close(restored, load_state(one.workdir), RUN_STEPS)
  _assert_validation_close(_validation(two.workdir), _validation(one.workdir))
  print(f"2 processes vs 1: first step {max(first.values()):.2g}, final {measured}")
