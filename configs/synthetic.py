"""Synthetic persons at 64×64 with reduced networks: the embedded default that runs on a CPU.

  python launch.py --config configs/synthetic.py --workdir workdirs/synthetic
"""

from configs import deepfashion


def get_config():
  config = deepfashion.get_config()
  config.compute_dtype = "float32"
  config.data.name = "synthetic"
  config.data.image_size = (64, 64)
  config.data.joint_radius = 3
  config.model.generator.update(nf=16, max_nf=64, num_scales=4, num_warp_scales=3, sean_kernel=3)
  config.model.parsing.update(ngf=16, num_blocks=3)
  config.model.flownet.update(nf=8, max_nf=64)
  config.model.discriminator.update(ndf=16)
  return config
