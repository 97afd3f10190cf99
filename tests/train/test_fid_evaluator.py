"""The loop's FID/KID evaluator: real data and model, a tiny stand-in feature net."""

import math

import jax
import pytest

from genjax.train.fid_evaluator import TrainingFID
from genjax.train.run import Run
from tests.helpers import smoke_config
from tests.metrics.tiny import tiny_features


class Interrupt(Exception):
  pass


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
  config = smoke_config("vae", {"eval.fid_samples": 24, "eval.fid_reference_count": 40,
                                "eval.batch_size": 8}, data_dir=data_dir)
  run = Run.create(config, str(tmp_path_factory.mktemp("fid_run")))
  return run, run.init_state(), tiny_features(batch_size=8)


def test_fid_and_kid_from_samples(setup):
  run, state, features = setup
  fid = TrainingFID(run, features)
  out = fid(state, jax.random.PRNGKey(0), step=1)
  assert out["fid_num_samples"] == 24
  assert math.isfinite(out["fid"]) and out["fid"] > 0
  assert math.isfinite(out["kid"]) and math.isfinite(out["kid_std"])
  assert fid.reference()["count"] == 40  # exactly the first 40 test images
  # Deterministic: the same key gives the same samples and the same numbers.
  again = TrainingFID(run, features)(state, jax.random.PRNGKey(0), step=2)
  assert again["fid"] == pytest.approx(out["fid"], rel=1e-9)


def test_interrupted_fid_resumes_to_the_same_value(setup, monkeypatch):
  run, state, features = setup
  straight = TrainingFID(run, features)(state, jax.random.PRNGKey(3), step=5)

  calls, sample = [], run.sample

  def dying_sampler(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise Interrupt()
    return sample(*args, **kwargs)

  fid = TrainingFID(run, features, checkpoint_every=1)
  with monkeypatch.context() as m:
    m.setattr(run, "sample", dying_sampler)
    with pytest.raises(Interrupt):
      fid(state, jax.random.PRNGKey(3), step=7)
  assert fid.pending(7)
  resumed = TrainingFID(run, features, checkpoint_every=1)(state, jax.random.PRNGKey(3), step=7)
  assert not fid.pending(7)
  assert resumed["fid"] == pytest.approx(straight["fid"], rel=1e-9)
  assert resumed["kid"] == pytest.approx(straight["kid"], rel=1e-6)
