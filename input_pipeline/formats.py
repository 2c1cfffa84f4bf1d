"""Readers (and writers, for tests and exports) of the on-disk formats of the SPGNet / Intr-Flow / PATN data.

Pure NumPy + standard library. Every reader validates what it reads and raises `FormatError` (a
`ValueError`) naming the file and the offending key / row on bad input; none returns a silently
wrong value.

Formats:

* `label/pose_label.pkl` (SPGNet, Intr-Flow): a Python-2 pickle of `{image id: 18×2 [x, y]}`, −1 for a
  missing joint, values either nested lists or NumPy arrays → `read_pose_labels`.
* PATN keypoint CSV (`*-annotation-{train,test}.csv`): ':'-separated, header
  `name:keypoints_y:keypoints_x`, two JSON lists of 18 ints per row, FIRST list = y (row), SECOND = x
  (column), −1 missing → `read_patn_annotations` (returns (x, y), the pickle's order).
* `label/split.json`: `{"train": [[sid1, sid2], ...], "test": [...], ...}` → `read_split`.
* Intr-Flow `.corr` (`util/flow_util.write_corr`): int32 W, int32 H, float32 corr[H, W, 2], uint8
  vis[H, W], all written with `ndarray.tofile` (native order, i.e. little-endian on the x86 machines that
  produced the release) and no header / padding → `read_corr`, `write_corr`; plus the loader's
  post-processing `corr_to_flow` and `smooth_visibility`.

Keypoint order everywhere: 18 joints, OpenPose/COCO-18 (`spg_jax.ops.pose_maps.KEYPOINT_NAMES`).
"""

from __future__ import annotations

import _compat_pickle
import csv
import io
import json
import math
import os
import pickle
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

NUM_KEYPOINTS = 18
MISSING = -1
PATN_HEADER = ("name", "keypoints_y", "keypoints_x")

# Intr-Flow visibility classes (mask of image 2 in a `<id2>_<id1>.corr` file).
VIS_VISIBLE = 0     # human pixel whose SMPL face is also visible in image 1
VIS_INVISIBLE = 1   # human pixel without correspondence
VIS_BACKGROUND = 2  # background

_CORR_HEADER = struct.Struct("<ii")  # width, height (int32, little-endian)
_CORR_DTYPE = np.dtype("<f4")
_VIS_DTYPE = np.dtype("u1")


class FormatError(ValueError):
  """A file does not have the expected format; the message names the file (and key / row)."""


def _fail(path: os.PathLike | str, msg: str) -> FormatError:
  return FormatError(f"{os.fspath(path)}: {msg}")


# ---------------------------------------------------------------------------------------------
# pose_label.pkl
# ---------------------------------------------------------------------------------------------


def _allowed_globals() -> dict[tuple[str, str], Any]:
  """(module, name) → object for every global the restricted unpickler may resolve.

  NumPy arrays pickle as `numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')` followed by
  `__setstate__((version, shape, numpy.dtype(...), fortran, raw_bytes))`; NumPy 2 writes the same under
  `numpy._core`. Both spellings map to the objects of the installed NumPy (importing the
  `numpy.core` shim itself is avoided: it warns under NumPy 2).
  """
  try:  # NumPy >= 2
    from numpy._core import multiarray as _ma  # type: ignore[attr-defined]
    from numpy._core import numeric as _num  # type: ignore[attr-defined]
  except ImportError:  # NumPy 1.x
    from numpy.core import multiarray as _ma  # type: ignore[no-redef]
    from numpy.core import numeric as _num  # type: ignore[no-redef]
  import _codecs

  table: dict[tuple[str, str], Any] = {
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): np.dtype,
      # Python 3 protocol-2 pickles spell `bytes` as `_codecs.encode(str, 'latin1')`; a pure function.
      ("_codecs", "encode"): _codecs.encode,
      # builtin containers (protocol 2 builds dict / list / tuple with opcodes; these cover the rest;
      # Python 2's `__builtin__` is mapped to `builtins` in `find_class`).
      ("builtins", "set"): set,
      ("builtins", "frozenset"): frozenset,
      ("builtins", "bytearray"): bytearray,
  }
  for mod in ("numpy.core", "numpy._core"):
    table[(f"{mod}.multiarray", "_reconstruct")] = _ma._reconstruct
    # numpy scalars (`list(arr)` instead of `arr.tolist()` in the producing script).
    table[(f"{mod}.multiarray", "scalar")] = _ma.scalar
    # protocol-5 out-of-band / contiguous arrays.
    if hasattr(_num, "_frombuffer"):
      table[(f"{mod}.numeric", "_frombuffer")] = _num._frombuffer
  return table


class _ForbiddenGlobal(pickle.UnpicklingError):
  """A pickle names a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
  """An unpickler that resolves only the globals of `_allowed_globals`.

  A pickle can name any importable callable (`os.system`, `builtins.eval`, `subprocess.Popen`, ...)
  and have the unpickler call it: loading an untrusted pickle with `pickle.load` runs arbitrary code.
  Here `find_class` refuses every global outside a short allow-list (NumPy array / dtype / scalar
  reconstruction, `_codecs.encode`, builtin containers), so a malicious pickle fails with
  `FormatError` before anything is called. Everything the allow-list can construct is
  plain data. Persistent ids are refused too (the default `persistent_load` raises).
  """

  _table: dict[tuple[str, str], Any] | None = None

  def find_class(self, module: str, name: str) -> Any:
    if _RestrictedUnpickler._table is None:
      _RestrictedUnpickler._table = _allowed_globals()
    # Python-2 names (`__builtin__.set`, ...) → Python 3, as the default `find_class` does with
    # fix_imports (overriding `find_class` bypasses that mapping).
    key = _compat_pickle.NAME_MAPPING.get((module, name))
    if key is None:
      key = (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
    try:
      return _RestrictedUnpickler._table[key]
    except KeyError:
      raise _ForbiddenGlobal(
          f"global '{module}.{name}' is forbidden (only NumPy array reconstruction and builtin "
          "containers are allowed)") from None


def _restricted_load(path: os.PathLike | str) -> Any:
  with open(path, "rb") as f:
    try:
      # Python-2 `str` objects (dict keys, ndarray raw data) are decoded as latin-1, as the official
      # loaders do; NumPy re-encodes latin-1 array data to the original bytes.
      return _RestrictedUnpickler(f, encoding="latin1").load()
    except _ForbiddenGlobal as e:
      raise _fail(path, f"refusing to unpickle: {e}") from e
    except Exception as e:  # noqa: BLE001 -- any corruption: EOFError, ValueError, struct.error, ...
      raise _fail(path, f"not a valid pickle ({type(e).__name__}: {e})") from e


def _as_keypoints(path, key: str, value: Any) -> np.ndarray:
  if isinstance(value, np.ndarray) and value.dtype.kind not in "iuf":
    raise _fail(path, f"keypoints of id {key!r}: non-numeric dtype {value.dtype}")
  try:
    arr = np.asarray(value)
  except (ValueError, TypeError) as e:  # ragged lists
    raise _fail(path, f"keypoints of id {key!r} are not a rectangular array ({e})") from e
  if arr.dtype.kind not in "iuf":  # bools, strings, None, objects
    raise _fail(path, f"keypoints of id {key!r}: non-numeric values (dtype {arr.dtype})")
  if arr.shape != (NUM_KEYPOINTS, 2):
    raise _fail(path, f"keypoints of id {key!r} have shape {arr.shape}, expected ({NUM_KEYPOINTS}, 2)")
  out = arr.astype(np.float32)
  if not np.all(np.isfinite(out)):
    raise _fail(path, f"keypoints of id {key!r} contain non-finite values")
  return out


def read_pose_labels(path: os.PathLike | str) -> dict[str, np.ndarray]:
  """Reads `label/pose_label.pkl`: `{image id: (18, 2) float32 [x, y]}`, −1 for a missing joint.

  The file is a Python-2 pickle (protocol 2 in practice; any protocol is accepted) of a dict whose
  values are 18×2 nested lists or NumPy arrays of (x, y) pixel coordinates (x = column). It is loaded
  with `encoding='latin1'`, as SPGNet / Intr-Flow do, through a restricted unpickler (see
  `_RestrictedUnpickler`): it only reconstructs builtin containers and NumPy arrays, so a malicious
  file raises `FormatError` instead of running code. Values are returned unchanged apart from the
  cast to float32 (−1 stays −1; the official `kp_to_map` treats a joint as missing when x < 0 or
  y < 0). Ids that are `bytes` (a pickle written from Python 3 `bytes`) are decoded as latin-1.

  Raises `FormatError` naming the file and the id for: a non-dict top level, a non-string id, a
  value that is not a numeric rectangular array of shape (18, 2), non-finite values.
  """
  obj = _restricted_load(path)
  if not isinstance(obj, Mapping):
    raise _fail(path, f"top-level object is a {type(obj).__name__}, expected a dict id -> 18x2 keypoints")
  out: dict[str, np.ndarray] = {}
  for key, value in obj.items():
    if isinstance(key, bytes):
      key = key.decode("latin1")
    if not isinstance(key, str):
      raise _fail(path, f"id {key!r} is a {type(key).__name__}, expected a string")
    if key in out:
      raise _fail(path, f"id {key!r} occurs twice (as str and bytes)")
    out[key] = _as_keypoints(path, key, value)
  return out


class _Py2PickleWriter:
  """Emits protocol-2 opcodes the way Python 2's cPickle does (str = BINSTRING, not BINUNICODE)."""

  def __init__(self):
    self.buf = io.BytesIO()
    self.memo: dict[Any, int] = {}

  def op(self, data: bytes):
    self.buf.write(data)

  def put(self, key) -> None:
    idx = len(self.memo)
    self.memo[key] = idx
    self.op(b"q" + bytes([idx]) if idx < 256 else b"r" + struct.pack("<I", idx))

  def get(self, key) -> bool:
    if key not in self.memo:
      return False
    idx = self.memo[key]
    self.op(b"h" + bytes([idx]) if idx < 256 else b"j" + struct.pack("<I", idx))
    return True

  def global_(self, module: str, name: str):
    if not self.get(("global", module, name)):
      self.op(b"c" + module.encode("ascii") + b"\n" + name.encode("ascii") + b"\n")
      self.put(("global", module, name))

  def str_(self, s: bytes | str):
    """A Python-2 `str` (a byte string)."""
    b = s.encode("latin1") if isinstance(s, str) else bytes(s)
    if len(b) < 256:
      self.op(b"U" + bytes([len(b)]) + b)  # SHORT_BINSTRING
    else:
      self.op(b"T" + struct.pack("<i", len(b)) + b)  # BINSTRING

  def int_(self, v: int):
    if 0 <= v < 256:
      self.op(b"K" + bytes([v]))  # BININT1
    elif 0 <= v < 65536:
      self.op(b"M" + struct.pack("<H", v))  # BININT2
    elif -(2**31) <= v < 2**31:
      self.op(b"J" + struct.pack("<i", v))  # BININT
    else:
      raise ValueError(f"integer {v} out of int32 range")

  def float_(self, v: float):
    self.op(b"G" + struct.pack(">d", v))  # BINFLOAT (big-endian, as pickle specifies)

  def scalar(self, v):
    if isinstance(v, (bool, np.bool_)):
      self.op(b"\x88" if v else b"\x89")
    elif isinstance(v, (int, np.integer)):
      self.int_(int(v))
    elif isinstance(v, (float, np.floating)):
      self.float_(float(v))
    else:
      raise TypeError(f"unsupported value {v!r} of type {type(v).__name__}")

  def list_(self, seq):
    self.op(b"]")  # EMPTY_LIST
    self.put(("obj", id(seq), len(self.memo)))
    if len(seq):
      self.op(b"(")  # MARK
      for item in seq:
        if isinstance(item, (list, tuple)):
          self.list_(item)
        else:
          self.scalar(item)
      self.op(b"e")  # APPENDS

  def dtype(self, dt: np.dtype):
    """`numpy.dtype(str, 0, 1)` + BUILD `(3, byteorder, None, None, None, -1, -1, 0)` (NumPy 1.x, py2)."""
    if dt.fields is not None or dt.subdtype is not None or dt.kind not in "biuf":
      raise TypeError(f"unsupported dtype {dt}")
    if self.get(("dtype", dt.str)):
      return
    self.global_("numpy", "dtype")
    self.str_(f"{dt.kind}{dt.itemsize}")
    self.op(b"K\x00K\x01\x87R")  # 0, 1, TUPLE3, REDUCE
    self.op(b"(K\x03")
    self.str_("|" if dt.itemsize == 1 else ("<" if dt.str[0] in "<=" else ">"))
    self.op(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")  # None×3, -1, -1, 0, TUPLE, BUILD
    self.put(("dtype", dt.str))

  def ndarray(self, arr: np.ndarray):
    """`numpy.core.multiarray._reconstruct(ndarray, (0,), 'b')` + BUILD (1, shape, dtype, False, raw)."""
    arr = np.ascontiguousarray(arr)
    self.global_("numpy.core.multiarray", "_reconstruct")
    self.global_("numpy", "ndarray")
    self.op(b"K\x00\x85")  # (0,)
    self.str_(b"b")
    self.op(b"\x87R")  # TUPLE3, REDUCE
    self.op(b"(K\x01")  # MARK, version 1
    self.op(b"(")
    for d in arr.shape:
      self.int_(d)
    self.op(b"t")  # shape tuple
    self.dtype(arr.dtype)
    self.op(b"\x89")  # NEWFALSE (C order)
    self.str_(arr.tobytes())
    self.op(b"tb")  # TUPLE, BUILD

  def dict_(self, d: Mapping):
    self.op(b"}")  # EMPTY_DICT
    self.put(("obj", id(d)))
    if d:
      self.op(b"(")
      for k, v in d.items():
        self.str_(k)
        if isinstance(v, np.ndarray):
          self.ndarray(v)
        elif isinstance(v, (list, tuple)):
          self.list_(v)
        else:
          raise TypeError(f"value of {k!r}: unsupported type {type(v).__name__}")
      self.op(b"u")  # SETITEMS

  def dumps(self, obj: Mapping) -> bytes:
    self.op(b"\x80\x02")  # PROTO 2
    self.dict_(obj)
    self.op(b".")
    return self.buf.getvalue()


def write_pose_labels_py2(path: os.PathLike | str, labels: Mapping[str, Any]) -> None:
  """Writes `labels` as Python 2 (NumPy 1.x) would have pickled them with protocol 2.

  Values may be NumPy arrays (written as `numpy.core.multiarray._reconstruct` + BUILD with the raw data
  as a py2 `str`, i.e. SHORT_BINSTRING / BINSTRING, and `numpy.dtype('f8', 0, 1)`) or nested lists of
  ints / floats (written as py2 lists of ints / floats). Ids are written as py2 byte strings
  (latin-1). Unlike `pickle.dumps(obj, protocol=2)` from Python 3, no `_codecs.encode` or
  `numpy._core` globals appear, so the bytes match what the official data files contain. Used by tests
  and to export dummy data in the real layout; no shape validation is done here on purpose.
  """
  data = _Py2PickleWriter().dumps(labels)
  with open(path, "wb") as f:
    f.write(data)


# ---------------------------------------------------------------------------------------------
# PATN CSV
# ---------------------------------------------------------------------------------------------


def _parse_patn_list(path, row_no: int, name: str, column: str, text: str) -> list[float]:
  try:
    values = json.loads(text)
  except json.JSONDecodeError as e:
    raise _fail(path, f"row {row_no} ({name!r}): {column} is not a JSON list ({e}): {text[:80]!r}") from e
  if not isinstance(values, list):
    raise _fail(path, f"row {row_no} ({name!r}): {column} is a {type(values).__name__}, expected a JSON list")
  if len(values) != NUM_KEYPOINTS:
    raise _fail(path, f"row {row_no} ({name!r}): {column} has {len(values)} values, expected {NUM_KEYPOINTS}")
  for v in values:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
      raise _fail(path, f"row {row_no} ({name!r}): {column} contains {v!r}, expected numbers")
  return values


def read_patn_annotations(path: os.PathLike | str) -> dict[str, np.ndarray]:
  """Reads a PATN keypoint CSV: `{image name: (18, 2) float32 [x, y]}`, −1 for a missing joint.

  Format (PATN `tool/compute_coordinates.py`, read there with `pd.read_csv(path, sep=':')`): a header
  line `name:keypoints_y:keypoints_x`, then one row per image `name:[y0, ..., y17]:[x0, ..., x17]`
  (with or without a space after each ':'). The FIRST list holds the row (y) coordinates, the SECOND
  the column (x) coordinates; they are returned swapped into the (x, y) order of `pose_label.pkl`.
  A joint is missing when x or y equals −1; both coordinates of a missing joint are returned as −1.
  Other values are kept as they are (integers in practice; floats are accepted). Blank lines are
  skipped. Row numbers in errors are 1-based file line numbers (the header is line 1).

  Raises `FormatError` naming the file, row number and name for: a wrong header, a row without
  exactly three fields, an empty or duplicate name, a list that is not JSON, does not have 18 entries
  or contains non-numbers (e.g. `np.int64(3)` as written by Python 3 + NumPy 2 `str(list(arr))`).
  """
  out: dict[str, np.ndarray] = {}
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.reader(f, delimiter=":", skipinitialspace=True)
    header = None
    for row in reader:
      row_no = reader.line_num
      if header is None:
        header = tuple(c.strip() for c in row)
        if header != PATN_HEADER:
          raise _fail(path, f"row {row_no}: header is {':'.join(row)!r}, expected {':'.join(PATN_HEADER)!r}")
        continue
      if not row or all(not c.strip() for c in row):
        continue
      name = row[0].strip()
      if len(row) != 3:
        raise _fail(path, f"row {row_no} ({name!r}): {len(row)} ':'-separated fields, expected 3")
      if not name:
        raise _fail(path, f"row {row_no}: empty name")
      if name in out:
        raise _fail(path, f"row {row_no} ({name!r}): duplicate name")
      ys = _parse_patn_list(path, row_no, name, "keypoints_y", row[1])
      xs = _parse_patn_list(path, row_no, name, "keypoints_x", row[2])
      kp = np.stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)], axis=-1)
      kp[(kp == MISSING).any(axis=-1)] = MISSING
      out[name] = kp.astype(np.float32)
    if header is None:
      raise _fail(path, f"empty file, expected the header {':'.join(PATN_HEADER)!r}")
  return out


# ---------------------------------------------------------------------------------------------
# split.json
# ---------------------------------------------------------------------------------------------


def read_split(path: os.PathLike | str,
               required: tuple[str, ...] = ("train", "test")) -> dict[str, list[tuple[str, str]]]:
  """Reads `label/split.json`: `{split name: [(source id, target id), ...]}`.

  The file is a JSON object whose every value is a list of `[sid1, sid2]` pairs of non-empty strings
  (SPGNet: keys `train`, `test`; `test_small` is derived in code, but is accepted if present). The
  keys in `required` must be present. Raises `FormatError` naming the file, key and index of the
  first bad entry.
  """
  try:
    with open(path, encoding="utf-8") as f:
      obj = json.load(f)
  except json.JSONDecodeError as e:
    raise _fail(path, f"not valid JSON ({e})") from e
  if not isinstance(obj, dict):
    raise _fail(path, f"top level is a {type(obj).__name__}, expected an object {{split: [[sid1, sid2], ...]}}")
  for key in required:
    if key not in obj:
      raise _fail(path, f"missing key {key!r} (keys: {sorted(obj)})")
  out: dict[str, list[tuple[str, str]]] = {}
  for key, pairs in obj.items():
    if not isinstance(pairs, list):
      raise _fail(path, f"[{key!r}] is a {type(pairs).__name__}, expected a list of [sid1, sid2] pairs")
    checked = []
    for i, pair in enumerate(pairs):
      if (not isinstance(pair, list) or len(pair) != 2
          or not all(isinstance(s, str) and s for s in pair)):
        raise _fail(path, f"[{key!r}][{i}] is {pair!r}, expected a pair [sid1, sid2] of non-empty strings")
      checked.append((pair[0], pair[1]))
    out[key] = checked
  return out


# ---------------------------------------------------------------------------------------------
# Intr-Flow .corr
# ---------------------------------------------------------------------------------------------


def read_corr(path: os.PathLike | str) -> tuple[np.ndarray, np.ndarray]:
  """Reads an Intr-Flow `.corr` file → (corr (H, W, 2) float32, vis (H, W) uint8).

  Layout (Intr-Flow's `util/flow_util.write_corr`, no header magic, no padding):
    bytes [0, 4)            int32 width W      (little-endian)
    bytes [4, 8)            int32 height H
    next H·W·2·4 bytes      float32 corr, C order (H, W, 2): corr[y, x] = (u, v), the absolute
                            (column, row) position in image 1 of pixel (x, y) of image 2
    next H·W bytes          uint8 vis, C order (H, W): 0 visible in both, 1 human pixel without
                            correspondence, 2 background
  The official writer uses `ndarray.tofile` (native byte order); the released files come from x86,
  hence little-endian, which is what is read here regardless of the host. A file `<id2>_<id1>.corr`
  holds the correspondence from image 2 (target) to image 1 (source).

  Raises `FormatError` for: a non-positive size, a file shorter or longer than 8 + 9·H·W bytes (the
  message gives expected and actual byte counts), vis values outside {0, 1, 2}. The official reader
  silently ignores trailing bytes; here they are an error, as they mean the header is wrong.
  """
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < _CORR_HEADER.size:
    raise _fail(path, f"truncated .corr file: {len(data)} bytes, expected at least {_CORR_HEADER.size} (header)")
  width, height = _CORR_HEADER.unpack_from(data)
  if width <= 0 or height <= 0:
    raise _fail(path, f"invalid .corr size width={width}, height={height}")
  n = width * height
  expected = _CORR_HEADER.size + n * 2 * _CORR_DTYPE.itemsize + n * _VIS_DTYPE.itemsize
  if len(data) != expected:
    kind = "truncated" if len(data) < expected else "oversized"
    raise _fail(path, f"{kind} .corr file: expected {expected} bytes for width={width}, height={height}, "
                      f"got {len(data)}")
  off = _CORR_HEADER.size
  corr = np.frombuffer(data, _CORR_DTYPE, n * 2, off).reshape(height, width, 2).astype(np.float32)
  vis = np.frombuffer(data, _VIS_DTYPE, n, off + n * 2 * _CORR_DTYPE.itemsize).reshape(height, width).copy()
  bad = vis > VIS_BACKGROUND
  if bad.any():
    y, x = np.argwhere(bad)[0]
    raise _fail(path, f"visibility value {int(vis[y, x])} at (row {y}, col {x}) is not in {{0, 1, 2}} "
                      f"({int(bad.sum())} bad pixels)")
  return corr, vis


def write_corr(path: os.PathLike | str, corr: np.ndarray, vis: np.ndarray) -> None:
  """Writes `corr` (H, W, 2) and `vis` (H, W) in the Intr-Flow `.corr` layout (see `read_corr`)."""
  corr = np.asarray(corr)
  vis = np.asarray(vis)
  if corr.ndim != 3 or corr.shape[2] != 2 or corr.shape[0] == 0 or corr.shape[1] == 0:
    raise ValueError(f"{os.fspath(path)}: corr must have shape (H, W, 2), got {corr.shape}")
  if vis.shape != corr.shape[:2]:
    raise ValueError(f"{os.fspath(path)}: vis shape {vis.shape} does not match corr {corr.shape[:2]}")
  if vis.size and (vis.min() < 0 or vis.max() > VIS_BACKGROUND or not np.all(vis == np.round(vis))):
    raise ValueError(f"{os.fspath(path)}: vis values must be in {{0, 1, 2}}")
  height, width = vis.shape
  with open(path, "wb") as f:
    f.write(_CORR_HEADER.pack(width, height))
    f.write(np.ascontiguousarray(corr, dtype=_CORR_DTYPE).tobytes())
    f.write(np.ascontiguousarray(vis, dtype=_VIS_DTYPE).tobytes())


def corr_to_flow(corr: np.ndarray, vis: np.ndarray) -> np.ndarray:
  """Correspondence → flow in pixels: `flow[y, x] = corr[y, x] − (x, y)`, zero where vis == 2.

  Channel 0 is the x (column) displacement, channel 1 the y (row) displacement, so that pixel (x, y)
  of image 2 samples image 1 at (x + flow[y, x, 0], y + flow[y, x, 1]) (`flow_2to1`, target → source).
  Mirrors Intr-Flow's `flow_util.corr_to_flow(corr, vis, order='HWC')`, which multiplies by
  (vis < 2); here background is set to exactly 0 with `np.where`, so NaN / inf left in background
  correspondences do not leak through (0 · NaN = NaN in the official code). Returns float32 (H, W, 2).
  """
  corr = np.asarray(corr, np.float32)
  vis = np.asarray(vis)
  if corr.ndim != 3 or corr.shape[2] != 2:
    raise ValueError(f"corr must have shape (H, W, 2), got {corr.shape}")
  if vis.shape != corr.shape[:2]:
    raise ValueError(f"vis shape {vis.shape} does not match corr {corr.shape[:2]}")
  h, w = vis.shape
  grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=-1)
  return np.where((vis == VIS_BACKGROUND)[..., None], np.float32(0), corr - grid).astype(np.float32)


def smooth_visibility(vis: np.ndarray, size: int = 5) -> np.ndarray:
  """Median-filters the visibility map on the body, as Intr-Flow's loader does (`vis_smooth_rate=5`).

  Intr-Flow (`data/flow_dataset.FlowDataset.read_corr`) computes `cv2.medianBlur(vis, 5)` over the
  whole map and keeps the result only at body pixels (vis != 2); background pixels keep 2. This is the
  same in pure NumPy: the median over the size×size neighbourhood (background values included, as in
  OpenCV), with the border handled by edge replication (OpenCV's `medianBlur` uses BORDER_REPLICATE).
  As in the original, a body pixel near the silhouette edge can become 2 when most of its
  neighbourhood is background. `size` must be odd and ≥ 1 (1 = no change). Returns uint8 (H, W).
  """
  vis = np.asarray(vis)
  if vis.ndim != 2:
    raise ValueError(f"vis must have shape (H, W), got {vis.shape}")
  if not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
    raise ValueError(f"size must be an odd integer >= 1, got {size!r}")
  vis = vis.astype(np.uint8)
  if size == 1:
    return vis.copy()
  r = size // 2
  padded = np.pad(vis, r, mode="edge")
  windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size)).reshape(*vis.shape, size * size)
  med = np.partition(windows, size * size // 2, axis=-1)[..., size * size // 2]
  return np.where(vis != VIS_BACKGROUND, med, vis).astype(np.uint8)
