"""Official `DualUnetGenerator_SEAN` state_dict (`latest_net_netG.pth`) -> `SPGNetGenerator` variables.

The architecture is read off the state_dict itself (variant, levels, warped levels, channel base and
cap, SEAN kernel) and can be checked against what the user asked for. Key mapping (l level, i block,
j class):

  Zencoder.model.{1,4,7,14} / .10          style_encoder/conv_{0,1,2,4} / deconv_3 (transposed)
  enc{p,a}_pre_conv.{0,1}                  enc{p,a}_pre_conv/{conv,bn}
  enc{p,a}_{l}_res_{i}.conv.{0,1}          enc{p,a}_{l}_res_{i}/{conv,bn}
  enc{p,a}_{l}_downsample.{1,2}            enc{p,a}_{l}_downsample/{conv,bn}
  enca_{l}_vis_{i}.conv_a / .conv.{0,1}    enca_{l}_vis_{i}/conv_a / conv/{conv,bn}
  dec_fuse.{0,1}                           dec_fuse/{conv,bn}
  dec_{l}_upsample.1 (.3 BN, DeepFashion)  dec_{l}_upsample (dec_{l}_upsample_bn)
  <ACE>.fc_mu{j}.weight/bias               <ACE>/fc_mu_kernel[j] (in, out) / fc_mu_bias[j]
  <ACE>.conv_gamma / .conv_beta            <ACE>/conv_gamma / conv_beta
  <ACE>.Spade.mlp_{shared.0,gamma,beta}    <ACE>/spade_{shared,gamma,beta}
  <ACE>.param_free_norm.running_*          batch_stats <ACE>/param_free_norm/{mean,var}
  <ACE>.noise_var, .blending_{gamma,beta}  same names
  dec_{l}_res_{i}.conv{,_a}.weight_orig/u/v  dec_{l}_res_{i}/conv{,_a}/kernel, batch_stats u, v
  dec_output.1                             dec_output

Deliberately ignored: every `num_batches_tracked` (unused with momentum 0.1) and every
`<ACE>.Spade.param_free_norm.*` (the official SPADE branch owns a BatchNorm it never calls).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

from spg_jax.convert.state_dict import ConversionError, StateDictReader, VariableTree, check_against_template
from spg_jax.models.generator import GeneratorConfig, SPGNetGenerator, init_variables


def infer_generator_config(state: Mapping[str, np.ndarray], source: str) -> GeneratorConfig:
  """Reads the generator's sizes from an official state_dict."""
  try:
    levels = {int(m.group(1)) for k in state if (m := re.match(r"encp_(\d+)_res_0\.", k))}
    warp_levels = {int(m.group(1)) for k in state if (m := re.match(r"enca_(\d+)_vis_0\.", k))}
    nf = state["encp_pre_conv.0.weight"].shape[0]
    max_nf = state["dec_fuse.0.weight"].shape[0]
    sean_kernel = state["dec_0_res_0.conv_norm.conv_gamma.weight"].shape[-1]
  except KeyError as e:
    raise ConversionError(f"{source}: not an SPGNet generator state_dict (missing {e.args[0]!r})") from None
  if not levels or levels != set(range(len(levels))) or warp_levels != set(range(len(warp_levels))):
    raise ConversionError(f"{source}: inconsistent encoder levels {sorted(levels)} / warped {sorted(warp_levels)}")
  variant = "deepfashion" if "dec_0_upsample.3.weight" in state else "market"
  return GeneratorConfig(variant=variant, nf=nf, max_nf=max_nf, num_scales=len(levels),
                         num_warp_scales=len(warp_levels), sean_kernel=sean_kernel)


def convert(state: Mapping[str, np.ndarray], config: GeneratorConfig, source: str) -> dict[str, Any]:
  """Maps an official generator state_dict onto `SPGNetGenerator(config)` variables.

  Raises:
    ConversionError: naming every missing, unexpected or mis-shaped key.
  """
  r = StateDictReader(state, source)
  tree = VariableTree()
  put = tree.put

  def conv_bn(torch_conv: str, torch_bn: str, path: str) -> None:
    put(f"{path}/conv", r.conv(torch_conv, bias=False))
    p, s = r.batch_norm(torch_bn)
    put(f"{path}/bn", p, s)

  def sean(prefix: str, path: str) -> None:
    put(path, {name: r.take(f"{prefix}.{name}") for name in ("noise_var", "blending_gamma", "blending_beta")})
    kernels, biases = [], []
    for j in range(config.num_classes):
      fc = r.linear(f"{prefix}.fc_mu{j}")
      kernels.append(fc["kernel"])
      biases.append(fc["bias"])
    put(path, {"fc_mu_kernel": np.stack(kernels), "fc_mu_bias": np.stack(biases)})
    put(f"{path}/conv_gamma", r.conv(f"{prefix}.conv_gamma", bias=True))
    put(f"{path}/conv_beta", r.conv(f"{prefix}.conv_beta", bias=True))
    put(f"{path}/spade_shared", r.conv(f"{prefix}.Spade.mlp_shared.0", bias=True))
    put(f"{path}/spade_gamma", r.conv(f"{prefix}.Spade.mlp_gamma", bias=True))
    put(f"{path}/spade_beta", r.conv(f"{prefix}.Spade.mlp_beta", bias=True))
    _, s = r.batch_norm(f"{prefix}.param_free_norm", affine=False)
    put(f"{path}/param_free_norm", {}, s)
    r.ignore([f"{prefix}.Spade.param_free_norm.*"], "SPADE branch's own BatchNorm, never called by ACE")

  for i, name in ((1, "conv_0"), (4, "conv_1"), (7, "conv_2"), (14, "conv_4")):
    put(f"style_encoder/{name}", r.conv(f"Zencoder.model.{i}", bias=True))
  put("style_encoder/deconv_3", r.conv_transpose("Zencoder.model.10", bias=True))

  for enc in ("encp", "enca"):
    conv_bn(f"{enc}_pre_conv.0", f"{enc}_pre_conv.1", f"{enc}_pre_conv")
  for level in range(config.num_scales):
    for enc in ("encp", "enca"):
      for i in range(2):
        conv_bn(f"{enc}_{level}_res_{i}.conv.0", f"{enc}_{level}_res_{i}.conv.1", f"{enc}_{level}_res_{i}")
      conv_bn(f"{enc}_{level}_downsample.1", f"{enc}_{level}_downsample.2", f"{enc}_{level}_downsample")
    if level < config.num_warp_scales:
      for i in range(2):
        vis = f"enca_{level}_vis_{i}"
        conv_bn(f"{vis}.conv_a.0", f"{vis}.conv_a.1", f"{vis}/conv_a")
        conv_bn(f"{vis}.conv.0", f"{vis}.conv.1", f"{vis}/conv")
  conv_bn("dec_fuse.0", "dec_fuse.1", "dec_fuse")

  for level in range(config.num_scales):
    put(f"dec_{level}_upsample", r.conv(f"dec_{level}_upsample.1", bias=False))
    if config.variant == "deepfashion":
      p, s = r.batch_norm(f"dec_{level}_upsample.3")
      put(f"dec_{level}_upsample_bn", p, s)
    sean(f"dec_{level}_upsample_norm", f"dec_{level}_upsample_norm")
    for i in range(2):
      block = f"dec_{level}_res_{i}"
      for conv in ("conv_a", "conv"):
        p, s = r.spectral_conv(f"{block}.{conv}")
        put(f"{block}/{conv}", p, s)
        sean(f"{block}.{conv}_norm", f"{block}/{conv}_norm")
  put("dec_output", r.conv("dec_output.1", bias=True))
  r.finish()

  model = SPGNetGenerator(config)
  template = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (1, 2 ** config.num_scales,
                                                                             2 ** config.num_scales)))
  return check_against_template(tree.variables(), template, source, reader=r)

