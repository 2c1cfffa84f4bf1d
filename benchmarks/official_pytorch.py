"""Train-step and inference throughput of the official PyTorch SPGNet at DeepFashion size.

Times the official implementation (github.com/cszy98/SPGNet; written against commit
3c1f6b5e290e7339ec01181403f23edf1e87eb15, whose model/option code is that of the 2021-04-26 release),
imported unmodified from a clean copy of that repository, on one device:

  train      `PoseTransferModel.optimize_parameters()` as `scripts/train_pose_transfer_model.py` calls it
             once the GAN loss is on (epoch >= `epoch_add_gan`, i.e. 40 of the 45 DeepFashion epochs): the
             frozen flow network netF (Intr-Flow `FlowUnet`, eval mode, no grad) → generator netG
             (`DualUnetGenerator_SEAN`) → one Adam step of the discriminator netD (BCE on the sigmoid
             PatchGAN), then one Adam step of netG on L1 + VGG19 content (+ 0.01 GAN) loss.
  inference  `PoseTransferModel.test(compute_loss=False)` of a model built with the test options, with
             `model.eval(); netG.eval(); netF.eval()` as `scripts/test_pose_transfer_model.py` does: netF,
             then stage 2 (netG) and tanh (the forward also warps the source image for display). The
             official code has no stage 1 (parsing generator): its test path reads predicted target
             parsings from disk, so stage 2 + the flow network is everything the official test-time
             forward runs. The SSIM the test script computes afterwards on the host is not timed.

The models are built by the official option parser (`TrainPoseTransferOptions` /
`TestPoseTransferOptions`) from the arguments of `train_deepfashion.sh` / `test_deepfashion.sh`, with one
device instead of their `--gpu_ids 0,1` (so no `data_parallel` split of the batch), and by the official
`PoseTransferModel.initialize` (its Kaiming init). Every checkpoint load is skipped (random weights): the
flow network's `best_net_netF.pth`, the test model's `latest_net_netG.pth`, and torchvision's ImageNet VGG19.
Inputs are synthetic tensors with the keys, shapes and value ranges `PoseTransferParsingDataset` returns:
`img_1`, `img_2` (B×3×H×W in [-1, 1]), `joint_1`, `joint_2` (B×18×H×W binary discs of radius
`joint_radius` = 8 around random keypoints), `seg_cihp_1`, `seg_cihp_2` (B×20×H×W one-hot of per-pixel
labels drawn uniformly from the first `--parsing_classes` classes), `id_1`, `id_2`. They are put on the
device once by `set_input` before timing (the official loop copies each batch from a CPU DataLoader).

Note that the official ACE normalisation and the style encoder loop over every sample and every one of
the 20 parsing classes in Python with a host-synchronising `torch.sum(mask) > 0` test each time, so the
step time grows with batch size × number of ACE layers (35 on DeepFashion) and depends on how many classes
are present (uniform labels: all 20 at every resolution, the most work per step).

Per step: `torch.cuda.synchronize()` after each call; reported figures are the median over `--steps` timed
calls after `--warmup` untimed ones, pairs/s = batch / median, peak memory =
`torch.cuda.max_memory_allocated()` of a fresh process running only that configuration. Each
configuration runs in its own subprocess; running out of memory is reported as "out of memory".
Precision is the official float32 with PyTorch's default TF32 settings (reported with each result).

Runtime patches (the fetched files are never edited; each is applied in this process only):
  1. `numpy.int` = `int` when missing: `FlowUnet.__init__` calls `.astype(np.int)` (removed in NumPy 1.24).
  2. `skimage.measure.compare_ssim` / `compare_psnr`: imported at module load by `models/modules.py` and
     `models/networks.py`; removed in scikit-image 0.18. Aliased to `skimage.metrics` when scikit-image
     imports, else stand-ins that raise (they only serve the SSIM/PSNR measurements, never called here).
  3. `util.pose_util` → an empty module: `models/pose_transfer_model.py` imports it without using it; it
     needs OpenCV, pandas and `skimage.draw.circle` (removed in scikit-image 0.19).
  4. `torchvision.models.vgg19(pretrained=True)` → `vgg19(weights=None)`: same layers, random weights, no
     download (there is no network on the benchmark machine).
  5. `util.io.load_json('checkpoints/FlowReg_deepfashion/train_opt.json')` → that file's content, embedded
     below, so the official `load_flow_network` builds netF as the released flow checkpoint's options say.
  6. `BaseModel.load_network` → no-op (random init where `.pth` checkpoints would be loaded).
  7. `torch.nn.functional.grid_sample`: default `align_corners=True`, the behaviour of the PyTorch 1.2 the
     code was written for (the default became False in 1.3). Same cost; keeps the official warping.
  8. `--device cpu` only: `Tensor.cuda()` / `Module.cuda()` → no-ops, because `DualUnetGenerator_SEAN`
     and `ACE.forward` call `.cuda()` unconditionally. (On CUDA the ACE noise is still drawn on the host
     and copied to the device at every call, as in the official code.)
  9. Only if the legacy `torch.cuda.FloatTensor(size)` constructor `set_input` uses is unavailable: an
     equivalent `torch.empty(size, device=...)` (recorded in the result's `patches` when applied).
Also, CUDA is initialised before the official option parser runs, so its write of
`CUDA_VISIBLE_DEVICES=<gpu_ids>` does not override the caller's device selection.

Usage (the official repository checked out or exported at third_party/SPGNet; torch, torchvision and
numpy are the only requirements):

  python benchmarks/official_pytorch.py --batches 4,16,20 --max_batch --json official.json
  python benchmarks/official_pytorch.py --device cpu --batches 2 --image_size 128,128 --steps 1 \
      --warmup 1 --inference_batch 2        # smoke test; H and W must be multiples of 128
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import subprocess
import sys
import time
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KNOWN_COMMIT = "3c1f6b5e290e7339ec01181403f23edf1e87eb15"
# sha256 prefix of the official files this script imports (`_code_fingerprint`), at KNOWN_COMMIT.
KNOWN_FINGERPRINT = "bb65ae82a9c2db29"
_USED_FILES = (
    "models/__init__.py", "models/base_model.py", "models/flow_regression_model.py", "models/modules.py",
    "models/networks.py", "models/pose_transfer_model.py", "models/SPG_net_deepfashion.py",
    "models/SPG_net_market.py", "options/__init__.py", "options/base_options.py",
    "options/pose_transfer_options.py", "util/__init__.py", "util/io.py")

# train_deepfashion.sh / test_deepfashion.sh of the official repository, less --gpu_ids and --batch_size
# (set per run).
_TRAIN_ARGS = ("--id deepfashion --dataset_name deepfashion --which_model_G dual_unet --G_feat_warp 1 "
               "--G_vis_mode residual --pretrained_flow_id FlowReg_deepfashion --pretrained_flow_epoch best "
               "--dataset_type pose_transfer_parsing --check_grad_freq 3000 --n_epoch 45")
_TEST_ARGS = ("--id deepfashion --dataset_name deepfashion --which_model_G dual_unet --G_feat_warp 1 "
              "--G_vis_mode residual --pretrained_flow_id FlowReg_deepfashion --pretrained_flow_epoch best "
              "--dataset_type pose_transfer_parsing --which_epoch latest --save_output --output_dir output")

# checkpoints/FlowReg_deepfashion/train_opt.json, the options of the released Intr-Flow DeepFashion flow
# regressor, from which the official `load_flow_network` builds netF (the file ships with the checkpoint,
# not with the code). Of these, which_model, nf, norm, start_scale, num_scale, input_type1/2 and joint_nc
# shape the network (max_nf is not passed on for "unet", so FlowUnet uses its default of 512).
_FLOWREG_DEEPFASHION_OPT = {
    "id": "FlowReg_deepfashion", "gpu_ids": [0], "which_model": "unet", "init_type": "kaiming",
    "norm": "batch", "nf": 32, "max_nf": 128, "input_type1": "joint", "input_type2": "joint",
    "start_scale": 2, "num_scale": 5, "flow_loss_type": "l2", "use_ss_flow_loss": 1, "joint_nc": 18,
    "joint_mode": "binary", "joint_radius": 8, "seg_nc": 7, "dataset_type": "flow",
    "dataset_name": "deepfashion", "image_size": [256, 256], "debug": False, "aug_shiftx_range": 20,
    "aug_shifty_range": 10, "vis_smooth_rate": 5, "resume_train": False, "last_epoch": 1, "pretrain_id": "",
    "pretrain_epoch": "latest", "lr": 0.0001, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0004,
    "lr_policy": "step", "n_epoch": 40, "n_epoch_decay": 0, "lr_decay": 8, "lr_gamma": 0.5,
    "display_freq": 10, "test_epoch_freq": 1, "save_epoch_freq": 5, "vis_epoch_freq": 1,
    "check_grad_freq": 100, "n_vis": 64, "loss_weight_flow": 1.0, "loss_weight_vis": 1.0,
    "loss_weight_flow_ss": 5.0, "is_train": True}


def _progress(msg: str, start=time.perf_counter()) -> None:
  print(f"[{time.perf_counter() - start:7.1f} s] {msg}", file=sys.stderr, flush=True)


def resolve_spgnet_dir(path: str) -> str:
  """`path` as given if it exists (relative to the working directory), else relative to this repository."""
  if os.path.isdir(path):
    return os.path.abspath(path)
  return os.path.join(REPO, path)


def _code_fingerprint(spgnet_dir: str) -> str:
  h = hashlib.sha256()
  for name in _USED_FILES:
    h.update(name.encode() + b"\0")
    with open(os.path.join(spgnet_dir, name), "rb") as f:
      h.update(f.read() + b"\0")
  return h.hexdigest()[:16]


def official_revision(spgnet_dir: str) -> str:
  """The commit of a git checkout at `spgnet_dir` (read from .git, no git needed), else a code check.

  A `git archive` export has no .git; then the imported files are compared with those of KNOWN_COMMIT.
  """
  git = os.path.join(spgnet_dir, ".git")
  try:
    with open(os.path.join(git, "HEAD")) as f:
      head = f.read().strip()
    if not head.startswith("ref: "):
      return head
    ref = head[len("ref: "):]
    if os.path.exists(os.path.join(git, ref)):
      with open(os.path.join(git, ref)) as f:
        return f.read().strip()
    with open(os.path.join(git, "packed-refs")) as f:
      for line in f:
        if line.rstrip().endswith(" " + ref):
          return line.split()[0]
  except OSError:
    pass
  fingerprint = _code_fingerprint(spgnet_dir)
  if fingerprint == KNOWN_FINGERPRINT:
    return f"no .git; code identical to {KNOWN_COMMIT}"
  return f"no .git; code differs from {KNOWN_COMMIT} (fingerprint {fingerprint})"


def install_patches(spgnet_dir: str, device: str) -> list[str]:
  """Makes the official code importable and runnable here; returns what was patched (docstring items)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  applied = []
  sys.path.insert(0, spgnet_dir)  # the official code imports `models`, `options`, `util` top-level

  # 1. np.int for FlowUnet.__init__.
  if "int" not in np.__dict__:
    np.int = int
    applied.append("numpy.int = int")

  # 2. skimage.measure.compare_ssim / compare_psnr, imported at module load only.
  try:
    import skimage.measure  # pylint: disable=g-import-not-at-top
    import skimage.metrics  # pylint: disable=g-import-not-at-top
    if not hasattr(skimage.measure, "compare_ssim"):
      skimage.measure.compare_ssim = skimage.metrics.structural_similarity
      skimage.measure.compare_psnr = skimage.metrics.peak_signal_noise_ratio
      applied.append("skimage.measure.compare_{ssim,psnr} = skimage.metrics equivalents")
  except Exception:  # pylint: disable=broad-except
    def _unavailable(*args, **kwargs):
      raise NotImplementedError("scikit-image is not installed; SSIM/PSNR are not part of this benchmark")
    skimage_stub = types.ModuleType("skimage")
    measure_stub = types.ModuleType("skimage.measure")
    measure_stub.compare_ssim = measure_stub.compare_psnr = _unavailable
    skimage_stub.measure = measure_stub
    sys.modules["skimage"], sys.modules["skimage.measure"] = skimage_stub, measure_stub
    applied.append("skimage.measure stand-in (scikit-image not importable; SSIM/PSNR unused)")

  # 3. util.pose_util (unused by the model; needs cv2/pandas/old scikit-image).
  import util  # pylint: disable=g-import-not-at-top
  import util.io  # pylint: disable=g-import-not-at-top
  pose_util = types.ModuleType("util.pose_util")
  sys.modules["util.pose_util"] = pose_util
  util.pose_util = pose_util
  applied.append("util.pose_util = empty module")

  # 4. VGG19 with random weights instead of the ImageNet download.
  import torchvision.models  # pylint: disable=g-import-not-at-top
  vgg19 = torchvision.models.vgg19

  def vgg19_random(pretrained=False, **kwargs):
    del pretrained
    kwargs.pop("weights", None)
    try:
      return vgg19(weights=None, **kwargs)
    except TypeError:  # torchvision < 0.13 has no `weights`
      return vgg19(pretrained=False, **kwargs)

  torchvision.models.vgg19 = vgg19_random
  applied.append("torchvision.models.vgg19(pretrained=True) -> vgg19(weights=None)")

  # 5. The flow network's options file (ships with its checkpoint).
  load_json = util.io.load_json
  flow_opt_path = os.path.join("checkpoints", "FlowReg_deepfashion", "train_opt.json")

  def load_json_patched(fn):
    if os.path.normpath(fn) == flow_opt_path:
      return dict(_FLOWREG_DEEPFASHION_OPT)
    return load_json(fn)

  util.io.load_json = load_json_patched
  applied.append("util.io.load_json(FlowReg_deepfashion/train_opt.json) -> embedded options")

  # 6. No checkpoint loads.
  from models import base_model  # pylint: disable=g-import-not-at-top

  def load_network_skipped(self, network, network_label, epoch_label, model_id=None, forced=True):
    del network, forced
    print(f"[{self.name()}] random init instead of loading {network_label} "
          f"({model_id or self.opt.id}, epoch {epoch_label})", file=sys.stderr)

  base_model.BaseModel.load_network = load_network_skipped
  applied.append("BaseModel.load_network -> no-op (random weights)")

  # 7. PyTorch 1.2 grid_sample semantics.
  grid_sample = F.grid_sample

  def grid_sample_align_corners(*args, **kwargs):
    kwargs.setdefault("align_corners", True)
    return grid_sample(*args, **kwargs)

  F.grid_sample = grid_sample_align_corners
  applied.append("F.grid_sample default align_corners=True (PyTorch 1.2 behaviour)")

  # 8. Hard-coded .cuda() on a CPU run.
  if device == "cpu":
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    applied.append("Tensor.cuda / Module.cuda -> no-ops (CPU run)")
  return applied


def synthetic_batch(batch_size: int, h: int, w: int, joint_radius: int, parsing_classes: int, seed: int = 0):
  """A batch as `PoseTransferParsingDataset` + the default collate return it (CPU tensors, NCHW)."""
  import torch  # pylint: disable=g-import-not-at-top

  g = torch.Generator().manual_seed(seed)
  yy = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
  xx = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)

  def joints():  # `kp_to_map(mode='binary')`: 1 inside a disc of radius joint_radius around each keypoint
    x = torch.rand(batch_size, 18, 1, 1, generator=g) * (w - 1)
    y = torch.rand(batch_size, 18, 1, 1, generator=g) * (h - 1)
    return (((xx - x) ** 2 + (yy - y) ** 2) <= joint_radius ** 2).float()

  def parsing():  # `seg_label_to_map(nc=20)`: one-hot over the 20 CIHP classes
    labels = torch.randint(0, parsing_classes, (batch_size, h, w), generator=g)
    return torch.nn.functional.one_hot(labels, 20).permute(0, 3, 1, 2).float().contiguous()

  return {
      "img_1": torch.rand(batch_size, 3, h, w, generator=g) * 2 - 1,
      "img_2": torch.rand(batch_size, 3, h, w, generator=g) * 2 - 1,
      "joint_1": joints(), "joint_2": joints(), "seg_cihp_1": parsing(), "seg_cihp_2": parsing(),
      "id_1": [f"src{i}" for i in range(batch_size)], "id_2": [f"tgt{i}" for i in range(batch_size)],
  }


def _is_oom(e: BaseException) -> bool:
  return "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


def run_one(mode: str, batch_size: int, args) -> dict:
  """One configuration (mode "train" or "inference") in this process; returns its figures."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  spgnet_dir = resolve_spgnet_dir(args.spgnet_dir)
  h, w = (int(v) for v in args.image_size.split(","))
  cuda = args.device == "cuda"
  out = {"mode": mode, "batch": batch_size, "image_size": [h, w], "device_arg": args.device,
         "parsing_classes": args.parsing_classes}
  out["patches"] = install_patches(spgnet_dir, args.device)
  out["official_revision"] = official_revision(spgnet_dir)
  if cuda:
    torch.cuda.init()  # before the official parser sets CUDA_VISIBLE_DEVICES (see the docstring)
  from models.pose_transfer_model import PoseTransferModel  # pylint: disable=g-import-not-at-top
  from options import pose_transfer_options  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  common = f" --gpu_ids {0 if cuda else -1} --batch_size {batch_size} --image_size {h} {w}"
  _progress(f"{mode} batch {batch_size}: building the official model")
  if mode == "train":
    opt = pose_transfer_options.TrainPoseTransferOptions().parse(ord_str=_TRAIN_ARGS + common, display=False)
    model = PoseTransferModel()
    model.initialize(opt)
    # As scripts/train_pose_transfer_model.py sets up every epoch, here one with the GAN loss on.
    model.train()
    model.netG.train()
    model.netD.train()
    model.use_gan = opt.loss_weight_gan > 0
    step = functools.partial(model.optimize_parameters, check_grad=False)
  else:
    opt = pose_transfer_options.TestPoseTransferOptions().parse(ord_str=_TEST_ARGS + common, display=False)
    model = PoseTransferModel()
    model.initialize(opt)
    model.eval()
    model.netG.eval()
    model.netF.eval()
    step = functools.partial(model.test, compute_loss=False)
  for name in ("netG", "netD", "netF"):
    if hasattr(model, name):
      out[f"{name}_params"] = sum(p.numel() for p in getattr(model, name).parameters())

  try:
    model.Tensor(1)
  except (TypeError, RuntimeError):  # patch 9: legacy typed constructor unavailable
    device = torch.device("cuda" if cuda else "cpu")
    model.Tensor = lambda size: torch.empty(size, device=device)
    out["patches"].append("model.Tensor -> torch.empty(size, device=...)")
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  try:
    model.set_input(synthetic_batch(batch_size, h, w, opt.joint_radius, args.parsing_classes))
    _progress("warming up")
    for _ in range(args.warmup):
      step()
    sync()
    _progress("timing")
    times = []
    for _ in range(args.steps):
      t = time.perf_counter()
      step()
      sync()
      times.append(time.perf_counter() - t)
  except Exception as e:  # pylint: disable=broad-except
    if not _is_oom(e):
      raise
    out["error"] = "out of memory"
  if "error" not in out:
    out["step_s"] = float(np.median(times))
    out["step_s_min"] = float(np.min(times))
    out["pairs_per_s"] = batch_size / out["step_s"]
    if mode == "train":
      losses = [model.output[k] for k in ("total_G_loss", "loss_D") if k in model.output]
      out["loss_finite"] = bool(all(torch.isfinite(l).all().item() for l in losses))
      out["gan_on"] = "loss_D" in model.output
  if cuda:
    out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    out["device"] = torch.cuda.get_device_name()
    out["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    out["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    out["cudnn_benchmark"] = torch.backends.cudnn.benchmark
  else:
    import resource  # pylint: disable=g-import-not-at-top
    out["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["device"] = "cpu"
  out["torch"] = torch.__version__
  import torchvision  # pylint: disable=g-import-not-at-top
  out["torchvision"] = getattr(torchvision, "__version__", "?")
  return out


def _subprocess(mode: str, batch: int, args, steps: int) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--one", f"{mode}:{batch}", "--steps", str(steps),
         "--warmup", str(args.warmup), "--spgnet_dir", resolve_spgnet_dir(args.spgnet_dir),
         "--device", args.device, "--image_size", args.image_size,
         "--parsing_classes", str(args.parsing_classes)]
  try:
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=args.timeout, check=False)
  except subprocess.TimeoutExpired as e:
    stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    progress = [l for l in stderr.splitlines() if l.startswith("[")]
    return {"mode": mode, "batch": batch, "error": f"timeout {args.timeout}s after: {progress[-1:] or 'start'}"}
  for line in result.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  tail = (result.stderr or "").strip().splitlines()[-3:]
  oom = any("out of memory" in l.lower() or "OutOfMemoryError" in l for l in tail)
  return {"mode": mode, "batch": batch, "error": "out of memory" if oom else " | ".join(tail)}


def _report(r: dict) -> dict:
  print("RESULT " + json.dumps(r), flush=True)
  return r


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  parser.add_argument("--spgnet_dir", default="third_party/SPGNet", help="the official repository")
  parser.add_argument("--batches", default="4,16,20", help="training batch sizes")
  parser.add_argument("--max_batch", action="store_true",
                      help="also search the largest training batch that fits (doubling, then bisection)")
  parser.add_argument("--inference_batch", type=int, default=4, help="0: no inference row")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
  parser.add_argument("--image_size", default="256,256", help="H,W (multiples of 128 for the 7-level netG)")
  parser.add_argument("--parsing_classes", type=int, default=20,
                      help="synthetic parsings use labels 0..K-1 (fewer = less work in ACE's class loop)")
  parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
  parser.add_argument("--timeout", type=int, default=600, help="per configuration, seconds")
  parser.add_argument("--json", default=None, help="write all results here")
  parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    mode, batch = args.one.split(":")
    print("RESULT " + json.dumps(run_one(mode, int(batch), args)), flush=True)
    return

  spgnet_dir = resolve_spgnet_dir(args.spgnet_dir)
  print(f"official SPGNet at {spgnet_dir}: {official_revision(spgnet_dir)}", flush=True)
  results = []
  batches = [int(b) for b in args.batches.split(",") if b]
  for batch in batches:
    results.append(_report(_subprocess("train", batch, args, args.steps)))
  if args.max_batch and any("error" not in r for r in results):
    fits = max([r["batch"] for r in results if "error" not in r], default=0)
    fails = min([r["batch"] for r in results if r.get("error") == "out of memory"], default=None)
    short = max(3, args.steps // 2)
    while True:
      if fails is None:  # double until out of memory (or another failure ends the search) ...
        batch = 2 * max(fits, max(batches))
      elif fails - fits > max(1, fits // 8):  # ... then bisect to within 1/8 of the result
        batch = (fits + fails) // 2
      else:
        break
      r = _report(_subprocess("train", batch, args, short))
      results.append(r)
      if "error" not in r:
        fits = batch
      elif r["error"] == "out of memory":
        fails = batch
      else:
        break
    print(f"largest training batch that fits: {fits}" + (f" ({fails} does not)" if fails else ""))
  if args.inference_batch:
    results.append(_report(_subprocess("inference", args.inference_batch, args, args.steps)))

  print("\n| official PyTorch SPGNet | batch | pairs/s | step ms | peak GiB |")
  print("| --- | --- | --- | --- | --- |")
  for r in results:
    what = "train step (D + G update)" if r["mode"] == "train" else "inference (netF + stage 2)"
    if "error" in r:
      print(f"| {what} | {r['batch']} | {r['error']} | | |")
      continue
    peak = (f"{r['peak_gib']:.1f}" if "peak_gib" in r
            else f"{r.get('max_rss_gib', float('nan')):.1f} (host RSS)")
    print(f"| {what} | {r['batch']} | {r['pairs_per_s']:.2f} | {1e3 * r['step_s']:.1f} | {peak} |")
  ok = [r for r in results if "error" not in r]
  if ok:
    r = ok[0]
    print(f"\ndevice: {r['device']}; torch {r['torch']}, torchvision {r['torchvision']}; "
          f"{r['image_size'][0]}x{r['image_size'][1]}, float32"
          + (f" (cudnn TF32 {r['cudnn_allow_tf32']}, matmul TF32 {r['matmul_allow_tf32']})"
             if "cudnn_allow_tf32" in r else "")
          + f"; official code: {r['official_revision']}\npatches: {'; '.join(r['patches'])}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
