"""benchmarks/sampling_speed.py: its sampler list and a run on a fresh smoke U-Net."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import sampling_speed  # noqa: E402


def test_parse_sampler():
  assert sampling_speed.parse_sampler("ddpm") == ("ddpm", 1000, None)
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
