"""Test helpers: smoke configs and running launch.py in a subprocess as a user would."""

import os
import subprocess
import sys

from genjax.launchers import free_port  # noqa: F401  (tests start local coordinators with it)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(family: str = "vae", overrides: dict | None = None, data_dir: str = ""):
  """The family's smoke config, with dotted-key overrides."""
  import importlib
  from genjax.train.sweep import apply_overrides
  module = importlib.import_module(f"configs.{family}")
  config = apply_overrides(module.get_config("dataset=mnist5k,size=smoke"), overrides or {})
  config.data_dir = data_dir
  return config


SUITE_XLA_FLAGS = "--xla_backend_optimization_level=0"


def launch(args, *, data_dir, env_extra=None, timeout=300, check=False):
  """Runs `python launch.py ARGS` like a user; returns the CompletedProcess. XLA compiles at
  the suite's optimization level (tests/conftest.py: the tiny models compile several times
  faster, results are unchanged), plus any XLA_FLAGS of `env_extra` (e.g. a device count)."""
  env = dict(os.environ, GENJAX_DATA_DIR=data_dir, PYTHONUNBUFFERED="1")
  env_extra = dict(env_extra or {})
  env["XLA_FLAGS"] = " ".join([SUITE_XLA_FLAGS, env_extra.pop("XLA_FLAGS", "")]).strip()
  env.update(env_extra)
  proc = subprocess.run([sys.executable, os.path.join(REPO, "launch.py"), *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"launch.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
  return proc


def start_processes(commands, *, data_dir, devices_per_process=2):
  """Starts commands (argv lists, each one process of a multi-process run) with
  `devices_per_process` CPU devices each, at the suite's XLA level; returns the Popens
  (stdout and stderr merged, text)."""
  env = dict(os.environ, GENJAX_DATA_DIR=data_dir, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu",
             JAX_NUM_CPU_DEVICES=str(devices_per_process), XLA_FLAGS=SUITE_XLA_FLAGS)
  return [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True) for command in commands]
