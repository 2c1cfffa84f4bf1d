"""FID in both protocols: Inception-v3 features, their converter, preprocessing, Fréchet distance, cache.

* Parity: `tests/inception_torch_reference.py` (plain torch.nn, torchvision's module names, PyTorch's
  own pooling ops) with random conv weights and random BN affine / running statistics, exported as a
  torchvision-format state_dict (plus the fc / AuxLogits keys of the official files), goes through
  `spg_jax.convert.inception.convert`; pool features must agree within max |Δ| ≤ 1e-4 · max |ref|
  (float32, highest matmul precision; observed ~1e-6 relative) on 2 non-square 96×112 inputs (odd
  and even sizes before the floor-mode max-pools, a 1×2 Mixed_7c map where padding-counting matters
  most) and, end to end from [-1, 1] 256×176 images through each protocol's preprocessing, at 299×299.
* The real torchvision `inception_v3` and `pytorch_fid.inception.InceptionV3` with random weights:
  skipped unless both import (not on the development machine).
* Resize parity against `F.interpolate(mode='bilinear', align_corners=False)` up and down: ≤ 1e-6.
* Fréchet distance against closed forms and an eigenvalue-based brute force; the eps fallback; the
  statistics cache; the legacy remainder drop.
"""

from __future__ import annotations

import argparse
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg

from spg_jax.convert import inception as convert_inception
from spg_jax.convert.state_dict import ConversionError
from spg_jax.metrics import fid
from spg_jax.metrics import inception as inc
from spg_jax.weights import save_weights
from tests import inception_torch_reference as tref
from tests.conftest import nchw_to_nhwc

REL_TOL = 1e-4
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _other(variant: str) -> str:
  return "pytorch_fid" if variant == "torchvision" else "torchvision"


def _assert_close(ours, ref, what: str) -> float:
  ours, ref = np.asarray(ours), np.asarray(ref)
  assert ours.shape == ref.shape, what
  scale = np.abs(ref).max()
  err = np.abs(ours - ref).max()
  assert scale > 0.1, f"{what}: degenerate reference (max |ref| {scale})"
  assert err <= REL_TOL * scale, f"{what}: max |Δ| {err:.3e} vs scale {scale:.3e}"
  return err / scale


def _torch_protocol_input(images_nhwc: np.ndarray, variant: str) -> torch.Tensor:
  """§5.4 in torch: [-1, 1] -> [0, 1] -> bilinear 299 (align_corners False) -> protocol scaling."""
  x = torch.from_numpy(np.ascontiguousarray(((images_nhwc + 1.0) * 0.5).astype(np.float32).transpose(0, 3, 1, 2)))
  x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
  if variant == "pytorch_fid":
    return 2 * x - 1
  scale = torch.tensor(STD / 0.5, dtype=torch.float32).view(1, 3, 1, 1)
  shift = torch.tensor((MEAN - 0.5) / 0.5, dtype=torch.float32).view(1, 3, 1, 1)
  return x * scale + shift


@pytest.fixture(scope="module", params=inc.VARIANTS)
def setup(request):
  variant = request.param
  ref = tref.randomize_(tref.InceptionReference(variant), seed=0)
  state = tref.numpy_state(ref)
  state.update(tref.official_extras(variant))
  variables = convert_inception.convert(state, variant, f"random_{variant}")
  return variant, ref, state, variables


# ---------------------------------------------------------------------------------------------------
# Network parity.


def test_pool_features_match_torch_reference_non_square(setup):
  variant, ref, _, variables = setup
  x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 96, 112)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.from_numpy(x)).numpy()
  ours = inc.InceptionV3Features(variant=variant).apply(variables, nchw_to_nhwc(x))
  assert ours.dtype == jnp.float32 and ours.shape == (2, 2048)
  _assert_close(ours, expected, variant)
  # The pooling variant matters at this tolerance: the same weights with the other pool branches
  # are far off, so the test would catch a swapped count_include_pad or E_2 max-pool.
  wrong = inc.InceptionV3Features(variant=_other(variant)).apply(variables, nchw_to_nhwc(x))
  assert np.abs(np.asarray(wrong) - expected).max() > 100 * REL_TOL * np.abs(expected).max()


def test_protocol_pipeline_at_299_matches_torch(setup):
  variant, ref, _, variables = setup
  images = np.random.default_rng(2).uniform(-1, 1, (1, 256, 176, 3)).astype(np.float32)
  with torch.no_grad():
    expected = ref(_torch_protocol_input(images, variant)).numpy()
  net_input = inc.preprocess(jnp.asarray(images), variant)
  assert net_input.shape == (1, 299, 299, 3)
  ours = jax.jit(inc.InceptionV3Features(variant=variant).apply)(variables, net_input)
  _assert_close(ours, expected, f"{variant} at 299")


def test_converted_layout(setup):
  variant, ref, state, variables = setup
  torch_blocks = sorted(name for name, m in ref.named_modules() if isinstance(m, tref.Conv))
  prefixes = convert_inception.basic_conv_prefixes(variant)
  assert len(prefixes) == 94
  assert sorted(p.replace("/", ".") for p in prefixes) == torch_blocks
  assert set(variables) == {"params", "batch_stats"}
  leaves = jax.tree_util.tree_leaves(variables["params"])
  # torchvision's 27,161,264 parameters minus fc (2,049,000) and AuxLogits (3,326,696).
  assert sum(leaf.size for leaf in leaves) == 21_785_568
  block = variables["params"]["Mixed_6b"]["branch7x7_2"]
  assert block["conv"]["kernel"].shape == (1, 7, 128, 128)  # (1, 7) stays (kh=1, kw=7)
  np.testing.assert_array_equal(block["conv"]["kernel"],
                                state["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["batch_stats"]["Mixed_6b"]["branch7x7_2"]["bn"]["var"],
                                state["Mixed_6b.branch7x7_2.bn.running_var"])
  assert convert_inception.infer_variant(state, "x") == variant


def test_converter_names_bad_keys(setup):
  variant, _, state, _ = setup
  missing = {k: v for k, v in state.items()
             if k not in ("Mixed_7c.branch_pool.bn.running_var", "Conv2d_1a_3x3.conv.weight")}
  with pytest.raises(ConversionError, match="2 missing") as e:
    convert_inception.convert(missing, variant, "src")
  assert "Mixed_7c.branch_pool.bn.running_var" in str(e.value) and "Conv2d_1a_3x3.conv.weight" in str(e.value)

  with pytest.raises(ConversionError, match=r"unexpected key.*\n.*Mixed_5b\.branch_extra\.conv\.weight"):
    convert_inception.convert({**state, "Mixed_5b.branch_extra.conv.weight": np.zeros((1,), np.float32)}, variant, "src")

  bad = dict(state)
  bad["Mixed_6c.branch7x7_2.conv.weight"] = state["Mixed_6c.branch7x7_2.conv.weight"].transpose(0, 1, 3, 2)
  with pytest.raises(ConversionError, match=r"Mixed_6c/branch7x7_2/conv/kernel \(from Mixed_6c\.branch7x7_2\.conv\.weight\)"):
    convert_inception.convert(bad, variant, "src")

  with pytest.raises(ConversionError, match=f"looks like the '{variant}' file"):
    convert_inception.convert(state, _other(variant), "src")


def test_cli_run_writes_loadable_weights(setup, tmp_path):
  variant, _, state, variables = setup
  parser = argparse.ArgumentParser()
  parser.add_argument("--input")
  convert_inception.add_arguments(parser)
  pth = tmp_path / "inception.pth"
  # Only the tensors the network needs plus the fc head: a smaller file keeps the torch round trip quick.
  small = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in small.items()}, str(pth))
  args = parser.parse_args(["--input", str(pth)])  # no --variant: detected from fc.weight
  converted, meta = convert_inception.run(args)
  assert meta["network"] == inc.NETWORK and meta["config"] == {"variant": variant}
  out = tmp_path / "inception.npz"
  save_weights(out, converted, meta)
  loaded = inc.load_inception_weights(out, variant)
  for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="must not be mixed"):
    inc.load_inception_weights(out, _other(variant))
  with pytest.raises(SystemExit):
    parser.parse_args(["--input", "x", "--variant", "tf"])


@pytest.mark.parametrize("variant", inc.VARIANTS)
def test_missing_weights_file_says_where_to_get_it(variant, tmp_path):
  path = tmp_path / "weights" / f"inception_{variant}.npz"
  with pytest.raises(FileNotFoundError) as e:
    inc.load_inception_weights(path, variant)
  msg = str(e.value)
  official = "inception_v3_google-" if variant == "torchvision" else "pt_inception-2015-12-05-6726825d.pth"
  size = "104 MB" if variant == "torchvision" else "91-96 MB"
  for needle in (str(path), official, size, f"python -m spg_jax.convert inception --variant {variant}"):
    assert needle in msg


def test_input_checks():
  model = inc.InceptionV3Features()
  with pytest.raises(ValueError, match="smaller than 75"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 74, 299, 3)))
  with pytest.raises(ValueError, match="unknown Inception variant"):
    inc.preprocess(jnp.zeros((1, 8, 8, 3)), "tf")


def _import_or_skip(name: str):
  try:
    return pytest.importorskip(name)
  except Exception as e:  # pylint: disable=broad-except
    # A torchvision built for another torch raises RuntimeError / AttributeError, not ImportError.
    pytest.skip(f"{name} does not import: {type(e).__name__}: {e}")


def test_matches_real_torchvision_and_pytorch_fid(monkeypatch):
  """End to end at 299 against the real libraries with random weights (runs where they are installed)."""
  tv_models = _import_or_skip("torchvision.models")
  pfi = _import_or_skip("pytorch_fid.inception")
  images = np.random.default_rng(5).uniform(-1, 1, (2, 256, 176, 3)).astype(np.float32)

  # Legacy: torchvision's own Inception3; fc replaced by Identity so the output is the pool feature
  # (dropout is inactive in eval mode), transform_input off as in the legacy code's block-wise use.
  net = tv_models.inception_v3(weights=None, aux_logits=True, init_weights=True)
  tref.randomize_(net, seed=3)
  net.transform_input = False
  state = tref.numpy_state(net)
  variables = convert_inception.convert(state, "torchvision", "torchvision.models.inception_v3")
  net.fc = torch.nn.Identity()
  with torch.no_grad():
    expected = net(_torch_protocol_input(images, "torchvision")).numpy()
  ours = inc.make_feature_fn(variables, "torchvision")(jnp.asarray(images))
  _assert_close(ours, expected, "torchvision.models.inception_v3")

  # Standard: pytorch-fid's InceptionV3 (patched FID blocks) with its download replaced by a random
  # state_dict, resizing and 2x-1 scaling done by pytorch-fid itself from [0, 1] inputs.
  rand = tref.randomize_(tref.InceptionReference("pytorch_fid"), seed=4)
  rand_state = {**tref.numpy_state(rand), **tref.official_extras("pytorch_fid")}
  monkeypatch.setattr(pfi, "load_state_dict_from_url",
                      lambda *a, **k: {k2: torch.from_numpy(v) for k2, v in rand_state.items()})
  fid_net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
  fid_net.eval()
  # The (strict) load went through the patched download: the first conv holds our random weights.
  np.testing.assert_array_equal(fid_net.blocks[0][0].conv.weight.detach().numpy(),
                                rand_state["Conv2d_1a_3x3.conv.weight"])
  variables = convert_inception.convert(rand_state, "pytorch_fid", "pytorch_fid random")
  x01 = torch.from_numpy(np.ascontiguousarray(((images + 1.0) * 0.5).transpose(0, 3, 1, 2)))
  with torch.no_grad():
    expected = fid_net(x01)[0][:, :, 0, 0].numpy()
  ours = inc.make_feature_fn(variables, "pytorch_fid")(jnp.asarray(images))
  _assert_close(ours, expected, "pytorch_fid.inception.InceptionV3")


# ---------------------------------------------------------------------------------------------------
# Resize and preprocessing.


@pytest.mark.parametrize("in_hw,out_hw", [
    ((256, 176), (299, 299)),  # SPGNet crops, up-sampled
    ((512, 352), (299, 299)),  # high-res, down-sampled (no antialiasing in torch)
    ((128, 64), (299, 299)),   # Market-1501
    ((7, 400), (3, 11)),       # down in H, up in W
    ((299, 299), (299, 299)),  # identity
])
def test_resize_matches_torch_bilinear(in_hw, out_hw):
  x = np.random.default_rng(3).uniform(0, 1, (2, *in_hw, 3)).astype(np.float32)
  expected = F.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=out_hw, mode="bilinear",
                           align_corners=False).numpy().transpose(0, 2, 3, 1)
  ours = np.asarray(inc.resize_bilinear_torch(jnp.asarray(x), out_hw))
  assert ours.shape == expected.shape
  assert np.abs(ours - expected).max() <= 1e-6
  if in_hw[0] > out_hw[0]:
    # Why a dedicated resize: jax.image.resize antialiases down-sampling by default, torch does not.
    antialiased = np.asarray(jax.image.resize(x, expected.shape, "linear"))
    assert np.abs(antialiased - expected).max() > 0.05


@pytest.mark.parametrize("variant", inc.VARIANTS)
def test_preprocessing_matches_numpy_protocol(variant):
  images = np.random.default_rng(4).uniform(-1, 1, (2, 128, 64, 3)).astype(np.float32)
  # The protocols resize float32 tensors; the per-channel constants are then applied in float64 here.
  x01 = np.ascontiguousarray(((images + 1) / 2).transpose(0, 3, 1, 2))
  resized = F.interpolate(torch.from_numpy(x01), size=(299, 299), mode="bilinear",
                          align_corners=False).numpy().transpose(0, 2, 3, 1).astype(np.float64)
  if variant == "torchvision":
    expected = resized * (STD / 0.5) + (MEAN - 0.5) / 0.5  # §5.4: x*(std/0.5) + (mean-0.5)/0.5
  else:
    expected = 2 * resized - 1
  ours = np.asarray(inc.preprocess(jnp.asarray(images), variant))
  assert ours.dtype == np.float32
  assert np.abs(ours - expected).max() <= 1e-6
  # Range of each protocol's network input, from black and white images.
  ends = np.asarray(inc.preprocess(jnp.stack([-jnp.ones((80, 80, 3)), jnp.ones((80, 80, 3))]), variant))
  if variant == "torchvision":
    np.testing.assert_allclose(ends[0, 0, 0], [-0.03, -0.088, -0.188], atol=1e-6)
    np.testing.assert_allclose(ends[1, 0, 0], [0.428, 0.36, 0.262], atol=1e-6)
  else:
    np.testing.assert_allclose(ends[:, 0, 0], [[-1] * 3, [1] * 3], atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Fréchet distance and statistics.


def _brute_force_fid(mu1, s1, mu2, s2):
  # tr sqrt(S1 S2) = Σ sqrt(λ_i) with λ the eigenvalues of S1^½ S2 S1^½ (similar to S1 S2, but symmetric PSD).
  w, v = linalg.eigh(s1)
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  lam = np.clip(linalg.eigvalsh(root1 @ s2 @ root1), 0, None)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(lam)))


def test_frechet_distance_matches_brute_force_and_closed_forms():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))
  b = rng.normal(0.3, 1.5, size=(150, 12)) @ rng.normal(size=(12, 12))
  (mu1, s1), (mu2, s2) = fid.statistics(a), fid.statistics(b)
  value = fid.frechet_distance(mu1, s1, mu2, s2)
  assert isinstance(value, float)
  assert value == pytest.approx(_brute_force_fid(mu1, s1, mu2, s2), rel=1e-9)
  assert fid.fid_from_features(a, b) == value
  assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
  # 1-D Gaussians: (m1 - m2)² + s1 + s2 - 2 sqrt(s1 s2).
  m1, v1, m2, v2 = 0.7, 2.0, -1.2, 0.5
  assert fid.frechet_distance([m1], [[v1]], [m2], [[v2]]) == pytest.approx(
      (m1 - m2) ** 2 + v1 + v2 - 2 * np.sqrt(v1 * v2), rel=1e-12)
  # Independent dimensions add up.
  d1, d2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  assert fid.frechet_distance(np.zeros(3), np.diag(d1), np.ones(3), np.diag(d2)) == pytest.approx(
      3 + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2), rel=1e-12)
  with pytest.raises(ValueError, match="shapes"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # scipy's "Matrix is singular" is the point
def test_singular_product_takes_the_eps_fallback(monkeypatch, caplog):
  calls = []
  real_sqrtm = linalg.sqrtm

  def spy(m):
    calls.append(np.array(m))
    return real_sqrtm(m)

  monkeypatch.setattr(fid.linalg, "sqrtm", spy)
  # sigma1 · sigma2 = [[0, 1], [0, 0]] is nilpotent: it has no square root and scipy returns inf.
  s1, s2, eps = np.array([[0.0, 1.0], [0.0, 0.0]]), np.eye(2), 1e-6
  with caplog.at_level(logging.WARNING):
    value = fid.frechet_distance(np.zeros(2), s1, np.zeros(2), s2)
  assert len(calls) == 2 and "not finite" in caplog.text
  np.testing.assert_array_equal(calls[1], (s1 + eps * np.eye(2)) @ (s2 + eps * np.eye(2)))
  # (s1 + eps I)(s2 + eps I) is upper triangular with diagonal eps (1 + eps): trace of its root is known.
  assert value == pytest.approx(0 + 2 - 2 * 2 * np.sqrt(eps * (1 + eps)), rel=1e-9)
  assert np.isfinite(value)


def test_significant_imaginary_part_is_an_error():
  # Not a covariance: sqrtm(diag(-1, 1)) = diag(i, 1).
  with pytest.raises(ValueError, match="imaginary"):
    fid.frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))


def test_statistics_float64_and_drop_remainder():
  feats = np.random.default_rng(1).normal(size=(130, 5)).astype(np.float32)
  mu, sigma = fid.statistics(feats)
  assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (5, 5)
  np.testing.assert_allclose(mu, feats.astype(np.float64).mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64), rowvar=False), rtol=1e-12)
  # Legacy: only N // 64 * 64 = 128 rows, the first ones.
  mu_l, sigma_l = fid.statistics(feats, drop_remainder_batch=64)
  np.testing.assert_array_equal(mu_l, feats[:128].astype(np.float64).mean(0))
  np.testing.assert_array_equal(sigma_l, np.cov(feats[:128].astype(np.float64), rowvar=False))
  assert fid.apply_drop_remainder(np.zeros((8570, 1)), 64).shape[0] == 8512
  assert fid.apply_drop_remainder(feats, None).shape[0] == 130
  other = feats[::-1] + 1
  assert fid.fid_from_features(feats, other, drop_remainder_batch=64) == fid.frechet_distance(
      *fid.statistics(feats[:128]), *fid.statistics(other[:128]))
  with pytest.raises(ValueError, match="fewer than one batch"):
    fid.statistics(feats[:50], drop_remainder_batch=64)
  with pytest.raises(ValueError, match="at least 2"):
    fid.statistics(feats[:1])


def test_statistics_cache_reuses_only_on_an_equal_key(tmp_path):
  rng = np.random.default_rng(2)
  calls = []

  def compute():
    calls.append(1)
    return fid.statistics(rng.normal(size=(20, 3)))

  key = {"protocol": "torchvision", "weights_sha256": "ab" * 32, "images": ["b.jpg", "a.jpg"],
         "image_size": [256, 176], "num_images": np.int64(20)}
  mu, sigma = fid.cached_statistics(tmp_path / "cache", key, compute)
  assert len(calls) == 1
  # Same key, keys listed in another order: reused, bit for bit.
  mu2, sigma2 = fid.cached_statistics(tmp_path / "cache", dict(reversed(list(key.items()))), compute)
  assert len(calls) == 1
  np.testing.assert_array_equal(mu, mu2)
  np.testing.assert_array_equal(sigma, sigma2)
  # Any change to the key recomputes (here: other weights, another image order, another protocol).
  for change in ({"weights_sha256": "cd" * 32}, {"images": ["a.jpg", "b.jpg"]}, {"protocol": "pytorch_fid"}):
    fid.cached_statistics(tmp_path / "cache", {**key, **change}, compute)
  assert len(calls) == 4
  files = sorted(os.listdir(tmp_path / "cache"))
  assert len(files) == 4 and all(f.startswith("fid_stats_") and f.endswith(".npz") for f in files)  # no temp files
  # A file whose stored key differs from its name's key (e.g. copied by hand) is not trusted.
  path = fid.cache_path(tmp_path / "cache", key)
  other = fid.cache_path(tmp_path / "cache", {**key, "protocol": "pytorch_fid"})
  os.replace(other, path)
  fid.cached_statistics(tmp_path / "cache", key, compute)
  assert len(calls) == 5
  with pytest.raises(TypeError, match="sorted list"):
    fid.cached_statistics(tmp_path / "cache", {"images": {"a.jpg"}}, compute)


def test_files_digest_tracks_content_and_names(tmp_path):
  for name, data in (("a.jpg", b"1"), ("b.jpg", b"2")):
    (tmp_path / name).write_bytes(data)
  paths = [tmp_path / "b.jpg", tmp_path / "a.jpg"]
  digest = fid.files_digest(paths, root=tmp_path)
  assert digest == fid.files_digest(paths[::-1], root=tmp_path)
  (tmp_path / "a.jpg").write_bytes(b"3")
  assert fid.files_digest(paths, root=tmp_path) != digest
