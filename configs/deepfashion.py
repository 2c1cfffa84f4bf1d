"""DeepFashion 256×256 (SPGNet/Intr-Flow layout), the paper's setting.

  python launch.py --config configs/deepfashion.py --workdir workdirs/deepfashion

Network sizes are those of the released checkpoints (generator 87,795,177 parameters).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # 'bfloat16' computes convolutions in bf16 with float32 parameters, statistics and losses;
  # 'float32' everywhere is the parity setting.
  config.compute_dtype = "bfloat16"

  config.data = ml_collections.ConfigDict()
  config.data.name = "deepfashion"
  config.data.image_size = (256, 256)  # (H, W)
  config.data.joint_radius = 8  # binary keypoint discs, as the official code
  config.data.distance_map_kappa = -0.1

  config.model = ml_collections.ConfigDict()
  config.model.generator = ml_collections.ConfigDict(dict(
      variant="deepfashion", nf=32, max_nf=128, num_scales=7, num_warp_scales=5, sean_kernel=5))
  config.model.parsing = ml_collections.ConfigDict(dict(
      ngf=64, num_blocks=9, use_distance_maps=True))
  config.model.flownet = ml_collections.ConfigDict(dict(nf=32, max_nf=512))
  config.model.discriminator = ml_collections.ConfigDict(dict(ndf=64, n_layers=3))

  # spg_jax weights files made by `python -m spg_jax.convert`; None = random initialisation.
  config.init = ml_collections.ConfigDict(dict(
      generator=None, flownet=None, discriminator=None, vgg19=None))
  return config
