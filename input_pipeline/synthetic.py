"""Synthetic-person pairs with exact ground truth: a procedural 2D layered "puppet" in NumPy.

Purpose: the embedded default dataset and the test ground. It needs no download, is deterministic
by seed, renders a 256×256 pair in a few milliseconds on one CPU core, makes pose transfer learnable
(textures live in each body part's own frame, so they move with the limbs) and measurable (the
flow, visibility, parsing and keypoints are exact consequences of the rendering geometry).

Output of `make_pair(seed, height, width)` (a dict of NumPy arrays; H = height, W = width):

  source_image, target_image          (H, W, 3) uint8, RGB 0..255. Convert with `x / 127.5 - 1` to the
                                      package's float [-1, 1] convention.
  source_parsing, target_parsing      (H, W) uint8 CIHP labels (0 background, 2 hair, 5 upper-clothes,
                                      9 pants, 10 torso-skin (neck / neckline), 12 skirt, 13 face,
                                      14 left-arm, 15 right-arm, 16 left-leg, 17 right-leg,
                                      18 left-shoe, 19 right-shoe; the other CIHP classes never occur).
  source_keypoints, target_keypoints  (18, 2) float32 (x, y) pixel coordinates, OpenPose-18 order
                                      (nose, neck, R-sho, R-elb, R-wri, L-sho, L-elb, L-wri, R-hip,
                                      R-knee, R-ank, L-hip, L-knee, L-ank, L-eye, R-eye, L-ear, R-ear).
                                      A joint outside the image (x ∉ [0, W-1] or y ∉ [0, H-1]) is
                                      marked missing as (-1, -1). Occluded joints inside the frame are
                                      kept (the generator knows where they are).
  flow                                (H, W, 2) float32, target -> source, in pixels, channel 0 = x:
                                      target pixel (row y, column x) shows the body point that the
                                      source image shows at (x + flow[y, x, 0], y + flow[y, x, 1]).
                                      Exactly 0 on target background. May point outside the source.
  visibility                          (H, W) uint8: 0 = target body pixel whose point is visible in
                                      the source, 1 = target body pixel whose point is hidden in the
                                      source (occluded by another part, or outside the frame),
                                      2 = target background (exactly where target_parsing == 0).

Pixel (row i, column j) is the point (x=j, y=i): pixel centres sit at integer coordinates, which is
the `align_corners=True` convention of `spg_jax.ops.warp.warp_by_flow`, so warping the source by
`flow` with that function reproduces the target on visible pixels (up to bilinear interpolation of
the texture and mixing at part edges; see tests/test_synthetic.py for the measured tolerances).

Generative model.
  * Identity (shared by the two images of a pair): body proportions (limb lengths and widths),
    skin / hair colours, hair style (short, or long hair drawn behind the body), garments (short or
    long sleeves, trousers or shorts, or a skirt, shoes) and each garment's colours and pattern
    (plain, stripes or checks; smooth sinusoids so that bilinear resampling is accurate), a face
    (eyes, mouth) and the background (a vertical gradient, identical in both images).
  * Pose (independent per image): torso lean and turn (horizontal foreshortening), head tilt,
    shoulder / elbow / hip / knee angles, per-segment foreshortening along the bone, whether each
    arm passes in front of or behind the torso, which leg is in front, global scale and translation.
    Forward kinematics from the neck gives every part an affine frame p = o + M u (u = (a, b) local
    coordinates in body units, a along the bone, b across it) and the 18 keypoints.
  * Parts (13): long hair (optional), torso, neck, head, upper/lower arm ×2 (the hand is the end of
    the lower arm), upper/lower leg ×2 (the shoe is the end of the lower leg), skirt (optional).
    Each is a convex shape (capsule, ellipse, tapered box) in its local frame; its CIHP label and
    colour are functions of (identity, part, u) only — a sleeve ending halfway down the arm is a
    label boundary at fixed a.
  * Rendering paints the parts back to front into a part-id map and a local-coordinate map, then
    derives the label map and the image from them (vectorised NumPy, per part bounding box).
  * Ground truth: for a target pixel of part p with local coordinates u, the source position is
    q = o_p^src + M_p^src u and flow = q - (x, y). The pixel is visible (0) when q rounds to a pixel
    inside the source frame whose front-most part is p (then it shows the same u of p, as parts are
    convex and rigid up to the affine map), otherwise invisible (1).

Sizes: `SIZES` holds the presets ('deepfashion' 256×256, 'market' 128×64, 'tiny' 32×32). At 'tiny' the
thinnest limbs are about one pixel wide and patterns alias; it is meant for shape and plumbing tests.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from spg_jax.visualize import colorize_parsing  # pylint: disable=unused-import  (re-exported)


@dataclasses.dataclass(frozen=True)
class Size:
  height: int
  width: int


SIZES = {
    "deepfashion": Size(256, 256),
    "market": Size(128, 64),
    "tiny": Size(32, 32),
}

# CIHP label ids used here.
BACKGROUND, HAIR, UPPER, PANTS, TORSO_SKIN, SKIRT, FACE = 0, 2, 5, 9, 10, 12, 13
LEFT_ARM, RIGHT_ARM, LEFT_LEG, RIGHT_LEG, LEFT_SHOE, RIGHT_SHOE = 14, 15, 16, 17, 18, 19
USED_LABELS = (0, 2, 5, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19)

# Part ids.
HAIR_BACK, TORSO, NECK, HEAD = 0, 1, 2, 3
R_UARM, R_LARM, L_UARM, L_LARM = 4, 5, 6, 7
R_ULEG, R_LLEG, L_ULEG, L_LLEG = 8, 9, 10, 11
SKIRT_PART = 12
NUM_PARTS = 13

# Body-unit constants (1 unit ≈ a head's half height; a standing body is about 8.3 units tall).
_TORSO_LEN = 2.8  # neck -> mid-hip
_BODY_HEIGHT = 8.3
_SHOULDER = (0.12, 0.78)  # torso-local (a, |b|)
_HIP = (_TORSO_LEN, 0.40)



# ----------------------------------------------------------------------------------------------
# Identity and pose sampling.


def _sample_material(rng: np.random.Generator, base=None) -> dict:
  base = rng.uniform(0.05, 0.95, 3) if base is None else np.asarray(base, np.float64)
  kind = int(rng.integers(0, 3))  # 0 plain, 1 stripes, 2 checks
  return dict(
      base=base,
      alt=rng.uniform(0.05, 0.95, 3),
      kind=kind,
      amp=float(rng.uniform(0.5, 1.0)) if kind else 0.0,
      freq=float(rng.uniform(0.9, 2.2)),  # cycles per body unit
      angle=float(rng.uniform(0, np.pi)),
      phase=float(rng.uniform(0, 2 * np.pi)),
  )


def _sample_identity(rng: np.random.Generator, height: int, width: int) -> dict:
  skins = np.array([[0.96, 0.80, 0.69], [0.87, 0.67, 0.52], [0.72, 0.52, 0.38], [0.48, 0.33, 0.23]])
  skin = skins[rng.integers(0, len(skins))] * rng.uniform(0.92, 1.05, 3)
  hairs = np.array([[0.08, 0.06, 0.05], [0.30, 0.18, 0.10], [0.62, 0.45, 0.25], [0.85, 0.75, 0.50]])
  hair = hairs[rng.integers(0, len(hairs))] * rng.uniform(0.9, 1.1, 3)
  skirt = bool(rng.random() < 0.3)
  bg0 = rng.uniform(0.55, 0.95, 3)
  bg1 = np.clip(bg0 + rng.uniform(-0.25, 0.1, 3), 0, 1)
  return dict(
      skin=dict(base=np.clip(skin, 0, 1), alt=skin, kind=0, amp=0.0, freq=1.0, angle=0.0, phase=0.0),
      hair=dict(base=np.clip(hair, 0, 1), alt=np.clip(hair * 1.4 + 0.05, 0, 1), kind=1, amp=0.35,
                freq=float(rng.uniform(3.0, 4.0)), angle=np.pi / 2, phase=float(rng.uniform(0, 6.3))),
      upper=_sample_material(rng),
      lower=_sample_material(rng),
      skirt_mat=_sample_material(rng),
      shoe=dict(base=rng.uniform(0.02, 0.4, 3), alt=np.zeros(3), kind=0, amp=0.0, freq=1.0,
                angle=0.0, phase=0.0),
      bg=(bg0, bg1),
      # Garments (lengths along the limb in body units, measured from the proximal joint).
      sleeve=float(rng.choice([rng.uniform(0.4, 0.9), rng.uniform(1.8, 2.4), 4.0])),
      pants=float(rng.choice([rng.uniform(0.9, 1.6), 4.5])) if not skirt else 0.0,
      skirt=skirt,
      skirt_len=float(rng.uniform(1.2, 2.3)),
      long_hair=bool(rng.random() < 0.45),
      hair_len=float(rng.uniform(0.3, 1.4)),
      hairline=float(rng.uniform(0.95, 1.12)),
      neckline=float(rng.uniform(0.15, 0.6)),
      # Proportions.
      uarm=float(rng.uniform(1.25, 1.45)), larm=float(rng.uniform(1.15, 1.3)),
      uleg=float(rng.uniform(1.8, 2.0)), lleg=float(rng.uniform(1.8, 2.0)),
      arm_r=float(rng.uniform(0.24, 0.30)), leg_r=float(rng.uniform(0.30, 0.37)),
      scale=float(min(height * rng.uniform(0.76, 0.9) / _BODY_HEIGHT, width * 0.9 / 3.2)),
  )


def _rot(phi: float) -> tuple[np.ndarray, np.ndarray]:
  d = np.array([np.cos(phi), np.sin(phi)])
  return d, np.array([-d[1], d[0]])


def _frame(origin, phi, s, ka=1.0, kb=1.0) -> tuple[np.ndarray, np.ndarray]:
  """Affine frame: image point = origin + M @ (a, b); a along direction phi, b across."""
  d, n = _rot(phi)
  return np.asarray(origin, np.float64), s * np.stack([d * ka, n * kb], axis=1)


def _apply(frame, a, b) -> np.ndarray:
  o, m = frame
  return o + m @ np.array([a, b], np.float64)


def _sample_pose(rng: np.random.Generator, ident: dict, height: int, width: int) -> dict:
  s = ident["scale"] * rng.uniform(0.92, 1.06)
  lean = rng.uniform(-0.12, 0.12)
  turn = rng.uniform(0.72, 1.0)
  frames = {}
  torso = _frame((0.0, 0.0), np.pi / 2 + lean, s, 1.0, turn)
  head = _frame((0.0, 0.0), -np.pi / 2 + lean + rng.uniform(-0.3, 0.3), s, 1.0,
                np.clip(turn + rng.uniform(-0.1, 0.1), 0.7, 1.0))
  frames[TORSO], frames[HEAD], frames[NECK], frames[HAIR_BACK], frames[SKIRT_PART] = (
      torso, head, head, head, torso)

  def fore():  # foreshortening along a bone
    return 1.0 if rng.random() < 0.5 else rng.uniform(0.65, 1.0)

  def limb(side, upper_id, lower_id, root, up_len, abd_range, bend_range):
    sign = 1.0 if side == "R" else -1.0  # person's right = image left (front view) -> larger angle
    phi_u = np.pi / 2 + sign * rng.uniform(*abd_range) + lean
    phi_l = phi_u + rng.uniform(*bend_range)
    frames[upper_id] = _frame(root, phi_u, s, fore())
    joint = _apply(frames[upper_id], up_len, 0.0)
    frames[lower_id] = _frame(joint, phi_l, s, fore())

  abd_arm = (-0.25, 0.25 + 2.55 * rng.random() ** 1.5)
  for side, u, l, sb in (("R", R_UARM, R_LARM, 1), ("L", L_UARM, L_LARM, -1)):
    limb(side, u, l, _apply(torso, _SHOULDER[0], sb * _SHOULDER[1]), ident["uarm"], abd_arm,
         (-2.3, 2.3))
  for side, u, l, sb in (("R", R_ULEG, R_LLEG, 1), ("L", L_ULEG, L_LLEG, -1)):
    limb(side, u, l, _apply(torso, _HIP[0], sb * _HIP[1]), ident["uleg"], (-0.2, 0.5), (-0.7, 0.7))

  kp = _keypoints(frames, ident)
  # Place the body: centre the bounding box of keypoints + head top, then jitter.
  top = _apply(head, 1.45, 0.0)
  pts = np.concatenate([kp, top[None]], 0)
  centre = (pts.min(0) + pts.max(0)) / 2
  shift = np.array([width / 2, height / 2]) - centre + rng.uniform(-0.06, 0.06, 2) * [width, height]
  frames = {k: (o + shift, m) for k, (o, m) in frames.items()}
  kp = kp + shift

  # Depth order, back to front.
  arms_front = [rng.random() < 0.5 for _ in range(2)]
  legs = [R_ULEG, R_LLEG, L_ULEG, L_LLEG] if rng.random() < 0.5 else [L_ULEG, L_LLEG, R_ULEG, R_LLEG]
  arm_parts = ((R_UARM, R_LARM), (L_UARM, L_LARM))
  order = [HAIR_BACK] if ident["long_hair"] else []
  for front, parts in zip(arms_front, arm_parts):
    if not front:
      order += list(parts)
  order += legs + [TORSO] + ([SKIRT_PART] if ident["skirt"] else []) + [NECK, HEAD]
  for front, parts in zip(arms_front, arm_parts):
    if front:
      order += list(parts)
  return dict(frames=frames, keypoints=kp, order=order)


def _keypoints(frames: dict, ident: dict) -> np.ndarray:
  t, h = frames[TORSO], frames[HEAD]
  kp = [
      _apply(h, 0.58, 0.0),  # nose
      t[0],  # neck
      _apply(t, _SHOULDER[0], _SHOULDER[1]),
      _apply(frames[R_UARM], ident["uarm"], 0.0),
      _apply(frames[R_LARM], ident["larm"], 0.0),
      _apply(t, _SHOULDER[0], -_SHOULDER[1]),
      _apply(frames[L_UARM], ident["uarm"], 0.0),
      _apply(frames[L_LARM], ident["larm"], 0.0),
      _apply(t, _HIP[0], _HIP[1]),
      _apply(frames[R_ULEG], ident["uleg"], 0.0),
      _apply(frames[R_LLEG], ident["lleg"], 0.0),
      _apply(t, _HIP[0], -_HIP[1]),
      _apply(frames[L_ULEG], ident["uleg"], 0.0),
      _apply(frames[L_LLEG], ident["lleg"], 0.0),
      _apply(h, 0.80, 0.20),  # L eye (+b = person's left in the head frame)
      _apply(h, 0.80, -0.20),  # R eye
      _apply(h, 0.72, 0.48),  # L ear
      _apply(h, 0.72, -0.48),  # R ear
  ]
  return np.stack(kp).astype(np.float64)


# ----------------------------------------------------------------------------------------------
# Part geometry: local bounding box, inside test, label and shading radius.


def _capsule(a, b, length, r):
  t = np.clip(a, 0.0, length)
  return (a - t) ** 2 + b ** 2 <= r * r


def _ellipse(a, b, ca, ea, eb):
  return ((a - ca) / ea) ** 2 + (b / eb) ** 2 <= 1.0


def _torso_halfwidth(a):
  w = np.interp(a, [0.0, 1.8, 3.0], [0.82, 0.62, 0.70])
  return w - np.maximum(0.0, 0.35 - a) * 0.8


def _part_geometry(pid: int, ident: dict):
  """Returns (bbox (amin, amax, bmin, bmax), inside(a, b), shade radius)."""
  if pid == TORSO:
    return (-0.05, 3.05, -0.85, 0.85), lambda a, b: (a >= -0.05) & (a <= 3.05) & (
        np.abs(b) <= _torso_halfwidth(a)), 0.85
  if pid == HEAD:
    return (0.05, 1.45, -0.53, 0.53), lambda a, b: _ellipse(a, b, 0.75, 0.70, 0.52), 0.55
  if pid == NECK:
    return (-0.4, 0.5, -0.21, 0.21), lambda a, b: _capsule(a + 0.2, b, 0.5, 0.2), 0.22
  if pid == HAIR_BACK:
    lo, hi = -ident["hair_len"], 1.3
    return (lo, hi, -0.67, 0.67), lambda a, b: _ellipse(a, b, (lo + hi) / 2, (hi - lo) / 2, 0.66), 0.7
  if pid == SKIRT_PART:
    a0, a1 = 2.5, 2.5 + ident["skirt_len"]
    wmax = 0.68 + (a1 - a0) * 0.4
    return (a0, a1, -wmax, wmax), lambda a, b: (a >= a0) & (a <= a1) & (
        np.abs(b) <= 0.68 + (a - a0) * 0.4), wmax
  if pid in (R_UARM, L_UARM, R_LARM, L_LARM, R_ULEG, L_ULEG, R_LLEG, L_LLEG):
    arm = pid in (R_UARM, L_UARM, R_LARM, L_LARM)
    upper = pid in (R_UARM, L_UARM, R_ULEG, L_ULEG)
    r = ident["arm_r"] if arm else ident["leg_r"]
    if not upper:
      r *= 0.8
    length = ident["uarm" if arm else "uleg"] if upper else ident["larm" if arm else "lleg"]
    if not upper:
      length += 0.3 if arm else 0.15  # hand / shoe
    return (-r, length + r, -r, r), lambda a, b: _capsule(a, b, length, r), r
  raise ValueError(pid)


def _labels(pid: int, a: np.ndarray, b: np.ndarray, ident: dict) -> np.ndarray:
  full = lambda v: np.full(a.shape, v, np.uint8)
  if pid == HAIR_BACK:
    return full(HAIR)
  if pid == NECK:
    return full(TORSO_SKIN)
  if pid == HEAD:
    hair = a > ident["hairline"] - 0.35 * (b / 0.52) ** 2
    return np.where(hair, HAIR, FACE).astype(np.uint8)
  if pid == TORSO:
    lab = np.where(a < ident["neckline"] * (1 - np.abs(b) / 0.35), TORSO_SKIN, UPPER)
    return np.where(a > 2.55, SKIRT if ident["skirt"] else PANTS, lab).astype(np.uint8)
  if pid == SKIRT_PART:
    return full(SKIRT)
  if pid in (R_UARM, R_LARM, L_UARM, L_LARM):
    skin = RIGHT_ARM if pid in (R_UARM, R_LARM) else LEFT_ARM
    offset = 0.0 if pid in (R_UARM, L_UARM) else ident["uarm"]
    return np.where(a + offset < ident["sleeve"], UPPER, skin).astype(np.uint8)
  if pid in (R_ULEG, R_LLEG, L_ULEG, L_LLEG):
    right = pid in (R_ULEG, R_LLEG)
    lower = pid in (R_LLEG, L_LLEG)
    offset = ident["uleg"] if lower else 0.0
    lab = np.where(a + offset < ident["pants"], PANTS, RIGHT_LEG if right else LEFT_LEG)
    if lower:
      lab = np.where(a > ident["lleg"] - 0.15, RIGHT_SHOE if right else LEFT_SHOE, lab)
    return lab.astype(np.uint8)
  raise ValueError(pid)


def _texture(mat: dict, a: np.ndarray, b: np.ndarray, part_phase: float) -> np.ndarray:
  """(N,) local coords -> (N, 3) colour in [0, 1], before shading."""
  if mat["kind"] == 0:
    v = np.zeros_like(a)
  else:
    w = 2 * np.pi * mat["freq"]
    if mat["kind"] == 1:
      t = a * np.cos(mat["angle"]) + b * np.sin(mat["angle"])
      v = 0.5 + 0.5 * np.sin(w * t + mat["phase"] + part_phase)
    else:
      v = 0.5 + 0.5 * np.sin(w * a + mat["phase"] + part_phase) * np.sin(w * b + mat["phase"])
  v = (mat["amp"] * v)[:, None]
  return mat["base"][None] * (1 - v) + mat["alt"][None] * v


_MATERIAL_OF_LABEL = {HAIR: "hair", UPPER: "upper", PANTS: "lower", TORSO_SKIN: "skin",
                      SKIRT: "skirt_mat", FACE: "skin", LEFT_ARM: "skin", RIGHT_ARM: "skin",
                      LEFT_LEG: "skin", RIGHT_LEG: "skin", LEFT_SHOE: "shoe", RIGHT_SHOE: "shoe"}


# ----------------------------------------------------------------------------------------------
# Rendering.


def _render(pose: dict, ident: dict, height: int, width: int) -> dict:
  part = np.full((height, width), -1, np.int8)
  loc = np.zeros((height, width, 2), np.float32)
  for pid in pose["order"]:
    o, m = pose["frames"][pid]
    (a0, a1, b0, b1), inside, _ = _part_geometry(pid, ident)
    corners = np.array([[a0, b0], [a0, b1], [a1, b0], [a1, b1]]) @ m.T + o
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + 1, width)
    y1 = min(int(np.ceil(corners[:, 1].max())) + 1, height)
    if x0 >= x1 or y0 >= y1:
      continue
    minv = np.linalg.inv(m)
    dx = np.arange(x0, x1, dtype=np.float64) - o[0]
    dy = np.arange(y0, y1, dtype=np.float64) - o[1]
    a = minv[0, 0] * dx[None, :] + minv[0, 1] * dy[:, None]
    b = minv[1, 0] * dx[None, :] + minv[1, 1] * dy[:, None]
    mask = inside(a, b)
    part[y0:y1, x0:x1][mask] = pid
    loc[y0:y1, x0:x1, 0][mask] = a[mask]
    loc[y0:y1, x0:x1, 1][mask] = b[mask]

  labels = np.zeros((height, width), np.uint8)
  bg0, bg1 = ident["bg"]
  ramp = np.linspace(0.0, 1.0, height)[:, None, None]
  image = np.broadcast_to(bg0 * (1 - ramp) + bg1 * ramp, (height, width, 3)).copy()
  for pid in range(NUM_PARTS):
    sel = part == pid
    if not sel.any():
      continue
    a = loc[..., 0][sel].astype(np.float64)
    b = loc[..., 1][sel].astype(np.float64)
    lab = _labels(pid, a, b, ident)
    labels[sel] = lab
    rgb = np.zeros(a.shape + (3,))
    for lv in np.unique(lab):
      k = lab == lv
      rgb[k] = _texture(ident[_MATERIAL_OF_LABEL[int(lv)]], a[k], b[k], 0.7 * pid)
    if pid == HEAD:  # eyes and mouth
      dark = np.exp(-(((a - 0.8) ** 2 + (np.abs(b) - 0.2) ** 2) / 0.004))
      mouth = np.exp(-(((a - 0.4) / 0.05) ** 2 + (b / 0.15) ** 2))
      rgb = rgb * (1 - 0.8 * dark[:, None])
      rgb = rgb * (1 - 0.5 * mouth[:, None]) + 0.5 * mouth[:, None] * np.array([0.6, 0.1, 0.15])
    r = _part_geometry(pid, ident)[2]
    shade = 1.0 - 0.3 * np.clip(b / r, -1, 1) ** 2
    image[sel] = rgb * shade[:, None]
  image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  return dict(part=part, loc=loc, parsing=labels, image=image)


def _missing_outside(kp: np.ndarray, height: int, width: int) -> np.ndarray:
  out = (kp[:, 0] < 0) | (kp[:, 0] > width - 1) | (kp[:, 1] < 0) | (kp[:, 1] > height - 1)
  kp = kp.astype(np.float32)
  kp[out] = -1.0
  return kp


def make_pair(seed: int, height: int, width: int) -> dict[str, np.ndarray]:
  """One identity in two poses with exact flow / visibility; deterministic in `seed`.

  Returns the dict described in the module docstring: source_/target_ image (H, W, 3) uint8,
  parsing (H, W) uint8, keypoints (18, 2) float32; flow (H, W, 2) float32 (target -> source, pixels);
  visibility (H, W) uint8.
  """
  rng = np.random.default_rng(seed)
  ident = _sample_identity(rng, height, width)
  poses = [_sample_pose(rng, ident, height, width) for _ in range(2)]
  src, tgt = (_render(p, ident, height, width) for p in poses)

  flow = np.zeros((height, width, 2), np.float32)
  vis = np.full((height, width), 2, np.uint8)
  ys, xs = np.mgrid[0:height, 0:width]
  for pid in range(NUM_PARTS):
    sel = tgt["part"] == pid
    if not sel.any():
      continue
    o, m = poses[0]["frames"][pid]
    q = tgt["loc"][sel].astype(np.float64) @ m.T + o  # (N, 2) source (x, y)
    flow[sel, 0] = q[:, 0] - xs[sel]
    flow[sel, 1] = q[:, 1] - ys[sel]
    qi = np.floor(q + 0.5).astype(np.int64)
    ok = (qi[:, 0] >= 0) & (qi[:, 0] < width) & (qi[:, 1] >= 0) & (qi[:, 1] < height)
    same = np.zeros(len(q), bool)
    same[ok] = src["part"][qi[ok, 1], qi[ok, 0]] == pid
    vis[sel] = np.where(same, 0, 1).astype(np.uint8)

  return dict(
      source_image=src["image"], source_parsing=src["parsing"],
      source_keypoints=_missing_outside(poses[0]["keypoints"], height, width),
      target_image=tgt["image"], target_parsing=tgt["parsing"],
      target_keypoints=_missing_outside(poses[1]["keypoints"], height, width),
      flow=flow, visibility=vis,
  )


def pair_seed(seed: int, index: int) -> int:
  """The `make_pair` seed of example `index` of the stream `make_pairs(seed, ...)`."""
  return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)


def make_pairs(seed: int, num: int, height: int, width: int) -> Iterator[dict[str, np.ndarray]]:
  """Yields `num` pairs; example i is `make_pair(pair_seed(seed, i), height, width)`."""
  for i in range(num):
    yield make_pair(pair_seed(seed, i), height, width)
