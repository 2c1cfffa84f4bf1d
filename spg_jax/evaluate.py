"""Test-set evaluation of a trained checkpoint: every pair generated, PNGs, and the results table.

`launch.py --mode eval --config C --workdir W` restores the latest checkpoint in W and writes
<W>/eval_<step>/:
  images/<pair index>.png   every generated test image (pair i of the split's pair list, i.e. of
                            the authors' `split.json`), centre-cropped to `eval.crop_width` when set
                            (DeepFashion: the official 176 × 256 crop of the 256 × 256 output)
  contact_sheet.png         the first `eval.num_sample_pairs` pairs: source | target pose | predicted
                            parsing | generated | ground truth
  results.json, results.md  every metric with its protocol and variant, the number of pairs, and
                            the paper's figure beside it

Inference is what users run: stage 1's arg-max parsing feeds stage 2 (`StepFunctions.predict`).
Every pair counts (no "drop the last N mod 64"). SSIM, L1 and PSNR are computed on the uint8
images (the official float → uint8 truncation) at the network's resolution, as the official test
script does; LPIPS (when `eval.lpips_weights` is set) on the saved, cropped images. Metrics not
computed (FID, PCKh, LPIPS without weights) are listed in the table with the reason.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from spg_jax import sharding, visualize
from spg_jax.metrics import image as image_metrics
from spg_jax.metrics import lpips, segmentation, ssim
from spg_jax.train_step import NUM_CLASSES, StepFunctions, TrainState, Frozen, parsing_labels

# SPGNet (CVPR 2021) Table 1, S1∥S2, DeepFashion 256 × 176; stage-1 mIoU from the supplementary.
PAPER = {"deepfashion": {"ssim_official": 0.782, "fid_legacy": 12.243, "lpips": 0.2105, "pckh": 0.97,
                         "miou": 0.539}}

# metric key → (name in the table, protocol / variant, higher is better).
METRICS = {
    "ssim_official": ("SSIM", "official test script: scikit-image defaults (7×7 uniform window, "
                      "sample covariance), uint8 images, network resolution", True),
    "ssim_patn": ("SSIM (PATN)", "Gaussian σ = 1.5, population covariance, data range of the "
                  "generated image", True),
    "ssim_gfla": ("SSIM (GFLA)", "51×51 uniform window on [0, 1] images", True),
    "l1": ("L1", "mean absolute difference on [−1, 1] images", False),
    "psnr": ("PSNR (dB)", "on 0..255 uint8 values", True),
    "miou": ("stage-1 mIoU", "20 CIHP classes, over classes present in truth or prediction", True),
    "fid_legacy": ("FID (legacy)", "torchvision Inception-v3, the protocol of SPGNet's published FID",
                   False),
    "fid": ("FID (standard)", "pytorch-fid Inception weights", False),
    "lpips": ("LPIPS", "AlexNet, v0.1 heads, on the saved (uint8, cropped) images", False),
    "pckh": ("PCKh", "OpenPose COCO estimator, per-axis head-box rule", True),
}
GFLA_WINDOW = 51  # the GFLA SSIM window: smaller images have no valid SSIM region
NOT_COMPUTED = {
    "ssim_gfla": f"not computed: the images are smaller than GFLA's {GFLA_WINDOW}×{GFLA_WINDOW} window",
    "fid_legacy": "not computed: FID is not yet part of --mode eval (spg_jax.metrics.fid computes it from "
                  "spg_jax.metrics.inception features)",
    "fid": "not computed: FID is not yet part of --mode eval (spg_jax.metrics.fid computes it from "
           "spg_jax.metrics.inception features)",
    "lpips": "not computed: set config.eval.lpips_weights (python -m spg_jax.convert lpips ...)",
    "pckh": "not computed: the OpenPose pose estimator is not yet ported",
}


def crop_width(images: np.ndarray, width: int | None) -> np.ndarray:
  """Centre crop (…, H, W, C) to `width` columns (DeepFashion: 256 → 176 drops 40 on each side)."""
  if width is None or width >= images.shape[-2]:
    return images
  left = (images.shape[-2] - width) // 2
  return images[..., left:left + width, :]


def make_test_step(fn: StepFunctions, crop: int | None):
  """(state, frozen, batch) → per-pair metrics (B,), generated images, labels, the confusion, and
  the batch's pair indices and validity.

  generated: (B, H, W, 3) in [-1, 1]; generated_uint8: the official uint8 conversion of it.
  `lpips_variables` None: no LPIPS; else LPIPS of the `crop`-wide centre crops.
  """

  def test_step(state: TrainState, frozen: Frozen, batch: dict, lpips_variables) -> dict[str, jax.Array]:
    out = fn.predict(state, frozen, batch)
    generated, target = out["generated"], batch["target_image"]
    gen_u8 = image_metrics.to_uint8_values(generated)
    tgt_u8 = image_metrics.to_uint8_values(target)
    truth = jnp.where(batch["valid"][:, None, None], parsing_labels(batch["target_parsing"]), -1)
    extra = {}
    if min(generated.shape[1:3]) >= GFLA_WINDOW:
      extra["ssim_gfla"] = ssim.ssim_gfla(generated, target, quantize=True)
    if lpips_variables is not None:
      # On the saved images (uint8 values, cropped), as the official script reads them back.
      to_unit = lambda u8: crop_width(u8, crop) / 127.5 - 1
      extra["lpips"] = lpips.lpips_distance(lpips_variables, to_unit(gen_u8), to_unit(tgt_u8))
    return dict(
        **extra,
        ssim_official=ssim.ssim_spgnet(generated, target, quantize=True),
        ssim_patn=ssim.ssim_patn(generated, target, quantize=True),
        l1=image_metrics.l1_distance(gen_u8 / 127.5 - 1, tgt_u8 / 127.5 - 1),
        psnr=image_metrics.psnr(gen_u8, tgt_u8, 255.0),
        confusion=segmentation.confusion_matrix(out["parsing"], truth, NUM_CLASSES),
        generated=generated, generated_uint8=gen_u8.astype(jnp.uint8), parsing=out["parsing"],
        index=batch["index"], valid=batch["valid"])

  return test_step


def results_markdown(results: dict[str, Any]) -> str:
  """The results table as Markdown (metric | value | protocol | pairs | paper)."""
  lines = [f"# Test-set evaluation: {results['dataset']}, step {results['step']}", "",
           f"{results['num_pairs']} pairs (all of `{results['source']}`), scheme {results['scheme']}.", "",
           "| metric | value | protocol / variant | pairs | paper (S1∥S2) |", "| --- | ---: | --- | ---: | ---: |"]
  for key, (name, protocol, _) in METRICS.items():
    entry = results["metrics"][key]
    value = f"{entry['value']:.4f}" if entry.get("value") is not None else entry["note"]
    paper = entry.get("paper")
    lines.append(f"| {name} | {value} | {protocol} | {entry.get('num_pairs', '')} | "
                 f"{'' if paper is None else paper} |")
  return "\n".join(lines) + "\n"


def evaluate_test_set(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Generates every pair of the test split with the latest checkpoint; writes images and tables."""
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from spg_jax import train  # pylint: disable=g-import-not-at-top

  run = train.setup_run(config, workdir)
  step = run.checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {run.checkpointer.directory}; train first")
  state, _ = run.restore(step)
  run.checkpointer.close()
  source = train.test_source(config)
  out_dir = os.path.join(workdir, f"eval_{step}")
  image_dir = os.path.join(out_dir, "images")
  is_chief = jax.process_index() == 0
  if is_chief:
    os.makedirs(image_dir, exist_ok=True)

  bsz = sharding.check_batch_size(config.eval.batch_size, run.mesh)
  features = pipeline.Features.from_config(config, train=False)
  ds = pipeline.eval_dataset(source, features, batch_size=bsz, process_index=jax.process_index(),
                             process_count=jax.process_count())
  num_batches = pipeline.num_eval_batches(source.num_pairs, bsz, jax.process_count())
  in_sh = (run.state_sharding, run.frozen_sharding, run.batch_sharding)
  replicated = sharding.replicated(run.mesh)
  lpips_variables = None
  if config.eval.get("lpips_weights"):
    lpips_variables = jax.device_put(lpips.load_lpips_weights(config.eval.lpips_weights), replicated)
  test_step = jax.jit(make_test_step(run.fn, config.eval.crop_width), in_shardings=in_sh + (replicated,),
                      out_shardings=replicated)
  per_pair = {k: [] for k in ("ssim_official", "ssim_patn", "l1", "psnr")}
  if lpips_variables is not None:
    per_pair["lpips"] = []
  if min(source.image_size) >= GFLA_WINDOW:
    per_pair["ssim_gfla"] = []
  confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
  sheet_rows, sheet_n = [], int(config.eval.num_sample_pairs)  # from the first batch
  logging.info("evaluating step %d on %s: %d pairs in %d batches of %d", step, source.name,
               source.num_pairs, num_batches, bsz)
  for b, host_batch in enumerate(pipeline.padded_batches(ds, bsz, num_batches)):
    batch = sharding.global_batch(host_batch, run.mesh)
    out = jax.device_get(test_step(state, run.frozen, batch, lpips_variables))
    # Replicated outputs: process 0 sees every process's rows, with their pair indices.
    index, valid = out["index"], out["valid"].astype(bool)
    confusion += out["confusion"]
    for k in per_pair:
      per_pair[k].append(out[k][valid])
    if is_chief:
      # The PNGs hold the values the metrics saw (the official truncating conversion).
      generated = crop_width(out["generated_uint8"], config.eval.crop_width)
      for i in np.flatnonzero(valid):
        visualize.write_png(os.path.join(image_dir, f"{int(index[i]):05d}.png"), generated[i])
      if b == 0:
        n = min(sheet_n, int(valid.sum()), len(host_batch["valid"]))
        sheet_rows.append(visualize.sample_grid(
            host_batch["source_image"][:n], host_batch["target_pose"][:n], out["parsing"][:n],
            out["generated"][:n], host_batch["target_image"][:n]))
    if (b + 1) % 50 == 0 or b + 1 == num_batches:
      logging.info("evaluated %d / %d batches", b + 1, num_batches)

  values = {k: np.concatenate(v) for k, v in per_pair.items()}
  num_pairs = int(len(values["l1"]))
  if num_pairs != source.num_pairs:
    raise RuntimeError(f"evaluated {num_pairs} pairs, the split has {source.num_pairs}")
  paper = PAPER.get(config.data.name, {})
  metrics = {k: dict(value=float(np.mean(v)), num_pairs=num_pairs, paper=paper.get(k))
             for k, v in values.items()}
  metrics["miou"] = dict(value=float(segmentation.mean_iou(confusion)), num_pairs=num_pairs,
                         paper=paper.get("miou"))
  for key, note in NOT_COMPUTED.items():
    if key not in metrics:
      metrics[key] = dict(value=None, note=note, paper=paper.get(key))
  results = dict(dataset=config.data.name, source=source.name, step=int(step), scheme=config.scheme,
                 num_pairs=num_pairs, crop_width=config.eval.crop_width,
                 metrics={k: dict(metrics[k], protocol=METRICS[k][1]) for k in METRICS})
  if is_chief:
    with open(os.path.join(out_dir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
      f.write(results_markdown(results))
    if sheet_rows:
      visualize.write_png(os.path.join(out_dir, "contact_sheet.png"), np.concatenate(sheet_rows))
  logging.info("test-set results written to %s", out_dir)
  return results
