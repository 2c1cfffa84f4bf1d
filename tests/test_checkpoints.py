"""`spg_jax.checkpoints.Checkpointer` on its own: round trip, relative directories, retention."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from spg_jax.checkpoints import Checkpointer


def _state(value: float):
  return {"w": jnp.full((3, 2), value, jnp.float32), "step": jnp.asarray(int(value), jnp.int32)}


def test_relative_directory_round_trip_and_best_kept(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  ckpt = Checkpointer("workdir/checkpoints", keep=1)
  assert ckpt.directory == str(tmp_path / "workdir" / "checkpoints")
  for step, ssim in ((1, 0.9), (2, 0.5), (3, None)):
    ckpt.save(step, _state(step), {"step": step}, metrics=None if ssim is None else {"ssim": ssim})
  ckpt.wait()
  # The latest (3) and the best by SSIM (1) survive; 2 is neither.
  assert ckpt.all_steps() == [1, 3]
  assert ckpt.latest_step() == 3
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), _state(0))
  restored, meta = ckpt.restore(1, abstract)
  np.testing.assert_array_equal(restored["w"], np.full((3, 2), 1.0, np.float32))
  assert int(restored["step"]) == 1 and meta == {"step": 1}
  ckpt.close()
