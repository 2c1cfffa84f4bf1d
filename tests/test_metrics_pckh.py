"""PCKh: the OpenPose COCO network and its converter (against Keras), the multi-scale resampling (against
scikit-image's interpolation kernels), the keypoint decoding (synthetic skeletons) and the PCKh counts
(against a joint-by-joint loop written like the official calPCKH_*.py).

Network parity: the test builds its own Keras model with the layer names and operations of the
CMU COCO model (`pose_estimator.h5`), He-normal random weights and random biases, saves it as a real
`.h5` (Keras 3 legacy HDF5), converts it with `python -m spg_jax.convert pose_estimator` and compares
both final-stage branches on a (2, 70, 60, 3) input (sides not multiples of 8, so the floor pooling
matters) within 1e-5 · max |Keras output| (about 3e-6 is observed, float32 on CPU); `make_pose_fn` at a
single scale ([−1, 1] RGB in, bilinear upsampling out) matches the upsampled Keras maps within the same
bound.

Resampling: scikit-image ≥ 0.19 changed `resize`, but its `warp` with an affine matrix still runs the
same Cython kernels (`_warp_fast`: bilinear, and Keys bicubic with a = −0.5) that `resize` used in 0.13 /
0.14; the reference is `warp` with `clip=False` followed by the old clip rule written out here. Our
float32 resampling is within 1e-4 absolute of it on pixel values up to 200 (about 3e-5 observed), and the
4-scale loop (with a cheap stand-in network) within 1e-5 (about 1.5e-6 observed on summed PAFs ≤ 4).
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import transform as sk_transform

from spg_jax.convert import pose_estimator as convert_pose
from spg_jax.convert.__main__ import main as convert_main
from spg_jax.convert.state_dict import ConversionError
from spg_jax.metrics import pckh as pckh_lib
from spg_jax.metrics import pose_estimator as pe
from spg_jax.weights import load_weights

PARITY_REL_TOL = 1e-5
PARITY_SHAPE = (2, 70, 60)

# Keras 3 on NumPy 2 warns about `__array__` copies on every get/set_weights.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# ---------------------------------------------------------------------------------------------------
# Independent Keras model with the pose_estimator.h5 layer names.

_KERAS_VGG = (("conv1_1", 64), ("conv1_2", 64), "pool1_1", ("conv2_1", 128), ("conv2_2", 128), "pool2_1",
              ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), ("conv3_4", 256), "pool3_1",
              ("conv4_1", 512), ("conv4_2", 512), ("conv4_3_CPM", 256), ("conv4_4_CPM", 128))


def _keras_model():
  import keras  # pylint: disable=import-outside-toplevel
  from keras import layers  # pylint: disable=import-outside-toplevel

  def conv(x, filters, size, name):
    # Zero initialisers: the random weights are set below, and Keras's own init would only cost time.
    return layers.Conv2D(filters, (size, size), padding="same", name=name, kernel_initializer="zeros",
                         bias_initializer="zeros")(x)

  def relu(x):
    return layers.Activation("relu")(x)

  image = keras.Input((None, None, 3))
  x = image
  for step in _KERAS_VGG:
    if isinstance(step, str):
      x = layers.MaxPooling2D((2, 2), strides=(2, 2), name=step)(x)
    else:
      x = relu(conv(x, step[1], 3, step[0]))
  features = x

  def branch(x, stage, b):
    out = 38 if b == 1 else 19
    sizes = [(3, 128)] * 3 + [(1, 512), (1, out)] if stage == 1 else [(7, 128)] * 5 + [(1, 128), (1, out)]
    for i, (k, c) in enumerate(sizes, start=1):
      x = conv(x, c, k, f"Mconv{i}_stage{stage}_L{b}")
      if i < len(sizes):
        x = relu(x)
    return x

  l1, l2 = branch(features, 1, 1), branch(features, 1, 2)
  for stage in range(2, 7):
    x = layers.Concatenate()([l1, l2, features])
    l1, l2 = branch(x, stage, 1), branch(x, stage, 2)
  model = keras.Model(image, [l1, l2])
  rng = np.random.default_rng(0)
  for layer in model.layers:
    if isinstance(layer, layers.Conv2D):
      kernel, bias = layer.get_weights()
      fan_in = np.prod(kernel.shape[:3])
      layer.set_weights([rng.standard_normal(kernel.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)),
                         np.float32(0.05) * rng.standard_normal(bias.shape, dtype=np.float32)])
  return model


@pytest.fixture(scope="module")
def keras_setup(tmp_path_factory):
  """(h5 path, uint8 RGB images (2, 70, 60, 3), Keras (pafs, heatmaps) on their network input)."""
  model = _keras_model()
  path = tmp_path_factory.mktemp("pose") / "pose_estimator.h5"
  model.save(str(path))
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, size=PARITY_SHAPE + (3,), dtype=np.uint8)
  x = (images[..., ::-1].astype(np.float32) / 255.0 - 0.5)
  pafs, heatmaps = (np.asarray(o) for o in model(x))
  return path, images, pafs, heatmaps


@pytest.fixture(scope="module")
def variables(keras_setup, tmp_path_factory):
  h5, *_ = keras_setup
  npz = tmp_path_factory.mktemp("weights") / "pose_estimator.npz"
  assert convert_main(["pose_estimator", "--input", str(h5), "--output", str(npz)]) == 0
  _, meta = load_weights(npz)
  assert meta["network"] == pe.NETWORK_NAME and meta["config"] == {"stage1_names": "Mconv"}
  assert meta["config_checked"] and len(meta["source_sha256"]) == 64
  return pe.load_pose_estimator_weights(npz)


def test_layer_table_and_parameter_count():
  layers = pe.conv_layers()
  assert len(layers) == 92 and len({name for name, *_ in layers}) == 92
  assert sum(k * k * cin * cout + cout for _, k, cin, cout in layers) == 52_311_446
  template = pe.pose_estimator_template()
  assert set(template["params"]) == {name for name, *_ in layers}
  assert pe.output_size(70) == 8 and pe.output_size(60) == 7


def test_network_matches_keras(keras_setup, variables):
  _, images, ref_pafs, ref_heat = keras_setup
  x = pe.network_input(jnp.asarray(images[..., ::-1]))
  # Eagerly: compiling the whole network would cost more than running it op by op here.
  pafs, heat = pe.OpenPoseCOCO().apply(variables, x)
  assert pafs.shape == (2, 8, 7, 38) and heat.shape == (2, 8, 7, 19)
  for ours, ref in ((pafs, ref_pafs), (heat, ref_heat)):
    err = np.abs(np.asarray(ours) - ref).max()
    assert err <= PARITY_REL_TOL * np.abs(ref).max(), (err, np.abs(ref).max())


def test_pose_fn_single_scale_matches_keras_upsampled(keras_setup, variables):
  """make_pose_fn end to end at one scale (multiplier 1): [−1, 1] RGB in, bilinear-upsampled Keras maps out."""
  _, images, ref_pafs, ref_heat = keras_setup
  _, h, w = PARITY_SHAPE
  pose_fn = pe.make_pose_fn(variables, scale_search=(1,), boxsize=h)
  # +0.5: the [−1, 1] images quantise back to exactly `images` (to_uint8_values truncates).
  heat, pafs = pose_fn(jnp.asarray((images.astype(np.float32) + 0.5) / 127.5 - 1.0))
  for ours, ref in ((heat, ref_heat), (pafs, ref_pafs)):
    expected = np.stack([_old_skimage_resize(r, h, w, order=1) for r in ref])
    err = np.abs(np.asarray(ours) - expected).max()
    assert err <= PARITY_REL_TOL * np.abs(expected).max(), err


def test_converter_accepts_caffe_stage1_names_and_reports_problems(keras_setup):
  h5, *_ = keras_setup
  weights, config = convert_pose.read_keras_h5(h5)
  convert_pose.check_model_config(config, "x.h5")
  renamed = {(k.replace("Mconv", "conv5_").replace("_stage1_L", "_CPM_L") if "_stage1_" in k else k): v
             for k, v in weights.items()}
  assert "conv5_3_CPM_L2/kernel" in renamed
  variables, naming = convert_pose.convert(renamed, "caffe.h5")
  assert naming == "caffe"
  np.testing.assert_array_equal(variables["params"]["Mconv3_stage1_L2"]["kernel"], weights["Mconv3_stage1_L2/kernel"])

  broken = dict(weights)
  del broken["Mconv7_stage6_L2/bias"]
  broken["extra_layer/kernel"] = np.zeros((1, 1, 1, 1), np.float32)
  with pytest.raises(ConversionError, match="Mconv7_stage6_L2/bias"):
    convert_pose.convert(broken, "broken.h5")
  del broken["extra_layer/kernel"]
  broken["Mconv7_stage6_L2/bias"] = np.zeros((19,), np.float32)
  broken["bad/kernel"] = np.zeros((1,), np.float32)
  with pytest.raises(ConversionError, match="bad/kernel"):
    convert_pose.convert(broken, "extra.h5")

  lambda_config = {"class_name": "Model", "config": {"layers": [
      {"class_name": "InputLayer", "config": {"name": "input_1"}},
      {"class_name": "Lambda", "config": {"name": "lambda_1"}},
      {"class_name": "MaxPooling2D", "config": {"name": "pool1_1", "pool_size": [2, 2], "strides": [2, 2],
                                                "padding": "same"}}]}}
  with pytest.raises(ConversionError, match="lambda_1.*\n.*pool1_1"):
    convert_pose.check_model_config(lambda_config, "lambda.h5")


def test_cli_names_a_missing_input(tmp_path, capsys):
  missing = tmp_path / "pose_estimator.h5"
  assert convert_main(["pose_estimator", "--input", str(missing), "--output", str(tmp_path / "p.npz")]) == 1
  assert str(missing) in capsys.readouterr().err


def test_missing_weights_message(tmp_path):
  path = tmp_path / "weights" / "pose_estimator.npz"
  with pytest.raises(FileNotFoundError) as info:
    pe.load_pose_estimator_weights(path)
  message = str(info.value)
  for needle in (str(path), "pose_estimator.h5", "Deformable-GAN", "PATN", "yadi.sk", "drive.google.com",
                 "python -m spg_jax.convert pose_estimator --input pose_estimator.h5"):
    assert needle in message, needle


# ---------------------------------------------------------------------------------------------------
# Multi-scale inference.


def _old_skimage_resize(image: np.ndarray, height: int, width: int, order: int) -> np.ndarray:
  """scikit-image 0.13/0.14 `resize(image, (height, width), order, preserve_range=True)` (mode 'constant')."""
  image = np.asarray(image, np.float64)
  rs, cs = image.shape[0] / height, image.shape[1] / width
  matrix = np.array([[cs, 0, 0.5 * cs - 0.5], [0, rs, 0.5 * rs - 0.5], [0, 0, 1]])
  out = sk_transform.warp(image, matrix, output_shape=(height, width), order=order, mode="constant", cval=0.0,
                          clip=False, preserve_range=True)
  lo, hi = image.min(), image.max()
  zero = out == 0
  out = np.clip(out, lo, hi)
  if not lo <= 0 <= hi:
    out[zero] = 0.0
  return out


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("size", [(13, 9), (40, 23), (7, 30)])
def test_resize_matches_skimage_kernels(order, size):
  rng = np.random.default_rng(order)
  image = rng.uniform(20, 200, size=(2, 17, 12, 3))  # no zero pixel, so the clip rule is exercised
  ours = np.asarray(pe.skimage_resize(jnp.asarray(image, jnp.float32), *size, order=order))
  expected = np.stack([_old_skimage_resize(im, *size, order=order) for im in image])
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)  # float32 vs float64 on values ~200
  assert ours.min() >= image.min() - 1e-3


def test_multiscale_rejects_scales_below_the_stride():
  with pytest.raises(ValueError, match="below the network's minimum"):
    pe.multiscale_maps(_fake_network, jnp.zeros((1, 10, 10, 3)), boxsize=10)  # 0.5 · 10 / 10 -> 5 px


def test_scale_multipliers_python2_division():
  assert pe.scale_multipliers(256) == (0.71875, 1.0, 2.15625, 2.0)
  assert pe.scale_multipliers(128) == (1.4375, 2.0, 4.3125, 5.0)
  assert pe.scale_multipliers(256, python2_division=False) == (0.71875, 1.4375, 2.15625, 2.875)
  assert pe.scaled_size(256, 176, 0.71875) == (184, 126)


_W_PAF = np.random.default_rng(5).standard_normal((3, 38)).astype(np.float32)
_W_HEAT = np.random.default_rng(6).standard_normal((3, 19)).astype(np.float32)


def _fake_network(x):
  """A cheap stand-in for the network: 1/8-resolution (floor) maps, smooth in the input."""
  for _ in range(3):
    x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
  return jnp.tanh(4.0 * x @ _W_PAF), jax.nn.sigmoid(4.0 * x @ _W_HEAT)


def _fake_network_np(x):
  """`_fake_network` of one (h, w, 3) image in NumPy float64."""
  for _ in range(3):
    h, w = x.shape[0] // 2, x.shape[1] // 2
    x = x[:2 * h, :2 * w].reshape(h, 2, w, 2, -1).max(axis=(1, 3))
  return np.tanh(4.0 * x @ _W_PAF), 1.0 / (1.0 + np.exp(-4.0 * x @ _W_HEAT))


def test_multiscale_maps_match_the_script_loop():
  rng = np.random.default_rng(3)
  bgr = rng.integers(0, 256, size=(2, 40, 24, 3)).astype(np.float32)
  boxsize = 50  # multipliers 0.625, 50 // 40 = 1, 1.875, 100 // 40 = 2: sizes 25, 40, 75, 80 rows
  fn = jax.jit(functools.partial(pe.multiscale_maps, _fake_network, boxsize=boxsize))
  heat, pafs = fn(jnp.asarray(bgr))
  assert heat.shape == (2, 40, 24, 19) and pafs.shape == (2, 40, 24, 38)
  for b in range(2):
    heat_avg, paf_sum = np.zeros((40, 24, 19)), np.zeros((40, 24, 38))
    for m in (0.625, 1, 1.875, 2):
      size = (np.array([40, 24]) * m).astype(np.int32)
      resized = _old_skimage_resize(bgr[b], size[0], size[1], order=3)
      out_paf, out_heat = _fake_network_np(resized / 255 - 0.5)
      heat_avg += _old_skimage_resize(out_heat, 40, 24, order=1)
      paf_sum += _old_skimage_resize(out_paf, 40, 24, order=1)
    heat_avg /= 4
    np.testing.assert_allclose(np.asarray(heat[b]), heat_avg, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pafs[b]), paf_sum, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Decoding.

# One person, (x, y), in a 96 × 128 image; every limb shorter than H / 2 (no length penalty).
SKELETON = np.array([
    (30, 12), (30, 26), (20, 26), (16, 40), (14, 52), (40, 26), (44, 40), (46, 52), (24, 52), (23, 68),
    (22, 84), (36, 52), (37, 68), (38, 84), (27, 9), (33, 9), (24, 11), (36, 11)])
H, W = 96, 128


def _plant(heatmaps, pafs, keypoints, amplitude, skip=()):
  yy, xx = np.mgrid[:H, :W]
  for part, (x, y) in enumerate(keypoints):
    if part not in skip:
      heatmaps[..., part] += amplitude * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0 ** 2))
  for (a, b), (cx, cy) in zip(pckh_lib.LIMBS, pckh_lib.PAF_CHANNELS):
    if a in skip or b in skip:
      continue
    _plant_paf(pafs, keypoints[a], keypoints[b], cx, cy)


def _plant_paf(pafs, start, end, cx, cy):
  yy, xx = np.mgrid[:H, :W]
  d = np.asarray(end, float) - start
  length = np.hypot(*d)
  t = np.clip(((xx - start[0]) * d[0] + (yy - start[1]) * d[1]) / length ** 2, 0, 1)
  near = np.hypot(xx - start[0] - t * d[0], yy - start[1] - t * d[1]) <= 2.0
  pafs[..., cx][near] = d[0] / length
  pafs[..., cy][near] = d[1] / length


def test_decoding_recovers_the_best_person():
  heat, pafs = np.zeros((H, W, 19)), np.zeros((H, W, 38))
  missing = (4, 17)  # right wrist and an ear: absent from person A
  _plant(heat, pafs, SKELETON, 0.9, skip=missing)
  person_b = SKELETON + (60, 0)
  _plant(heat, pafs, person_b, 0.4)  # weaker but complete: a valid second person
  yy, xx = np.mgrid[:H, :W]
  # A wrist-like blob above the raw threshold (0.12) but below it after σ = 3 smoothing, with PAF support.
  blob = (12, 62)
  heat[..., 4] += 0.12 * np.exp(-((xx - blob[0]) ** 2 + (yy - blob[1]) ** 2) / (2 * 4.0 ** 2))
  _plant_paf(pafs, SKELETON[3], blob, *pckh_lib.PAF_CHANNELS[3])
  # A strong stray nose with no PAF support.
  heat[..., 0] += 0.8 * np.exp(-((xx - 60) ** 2 + (yy - 88) ** 2) / (2 * 4.0 ** 2))

  peaks = pckh_lib.find_peaks(heat)
  assert len(peaks[4]) == 1 and tuple(peaks[4][0, :2]) == tuple(person_b[4])  # the blob is no peak
  assert len(peaks[0]) == 3

  kp = pckh_lib.decode_keypoints(heat, pafs)
  expected = SKELETON.copy()
  expected[list(missing)] = -1
  np.testing.assert_array_equal(kp, expected)

  # Without person A, person B is the answer; with nothing above threshold, everything is missing.
  heat_b, pafs_b = np.zeros((H, W, 19)), np.zeros((H, W, 38))
  _plant(heat_b, pafs_b, person_b, 0.4)
  np.testing.assert_array_equal(pckh_lib.decode_keypoints(heat_b, pafs_b), person_b)
  batch = pckh_lib.keypoints_from_maps(np.stack([heat_b, 0.1 * heat_b]), np.stack([pafs_b, pafs_b]))
  np.testing.assert_array_equal(batch[1], -np.ones((18, 2)))

  # estimate_keypoints is the pose function followed by the same decoding.
  images = np.zeros((2, H, W, 3), np.uint8)
  stub = lambda x: (np.stack([heat, heat_b])[: len(x)], np.stack([pafs, pafs_b])[: len(x)])
  np.testing.assert_array_equal(pckh_lib.estimate_keypoints(images, pose_fn=stub), np.stack([expected, person_b]))
  with pytest.raises(ValueError, match="exactly one"):
    pckh_lib.estimate_keypoints(images)


def _whole_image_peaks(heatmaps, threshold=0.1):
  """Step 1 written out on the whole image, as the script does it: (x, y, score) per part, row-major."""
  from scipy import ndimage  # pylint: disable=import-outside-toplevel
  out = []
  for part in range(18):
    original = heatmaps[..., part].astype(np.float64)
    m = ndimage.gaussian_filter(original, sigma=3)
    left, right, up, down = (np.zeros_like(m) for _ in range(4))
    left[1:, :], right[:-1, :], up[:, 1:], down[:, :-1] = m[:-1, :], m[1:, :], m[:, :-1], m[:, 1:]
    peak = (m >= left) & (m >= right) & (m >= up) & (m >= down) & (m > threshold)
    ys, xs = np.nonzero(peak)
    out.append(np.stack([xs, ys, original[ys, xs]], -1).reshape(-1, 3))
  return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(6))
def test_peaks_equal_the_whole_image_filter(seed, dtype):
  """`find_peaks` smooths only boxes around values above the threshold; its peaks (positions, scores,
  order) must be exactly those of the whole-image filter, on maps built to probe the boxes' edges:
  blobs at the borders and corners, far-apart blobs of one part, values just around the threshold,
  flat plateaus (ties), rings (whose smoothed centre peaks far from any large value), negative values
  and empty parts; float64 maps and float32 ones (the device's) smoothed in float64. The smoothed box
  itself must equal the whole-image filter there bit for bit."""
  rng = np.random.default_rng(seed)
  h, w = (96, 128) if seed % 2 else (61, 47)
  yy, xx = np.mgrid[:h, :w]
  heat = 0.02 * rng.standard_normal((h, w, 19))
  for part in range(18):
    kind = (part + seed) % 6
    if kind == 5:
      continue  # noise only: no value above the threshold, or a few by chance
    centres = [(rng.integers(-3, w + 3), rng.integers(-3, h + 3)) for _ in range(1 + (kind == 1))]
    if kind == 2:
      centres = [(0, 0), (w - 1, h - 1)]
    for cx, cy in centres:
      amplitude = rng.choice([0.9, 0.2, 0.1005, 0.099]) if kind != 3 else 0.5
      heat[..., part] += amplitude * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rng.uniform(1.5, 6) ** 2))
    if kind == 3:  # a plateau: many equal smoothed values
      heat[h // 4:h // 2, w // 4:w // 2, part] = 0.7
    if kind == 4:
      heat[..., part] -= 0.3 * (xx > w // 2)
    if kind == 1:  # a ring: its smoothed centre exceeds the threshold far from any value that does
      cx, cy = rng.integers(0, w), rng.integers(0, h)
      heat[..., part] += 1.0 * (np.abs(np.hypot(xx - cx, yy - cy) - 9.5) < 0.5)
  if dtype == np.float32:  # as the device returns them; part 17 all float32(0.1), just above 0.1
    heat = heat.astype(np.float32)
    heat[..., 17] = np.float32(0.1)
  from scipy import ndimage  # pylint: disable=import-outside-toplevel
  for part in range(18):
    box = pckh_lib.smoothed_box(heat[..., part])
    whole = np.pad(ndimage.gaussian_filter(heat[..., part].astype(np.float64), sigma=3), 1)
    if box is None:
      assert whole.max() <= 0.1, part
      continue
    y0, x0, z = box
    np.testing.assert_array_equal(z, whole[y0:y0 + z.shape[0], x0:x0 + z.shape[1]], err_msg=f"part {part}")
    outside = whole[1:-1, 1:-1].copy()
    outside[y0:y0 + z.shape[0] - 2, x0:x0 + z.shape[1] - 2] = 0
    assert outside.max() <= 0.1, part
  found = pckh_lib.find_peaks(heat)
  reference = _whole_image_peaks(heat)
  assert sum(len(r) for r in reference) > 0
  next_id = 0
  for part in range(18):
    np.testing.assert_array_equal(found[part][:, :3], reference[part], err_msg=f"part {part}")
    np.testing.assert_array_equal(found[part][:, 3], np.arange(next_id, next_id + len(reference[part])))
    next_id += len(reference[part])


def test_decoding_drops_small_people():
  # Three parts connected: fewer than 4, so nobody is kept.
  heat, pafs = np.zeros((H, W, 19)), np.zeros((H, W, 38))
  _plant(heat, pafs, SKELETON, 0.9, skip=tuple(p for p in range(18) if p not in (1, 2, 3)))
  np.testing.assert_array_equal(pckh_lib.decode_keypoints(heat, pafs), -np.ones((18, 2)))


# ---------------------------------------------------------------------------------------------------
# PCKh counts.


def _brute_force_pckh(pred, target, alpha=0.5):
  correct = total = used = 0
  for p, t in zip(pred.tolist(), target.tolist()):
    head = [(t[j][0], t[j][1]) for j in (0, 1, 14, 15, 16, 17) if t[j][0] != -1 and t[j][1] != -1]
    if len(head) < 2:
      continue
    w = max(x for x, _ in head) - min(x for x, _ in head)
    h = max(y for _, y in head) - min(y for _, y in head)
    used += 1
    for (px, py), (tx, ty) in zip(p, t):
      if ty != -1:
        total += 1
      if -1 in (px, py, tx, ty):
        continue
      if abs(px - tx) < w * alpha and abs(py - ty) < h * alpha:
        correct += 1
  return correct, total, used


def test_pckh_matches_a_joint_by_joint_loop():
  rng = np.random.default_rng(7)
  n = 300
  target = rng.integers(0, 120, size=(n, 18, 2))
  target[rng.random((n, 18)) < 0.25] = -1
  target[:40, [0, 1, 14, 15, 16]] = -1  # at most one head joint: mostly skipped images
  target[:20, 17] = -1
  target[5, 3] = (-7, 40)  # a negative but present coordinate (PATN's cropped borders)
  pred = target + rng.integers(-20, 21, size=target.shape)
  pred[rng.random((n, 18)) < 0.15] = -1
  pred[target == -1] = 50  # predictions where the target is missing never count
  # Boundary: head box 10 × 8; |Δx| = 5 = 0.5 w is wrong (strict), 4 is right.
  target[0] = -1
  target[0, [0, 1]] = [(50, 40), (60, 48)]
  target[0, 2] = (55, 44)
  pred[0] = -1
  pred[0, 0] = (55, 40)       # |Δx| = 5: wrong
  pred[0, 1] = (56, 47)       # right
  pred[0, 2] = (55, 40)       # |Δy| = 4 = 0.5 h: wrong
  counts = pckh_lib.pckh(pred, target)
  correct, total, used = _brute_force_pckh(pred, target)
  assert (counts["correct"], counts["total"], counts["images_used"]) == (correct, total, used)
  assert counts["images_used"] + counts["images_skipped"] == n
  assert 20 <= counts["images_skipped"] and 0 < correct < total
  assert pckh_lib.pckh(pred[:1], target[:1]) == {"correct": 1, "total": 3, "images_used": 1, "images_skipped": 0}
  halves = [pckh_lib.pckh(pred[s], target[s]) for s in (slice(0, 150), slice(150, None))]
  summed = {k: halves[0][k] + halves[1][k] for k in counts}
  assert summed == counts
  assert pckh_lib.pckh_score(counts) == correct / total
