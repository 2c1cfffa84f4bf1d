"""The Intr-Flow flow / visibility network on DeepFashion 256×256, with the official hyper-parameters.

  python -m input_pipeline.prepare deepfashion --with_flow ...   # the ground-truth flows, once
  python launch.py --config configs/flownet_deepfashion.py --workdir workdirs/flownet_df

then train SPGNet with `--config.init.flownet=workdirs/flownet_df/flownet_best.npz` (or `flownet.npz`,
the latest validation).

Official settings: ly015/intrinsic_flow @ 94ea8f0b `options/flow_regression_options.py`, as recorded
in the released `FlowReg_deepfashion/train_opt.json` (redistributed in tongxueqing/PersonHD,
`pipelineHD/checkpoints/FlowReg/train_opt.json`): `which_model=unet` (`FlowUnet`, nf 32,
num_scale 5; its max_nf stays the constructor default 512 because `FlowRegressionModel` does not pass
the option), binary joint discs of radius 8, Adam lr 1e-4, betas (0.9, 0.999), weight decay 4e-4,
StepLR ×0.5 every 8 epochs, 40 epochs (the options default is 30; the release says 40), batch 8 (the
options default; train_opt.json does not record it), flow loss 'l2', loss weights flow 1, vis 1,
validation every epoch, the best epoch by EPE kept.

Departures, all forced by the data:
  * loss.flow_ss = 0 (official 5): the segmentation-sensitive flow loss compares 7-class SMPL
    part segmentations of both images (`seg_nc=7`, rendered from HMR fits); the prepared datasets
    hold CIHP parsings only, so the loss cannot be computed.
  * No target-side shift augmentation (official ±20 px in x, ±10 px in y): the input pipeline does
    not re-base ground-truth flows under augmentation.
  * Pairs and validation: SPGNet's `label/split.json` and the first `eval.num_pairs` test pairs,
    not Intr-Flow's `pair_split_clean.json` / `pose_label_adapt.pkl` (whole test split).
"""

import ml_collections

from configs import deepfashion


def get_config() -> ml_collections.ConfigDict:
  spg = deepfashion.get_config()
  config = ml_collections.ConfigDict()
  config.job = "flownet"  # launch.py routes to spg_jax.train_flownet
  config.seed = 0
  # Float32 as the official training; 'bfloat16' computes the convolutions in bf16 (heads, losses,
  # parameters and statistics stay float32).
  config.compute_dtype = "float32"

  # The same data fields as the SPGNet config, so that the exported network sees the joint maps it
  # will be fed in SPGNet training.
  config.data = ml_collections.ConfigDict(dict(
      name=spg.data.name, image_size=spg.data.image_size, data_dir=None, tfds_config="pkl_flow",
      train_split="train", eval_split="test", joint_mode=spg.data.joint_mode,
      joint_radius=spg.data.joint_radius))

  # `model.flownet` of the SPGNet config (nf 32, max_nf 512) and the official num_scale 5.
  config.model = ml_collections.ConfigDict()
  config.model.flownet = ml_collections.ConfigDict(dict(spg.model.flownet.to_dict(), num_scales=5))
  # Optional weights file to start from (fine-tuning, e.g. the converted official network). A typed
  # placeholder, so that `--config.init.flownet=PATH` can set it from the command line.
  config.init = ml_collections.ConfigDict(dict(flownet=ml_collections.config_dict.placeholder(str)))

  config.mesh = ml_collections.ConfigDict(dict(fsdp=1))

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 8  # global (official `batch_size` default)
  config.train.num_epochs = 40  # official `n_epoch` of the released FlowReg_deepfashion
  config.train.num_train_steps = -1  # > 0 overrides num_epochs
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 2000
  config.train.keep_checkpoints = 3
  config.train.eval_every_steps = -1  # -1 = once per epoch (official `test_epoch_freq=1`)
  config.train.profile_first_step = 20  # a profiler trace of a few steps; -1 = off
  config.train.profile_num_steps = 5

  # Official Adam (L2 weight decay on every parameter) and StepLR; see spg_jax.train_flownet.
  config.optim = ml_collections.ConfigDict(dict(
      lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=4e-4, lr_decay_epochs=8, lr_gamma=0.5))
  # Official loss weights, except flow_ss (see the module docstring).
  config.loss = ml_collections.ConfigDict(dict(flow=1.0, vis=1.0, flow_ss=0.0, flow_loss_type="l2"))

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 8
  config.eval.num_pairs = 2000
  return config
