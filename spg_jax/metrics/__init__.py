"""Evaluation metrics on batched NHWC images (one value per image) and label maps.

* `ssim`: scikit-image-exact SSIM and the protocol variants of the pose-transfer literature.
* `image`: per-image L1 and PSNR, and the official float -> uint8 conversion.
* `segmentation`: accumulable confusion matrix and mean IoU.
* `lpips`: LPIPS v0.1 with AlexNet (its network and converted weights).
* `inception`, `fid`: Inception-v3 pool features in both FID protocols; statistics, the Fréchet
  distance and the real-set statistics cache.
"""

from spg_jax.metrics.image import l1_distance, psnr, to_uint8_values
from spg_jax.metrics.segmentation import confusion_matrix, mean_iou, per_class_iou
from spg_jax.metrics.ssim import masked_ssim, ssim_gfla, ssim_patn, ssim_skimage, ssim_spgnet

__all__ = [
    "confusion_matrix",
    "l1_distance",
    "masked_ssim",
    "mean_iou",
    "per_class_iou",
    "psnr",
    "ssim_gfla",
    "ssim_patn",
    "ssim_skimage",
    "ssim_spgnet",
    "to_uint8_values",
]
