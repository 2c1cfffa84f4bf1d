"""spg_jax: SPGNet (Lv et al., CVPR 2021) pose-guided person image generation in JAX/Flax.

Conventions used everywhere in the package:

* Images and feature maps are NHWC. Images are float in [-1, 1].
* Flows are (B, H, W, 2) in pixels, channel 0 = x (along W), channel 1 = y (along H); the
  output at (y, x) samples the source at (x + flow[..., 0], y + flow[..., 1]).
* Visibility maps hold the integers 0 = visible, 1 = invisible, 2 = background.
* Keypoints are 18 (x, y) pairs in the OpenPose/COCO-18 order; a coordinate < 0 marks a missing joint.
* Parsing maps use the 20 CIHP classes (0 = background), one-hot along the last axis.
"""

__version__ = "0.1.0"
