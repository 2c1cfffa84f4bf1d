"""Synthetic persons at 64×64 with reduced networks: the embedded default that runs on a CPU.

  python launch.py --config configs/synthetic.py --workdir workdirs/synthetic

No download: the pairs are rendered at start-up (`input_pipeline.synthetic`), with exact flow and
visibility, which this config feeds to the generator instead of a flow network. The perceptual loss
uses random VGG19 weights (no ImageNet weights can be assumed here); the log says so.
"""

import ml_collections

from configs import deepfashion


def get_config():
  config = deepfashion.get_config()
  config.compute_dtype = "float32"
  config.data.name = "synthetic"
  config.data.image_size = (64, 64)
  config.data.joint_radius = 3
  config.data.flow = "ground_truth"
  config.data.synthetic = ml_collections.ConfigDict(dict(
      train_pairs=1600, eval_pairs=128, train_seed=1, eval_seed=2))
  config.model.generator.update(nf=16, max_nf=64, num_scales=4, num_warp_scales=3, sean_kernel=3,
                                style_dim=32, sean_hidden=32)
  config.model.parsing.update(ngf=16, num_blocks=3)
  config.model.flownet.update(nf=8, max_nf=64)
  config.model.discriminator.update(ndf=16)
  config.allow_random_vgg = True

  # Sized for a 2-core CPU in about 10 minutes: one epoch of 400 steps of 4 pairs. The GAN term
  # (official: from epoch 6) starts at epoch 2, i.e. only when you train longer
  # (--config.train.num_epochs=N).
  config.train.batch_size = 4
  config.train.num_epochs = 1
  config.train.gan_start_epoch = 2
  config.train.log_every_steps = 25
  config.train.checkpoint_every_steps = 100
  config.train.eval_every_steps = 200
  config.train.profile_first_step = -1
  config.eval.batch_size = 16
  config.eval.num_pairs = 128
  return config
