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
  # Compiled programs (and XLA's autotuning results) are kept here and reused by later processes:
  # a resumed run or `--mode eval` skips minutes of compilation. '' = no cache; None = the
  # environment's JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/spg_jax/jax_compilation
  # (~/.cache/...) in one process and no cache in several. Applied by launch.py
  # (`spg_jax.jax_setup.configure_jax`).
  config.compilation_cache_dir = ml_collections.config_dict.placeholder(str)

  config.data = ml_collections.ConfigDict()
  config.data.name = "deepfashion"
  config.data.image_size = (256, 256)  # (H, W)
  # TFDS data directory holding the prepared `spg_deepfashion` (python -m input_pipeline.prepare);
  # None = TFDS's default (~/tensorflow_datasets).
  config.data.data_dir = ml_collections.config_dict.placeholder(str)
  # The prepared variant: 'pkl' (default), 'csv', '*_flow' (with Intr-Flow flows), '*_predparsing'.
  config.data.tfds_config = ml_collections.config_dict.placeholder(str)
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.joint_mode = "binary"  # or 'gaussian'
  config.data.joint_radius = 8  # binary keypoint discs, as the official code
  config.data.distance_map_kappa = -0.1
  config.data.parsing_format = "labels"  # 'labels' (one-hot on the device) or 'onehot'
  # Where flow and visibility come from: 'network' (the frozen flow network, on the device, as the
  # official code), 'ground_truth' (synthetic persons; Intr-Flow .corr) or 'geometric' (from keypoints).
  config.data.flow = "network"
  config.data.augment = False  # the official Market-1501 target-side scale-and-shift augmentation

  config.model = ml_collections.ConfigDict()
  config.model.generator = ml_collections.ConfigDict(dict(
      variant="deepfashion", nf=32, max_nf=128, num_scales=7, num_warp_scales=5, sean_kernel=5,
      style_dim=128, sean_hidden=64))
  config.model.parsing = ml_collections.ConfigDict(dict(
      ngf=64, num_blocks=9, use_distance_maps=True))
  config.model.flownet = ml_collections.ConfigDict(dict(nf=32, max_nf=512))
  config.model.discriminator = ml_collections.ConfigDict(dict(ndf=64, n_layers=3))

  # spg_jax weights files made by `python -m spg_jax.convert` (or exported from a run); None =
  # random initialisation. `flownet` is required with data.flow='network'; `vgg19` is required for
  # the perceptual loss unless `allow_random_vgg`; `parsing` is stage 1 for scheme='sequential'.
  config.init = ml_collections.ConfigDict({
      name: ml_collections.config_dict.placeholder(str)
      for name in ("generator", "parsing", "flownet", "discriminator", "vgg19")})
  # The perceptual loss needs ImageNet VGG19 weights; random ones must be accepted explicitly.
  config.allow_random_vgg = False

  # Training schemes of the paper's Table A: 'parallel' (S1∥S2, stage 2 fed the ground-truth
  # target parsing), 'sequential' (S1▷S2, stage 1 frozen from init.parsing) or 'joint' (S1⋈S2).
  config.scheme = "parallel"

  config.mesh = ml_collections.ConfigDict(dict(fsdp=1))  # data axis = all devices / fsdp

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 4  # global, over all devices of all hosts (official: 4)
  config.train.num_epochs = 45  # official DeepFashion schedule
  config.train.num_train_steps = -1  # > 0 overrides num_epochs
  config.train.gan_start_epoch = 6  # official `epoch_add_gan` (epochs count from 1)
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 2000
  config.train.keep_checkpoints = 3  # the latest N, plus the best by validation SSIM
  config.train.eval_every_steps = -1  # -1 = once per epoch, as the official code
  config.train.profile_first_step = 20  # a profiler trace of a few steps; -1 = off
  config.train.profile_num_steps = 5

  config.optim = ml_collections.ConfigDict(dict(
      lr_g=2e-4, lr_d=2e-5, b1=0.5, b2=0.999, eps=1e-8, weight_decay_g=0.0, weight_decay_d=4e-4,
      lr_decay_epochs=100, lr_gamma=0.1))
  config.loss = ml_collections.ConfigDict(dict(l1=1.0, perceptual=1.0, gan=0.01, parsing_ce=1.0))

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 8
  config.eval.num_pairs = 2000  # validation on the first 2000 test pairs, as the official code
  config.eval.num_sample_pairs = 8  # rows of the sample grid
  # `--mode eval` writes its PNGs centre-cropped to this width (the official DeepFashion 176 × 256
  # crop of the 256 × 256 output); None = uncropped.
  config.eval.crop_width = 176
  # LPIPS in `--mode eval`: a weights file from `python -m spg_jax.convert lpips`; None = not computed.
  config.eval.lpips_weights = ml_collections.config_dict.placeholder(str)
  # FID in `--mode eval` (saved test images vs the training split's images), one protocol per
  # weights file from `python -m spg_jax.convert inception`; None = that row not computed.
  #   fid_legacy_weights: --variant torchvision (inception_v3_google-*.pth), the legacy protocol
  #     behind SPGNet's published FID;
  #   fid_weights: --variant pytorch_fid (pt_inception-2015-12-05-6726825d.pth), standard FID.
  config.eval.fid_legacy_weights = ml_collections.config_dict.placeholder(str)
  config.eval.fid_weights = ml_collections.config_dict.placeholder(str)
  # Where the training set's Inception statistics are cached (keyed by protocol, weights, data, crop
  # and size, so any workdir may share them); None = $XDG_CACHE_HOME/spg_jax/fid_stats
  # (~/.cache/spg_jax/fid_stats).
  config.eval.fid_cache_dir = ml_collections.config_dict.placeholder(str)
  # None: every image enters the statistics. 64 reproduces the official scripts, which dropped the
  # last N mod 64 images of each set (8,512 of DeepFashion's 8,570 test images).
  config.eval.fid_drop_remainder = ml_collections.config_dict.placeholder(int)
  # Market-1501's mask-SSIM (PATN person masks from the target keypoints); not a DeepFashion metric.
  config.eval.mask_ssim = False
  # PCKh in `--mode eval`: the OpenPose COCO pose estimator of the PCKh scripts, a weights file from
  # `python -m spg_jax.convert pose_estimator --input pose_estimator.h5 --output ...`; None = not computed.
  config.eval.pckh_weights = ml_collections.config_dict.placeholder(str)
  # Its multi-scale inference, factors x of x · 368 / H (integers divide as in the scripts' Python 2).
  # The scripts' four scales run the 52 M-parameter network at up to 2.2× the image size, the costliest
  # metric at DeepFashion size; fewer scales are cheaper but another protocol (the table says which).
  config.eval.pckh_scale_search = (0.5, 1, 1.5, 2)
  return config
