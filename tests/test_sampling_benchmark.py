"""benchmarks/sampling_speed.py: its sampler list and a run on a fresh smoke U-Net."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import sampling_speed  # noqa: E402


def test_parse_sampler():
  assert sampling_speed.parse_sampler("ddpm") == ("ddpm", None, None)
  assert sampling_speed.parse_sampler("ddim-50") == ("ddim", 50, 0.0)
  assert sampling_speed.parse_sampler(" ddim-100@1 ") == ("ddim", 100, 1.0)
  for bad in ("ddim", "ddim-x", "ddpm-10", "ddpm@1", "plms-20"):
    with pytest.raises(SystemExit, match="bad sampler"):
      sampling_speed.parse_sampler(bad)


def test_times_each_sampler_and_saves_its_grid(tmp_path):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "sampling_speed.py"), "--size=smoke",
       "--num=2", "--samplers=ddim-4,ddim-4@1", f"--grid_dir={tmp_path}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  lines = [l for l in proc.stdout.splitlines() if "ms/image" in l]
  assert [l.split(":")[0].strip() for l in lines] == ["DDIM-4", "DDIM-4 eta=1"], proc.stdout
  assert all(float(l.split(":")[1].split()[0]) > 0 for l in lines)
  assert sorted(os.listdir(tmp_path)) == ["DDIM-4.png", "DDIM-4_eta1.png"]


def test_a_trained_run_is_timed_with_its_own_schedule_and_guidance(tmp_path):
  """The weights of a run trained on a 100-step schedule with guidance 3 are sampled on that
  schedule and guidance (failed while the benchmark forced 1000 steps and guidance 1)."""
  from genjax.families import build_family
  from tests.helpers import smoke_config
  config = smoke_config("ddpm", {"model.conditional": True, "model.guidance_scale": 3.0})
  (tmp_path / "config.json").write_text(config.to_json())
  loaded, spec = sampling_speed.benchmark_config(str(tmp_path), "smoke")
  assert loaded.model.timesteps == config.model.timesteps == 100
  assert loaded.model.guidance_scale == 3.0
  family = build_family(loaded, spec)
  names = [name for name, _ in sampling_speed.samplers(family, "ddpm,ddim-10")]
  assert names == ["DDPM-100", "DDIM-10"]
  fresh, _ = sampling_speed.benchmark_config("", "smoke")
  assert fresh.model.timesteps == 1000 and fresh.model.guidance_scale == 1.0
