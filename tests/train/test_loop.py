"""The one training loop, end to end on the VAE smoke config with real data."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

from genjax.train.checkpoint import Checkpointer
from genjax.train.loop import train_and_evaluate
from genjax.train.run import Run
from tests.helpers import smoke_config


def _params_equal(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b))


def test_train_writes_workdir(tmp_path, data_dir):
  config = smoke_config("vae", data_dir=data_dir)
  state = train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == config.total_steps
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["family"] == "vae" and saved["batch_size"] == config.batch_size
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert all("step" in l for l in lines)
  train_lines = [l for l in lines if "train/loss" in l]
  assert [l["step"] for l in train_lines] == list(range(config.log_every, config.total_steps + 1, config.log_every))
  eval_lines = [l for l in lines if "eval/bits_per_dim" in l]
  assert eval_lines and 0 < eval_lines[-1]["eval/bits_per_dim"] < 16
  assert glob.glob(str(tmp_path / "samples" / "samples_*.png"))
  assert glob.glob(str(tmp_path / "samples" / "reconstructions_*.png"))
  assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  assert sorted(os.listdir(tmp_path / "checkpoints"))[-1].endswith(str(config.total_steps))


# The diffusion family's bitwise resume is tested on its text-conditioned form
# (tests/train/test_conditions_and_stages.py), the autoencoder's on its loop run
# (tests/families/test_autoencoder.py): both cover this path and more.
@pytest.mark.parametrize("family", ["vae", "gan", "flow"])
def test_resume_is_bitwise(tmp_path, data_dir, family):
  """2N steps straight == N steps, stop, resume to 2N (params, EMA and optimizer state(s)),
  for every family's smoke config on real data; each run writes its sample grid."""
  n = 3
  config = smoke_config(family, {"total_steps": 2 * n, "checkpoint_every": n, "log_every": 1,
                                 "eval_every": 100}, data_dir=data_dir)
  straight = train_and_evaluate(config, str(tmp_path / "straight"))
  assert glob.glob(str(tmp_path / "straight" / "samples" / f"samples_{2 * n:07d}.png"))

  # The interrupted run: keep only the step-N checkpoint of an identical run, then resume.
  resumed_dir = tmp_path / "resumed"
  shutil.copytree(tmp_path / "straight", resumed_dir)
  shutil.rmtree(resumed_dir / "checkpoints" / str(2 * n))
  config.eval_every = 0  # the straight run's grid was checked; the parameters are compared
  resumed = train_and_evaluate(config, str(resumed_dir))

  assert int(resumed.step) == 2 * n
  assert _params_equal(straight.params, resumed.params)
  assert _params_equal(straight.ema_params, resumed.ema_params)
  assert _params_equal(straight.opt_state, resumed.opt_state)
  # The replayed steps are logged once, not twice.
  steps = [json.loads(l)["step"] for l in open(resumed_dir / "metrics.jsonl") if "train/loss" in l]
  assert steps == list(range(1, 2 * n + 1))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir):
  from genjax.errors import NonFiniteLossError
  config = smoke_config("vae", {"total_steps": 12, "checkpoint_every": 2, "log_every": 1,
                                "eval_every": 0}, data_dir=data_dir)
  train_and_evaluate(config, str(tmp_path))  # a good run to step 12 (eval_every=0: none) ...
  assert not [l for l in open(tmp_path / "metrics.jsonl") if "eval/" in l]
  assert not glob.glob(str(tmp_path / "samples" / "*.png"))
  config.total_steps = 40  # ... then continue it with an exploding learning rate
  config.optim.learning_rate = 1e30
  config.optim.schedule = "constant"
  config.optim.warmup_steps = 0
  with pytest.raises(NonFiniteLossError, match=r"NaN/inf at step (\d+).*last good checkpoint is step \d+"):
    train_and_evaluate(config, str(tmp_path))
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=3)
  assert ckpt.latest_step() >= 12
  restored, _, _ = ckpt.restore(ckpt.latest_step(), Run.create(config, str(tmp_path)).init_state())
  ckpt.close()
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.params))


def test_family_health_check_stops_run_after_patience(tmp_path, data_dir, monkeypatch):
  from genjax.errors import TrainingFailedError
  from genjax.families.vae import VAE
  from genjax.train.loop import HEALTH_PATIENCE
  seen = []

  def unhealthy(self, metrics):
    seen.append(metrics)
    return "generator output is constant" if len(seen) >= 2 else None

  monkeypatch.setattr(VAE, "health_message", unhealthy)
  config = smoke_config("vae", {"total_steps": 20, "log_every": 1, "eval_every": 100,
                                "checkpoint_every": 100}, data_dir=data_dir)
  with pytest.raises(TrainingFailedError, match="generator output is constant"):
    train_and_evaluate(config, str(tmp_path))
  assert len(seen) == 1 + HEALTH_PATIENCE and "loss" in seen[0]
