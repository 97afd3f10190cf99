"""The training-facing FID API on a tiny stand-in network: reference-stats cache, every
sample counted, resume after interruption, sharding over several devices."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from genjax.metrics import fid_eval
from tests.metrics.conftest import REPO
from tests.metrics.tiny import DIM, tiny_features

pytestmark = pytest.mark.filterwarnings("ignore::genjax.metrics.fid.FewSamplesWarning")


@pytest.fixture(scope="module")
def features():
  return tiny_features(batch_size=4)


def _batches(n=10, size=28, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (min(4, n - i), size, size), dtype=np.uint8) for i in range(0, n, 4)]


def _sample_fn(calls=None, fail_at=None):
  def sample(key, n):
    index = int(jax.random.randint(key, (), 0, 1 << 30))
    if calls is not None:
      calls.append(index)
    if fail_at is not None and len(calls) == fail_at:
      raise KeyboardInterrupt("preempted")
    rng = np.random.default_rng(index)
    return rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32)  # float samples in [0, 1]
  return sample


def test_reference_stats_computed_once(tmp_path, features):
  path = tmp_path / "ref.npz"
  stats = fid_eval.reference_stats("toy:test", lambda: _batches(), path, features)
  assert stats["count"] == 10 and stats["mu"].shape == (DIM,) and stats["name"] == "toy:test"
  cached = fid_eval.reference_stats("toy:test", lambda: pytest.fail("recomputed"), path, features)
  np.testing.assert_array_equal(cached["sigma"], stats["sigma"])
  with pytest.warns(UserWarning, match="recomputing"):
    other = fid_eval.reference_stats("toy:test", _batches(), path, features, mode="clean")
  assert other["mode"] == "clean"


def test_evaluator_counts_every_sample_and_resumes(tmp_path, features):
  ref = fid_eval.reference_stats("toy:test", _batches(), tmp_path / "ref.npz", features)
  evaluator = fid_eval.FIDEvaluator(ref, features, num_samples=10, batch_size=4,
                                    checkpoint_every=1)
  key = jax.random.key(7)
  calls = []
  full = evaluator.evaluate(_sample_fn(calls), key)
  assert full["fid_num_samples"] == 10 and len(calls) == 3  # 4 + 4 + 2 (of a full batch of 4)
  assert np.isfinite(full["fid"]) and full["fid"] > 0

  state = tmp_path / "fid_state.npz"
  interrupted = []
  with pytest.raises(KeyboardInterrupt):
    evaluator.evaluate(_sample_fn(interrupted, fail_at=3), key, state_path=state)
  assert state.is_file()
  with np.load(state) as z:
    assert int(z["next_batch"]) == 2 and int(z["count"]) == 8
  resumed_calls = []
  resumed = evaluator.evaluate(_sample_fn(resumed_calls), key, state_path=state)
  assert resumed_calls == calls[2:]  # only the missing batch was sampled again
  assert resumed["fid_num_samples"] == 10
  np.testing.assert_allclose(resumed["fid"], full["fid"], rtol=1e-10)
  assert not state.exists()
  # A state file from a different evaluation (other key) is ignored, not mixed in.
  evaluator._save_state(state, fid_eval.RunningStats(DIM), 2, "someone else")
  np.testing.assert_allclose(evaluator.evaluate(_sample_fn(), key, state_path=state)["fid"],
                             full["fid"], rtol=1e-10)


def test_features_any_count_and_sharded_over_devices(tmp_path, features):
  """N=11 with batch 4 pads internally; on 4 simulated devices the results are the same."""
  images = np.random.default_rng(3).integers(0, 256, (11, 28, 28, 3), dtype=np.uint8)
  single = features(images, "default")
  assert single.shape == (11, DIM)
  np.testing.assert_allclose(features(images[:1], "default"), single[:1], rtol=1e-5, atol=1e-6)
  np.save(tmp_path / "images.npy", images)
  code = (
      "import numpy as np, jax\n"
      "from tests.metrics.tiny import tiny_features\n"
      "assert jax.device_count() == 4, jax.devices()\n"
      "f = tiny_features(batch_size=6)\n"
      "assert f.batch_size == 8\n"
      f"np.save({str(tmp_path / 'sharded.npy')!r}, f(np.load({str(tmp_path / 'images.npy')!r}), 'default'))\n")
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  np.testing.assert_allclose(np.load(tmp_path / "sharded.npy"), single, rtol=1e-5, atol=1e-6)


def test_cpu_compiler_option_used_and_an_unknown_one_falls_back(monkeypatch, features):
  """On CPU the network is compiled with the YNNPACK-dot option; an XLA that refuses the option
  (another jax version) gets the plain compile and the same features."""
  from genjax import compiler_options
  assert compiler_options.for_devices(jax.devices()) == compiler_options.CPU_COMPILER_OPTIONS
  images = np.random.default_rng(4).integers(0, 256, (5, 28, 28, 3), dtype=np.uint8)
  expected = features(images, "default")
  monkeypatch.setattr(compiler_options, "CPU_COMPILER_OPTIONS",
                      {"xla_cpu_experimental_ynn_fusion_type": "NOT_A_FUSION_TYPE"})
  compiler_options.cpu_accepts_options.cache_clear()
  try:
    assert compiler_options.for_devices(jax.devices()) is None
    np.testing.assert_allclose(tiny_features()(images, "default"), expected, rtol=1e-4, atol=1e-5)
  finally:
    compiler_options.cpu_accepts_options.cache_clear()
