"""The project's weight-file format: a flat `.npz` of variables plus a JSON metadata record.

A weights file holds one network's Flax variables (`params`, `batch_stats`) as arrays keyed by their
'/'-joined path (`params/dec_0_res_0/conv/kernel`), and `__meta__`, a JSON string describing the
network (kind, constructor arguments) and the source it came from. It needs no pickle to read and
is what `python -m spg_jax.convert` writes and what training initialises from.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

META_KEY = "__meta__"


def save_weights(path: str | os.PathLike, variables: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
  """Writes `variables` (a nested dict of arrays) and `metadata` (JSON-serialisable) to `path`."""
  flat = traverse_util.flatten_dict(dict(variables), sep="/")
  arrays = {k: np.asarray(v) for k, v in flat.items()}
  if META_KEY in arrays:
    raise ValueError(f"variable path {META_KEY!r} is reserved")
  arrays[META_KEY] = np.array(json.dumps(dict(metadata), sort_keys=True))
  tmp = f"{os.fspath(path)}.tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)  # a killed conversion never leaves a truncated file under the final name


def load_weights(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads a weights file; returns (nested variables dict of numpy arrays, metadata dict)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"weights file not found: {os.fspath(path)}")
  with np.load(path, allow_pickle=False) as data:
    if META_KEY not in data.files:
      raise ValueError(f"{os.fspath(path)} is not an spg_jax weights file (no {META_KEY} entry)")
    metadata = json.loads(str(data[META_KEY]))
    flat = {k: data[k] for k in data.files if k != META_KEY}
  return traverse_util.unflatten_dict(flat, sep="/"), metadata


def load_network_weights(path: str | os.PathLike, network: str, missing_message: str,
                         convert_command: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads a weights file that must exist and hold `network` (its metadata's 'network').

  Raises:
    FileNotFoundError: `missing_message` (which file, where it comes from, how to convert it).
    ValueError: the file holds another network; the message names both and `convert_command`.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(missing_message)
  variables, metadata = load_weights(path)
  if metadata.get("network") != network:
    raise ValueError(f"{path}: holds network {metadata.get('network')!r}, not {network!r} "
                     f"(make it with: {convert_command})")
  return variables, metadata


def file_sha256(path: str | os.PathLike) -> str:
  """Hex SHA-256 of a file's bytes (recorded in weights metadata to identify the source file)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()
