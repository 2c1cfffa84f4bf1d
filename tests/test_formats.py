"""`input_pipeline.formats`: readers of pose_label.pkl, PATN CSV, split.json and Intr-Flow .corr files."""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import struct

import numpy as np
import pytest

from input_pipeline import formats
from input_pipeline.formats import FormatError


def _keypoints(rng: np.random.Generator) -> np.ndarray:
  kp = rng.integers(0, 256, (18, 2)).astype(np.float64)
  kp[3] = -1
  return kp


def _opcodes(data: bytes) -> list[tuple[str, object]]:
  return [(op.name, arg) for op, arg, _ in pickletools.genops(data)]


# ---------------------------------------------------------------------------------------------
# pose_label.pkl
# ---------------------------------------------------------------------------------------------


def test_py2_pickle_with_numpy_arrays(tmp_path):
  rng = np.random.default_rng(0)
  labels = {
      "fashionWOMENDressesid0000262902_1front": _keypoints(rng),               # float64
      "fashionMENTees_Tanksid0000404701_7additional": _keypoints(rng).astype(np.int64),
      "0002_c1s1_000451_03": _keypoints(rng).astype(np.float32),
  }
  path = tmp_path / "pose_label.pkl"
  formats.write_pose_labels_py2(path, labels)
  data = path.read_bytes()
  ops = _opcodes(data)
  # What Python 2 + NumPy 1.x writes: protocol 2, py2 byte strings, numpy.core globals, no _codecs.
  assert ops[0] == ("PROTO", 2)
  names = {name for name, _ in ops}
  assert "BINUNICODE" not in names and "SHORT_BINSTRING" in names
  assert b"numpy.core.multiarray\n_reconstruct\n" in data
  assert b"_codecs" not in data and b"numpy._core" not in data
  # The standard unpickler (as the official code loads it) agrees with ours.
  ref = pickle.loads(data, encoding="latin1")
  out = formats.read_pose_labels(path)
  assert set(out) == set(labels) == set(ref)
  for k, v in labels.items():
    assert out[k].dtype == np.float32 and out[k].shape == (18, 2)
    np.testing.assert_array_equal(out[k], v.astype(np.float32))
    np.testing.assert_array_equal(ref[k], v)
    assert ref[k].dtype == v.dtype


def test_py2_pickle_with_lists(tmp_path):
  rng = np.random.default_rng(1)
  kp_int = _keypoints(rng).astype(int).tolist()
  kp_float = (_keypoints(rng) + 0.5).tolist()
  path = tmp_path / "pose_label.pkl"
  formats.write_pose_labels_py2(path, {"a": kp_int, "b": kp_float})
  data = path.read_bytes()
  assert b"numpy" not in data
  assert pickle.loads(data, encoding="latin1") == {"a": kp_int, "b": kp_float}
  out = formats.read_pose_labels(path)
  np.testing.assert_array_equal(out["a"], np.asarray(kp_int, np.float32))
  np.testing.assert_array_equal(out["b"], np.asarray(kp_float, np.float32))
  assert out["a"][3].tolist() == [-1, -1]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python3_pickles_also_read(tmp_path, protocol):
  kp = _keypoints(np.random.default_rng(2))
  path = tmp_path / "pose_label.pkl"
  obj = {"x": kp, "y": kp.tolist(), b"z": np.float32(kp),
         "s": [[np.float64(a), np.int64(b)] for a, b in kp.tolist()]}  # numpy scalars
  path.write_bytes(pickle.dumps(obj, protocol=protocol))
  out = formats.read_pose_labels(path)
  for k in ("x", "y", "z", "s"):
    np.testing.assert_array_equal(out[k], kp.astype(np.float32))


def test_py2_builtin_names_are_mapped(tmp_path):
  # Python 2 spells builtins `__builtin__`; an allowed container must still load.
  path = tmp_path / "x.pkl"
  path.write_bytes(b"\x80\x02c__builtin__\nset\n]K\x01a\x85R.")
  assert formats._restricted_load(path) == {1}


class _Evil:
  def __init__(self, target):
    self.target = target

  def __reduce__(self):
    return (os.system, (f"touch {self.target}",))


class _EvilEval:
  def __reduce__(self):
    return (eval, ("__import__('os').getcwd()",))


def test_malicious_pickle_is_rejected(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "pose_label.pkl"
  path.write_bytes(pickle.dumps({"a": _Evil(marker)}, protocol=2))
  with pytest.raises(FormatError, match=r"pose_label\.pkl: refusing to unpickle: global '\w+\.system' is forbidden"):
    formats.read_pose_labels(path)
  assert not marker.exists()
  path.write_bytes(pickle.dumps(_EvilEval(), protocol=2))
  with pytest.raises(FormatError, match="'__builtin__.eval' is forbidden"):
    formats.read_pose_labels(path)


@pytest.mark.parametrize("value, match", [
    (np.zeros((17, 2)), r"'bad'.*shape \(17, 2\)"),
    (np.zeros((18, 3)), r"'bad'.*shape \(18, 3\)"),
    ([[1, 2]] * 17 + [[1]], r"'bad'.*(rectangular|shape)"),
    ([["a", "b"]] * 18, r"'bad'.*non-numeric"),
    ([[float("nan"), 1.0]] * 18, r"'bad'.*non-finite"),
])
def test_bad_pose_label_values(tmp_path, value, match):
  path = tmp_path / "pose_label.pkl"
  path.write_bytes(pickle.dumps({"ok": np.zeros((18, 2)), "bad": value}, protocol=2))
  with pytest.raises(FormatError, match=r"pose_label\.pkl: .*" + match):
    formats.read_pose_labels(path)


def test_bad_pose_label_container(tmp_path):
  path = tmp_path / "pose_label.pkl"
  path.write_bytes(pickle.dumps([np.zeros((18, 2))], protocol=2))
  with pytest.raises(FormatError, match="expected a dict"):
    formats.read_pose_labels(path)
  path.write_bytes(pickle.dumps({3: np.zeros((18, 2))}, protocol=2))
  with pytest.raises(FormatError, match="id 3 is a int"):
    formats.read_pose_labels(path)
  path.write_bytes(pickle.dumps({"a": np.zeros((18, 2))}, protocol=2)[:-20])
  with pytest.raises(FormatError, match=r"pose_label\.pkl: not a valid pickle"):
    formats.read_pose_labels(path)


# ---------------------------------------------------------------------------------------------
# PATN CSV
# ---------------------------------------------------------------------------------------------


def _patn_row(name, ys, xs, space=True):
  sep = ": " if space else ":"
  return f"{name}{sep}{json.dumps(ys)}{sep}{json.dumps(xs)}"


def test_patn_csv_y_first_and_missing(tmp_path):
  ys = list(range(100, 118))  # rows
  xs = list(range(10, 28))    # columns, always != ys
  ys[2] = -1                  # R-shoulder missing through y only
  xs[5] = -1                  # L-shoulder missing through x only
  ys[7] = xs[7] = -1          # L-wrist missing
  path = tmp_path / "fasion-annotation-test.csv"
  path.write_text("name:keypoints_y:keypoints_x\n"
                  + _patn_row("a.jpg", ys, xs) + "\n"
                  + _patn_row("b.jpg", xs, ys, space=False) + "\n\n")
  out = formats.read_patn_annotations(path)
  assert list(out) == ["a.jpg", "b.jpg"]
  a = out["a.jpg"]
  assert a.dtype == np.float32 and a.shape == (18, 2)
  assert a[0].tolist() == [10, 100]   # (x, y): x from the SECOND list
  assert a[17].tolist() == [27, 117]
  for k in (2, 5, 7):
    assert a[k].tolist() == [-1, -1]
  present = [k for k in range(18) if k not in (2, 5, 7)]
  np.testing.assert_array_equal(a[present, 0], np.asarray(xs)[present])
  np.testing.assert_array_equal(a[present, 1], np.asarray(ys)[present])
  assert out["b.jpg"][0].tolist() == [100, 10]


@pytest.mark.parametrize("line, match", [
    (_patn_row("c.jpg", [1] * 17, [2] * 18), r"row 3 \('c.jpg'\): keypoints_y has 17 values"),
    (_patn_row("c.jpg", [1] * 18, [2] * 19), r"row 3 \('c.jpg'\): keypoints_x has 19 values"),
    ("c.jpg: [1]: [2]: [3]", r"row 3 \('c.jpg'\): 4 ':'-separated fields"),
    ("c.jpg: " + str([1] * 18), r"row 3 \('c.jpg'\): 2 ':'-separated fields"),
    ("c.jpg: [np.int64(1)]: [2]", r"row 3 \('c.jpg'\): keypoints_y is not a JSON list"),
    ("c.jpg: 3: " + str([2] * 18), r"row 3 \('c.jpg'\): keypoints_y is a int"),
    ("c.jpg: " + json.dumps(["1"] * 18) + ": " + str([2] * 18), r"row 3 \('c.jpg'\): keypoints_y contains '1'"),
    (_patn_row("a.jpg", [1] * 18, [2] * 18), r"row 3 \('a.jpg'\): duplicate name"),
])
def test_patn_csv_malformed_rows(tmp_path, line, match):
  path = tmp_path / "ann.csv"
  path.write_text("name:keypoints_y:keypoints_x\n" + _patn_row("a.jpg", [1] * 18, [2] * 18) + "\n" + line + "\n")
  with pytest.raises(FormatError, match=r"ann\.csv: " + match):
    formats.read_patn_annotations(path)


def test_patn_csv_bad_header(tmp_path):
  path = tmp_path / "ann.csv"
  path.write_text("name:keypoints_x:keypoints_y\n" + _patn_row("a.jpg", [1] * 18, [2] * 18) + "\n")
  with pytest.raises(FormatError, match=r"ann\.csv: row 1: header"):
    formats.read_patn_annotations(path)
  path.write_text("")
  with pytest.raises(FormatError, match="empty file"):
    formats.read_patn_annotations(path)


# ---------------------------------------------------------------------------------------------
# split.json
# ---------------------------------------------------------------------------------------------


def test_split_round_trip(tmp_path):
  path = tmp_path / "split.json"
  path.write_text(json.dumps({"train": [["a", "b"], ["b", "a"]], "test": [["c", "d"]], "test_small": []}))
  out = formats.read_split(path)
  assert out == {"train": [("a", "b"), ("b", "a")], "test": [("c", "d")], "test_small": []}


@pytest.mark.parametrize("content, match", [
    ("[]", "top level is a list"),
    ('{"train": []}', "missing key 'test'"),
    ('{"train": [], "test": {}}', r"\['test'\] is a dict"),
    ('{"train": [["a", "b"], ["a"]], "test": []}', r"\['train'\]\[1\] is \['a'\]"),
    ('{"train": [["a", 3]], "test": []}', r"\['train'\]\[0\]"),
    ('{"train": [["a", ""]], "test": []}', r"\['train'\]\[0\]"),
    ('{"train": [', "not valid JSON"),
])
def test_split_errors(tmp_path, content, match):
  path = tmp_path / "split.json"
  path.write_text(content)
  with pytest.raises(FormatError, match=r"split\.json: " + match):
    formats.read_split(path)


# ---------------------------------------------------------------------------------------------
# .corr
# ---------------------------------------------------------------------------------------------


def _corr_example(h=5, w=7, seed=0):
  rng = np.random.default_rng(seed)
  corr = rng.uniform(-3, 10, (h, w, 2)).astype(np.float32)
  vis = rng.integers(0, 3, (h, w)).astype(np.uint8)
  return corr, vis


def test_corr_round_trip_and_layout(tmp_path):
  corr, vis = _corr_example()
  path = tmp_path / "b_a.corr"
  formats.write_corr(path, corr, vis)
  data = path.read_bytes()
  h, w = vis.shape
  assert len(data) == 8 + h * w * 9
  # Layout of intrinsic_flow.util.flow_util.write_corr: int32 W, int32 H (little-endian), corr, vis.
  assert struct.unpack("<ii", data[:8]) == (w, h)
  np.testing.assert_array_equal(np.frombuffer(data[8:8 + h * w * 8], "<f4").reshape(h, w, 2), corr)
  np.testing.assert_array_equal(np.frombuffer(data[8 + h * w * 8:], "u1").reshape(h, w), vis)
  c2, v2 = formats.read_corr(path)
  assert c2.dtype == np.float32 and v2.dtype == np.uint8
  assert c2.shape == (h, w, 2) and v2.shape == (h, w)
  np.testing.assert_array_equal(c2, corr)
  np.testing.assert_array_equal(v2, vis)


def test_corr_truncated_and_oversized(tmp_path):
  corr, vis = _corr_example()
  path = tmp_path / "b_a.corr"
  formats.write_corr(path, corr, vis)
  data = path.read_bytes()
  expected = len(data)
  path.write_bytes(data[:-1])
  with pytest.raises(FormatError, match=rf"b_a\.corr: truncated .*expected {expected} bytes.*got {expected - 1}"):
    formats.read_corr(path)
  path.write_bytes(data + b"\0")
  with pytest.raises(FormatError, match=rf"oversized .*expected {expected} bytes.*got {expected + 1}"):
    formats.read_corr(path)
  path.write_bytes(data[:5])
  with pytest.raises(FormatError, match="truncated .corr file: 5 bytes"):
    formats.read_corr(path)
  path.write_bytes(struct.pack("<ii", 0, 4))
  with pytest.raises(FormatError, match="invalid .corr size"):
    formats.read_corr(path)


def test_corr_bad_vis_value(tmp_path):
  corr, vis = _corr_example()
  path = tmp_path / "b_a.corr"
  formats.write_corr(path, corr, vis)
  data = bytearray(path.read_bytes())
  h, w = vis.shape
  data[8 + h * w * 8 + 2 * w + 3] = 7  # row 2, column 3
  path.write_bytes(bytes(data))
  with pytest.raises(FormatError, match=r"b_a\.corr: visibility value 7 at \(row 2, col 3\)"):
    formats.read_corr(path)
  with pytest.raises(ValueError, match="vis values"):
    formats.write_corr(path, corr, np.full(vis.shape, 3))


def test_corr_to_flow_hand_example():
  # 2 rows × 3 columns. corr[y, x] = absolute (x, y) in image 1.
  corr = np.array([[[0, 0], [5, 1], [np.nan, 9]],
                   [[2, 3], [1, 1], [4, 0]]], np.float32)
  vis = np.array([[0, 1, 2],
                  [2, 0, 1]], np.uint8)
  flow = formats.corr_to_flow(corr, vis)
  expected = np.array([[[0, 0], [4, 1], [0, 0]],      # (0-0, 0-0), (5-1, 1-0), background
                       [[0, 0], [0, 0], [2, -1]]],    # background, (1-1, 1-1), (4-2, 0-1)
                      np.float32)
  assert flow.dtype == np.float32
  np.testing.assert_array_equal(flow, expected)


def _brute_median(vis, size):
  h, w = vis.shape
  r = size // 2
  out = vis.copy()
  for y in range(h):
    for x in range(w):
      if vis[y, x] == 2:
        continue
      vals = [vis[min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)]
              for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
      out[y, x] = sorted(vals)[len(vals) // 2]
  return out


@pytest.mark.parametrize("size", [1, 3, 5])
def test_smooth_visibility_brute_force(size):
  rng = np.random.default_rng(size)
  h, w = 13, 11
  vis = np.full((h, w), 2, np.uint8)
  vis[2:11, 3:10] = rng.integers(0, 2, (9, 7))  # a body blob touching nothing
  vis[0:4, 0:2] = rng.integers(0, 3, (4, 2))    # body at the border: exercises edge replication
  out = formats.smooth_visibility(vis, size)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, _brute_median(vis, size))
  assert np.all(out[vis == 2] == 2)


def test_smooth_visibility_bad_size():
  with pytest.raises(ValueError, match="odd"):
    formats.smooth_visibility(np.zeros((4, 4), np.uint8), 4)
