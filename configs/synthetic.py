"""Synthetic persons at 64×64 with reduced networks: the embedded default that runs on a CPU.

  python launch.py --config configs/synthetic.py --workdir workdirs/synthetic

No download: the pairs are rendered at start-up (`input_pipeline.synthetic`), with exact flow and
visibility, which this config feeds to the generator instead of a flow network. No ImageNet VGG19
weights can be assumed here, so the perceptual loss is off.
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
  # No perceptual loss: without ImageNet weights VGG19 features measure nothing perceptual, and the
  # random network costs a sixth of the CPU step. (`--config.loss.perceptual=1` with
  # `--config.allow_random_vgg=True` turns it on.)
  config.loss.perceptual = 0.0

  # Sized for a 2-core CPU in about 11 minutes: 600 steps of 4 pairs (1.5 epochs of the 1,600
  # pairs). The official schedule is far too slow for that: the generator's (and stage 1's)
  # learning rate is 1e-3 instead of 2e-4, and drops ×0.1 after the first epoch (step 400), where
  # the GAN term (official: from epoch 6) comes on for the last 200 steps.
  config.optim.lr_g = 1e-3
  config.optim.lr_decay_epochs = 1
  config.train.batch_size = 4
  config.train.num_train_steps = 600
  config.train.gan_start_epoch = 2
  config.train.log_every_steps = 25
  config.train.checkpoint_every_steps = 150
  config.train.eval_every_steps = 300
  config.train.profile_first_step = -1
  config.eval.batch_size = 16
  config.eval.num_pairs = 128
  config.eval.crop_width = None
  # The persons have OpenPose-18 keypoints, so Market's mask-SSIM applies; it costs next to nothing.
  config.eval.mask_ssim = True
  return config
