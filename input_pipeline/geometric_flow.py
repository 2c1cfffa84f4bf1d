"""Keypoint-driven target -> source flow and visibility, for datasets without a flow network.

`geometric_flow(source_keypoints, target_keypoints, source_parsing, target_parsing)` returns the
(flow, visibility) pair in the package convention: flow target -> source in pixels, channel 0 = x
(target pixel (y, x) shows the source point (x + flow[y, x, 0], y + flow[y, x, 1])); visibility 0 =
visible in the source, 1 = invisible, 2 = target background, where the flow is exactly 0.

Body model. Ten parts, each with one affine map from the target image to the source image:
  head      affine least-squares fit on the head joints (nose, neck, eyes, ears) present in both
            poses, ridge-regularised towards their least-squares similarity;
  torso     the same on neck, shoulders and hips;
  8 limbs   upper arm, forearm, thigh and shin of each side (the bones of
            `spg_jax.ops.pose_maps.LIMBS` that start at a shoulder, elbow, hip or knee): the map
            taking the target bone (a_t, b_t) onto the source bone (a_s, b_s), scaling along the
            bone by |b_s − a_s| / |b_t − a_t| (clamped to [k/5, 5k]) and across it by the person's
            scale ratio k. A similarity would also scale the limb's width by the bone-length ratio,
            which is wrong whenever a bone is foreshortened: a limb turning towards the camera gets
            shorter in the image, not thinner.
The scale ratio k (source / target) is the ratio of the neck-to-mid-hip lengths (mid-hip over the
hips present in both poses), else the ratio of the RMS spreads of the common head and torso joints,
else 1, clamped to [1/4, 4]. The ridge of the head and torso fits, λ = (0.1 T)² with T the target
torso length (neck to mid-hip; H/4 without one), is negligible for well-spread joints (a frontal
torso) and takes over in directions the joints do not span (a side view: neck, shoulders and hips
nearly collinear), where a plain affine fit would shear wildly. With two common joints the fit is
the similarity, with one a shift with scale k.

Part assignment (run on the target to choose each pixel's map, and on the source to reason about
occlusion). Each body pixel takes, among the parts its CIHP label allows, the one of least cost
  cost(part) = d(pixel, skeleton of the part) − r_part · T + side penalty.
Skeletons: a limb's bone segment; the head's 5 COCO head connections, ear–ear and its joints; the
torso's 10 segments between neck, shoulders and hips, with d = 0 inside the polygon
neck–L-shoulder–L-hip–R-hip–R-shoulder. r_part = 0.05 for limbs (0 for head and torso): a pixel
that close to a bone belongs to the limb even inside the torso outline, which is how a sleeve that
crosses the chest is told from the shirt. Only segments whose joints are present count. Allowed
parts (`_LABEL_PARTS`): face / hair / hat / sunglasses -> head; upper-clothes / coat / scarf -> torso
or an arm (sleeves); torso-skin -> torso or head (neck); dress -> torso, arms or legs; skirt ->
torso (it hangs from the hips; a thigh map would tear it apart between the legs); pants -> torso or
legs; arm skin / glove -> arms; leg skin / socks -> legs; shoes -> shins. The side in a label
(left-arm, right-shoe, …) is a preference, not a rule: a part of the other side costs 0.5 T more,
so a parser that swaps sides still lands on a limb. A pixel whose label allows no present part takes
the nearest present part of any kind and is marked invisible.

Flow: flow(x) = A_p x + t_p − x for the pixel's part p. A part whose joints are missing in either
pose (fewer than 2 common joints for head and torso, a bone endpoint for a limb) uses the torso's
map instead (without a torso: x -> k (x − c_t) + c_s, matching the centroids of all common joints;
the identity when there are none), and its pixels are invisible.

Visibility: a target body pixel is visible (0) iff its part is valid, its mapped point rounds to a
pixel inside the source frame, that source pixel is a body pixel, its label is compatible with the
target label (`_COMPATIBLE`: equal, or the same surface under parser ambiguity — hair/face,
coat/upper-clothes, pants/skirt, socks/leg skin —, never left/right or clothes/skin) and its source
part is the same part, or the adjacent part of the kinematic chain within 0.1 T k of their shared
joint (elbow, knee, shoulder, hip, neck: part boundaries near a joint do not fall at the same place
in two poses). The part test is what detects occlusion by another part, e.g. a torso point that
lands on an arm lying across the chest in the source.

Everything is vectorised TensorFlow (2 × 29 segment distance maps and a few per-pixel gathers),
graph-mode and deterministic, for `tf.data.Dataset.map`. tests/test_geometric_flow.py states the
accuracy measured on the synthetic dataset.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from spg_jax.ops.pose_maps import KEYPOINT_NAMES, LIMBS, NUM_KEYPOINTS

_K = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
NOSE, NECK = _K["nose"], _K["neck"]
R_SHO, L_SHO, R_HIP, L_HIP = _K["R-shoulder"], _K["L-shoulder"], _K["R-hip"], _K["L-hip"]
L_EYE, R_EYE, L_EAR, R_EAR = _K["L-eye"], _K["R-eye"], _K["L-ear"], _K["R-ear"]

# Parts. The neck->shoulder and neck->hip "limbs" of LIMBS are part of the torso.
PART_NAMES = ("head", "torso", "R-upper-arm", "R-forearm", "L-upper-arm", "L-forearm",
              "R-thigh", "R-shin", "L-thigh", "L-shin")
NUM_PARTS = len(PART_NAMES)
HEAD, TORSO = 0, 1
R_UARM, R_LARM, L_UARM, L_LARM, R_THIGH, R_SHIN, L_THIGH, L_SHIN = range(2, 10)
_ARMS = (R_UARM, R_LARM, L_UARM, L_LARM)
_LEGS = (R_THIGH, R_SHIN, L_THIGH, L_SHIN)
_LIMB_OF_PART = {R_UARM: 1, R_LARM: 2, L_UARM: 4, L_LARM: 5, R_THIGH: 7, R_SHIN: 8, L_THIGH: 10,
                 L_SHIN: 11}  # part -> index into LIMBS

HEAD_JOINTS = (NOSE, NECK, L_EYE, R_EYE, L_EAR, R_EAR)
TORSO_JOINTS = (NECK, R_SHO, L_SHO, R_HIP, L_HIP)
_TORSO_POLYGON = np.asarray([NECK, L_SHO, L_HIP, R_HIP, R_SHO], np.int32)

# Skeleton segments (start joint, end joint, part) whose distance decides the part of a pixel.
# A segment with equal ends is its point.
_SEGMENTS = (
    [(NECK, NOSE, HEAD), (NOSE, L_EYE, HEAD), (NOSE, R_EYE, HEAD), (L_EYE, L_EAR, HEAD),
     (R_EYE, R_EAR, HEAD), (L_EAR, R_EAR, HEAD)]  # ear–ear: back views may show only the ears
    + [(j, j, HEAD) for j in (NOSE, L_EYE, R_EYE, L_EAR, R_EAR)]
    + [(NECK, R_SHO, TORSO), (NECK, L_SHO, TORSO), (NECK, R_HIP, TORSO), (NECK, L_HIP, TORSO),
       (R_SHO, R_HIP, TORSO), (L_SHO, L_HIP, TORSO), (R_HIP, L_HIP, TORSO), (R_SHO, L_SHO, TORSO),
       (R_SHO, L_HIP, TORSO), (L_SHO, R_HIP, TORSO)]
    + [(LIMBS[m][0], LIMBS[m][1], p) for p, m in sorted(_LIMB_OF_PART.items())]
)
_SEG_START = np.asarray([s for s, _, _ in _SEGMENTS], np.int32)
_SEG_END = np.asarray([e for _, e, _ in _SEGMENTS], np.int32)
_SEG_PART = np.asarray([p for _, _, p in _SEGMENTS], np.int32)
# The segments are listed part by part: part p owns the rows [start, stop) of the distance tensor.
if np.any(np.diff(_SEG_PART) < 0) or set(_SEG_PART.tolist()) != set(range(NUM_PARTS)):
  raise AssertionError("_SEGMENTS must list every part, grouped by part in increasing order")
_PART_SEGMENT_RANGES = tuple((int(np.searchsorted(_SEG_PART, p, "left")),
                              int(np.searchsorted(_SEG_PART, p, "right"))) for p in range(NUM_PARTS))

# Core radius of each part, in target torso lengths (see the module docstring).
_PART_RADIUS = np.asarray([0.0, 0.0] + [0.05] * 8, np.float32)
_SIDE_PENALTY = 0.5   # torso lengths
_JOINT_SLACK = 0.1    # torso lengths: adjacent-part tolerance around a shared joint
_RIDGE_REL = 0.1      # head / torso fit ridge: (0.1 T)² px²
_SIM_RIDGE_REL = 0.02  # similarity ridge towards k·I: only matters with ≤ 1 joint
_EPS = 1e-6

# CIHP labels.
(BACKGROUND, HAT, HAIR, GLOVE, SUNGLASSES, UPPER, DRESS, COAT, SOCKS, PANTS, TORSO_SKIN, SCARF,
 SKIRT, FACE, LEFT_ARM, RIGHT_ARM, LEFT_LEG, RIGHT_LEG, LEFT_SHOE, RIGHT_SHOE) = range(20)
NUM_LABELS = 20

# label -> {allowed part: extra cost in side penalties}.
_LABEL_PARTS = {
    HAT: {HEAD: 0}, HAIR: {HEAD: 0}, SUNGLASSES: {HEAD: 0}, FACE: {HEAD: 0},
    UPPER: {TORSO: 0, **{p: 0 for p in _ARMS}},
    COAT: {TORSO: 0, **{p: 0 for p in _ARMS}},
    SCARF: {TORSO: 0, **{p: 0 for p in _ARMS}},
    DRESS: {TORSO: 0, **{p: 0 for p in _ARMS + _LEGS}},
    TORSO_SKIN: {TORSO: 0, HEAD: 0},
    SKIRT: {TORSO: 0},
    PANTS: {TORSO: 0, **{p: 0 for p in _LEGS}},
    GLOVE: {p: 0 for p in _ARMS},
    LEFT_ARM: {L_UARM: 0, L_LARM: 0, R_UARM: 1, R_LARM: 1},
    RIGHT_ARM: {R_UARM: 0, R_LARM: 0, L_UARM: 1, L_LARM: 1},
    SOCKS: {p: 0 for p in _LEGS},
    LEFT_LEG: {L_THIGH: 0, L_SHIN: 0, R_THIGH: 1, R_SHIN: 1},
    RIGHT_LEG: {R_THIGH: 0, R_SHIN: 0, L_THIGH: 1, L_SHIN: 1},
    LEFT_SHOE: {L_SHIN: 0, R_SHIN: 1},
    RIGHT_SHOE: {R_SHIN: 0, L_SHIN: 1},
}

# Labels that may show the same body surface in two images; every label is compatible with itself.
_COMPATIBLE_GROUPS = (
    (HAT, HAIR, SUNGLASSES, FACE),
    (UPPER, DRESS, COAT, SCARF, TORSO_SKIN),
    (GLOVE, LEFT_ARM), (GLOVE, RIGHT_ARM),
    (PANTS, SKIRT, DRESS),
    (SOCKS, LEFT_LEG, LEFT_SHOE), (SOCKS, RIGHT_LEG, RIGHT_SHOE),
)

# Adjacent parts of the kinematic chain and the joint they share.
_ADJACENT = ((R_UARM, R_LARM, LIMBS[1][1]), (L_UARM, L_LARM, LIMBS[4][1]),
             (R_THIGH, R_SHIN, LIMBS[7][1]), (L_THIGH, L_SHIN, LIMBS[10][1]),
             (TORSO, R_UARM, R_SHO), (TORSO, L_UARM, L_SHO), (TORSO, R_THIGH, R_HIP),
             (TORSO, L_THIGH, L_HIP), (TORSO, HEAD, NECK))


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(label cost (20, 10) float32, inf = not allowed; compatibility (20, 20) bool;
  shared joint (10, 10) int32, −1 = not adjacent)."""
  cost = np.full((NUM_LABELS, NUM_PARTS), np.inf, np.float32)
  for label, parts in _LABEL_PARTS.items():
    for part, c in parts.items():
      cost[label, part] = c
  compatible = np.eye(NUM_LABELS, dtype=bool)
  for group in _COMPATIBLE_GROUPS:
    compatible[np.ix_(group, group)] = True
  shared = np.full((NUM_PARTS, NUM_PARTS), -1, np.int32)
  for a, b, joint in _ADJACENT:
    shared[a, b] = shared[b, a] = joint
  return cost, compatible, shared


_LABEL_COST, _COMPATIBLE, _SHARED_JOINT = _tables()


def _present(keypoints: tf.Tensor) -> tf.Tensor:
  return tf.reduce_all(keypoints >= 0, axis=-1)


def _affine(linear: tf.Tensor, translation: tf.Tensor) -> tf.Tensor:
  """(2, 2) linear part and (2,) translation -> (2, 3) [A | t]."""
  return tf.concat([linear, translation[:, None]], axis=1)


def _pixel_grid(height, width) -> tuple[tf.Tensor, tf.Tensor]:
  """(H, W) float32 column (x) and row (y) coordinates."""
  ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32),
                       indexing="ij")
  return xs, ys


def _torso_length(keypoints: tf.Tensor, hip_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """|neck − mean of the hips selected by `hip_mask`|, and whether it is defined."""
  hips = tf.gather(keypoints, [R_HIP, L_HIP])
  w = tf.cast(hip_mask, tf.float32)
  count = tf.reduce_sum(w)
  mid = tf.reduce_sum(hips * w[:, None], axis=0) / tf.maximum(count, 1.0)
  length = tf.norm(keypoints[NECK] - mid)
  return length, _present(keypoints)[NECK] & (count > 0) & (length > _EPS)


def _weighted_moments(p, q, w):
  """Weight sum, weighted centroids and weighted centred points of (N, 2) p, q; w (N,) in {0, 1}."""
  sw = tf.reduce_sum(w)
  cp = tf.reduce_sum(p * w[:, None], axis=0) / tf.maximum(sw, 1.0)
  cq = tf.reduce_sum(q * w[:, None], axis=0) / tf.maximum(sw, 1.0)
  return sw, cp, cq, (p - cp) * w[:, None], (q - cq) * w[:, None]


def _fit_part(p, q, w, k, ridge, sim_ridge):
  """Ridge-regularised least-squares affine map target -> source on the joints with w = 1.

  Minimises Σ w_i |A (p_i − c_p) + c_q − q_i|² + ridge · |A − S|²_F, with S the least-squares
  similarity of the same joints (pulled towards k·I by `sim_ridge`, which matters only with a
  single joint): A = (Σ w q̃ p̃ᵀ + ridge S)(Σ w p̃ p̃ᵀ + ridge I)⁻¹, t = c_q − A c_p.

  Args:
    p, q: (N, 2) float32 target / source joints.
    w: (N,) float32 in {0, 1} (1 = present in both poses).
    k: scalar person scale ratio (source / target).
    ridge, sim_ridge: scalars in px².

  Returns:
    ((2, 3) float32 [A | t] with source ≈ A · target + t, number of joints used (float32)).
  """
  sw, cp, cq, pc, qc = _weighted_moments(p, q, w)
  # Similarity z -> a z (complex numbers): a = Σ conj(p̃) q̃ / Σ |p̃|².
  dot = tf.reduce_sum(pc[:, 0] * qc[:, 0] + pc[:, 1] * qc[:, 1])
  cross = tf.reduce_sum(pc[:, 0] * qc[:, 1] - pc[:, 1] * qc[:, 0])
  norm = tf.reduce_sum(tf.square(pc))
  re = (dot + sim_ridge * k) / (norm + sim_ridge)
  im = cross / (norm + sim_ridge)
  sim = tf.stack([tf.stack([re, -im]), tf.stack([im, re])])
  cpp = tf.matmul(pc, pc, transpose_a=True)
  cqp = tf.matmul(qc, pc, transpose_a=True)
  lin = tf.matmul(cqp + ridge * sim, tf.linalg.inv(cpp + ridge * tf.eye(2)))
  return _affine(lin, cq - tf.linalg.matvec(lin, cp)), sw


def _limb_map(a_t, b_t, a_s, b_s, k):
  """(2, 3) map taking the target bone (a_t, b_t) to the source bone (a_s, b_s).

  Scales along the bone by the length ratio (clamped to [k/5, 5k], so that a bone seen end-on in
  the target does not blow up) and across it by k; keeps orientation (never mirrors).
  """
  v_t, v_s = b_t - a_t, b_s - a_s
  len_t, len_s = tf.norm(v_t), tf.norm(v_s)
  d_s = tf.where(len_s > _EPS, v_s / tf.maximum(len_s, _EPS), tf.constant([1.0, 0.0]))
  # A point-like bone has no direction: borrow the other image's.
  d_t = tf.where(len_t > _EPS, v_t / tf.maximum(len_t, _EPS), d_s)
  d_s = tf.where(len_s > _EPS, d_s, d_t)
  ratio = tf.where(len_t > _EPS,
                   tf.clip_by_value(len_s / tf.maximum(len_t, _EPS), 0.2 * k, 5.0 * k), k)
  n_t = tf.stack([-d_t[1], d_t[0]])
  n_s = tf.stack([-d_s[1], d_s[0]])
  lin = ratio * d_s[:, None] * d_t[None, :] + k * n_s[:, None] * n_t[None, :]
  return _affine(lin, a_s - tf.linalg.matvec(lin, a_t))


def part_maps(source_keypoints, target_keypoints, image_height):
  """The per-part target -> source affine maps.

  Args:
    source_keypoints, target_keypoints: (18, 2) float (x, y); negative = missing.
    image_height: scalar; the body size is H / 4 when the target has no torso length.

  Returns:
    maps (10, 2, 3) float32 [A | t] per part of `PART_NAMES` (source = A · target + t; invalid
      parts hold the fallback map),
    valid (10,) bool: the part's joints are present in both poses,
    target_size: float32 scalar T, the target torso length in px (or H / 4),
    k: float32 scalar, the person's scale ratio source / target.
  """
  src = tf.cast(source_keypoints, tf.float32)
  tgt = tf.cast(target_keypoints, tf.float32)
  common = _present(src) & _present(tgt)
  wc = tf.cast(common, tf.float32)

  hips_common = tf.gather(common, [R_HIP, L_HIP])
  len_s, ok_s = _torso_length(src, hips_common)
  len_t, ok_t = _torso_length(tgt, hips_common)
  rigid = np.asarray(sorted(set(HEAD_JOINTS + TORSO_JOINTS)), np.int32)
  n_rigid, _, _, pc, qc = _weighted_moments(tf.gather(tgt, rigid), tf.gather(src, rigid),
                                            tf.gather(wc, rigid))
  spread_t = tf.reduce_sum(tf.square(pc))
  spread_ratio = tf.sqrt(tf.reduce_sum(tf.square(qc)) / tf.maximum(spread_t, _EPS))
  k = tf.where(ok_s & ok_t, len_s / tf.maximum(len_t, _EPS),
               tf.where((n_rigid >= 2) & (spread_t > 1.0), spread_ratio, 1.0))
  k = tf.clip_by_value(k, 0.25, 4.0)

  own_len_t, own_ok_t = _torso_length(tgt, tf.gather(_present(tgt), [R_HIP, L_HIP]))
  target_size = tf.where(own_ok_t, own_len_t, tf.cast(image_height, tf.float32) / 4.0)
  ridge = tf.square(_RIDGE_REL * target_size)
  sim_ridge = tf.square(_SIM_RIDGE_REL * target_size)

  n_all, c_t, c_s, _, _ = _weighted_moments(tgt, src, wc)
  global_map = tf.where(n_all > 0, _affine(k * tf.eye(2), c_s - k * c_t),
                        _affine(tf.eye(2), tf.zeros([2])))

  def fit(joints):
    idx = np.asarray(joints, np.int32)
    return _fit_part(tf.gather(tgt, idx), tf.gather(src, idx), tf.gather(wc, idx), k, ridge,
                     sim_ridge)

  maps = [None] * NUM_PARTS
  valid = [None] * NUM_PARTS
  maps[HEAD], n_head = fit(HEAD_JOINTS)
  maps[TORSO], n_torso = fit(TORSO_JOINTS)
  valid[HEAD], valid[TORSO] = n_head >= 2, n_torso >= 2
  for part, limb in _LIMB_OF_PART.items():
    i, j = LIMBS[limb]
    maps[part] = _limb_map(tgt[i], tgt[j], src[i], src[j], k)
    valid[part] = common[i] & common[j]
  fallback = tf.where(valid[TORSO], maps[TORSO], global_map)
  maps = tf.stack([tf.where(v, m, fallback) for m, v in zip(maps, valid)])
  return maps, tf.stack(valid), target_size, k


def _inside_polygon(vertices: tf.Tensor, xs: tf.Tensor, ys: tf.Tensor) -> tf.Tensor:
  """(H, W) bool: pixel inside the polygon through the present `vertices` (V, 2), in order.

  Missing vertices are skipped (each present vertex connects to the next present one); with fewer
  than 3 the polygon is empty, since every edge is then traversed both ways (even-odd rule).
  """
  present = _present(vertices)
  n = vertices.shape[0]
  crossings = tf.zeros(tf.shape(xs), tf.int32)
  for i in range(n):
    following = [(i + d) % n for d in range(1, n)]
    nxt = vertices[following[-1]]
    for j in reversed(following[:-1]):
      nxt = tf.where(present[j], vertices[j], nxt)
    xi, yi, xj, yj = vertices[i, 0], vertices[i, 1], nxt[0], nxt[1]
    straddles = (yi > ys) != (yj > ys)
    dy = tf.where(tf.abs(yj - yi) > 0, yj - yi, 1.0)
    hit = straddles & (xs < xi + (ys - yi) * (xj - xi) / dy) & present[i]
    crossings += tf.cast(hit, tf.int32)
  return crossings % 2 == 1


def _part_distances(keypoints: tf.Tensor, xs: tf.Tensor, ys: tf.Tensor) -> tf.Tensor:
  """(10, N) float32 distance from N pixels (xs, ys: (N,)) to each part's skeleton, +inf if absent.

  Works in a part-major (segment, pixel) layout so that the per-part minimum reduces contiguous
  rows, and takes the square root only after it.
  """
  a = tf.gather(keypoints, _SEG_START)  # (S, 2)
  b = tf.gather(keypoints, _SEG_END)
  present = _present(a) & _present(b)  # (S,)
  dx = (b[:, 0] - a[:, 0])[:, None]
  dy = (b[:, 1] - a[:, 1])[:, None]
  px = xs[None, :] - a[:, 0:1]  # (S, N)
  py = ys[None, :] - a[:, 1:2]
  length2 = tf.square(dx) + tf.square(dy)
  # Projection parameter clamped to the segment; a degenerate segment is its start point.
  inv_length2 = tf.where(length2 > 0, 1.0 / tf.where(length2 > 0, length2, 1.0), 0.0)
  t = tf.clip_by_value((px * dx + py * dy) * inv_length2, 0.0, 1.0)
  d2 = tf.square(px - t * dx) + tf.square(py - t * dy)
  d2 = tf.where(present[:, None], d2, np.float32(np.inf))
  parts = [tf.reduce_min(d2[start:stop], axis=0) for start, stop in _PART_SEGMENT_RANGES]
  return tf.sqrt(tf.stack(parts))


def assign_parts(keypoints, parsing, body_size) -> tuple[tf.Tensor, tf.Tensor]:
  """Part of every pixel from its CIHP label and its distance to each part's skeleton.

  Args:
    keypoints: (18, 2) float (x, y); negative = missing.
    parsing: (H, W) integer CIHP labels.
    body_size: float32 scalar, the torso length T in px of this image's person.

  Returns:
    part (H, W) int32 in [0, 10) (meaningless on background);
    sure (H, W) bool: False where the label allows no part present in `keypoints` and the nearest
      present part of any kind was taken instead.
  """
  kp = tf.cast(keypoints, tf.float32)
  shape = tf.shape(parsing)
  xs, ys = _pixel_grid(shape[0], shape[1])
  xs, ys = tf.reshape(xs, [-1]), tf.reshape(ys, [-1])
  dist = _part_distances(kp, xs, ys)  # (10, N)
  inside_torso = _inside_polygon(tf.gather(kp, _TORSO_POLYGON), xs, ys)
  dist = tf.tensor_scatter_nd_update(dist, [[TORSO]], tf.where(inside_torso, 0.0, dist[TORSO])[None])
  labels = tf.clip_by_value(tf.reshape(tf.cast(parsing, tf.int32), [-1]), 0, NUM_LABELS - 1)
  label_cost = tf.gather(tf.constant(_LABEL_COST.T), labels, axis=1)  # (10, N)
  radius = tf.constant(_PART_RADIUS)[:, None] * body_size
  cost = dist - radius + label_cost * (_SIDE_PENALTY * body_size)
  sure = tf.reduce_min(cost, axis=0) < np.float32(np.inf)
  best = tf.argmin(cost, axis=0, output_type=tf.int32)
  nearest = tf.argmin(dist, axis=0, output_type=tf.int32)
  part = tf.reshape(tf.where(sure, best, nearest), shape)
  return part, tf.reshape(sure, shape)


def geometric_flow(source_keypoints, target_keypoints, source_parsing,
                   target_parsing) -> tuple[tf.Tensor, tf.Tensor]:
  """Keypoint-driven target -> source flow and visibility (algorithm in the module docstring).

  Args:
    source_keypoints, target_keypoints: (18, 2) float (x, y) pixel coordinates, OpenPose-18 order;
      a joint with x < 0 or y < 0 is missing.
    source_parsing, target_parsing: (H, W) integer CIHP labels 0..19 (0 = background), same size.

  Returns:
    flow: (H, W, 2) float32, target -> source in pixels, channel 0 = x: target pixel (y, x) shows
      the source point (x + flow[y, x, 0], y + flow[y, x, 1]); exactly 0 on target background.
    visibility: (H, W) int32; 0 visible in the source, 1 invisible (occluded, outside the frame,
      label mismatch, or its part missing in a pose), 2 target background (target_parsing == 0).
  """
  source_parsing = tf.convert_to_tensor(source_parsing)
  target_parsing = tf.convert_to_tensor(target_parsing)
  if source_parsing.shape.rank != 2 or target_parsing.shape.rank != 2:
    raise ValueError(f"geometric_flow: parsings must be (H, W), got {source_parsing.shape} and "
                     f"{target_parsing.shape}")
  for kp in (source_keypoints, target_keypoints):
    shape = tf.convert_to_tensor(kp).shape
    if shape.rank is not None and (shape.rank != 2 or shape[0] not in (None, NUM_KEYPOINTS)
                                   or shape[1] not in (None, 2)):
      raise ValueError(f"geometric_flow: keypoints must be ({NUM_KEYPOINTS}, 2), got {shape}")
  static = target_parsing.shape.as_list()
  dynamic = tf.shape(target_parsing)
  height = static[0] if static[0] is not None else dynamic[0]
  width = static[1] if static[1] is not None else dynamic[1]
  src_kp = tf.cast(source_keypoints, tf.float32)

  maps, valid, target_size, k = part_maps(source_keypoints, target_keypoints, height)
  part_t, sure_t = assign_parts(target_keypoints, target_parsing, target_size)
  part_s, _ = assign_parts(src_kp, source_parsing, target_size * k)

  xs, ys = _pixel_grid(height, width)
  m = tf.gather(maps, part_t)  # (H, W, 2, 3): each pixel's part map
  qx = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
  qy = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
  body = tf.cast(target_parsing, tf.int32) != BACKGROUND
  flow = tf.stack([qx - xs, qy - ys], axis=-1)
  flow = tf.where(body[..., None], flow, tf.zeros_like(flow))

  # The source pixel nearest to the mapped point (clamped only for the gathers; `inside` decides).
  ix = tf.cast(tf.floor(qx + 0.5), tf.int32)
  iy = tf.cast(tf.floor(qy + 0.5), tf.int32)
  inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
  idx = tf.stack([tf.clip_by_value(iy, 0, height - 1), tf.clip_by_value(ix, 0, width - 1)], axis=-1)
  label_t = tf.clip_by_value(tf.cast(target_parsing, tf.int32), 0, NUM_LABELS - 1)
  label_s = tf.gather_nd(tf.clip_by_value(tf.cast(source_parsing, tf.int32), 0, NUM_LABELS - 1), idx)
  compatible = tf.gather_nd(tf.constant(_COMPATIBLE), tf.stack([label_t, label_s], axis=-1))

  part_at_q = tf.gather_nd(part_s, idx)
  joint = tf.gather_nd(tf.constant(_SHARED_JOINT), tf.stack([part_t, part_at_q], axis=-1))
  joint_xy = tf.gather(src_kp, tf.maximum(joint, 0))  # (H, W, 2), meaningful where joint ≥ 0
  slack = _JOINT_SLACK * target_size * k
  near_joint = ((joint >= 0) & tf.gather(_present(src_kp), tf.maximum(joint, 0))
                & (tf.square(qx - joint_xy[..., 0]) + tf.square(qy - joint_xy[..., 1])
                   <= tf.square(slack)))
  same_part = (part_at_q == part_t) | near_joint

  visible = (tf.gather(valid, part_t) & sure_t & inside & (label_s != BACKGROUND) & compatible
             & same_part)
  visibility = tf.where(body, tf.where(visible, 0, 1), 2)
  if isinstance(height, int) and isinstance(width, int):
    flow.set_shape([height, width, 2])
    visibility.set_shape([height, width])
  return flow, visibility
