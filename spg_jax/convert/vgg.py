"""torchvision VGG19 state_dict (`vgg19-dcbb9e9d.pth`) -> `VGG19Features` variables.

Key mapping: `features.<i>.weight` (O, I, 3, 3) / `features.<i>.bias` -> `params/conv_<i>/{kernel, bias}`
for the 13 convolutions up to relu5_1, i ∈ {0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28}.

Deliberately ignored, with the reason recorded in the reader:
  * `features.{30,32,34}.{weight,bias}`: the last three convs of block 5 come after relu5_1, the
    deepest layer the perceptual loss reads (the official `VGGLoss` slices stop at features[29]).
  * `classifier.*`: the ImageNet classifier head is never used by the loss.
Any other key (e.g. from a VGG19-BN or a different network) is reported as unexpected.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from spg_jax.convert.state_dict import StateDictReader, check_against_template
from spg_jax.models.vgg import CONV_INDICES, VGG19Features

# Parameterised layers of torchvision `vgg19().features` past relu5_1.
_UNUSED_FEATURE_CONVS = (30, 32, 34)


def convert(state: Mapping[str, np.ndarray], model: VGG19Features, source: str) -> dict[str, Any]:
  """Maps a torchvision VGG19 state_dict onto `model`'s variables.

  Args:
    state: PyTorch state_dict as numpy arrays (`features.<i>.*`, `classifier.*`).
    model: the `VGG19Features` module to fill (its dtype does not matter; parameters are float32).
    source: name of the state_dict's origin, for error messages.

  Returns:
    {'params': {'conv_<i>': {'kernel': (3, 3, I, O), 'bias': (O,)}}} as float32 numpy arrays.

  Raises:
    ConversionError: naming every missing, unexpected or mis-shaped key.
  """
  r = StateDictReader(state, source)
  params = {f"conv_{i}": r.conv(f"features.{i}", bias=True) for i in CONV_INDICES}
  r.ignore([f"features.{i}.{p}" for i in _UNUSED_FEATURE_CONVS for p in ("weight", "bias")],
           "VGG19 convs after relu5_1; the perceptual loss stops at relu5_1")
  r.ignore(["classifier.*"], "ImageNet classifier head; the perceptual loss uses conv features only")
  r.finish()
  template = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32))
  return check_against_template({"params": params}, template, source, reader=r)
