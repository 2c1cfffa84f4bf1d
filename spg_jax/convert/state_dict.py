"""Key-by-key conversion bookkeeping: every official key is consumed, deliberately ignored, or an error.

`StateDictReader` hands out PyTorch arrays already transposed to Flax layout and remembers which keys
were taken. `finish()` fails on leftovers, and `check_against_template` fails on any variable that
the converter did not produce or produced with the wrong shape, naming the paths in both cases.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterable, Mapping

import numpy as np
from flax import traverse_util


class ConversionError(ValueError):
  """A state_dict does not match the network it is converted into."""


class StateDictReader:
  """Reads a PyTorch state_dict (numpy arrays in PyTorch layout) and tracks consumed keys."""

  def __init__(self, state: Mapping[str, np.ndarray], source: str):
    self.state = dict(state)
    self.source = source
    self.consumed: set[str] = set()
    self.ignored: dict[str, str] = {}
    self._origins: dict[int, str] = {}  # id(converted array) -> official key, for error messages

  def origin(self, array: object) -> str | None:
    """The official key a converted array was made from, if it came from this reader."""
    return self._origins.get(id(array))

  def _track(self, array: np.ndarray, key: str) -> np.ndarray:
    self._origins[id(array)] = key
    return array

  def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Returns the array under `key` (optionally checking its shape) and marks it consumed."""
    if key not in self.state:
      raise ConversionError(f"{self.source}: missing key {key!r}")
    if key in self.consumed:
      raise ConversionError(f"{self.source}: key {key!r} consumed twice")
    value = np.asarray(self.state[key])
    if shape is not None and tuple(value.shape) != tuple(shape):
      raise ConversionError(f"{self.source}: key {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    self.consumed.add(key)
    return self._track(value, key)

  def ignore(self, patterns: Iterable[str], reason: str) -> None:
    """Marks keys matching any glob pattern as deliberately unused, with the reason recorded."""
    for key in self.state:
      if key not in self.consumed and any(fnmatch.fnmatchcase(key, p) for p in patterns):
        self.ignored[key] = reason

  def finish(self) -> None:
    left = sorted(set(self.state) - self.consumed - set(self.ignored))
    if left:
      shown = "\n  ".join(left[:50]) + ("\n  ..." if len(left) > 50 else "")
      raise ConversionError(f"{self.source}: {len(left)} unexpected key(s) not used by the network:\n  {shown}")

  # Layer helpers: PyTorch layout -> Flax layout.

  def conv(self, prefix: str, bias: bool) -> dict[str, np.ndarray]:
    """Conv2d `prefix.weight` (O, I, kh, kw) -> {'kernel': (kh, kw, I, O), 'bias': (O,)}."""
    key = f"{prefix}.weight"
    out = {"kernel": self._track(self.take(key).transpose(2, 3, 1, 0), key)}
    if bias:
      out["bias"] = self.take(f"{prefix}.bias")
    return out

  def conv_transpose(self, prefix: str, bias: bool) -> dict[str, np.ndarray]:
    """ConvTranspose2d `prefix.weight` (I, O, kh, kw) -> correlation kernel (kh, kw, I, O), flipped."""
    key = f"{prefix}.weight"
    w = self.take(key)
    out = {"kernel": self._track(np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)), key)}
    if bias:
      out["bias"] = self.take(f"{prefix}.bias")
    return out

  def linear(self, prefix: str) -> dict[str, np.ndarray]:
    """Linear `prefix.weight` (out, in) -> {'kernel': (in, out), 'bias': (out,)}."""
    key = f"{prefix}.weight"
    return {"kernel": self._track(self.take(key).T, key), "bias": self.take(f"{prefix}.bias")}

  def batch_norm(self, prefix: str, affine: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """BatchNorm2d -> (params {'scale', 'bias'} or {}, batch_stats {'mean', 'var'}).

    `num_batches_tracked` is ignored: with a fixed momentum PyTorch never reads it.
    """
    params = {}
    if affine:
      params = {"scale": self.take(f"{prefix}.weight"), "bias": self.take(f"{prefix}.bias")}
    stats = {"mean": self.take(f"{prefix}.running_mean"), "var": self.take(f"{prefix}.running_var")}
    self.ignore([f"{prefix}.num_batches_tracked"], "BatchNorm step counter, unused with momentum 0.1")
    return params, stats

  def spectral_conv(self, prefix: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """spectral_norm(Conv2d(bias=False)) -> ({'kernel'}, {'u', 'v'})."""
    key = f"{prefix}.weight_orig"
    kernel = self._track(self.take(key).transpose(2, 3, 1, 0), key)
    stats = {"u": self.take(f"{prefix}.weight_u"), "v": self.take(f"{prefix}.weight_v")}
    return {"kernel": kernel}, stats


class VariableTree:
  """Collects converted arrays into nested `params` / `batch_stats` dicts by '/'-separated path."""

  def __init__(self):
    self.params: dict = {}
    self.stats: dict = {}

  @staticmethod
  def _set(tree: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split("/")
    for part in parents:
      tree = tree.setdefault(part, {})
    if leaf in tree:
      raise ConversionError(f"variable {path} filled twice")
    tree[leaf] = value

  def put(self, path: str, params: Mapping[str, Any], stats: Mapping[str, Any] | None = None) -> None:
    """Adds `params` (and `stats` to `batch_stats`) under the module at `path`."""
    for name, value in params.items():
      self._set(self.params, f"{path}/{name}", value)
    for name, value in (stats or {}).items():
      self._set(self.stats, f"{path}/{name}", value)

  def variables(self) -> dict[str, dict]:
    return {"params": self.params, "batch_stats": self.stats}


def check_against_template(
    converted: Mapping[str, Any],
    template: Mapping[str, Any],
    source: str,
    reader: StateDictReader | None = None,
) -> dict[str, Any]:
  """Checks converted variables leaf by leaf against `jax.eval_shape(model.init, ...)` output.

  With `reader`, error messages also name the official key each offending array came from.
  Returns the converted variables as float32 numpy arrays in the template's nesting.
  """
  def named(path: str, array: Any) -> str:
    key = reader.origin(array) if reader is not None else None
    return f"{path} (from {key})" if key else path

  conv_flat = traverse_util.flatten_dict(dict(converted), sep="/")
  tmpl_flat = traverse_util.flatten_dict(dict(template), sep="/")
  missing = sorted(set(tmpl_flat) - set(conv_flat))
  extra = sorted(named(k, conv_flat[k]) for k in set(conv_flat) - set(tmpl_flat))
  bad_shape = sorted(
      f"{named(k, conv_flat[k])}: converted {tuple(np.shape(conv_flat[k]))}, network expects {tuple(tmpl_flat[k].shape)}"
      for k in set(conv_flat) & set(tmpl_flat)
      if tuple(np.shape(conv_flat[k])) != tuple(tmpl_flat[k].shape)
  )
  problems = []
  if missing:
    problems.append("variables the converter did not fill:\n  " + "\n  ".join(missing))
  if extra:
    problems.append("converted variables the network does not have:\n  " + "\n  ".join(extra))
  if bad_shape:
    problems.append("shape mismatches:\n  " + "\n  ".join(bad_shape))
  if problems:
    raise ConversionError(f"{source}: " + "\n".join(problems))
  out = {k: np.asarray(v, dtype=np.float32) for k, v in conv_flat.items()}
  return traverse_util.unflatten_dict(out, sep="/")
