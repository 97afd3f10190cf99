"""launch.py as a user runs it: outputs, bad input, kill -9 and SIGTERM (8 simulated devices:
tests/train/test_conditions_and_stages.py)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, SUITE_XLA_FLAGS, launch

SMOKE = "--config=configs/vae.py:dataset=mnist5k,size=smoke"


def _one_line_error(proc, *needles):
  assert proc.returncode != 0, proc.stdout
  assert "Traceback" not in proc.stderr, proc.stderr
  err = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
  assert err, proc.stderr
  for needle in needles:
    assert needle in proc.stderr, proc.stderr
  return proc.stderr


def test_smoke_run_writes_outputs(tmp_path, data_dir):
  proc = launch([SMOKE, f"--workdir={tmp_path}"], data_dir=data_dir, check=True)
  for path in ("config.json", "metrics.jsonl", "checkpoints"):
    assert (tmp_path / path).exists(), proc.stdout
  assert list((tmp_path / "samples").glob("*.png"))
  assert "steps/s" in proc.stdout and "ETA" in proc.stdout


def test_unknown_config_key(tmp_path, data_dir):
  proc = launch([SMOKE, f"--workdir={tmp_path}", "--config.no_such_key=1"], data_dir=data_dir)
  _one_line_error(proc, "no_such_key")


def test_unknown_config_arg(tmp_path, data_dir):
  proc = launch(["--config=configs/vae.py:dataset=mnist5k,sise=smoke", f"--workdir={tmp_path}"],
                data_dir=data_dir)
  _one_line_error(proc, "sise", "accepted keys")


def test_wrong_config_type(tmp_path, data_dir):
  proc = launch([SMOKE, f"--workdir={tmp_path}", "--config.batch_size=many"], data_dir=data_dir)
  _one_line_error(proc, "batch_size")


def test_unknown_dataset_lists_known_ones(tmp_path, data_dir):
  proc = launch(["--config=configs/vae.py:dataset=no_such_data,size=smoke", f"--workdir={tmp_path}"],
                data_dir=data_dir)
  _one_line_error(proc, "no_such_data", "mnist5k", "fashion_mnist")


def test_missing_debian_dataset_says_how_to_install(tmp_path, data_dir):
  proc = launch(["--config=configs/vae.py:dataset=fashion_mnist,size=smoke", f"--workdir={tmp_path}"],
                data_dir=str(tmp_path / "empty_tfds"),
                env_extra={"GENJAX_FASHION_MNIST_DIR": str(tmp_path / "not_installed")})
  _one_line_error(proc, "apt-get install dataset-fashion-mnist")


def test_nan_loss_exits_nonzero_naming_the_step(tmp_path, data_dir):
  proc = launch([SMOKE, f"--workdir={tmp_path}", "--config.optim.learning_rate=1e30",
                 "--config.optim.warmup_steps=0", "--config.optim.schedule=constant"], data_dir=data_dir)
  _one_line_error(proc, "NaN/inf at step")


def test_sigkill_resumes_from_last_complete_checkpoint(tmp_path, data_dir):
  """kill -9 mid-training; the rerun resumes from the newest finished checkpoint."""
  workdir = tmp_path / "run"
  args = [sys.executable, os.path.join(REPO, "launch.py"), SMOKE, f"--workdir={workdir}",
          "--config.total_steps=100000", "--config.checkpoint_every=5", "--config.log_every=5",
          "--config.eval_every=100000"]
  env = dict(os.environ, GENJAX_DATA_DIR=data_dir)
  env["XLA_FLAGS"] = SUITE_XLA_FLAGS  # as launch() does: the rerun reads this compilation from the cache
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = workdir / "checkpoints"
  try:
    deadline = time.time() + 240
    while time.time() < deadline:
      done = [d for d in os.listdir(ckpt_dir) if d.isdigit()] if ckpt_dir.exists() else []
      if len(done) >= 2:
        break
      time.sleep(0.2)
    else:
      pytest.fail("no checkpoint appeared within 240 s")
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  finished = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  resume = launch([SMOKE, f"--workdir={workdir}", f"--config.total_steps={finished + 5}",
                   "--config.checkpoint_every=5", "--config.log_every=5", "--config.eval_every=0"],
                  data_dir=data_dir, check=True)
  assert f"resumed from checkpoint step {finished}" in resume.stdout, resume.stdout
  assert str(finished + 5) in os.listdir(ckpt_dir)


def test_sigterm_saves_and_exits_cleanly(tmp_path, data_dir):
  workdir = tmp_path / "run"
  args = [sys.executable, os.path.join(REPO, "launch.py"), SMOKE, f"--workdir={workdir}",
          "--config.total_steps=100000", "--config.checkpoint_every=100000", "--config.log_every=1",
          "--config.eval_every=100000"]
  env = dict(os.environ, GENJAX_DATA_DIR=data_dir, PYTHONUNBUFFERED="1")
  env["XLA_FLAGS"] = SUITE_XLA_FLAGS  # as launch() does: the rerun reads this compilation from the cache
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:  # wait until training is under way
    if line.startswith("[step 3/"):
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  assert "preempted at step" in out
  assert [d for d in os.listdir(workdir / "checkpoints") if d.isdigit()]
