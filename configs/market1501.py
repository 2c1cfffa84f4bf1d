"""Market-1501 128×64 (SPGNet layout): the official Market generator variant.

  python launch.py --config configs/market1501.py --workdir workdirs/market1501
"""

from configs import deepfashion


def get_config():
  config = deepfashion.get_config()
  config.data.name = "market1501"
  config.data.image_size = (128, 64)
  config.data.joint_radius = 4
  config.data.augment = True  # official Market training setting (use_augmentation=1)
  config.model.generator.update(variant="market", num_scales=5, num_warp_scales=4, sean_kernel=3)
  config.eval.crop_width = None  # 128 × 64 images are evaluated whole
  config.eval.mask_ssim = True  # the Market protocol's mask-SSIM beside the plain one
  return config
