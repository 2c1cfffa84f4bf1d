"""Official `NLayerDiscriminator` state_dict (`latest_net_netD.pth`) -> `PatchDiscriminator` variables.

Key mapping (n_layers = 3; the Sequential's other indices are LeakyReLUs and the Sigmoid):

  model.0                  conv_0   (bias)
  model.{2,5,8}            conv_{2,5,8}   (no bias)
  model.{3,6,9}            norm_{3,6,9}   (BatchNorm: params scale/bias, batch_stats mean/var)
  model.11                 conv_11  (bias, the output conv)

Deliberately ignored: every `num_batches_tracked` (unused with momentum 0.1).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from spg_jax.convert.state_dict import StateDictReader, check_against_template
from spg_jax.models.discriminator import PatchDiscriminator, layer_indices


def init_template(model: PatchDiscriminator) -> Any:
  """Shapes of `model`'s variables, from an abstract init at an input size with a valid output."""
  side = 2 ** (model.n_layers + 3)
  x = jax.ShapeDtypeStruct((1, side, side, model.input_nc), jnp.float32)
  return jax.eval_shape(lambda inp: model.init(jax.random.key(0), inp, train=False), x)


def convert(state: Mapping[str, np.ndarray], model: PatchDiscriminator, source: str) -> dict[str, Any]:
  """Maps an official discriminator state_dict onto `model`'s variables.

  Args:
    state: the state_dict as numpy arrays in PyTorch layout.
    model: the `PatchDiscriminator` to fill (its `n_layers` fixes the expected keys).
    source: the state_dict's file name, for error messages.

  Returns:
    {'params': ..., 'batch_stats': ...} float32 numpy arrays.

  Raises:
    ConversionError: naming every missing, unexpected or mis-shaped key.
  """
  r = StateDictReader(state, source)
  params: dict = {"conv_0": r.conv("model.0", bias=True)}
  stats: dict = {}
  conv_idx, norm_idx, last_idx = layer_indices(model.n_layers)
  for c, b in zip(conv_idx, norm_idx):
    params[f"conv_{c}"] = r.conv(f"model.{c}", bias=False)
    params[f"norm_{b}"], stats[f"norm_{b}"] = r.batch_norm(f"model.{b}")
  params[f"conv_{last_idx}"] = r.conv(f"model.{last_idx}", bias=True)
  r.finish()
  return check_against_template({"params": params, "batch_stats": stats}, init_template(model), source, reader=r)
