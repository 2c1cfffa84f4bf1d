"""`spg_jax.jax_setup`: which compilation cache a config value means, and that the setting reaches JAX."""

from __future__ import annotations

import os

import jax
import pytest

from spg_jax import jax_setup


def test_cache_directory_rules(monkeypatch, tmp_path):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
  default = os.path.join(os.path.expanduser("~"), ".cache", "spg_jax", "jax_compilation")
  assert jax_setup.resolve_compilation_cache_dir(None) == default
  assert jax_setup.resolve_compilation_cache_dir(None, multi_process=True) is None
  assert jax_setup.resolve_compilation_cache_dir("") is None
  assert jax_setup.resolve_compilation_cache_dir("~/x") == os.path.join(os.path.expanduser("~"), "x")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert jax_setup.resolve_compilation_cache_dir(None) == str(tmp_path / "xdg" / "spg_jax" / "jax_compilation")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
  assert jax_setup.resolve_compilation_cache_dir(None) == str(tmp_path / "env")
  assert jax_setup.resolve_compilation_cache_dir(None, multi_process=True) == str(tmp_path / "env")
  assert jax_setup.resolve_compilation_cache_dir("") is None  # an explicit '' wins over the environment
  assert jax_setup.resolve_compilation_cache_dir(str(tmp_path / "cfg")) == str(tmp_path / "cfg")


@pytest.fixture
def restore_jax_config():
  saved = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir", "jax_threefry_gpu_kernel_lowering")}
  yield
  for k, v in saved.items():
    jax.config.update(k, v)


def test_configure_sets_jax_and_creates_the_directory(tmp_path, restore_jax_config):
  del restore_jax_config
  cache = tmp_path / "a" / "cache"
  assert jax_setup.configure_jax(str(cache)) == str(cache)
  assert cache.is_dir()
  assert jax.config.jax_compilation_cache_dir == str(cache)
  assert jax.config.jax_threefry_gpu_kernel_lowering
  assert jax_setup.configure_jax("") is None
  assert jax.config.jax_compilation_cache_dir is None
