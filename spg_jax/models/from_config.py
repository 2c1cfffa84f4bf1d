"""Builds every network of the two-stage system from a config (`configs/*.py`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from spg_jax.models import generator as generator_lib
from spg_jax.models import parsing as parsing_lib
from spg_jax.models.discriminator import PatchDiscriminator
from spg_jax.models.flownet import FlowUnet
from spg_jax.models.vgg import VGG19Features

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Networks:
  """The modules of SPGNet: stage 1, stage 2, the frozen flow network, D and the loss VGG."""

  parsing: parsing_lib.SPATN
  generator: generator_lib.SPGNetGenerator
  flownet: FlowUnet
  discriminator: PatchDiscriminator
  vgg: VGG19Features


def compute_dtype(config: ml_collections.ConfigDict) -> Any:
  if config.compute_dtype not in DTYPES:
    raise ValueError(f"config.compute_dtype = {config.compute_dtype!r}; expected one of {sorted(DTYPES)}")
  return DTYPES[config.compute_dtype]


def networks_from_config(config: ml_collections.ConfigDict) -> Networks:
  dtype = compute_dtype(config)
  m = config.model
  return Networks(
      parsing=parsing_lib.SPATN(**m.parsing.to_dict(), dtype=dtype),
      generator=generator_lib.SPGNetGenerator(generator_lib.GeneratorConfig(**m.generator.to_dict()), dtype=dtype),
      flownet=FlowUnet(**m.flownet.to_dict(), dtype=dtype),
      discriminator=PatchDiscriminator(**m.discriminator.to_dict(), dtype=dtype),
      vgg=VGG19Features(dtype=dtype),
  )


def parameter_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Trainable parameters of each network at the config's image size (shapes only, nothing allocated)."""
  nets = networks_from_config(config)
  h, w = config.data.image_size
  zeros = lambda c: jnp.zeros((1, h, w, c), jnp.float32)
  inits = {
      "parsing (SPATN)": lambda: parsing_lib.init_variables(nets.parsing, jax.random.key(0), (1, h, w)),
      "generator (SPGNet)": lambda: generator_lib.init_variables(nets.generator, jax.random.key(0), (1, h, w)),
      "flow network (FlowUnet)": lambda: nets.flownet.init(jax.random.key(0), zeros(nets.flownet.input_nc),
                                                           train=False),
      "discriminator (PatchGAN)": lambda: nets.discriminator.init(jax.random.key(0), zeros(nets.discriminator.input_nc),
                                                                  train=False),
      "VGG19 (perceptual loss, frozen)": lambda: nets.vgg.init(jax.random.key(0), zeros(3)),
  }
  return {name: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(jax.eval_shape(fn)["params"]))
          for name, fn in inits.items()}
