"""Confusion matrix and mean IoU for label maps (e.g. the 20-class CIHP parsing of stage 1).

`confusion_matrix` is jit-able and returns counts that add up across batches (accumulate by summing,
ideally on the host in int64 for very large datasets: one int32 matrix holds up to 2**31 − 1 pixels
per cell). `mean_iou` and `per_class_iou` turn the accumulated matrix into scores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def confusion_matrix(pred_labels: jax.Array, true_labels: jax.Array, num_classes: int) -> jax.Array:
  """Pixel counts `C[t, p]` of true class t predicted as class p (rows = truth, columns = prediction).

  Labels outside [0, num_classes) in either map (e.g. an ignore value 255 or −1) are not counted.

  Args:
    pred_labels: integer label map of any shape, e.g. (B, H, W) (an arg-max over one-hot parsing).
    true_labels: integer label map of the same shape.
    num_classes: K, static.

  Returns:
    (K, K) int32 counts; sum the matrices of several batches to accumulate.
  """
  if pred_labels.shape != true_labels.shape:
    raise ValueError(f"confusion_matrix: shapes differ, {pred_labels.shape} vs {true_labels.shape}")
  pred = jnp.ravel(pred_labels).astype(jnp.int32)
  true = jnp.ravel(true_labels).astype(jnp.int32)
  valid = (pred >= 0) & (pred < num_classes) & (true >= 0) & (true < num_classes)
  # Invalid pixels are sent to bin 0 with weight 0, so the bincount length stays static (jit-able).
  index = jnp.where(valid, true * num_classes + pred, 0)
  counts = jnp.bincount(index, weights=valid.astype(jnp.int32), length=num_classes * num_classes)
  return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def per_class_iou(confusion: jax.Array) -> jax.Array:
  """IoU_k = TP_k / (TP_k + FP_k + FN_k) per class; NaN for classes absent from prediction and truth.

  Args:
    confusion: (K, K) counts from `confusion_matrix` (rows = truth), possibly summed over batches.

  Returns:
    (K,) float32.
  """
  cm = jnp.asarray(confusion).astype(jnp.float32)
  tp = jnp.diagonal(cm)
  union = jnp.sum(cm, axis=0) + jnp.sum(cm, axis=1) - tp
  return jnp.where(union > 0, tp / jnp.where(union > 0, union, 1.0), jnp.nan)


def mean_iou(confusion: jax.Array) -> jax.Array:
  """Mean of `per_class_iou` over the classes that occur in the prediction or in the truth.

  A class with TP + FP + FN = 0 (never predicted and never present) has an undefined IoU and is left
  out of the mean instead of counting as 0 or 1. A class that is present in the truth but never
  predicted (or the reverse) counts, with IoU 0. NaN when no class occurs at all.

  Args:
    confusion: (K, K) counts, rows = truth.

  Returns:
    float32 scalar in [0, 1].
  """
  return jnp.nanmean(per_class_iou(confusion))


__all__ = ["confusion_matrix", "mean_iou", "per_class_iou"]
