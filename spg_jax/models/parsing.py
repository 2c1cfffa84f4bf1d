"""Stage 1 of SPGNet: SPATN, the network that predicts the target parsing from the source parsing.

Inputs (NHWC, batch B, size H × W with H and W multiples of 4):
  source_parsing   (B, H, W, 20)  one-hot CIHP parsing of the source person (`num_classes` = 20).
  source_pose      (B, H, W, 18)  source keypoint maps (`ops.pose_maps.keypoint_maps`, binary discs).
  target_pose      (B, H, W, 18)  target keypoint maps.
  source_distance  (B, H, W, 12)  source limb distance maps (`ops.pose_maps.distance_maps`); given
  target_distance  (B, H, W, 12)  exactly when `use_distance_maps` (the supplementary §C ablation switch).
Output: (B, H, W, 20) float32 class logits of the target parsing (no softmax); train with
`parsing_cross_entropy`, and feed stage 2 `logits_to_onehot(logits)` at inference.

What the sources say. The authors did not release stage 1. The paper's
supplementary material (§A, §C) names it "the SPATN model", says it predicts the target semantic parsing
(20 CIHP classes, the label set stage 2 consumes) from the source parsing and the poses, and that
12 limb distance maps added to the 18-channel keypoint maps raise its DeepFashion mIoU from 0.520 to
0.539; it cites PATN (Zhu et al., CVPR 2019, "Progressive Pose Attention Transfer") among the
baselines. Layers, losses and sizes of stage 1 are not given anywhere we can read.

What we infer, and why PATN. "SPATN" reads as a (semantic) Pose-Attentional Transfer Network, and
PATN's interface is exactly the stated one: an appearance input plus the concatenated source and
target keypoint maps. PATN's blocks move appearance features toward the target pose with
pose-conditioned gates; a one-hot parsing map is an appearance "image" with 20 channels, so the
architecture carries over unchanged except at its two ends. We therefore use PATN's generator with
  * the appearance pathway fed the one-hot source parsing (20 channels instead of RGB);
  * the pose pathway fed concat(source keypoint maps, target keypoint maps[, source distance maps,
    target distance maps]): 36 channels, or 60 with distance maps;
  * a 20-class logit head instead of tanh RGB (softmax cross-entropy, the natural loss for a
    per-pixel label map).

Architecture (ngf = 64, D = 4·ngf = 256 at H/4 × W/4), PATN's with its BatchNorm setting (convs
followed by BN carry no bias, like PATN's `use_bias = False` for BatchNorm):
  * Each pathway: reflect-pad 3, conv7×7 -> ngf, BN, ReLU; conv3×3 s2 p1 -> 2·ngf, BN, ReLU;
    conv3×3 s2 p1 -> 4·ngf, BN, ReLU.
  * `num_blocks` Pose-Attentional Transfer blocks (9 as in PATN). Block i gets parsing features P
    (D channels) and pose features Q (D channels for i = 0, 2D after):
      parsing branch  u = BN(conv3×3(pad(ReLU(BN(conv3×3(pad(P)))))))           (D -> D -> D)
      pose branch     a = conv3×3(pad(ReLU(BN(conv3×3(pad(Q))))))               (C_Q -> C_Q -> D)
      P' = P + u · sigmoid(a),   Q' = concat(a, P')                             (pad = reflect 1)
    As in PATN the attention logits `a` get no BatchNorm (BN would pin every channel's gate
    around sigmoid(0) = 0.5), and the pose stream is re-fed the updated parsing features, so later
    gates see what has already been transferred.
  * Decoder on the parsing stream: ConvTranspose3×3 s2 p1 op1 -> 2·ngf, BN, ReLU; the same -> ngf;
    reflect-pad 3, conv7×7 (with bias) -> `num_classes` logits.
Initialisation follows the project (kaiming-normal convs, BN scales N(1, 0.02)) rather than PATN's
N(0, 0.02), for one convention across networks. BatchNorm statistics live in `batch_stats`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from spg_jax.models.layers import BatchNorm, ConvBN, ConvTranspose2d, conv2d, reflect_pad
from spg_jax.ops.pose_maps import NUM_KEYPOINTS, NUM_LIMBS

Dtype = Any


class PoseAttentionalTransferBlock(nn.Module):
  """One PATN block: the pose stream gates a residual update of the parsing stream.

  Args of `__call__`: parsing (B, h, w, D), pose (B, h, w, D or 2D); returns the updated parsing
  (B, h, w, D) and the next pose features concat(attention logits, updated parsing) (B, h, w, 2D).
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, parsing: jax.Array, pose: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    dim = parsing.shape[-1]
    u = ConvBN(dim, 3, reflect=1, post_relu=True, dtype=self.dtype, name="parsing_0")(parsing, train)
    u = ConvBN(dim, 3, reflect=1, dtype=self.dtype, name="parsing_1")(u, train)
    a = ConvBN(pose.shape[-1], 3, reflect=1, post_relu=True, dtype=self.dtype, name="pose_0")(pose, train)
    a = conv2d(dim, 3, use_bias=False, dtype=self.dtype, name="attention")(reflect_pad(a, 1))
    parsing = parsing + u * nn.sigmoid(a)
    return parsing, jnp.concatenate([a, parsing], axis=-1)


class SPATN(nn.Module):
  """Stage-1 parsing generator (PATN-style two-pathway network, see the module docstring).

  Attributes:
    num_classes: parsing classes in and out (20, CIHP).
    ngf: channels after the stem; the blocks run at 4·ngf.
    num_blocks: Pose-Attentional Transfer blocks (9 for 256×256, as PATN).
    use_distance_maps: feed the 12 + 12 limb distance maps to the pose pathway (supplementary §C).
    dtype: compute dtype (parameters, BatchNorm statistics and the logits stay float32).
  """

  num_classes: int = 20
  ngf: int = 64
  num_blocks: int = 9
  use_distance_maps: bool = True
  dtype: Dtype = jnp.float32

  @property
  def pose_channels(self) -> int:
    """Channels of the pose pathway input: 2·18 keypoint maps [+ 2·12 distance maps] = 36 or 60."""
    return 2 * NUM_KEYPOINTS + (2 * NUM_LIMBS if self.use_distance_maps else 0)

  def _check_inputs(self, source_parsing, source_pose, target_pose, source_distance, target_distance) -> None:
    if source_parsing.ndim != 4:
      raise ValueError(f"SPATN: source_parsing must be (B, H, W, {self.num_classes}), got {source_parsing.shape}")
    b, h, w, _ = source_parsing.shape
    inputs = {"source_parsing": (source_parsing, self.num_classes), "source_pose": (source_pose, NUM_KEYPOINTS),
              "target_pose": (target_pose, NUM_KEYPOINTS)}
    if self.use_distance_maps:
      if source_distance is None or target_distance is None:
        raise ValueError("SPATN(use_distance_maps=True) needs source_distance and target_distance "
                         f"(B, H, W, {NUM_LIMBS}) inputs")
      inputs.update(source_distance=(source_distance, NUM_LIMBS), target_distance=(target_distance, NUM_LIMBS))
    elif source_distance is not None or target_distance is not None:
      raise ValueError("SPATN(use_distance_maps=False) was given distance maps; build it with "
                       "use_distance_maps=True to use them")
    for name, (x, channels) in inputs.items():
      if x.shape != (b, h, w, channels):
        raise ValueError(f"SPATN: {name} must be (B, H, W, {channels}) = {(b, h, w, channels)} "
                         f"(B, H, W of source_parsing), got {x.shape}")
    if h % 4 or w % 4:
      raise ValueError(f"SPATN: height and width must be multiples of 4 (two stride-2 levels), got {h}x{w}")

  @nn.compact
  def __call__(
      self,
      source_parsing: jax.Array,
      source_pose: jax.Array,
      target_pose: jax.Array,
      source_distance: jax.Array | None = None,
      target_distance: jax.Array | None = None,
      *,
      train: bool,
  ) -> jax.Array:
    """Predicts target-parsing logits.

    Args:
      source_parsing: (B, H, W, num_classes) one-hot source parsing.
      source_pose, target_pose: (B, H, W, 18) keypoint maps.
      source_distance, target_distance: (B, H, W, 12) distance maps, required iff
        `use_distance_maps` (and rejected otherwise).
      train: BatchNorm uses batch statistics and updates `batch_stats` (apply with
        `mutable=['batch_stats']`).

    Returns:
      (B, H, W, num_classes) float32 logits.

    Raises:
      ValueError: on missing, unexpected or mis-shaped inputs.
    """
    self._check_inputs(source_parsing, source_pose, target_pose, source_distance, target_distance)
    pose_maps = [source_pose, target_pose]
    if self.use_distance_maps:
      pose_maps += [source_distance, target_distance]
    pose = jnp.concatenate([m.astype(jnp.float32) for m in pose_maps], axis=-1)
    parsing = source_parsing.astype(jnp.float32)

    ngf, dt = self.ngf, self.dtype

    def encoder(x: jax.Array, prefix: str) -> jax.Array:
      x = ConvBN(ngf, 7, reflect=3, post_relu=True, dtype=dt, name=f"{prefix}_stem")(x, train)
      for i in range(2):
        x = ConvBN(ngf * 2 ** (i + 1), 3, stride=2, padding=1, post_relu=True, dtype=dt,
                   name=f"{prefix}_down_{i}")(x, train)
      return x

    parsing = encoder(parsing, "parsing")
    pose = encoder(pose, "pose")
    for i in range(self.num_blocks):
      parsing, pose = PoseAttentionalTransferBlock(dtype=dt, name=f"pat_{i}")(parsing, pose, train)

    x = parsing
    for i in range(2):
      x = ConvTranspose2d(ngf * 2 ** (1 - i), 3, stride=2, padding=1, output_padding=1, use_bias=False, dtype=dt,
                          name=f"up_{i}")(x)
      x = nn.relu(BatchNorm(dtype=dt, name=f"up_{i}_bn")(x, train))
    logits = conv2d(self.num_classes, 7, use_bias=True, dtype=dt, name="head")(reflect_pad(x, 3))
    return logits.astype(jnp.float32)


def dummy_inputs(model: SPATN, batch: int, height: int, width: int) -> dict[str, jax.Array]:
  """All-zero SPATN inputs of the given size (for initialisation and shape inference)."""
  z = lambda c: jnp.zeros((batch, height, width, c), jnp.float32)
  inputs = dict(source_parsing=z(model.num_classes), source_pose=z(NUM_KEYPOINTS), target_pose=z(NUM_KEYPOINTS))
  if model.use_distance_maps:
    inputs.update(source_distance=z(NUM_LIMBS), target_distance=z(NUM_LIMBS))
  return inputs


def init_variables(model: SPATN, rng: jax.Array, bhw: tuple[int, int, int] = (1, 64, 64)) -> dict[str, Any]:
  """Randomly initialised {'params', 'batch_stats'} of `model` (sizes do not depend on H, W)."""
  return model.init({"params": rng}, **dummy_inputs(model, *bhw), train=False)


def parsing_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean per-pixel softmax cross-entropy, in float32.

  Args:
    logits: (..., K) class logits.
    targets: integer labels (...) in [0, K) (PyTorch `cross_entropy(logits, labels)`), or (..., K)
      one-hot / class probabilities (PyTorch's probability-target form). A label outside [0, K)
      contributes zero loss but still counts in the mean.

  Returns:
    Scalar float32: the mean over all pixels (and the batch).
  """
  logits = jnp.asarray(logits)
  targets = jnp.asarray(targets)
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  num_classes = logits.shape[-1]
  if targets.shape == logits.shape[:-1]:
    targets = jax.nn.one_hot(targets.astype(jnp.int32), num_classes, dtype=jnp.float32)
  elif targets.shape != logits.shape:
    raise ValueError(f"parsing_cross_entropy: targets must be labels {logits.shape[:-1]} or one-hot "
                     f"{logits.shape}, got {targets.shape}")
  return -jnp.mean(jnp.sum(targets.astype(jnp.float32) * log_p, axis=-1))


def logits_to_onehot(logits: jax.Array) -> jax.Array:
  """(..., K) logits -> (..., K) float32 one-hot of the arg-max class (the parsing stage 2 consumes)."""
  return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
