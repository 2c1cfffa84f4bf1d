"""Loading official `.pth` files into numpy; the only place in the project that imports torch."""

from __future__ import annotations

import os

import numpy as np


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Loads a `torch.save`d state_dict (CPU tensors) as {key: numpy array}.

  Uses `weights_only=True`, so a checkpoint cannot run code while it is read. A `module.` prefix
  left by `nn.DataParallel` is stripped.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("reading .pth files needs PyTorch: pip install 'spg_jax[convert]'") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise ValueError(f"{path}: expected a state_dict (dict of tensors), got {type(state).__name__}")
  out = {}
  for key, value in state.items():
    if not hasattr(value, "detach"):
      raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    name = key[len("module."):] if key.startswith("module.") else key
    out[name] = value.detach().cpu().numpy()
  return out
