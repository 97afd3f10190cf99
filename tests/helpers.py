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


# The suite's XLA: no LLVM optimisation, and the classic loop emitters instead of the newer MLIR
# fusion emitters (a smoke text-to-image train step compiles in 3.3 s instead of 5.1 s; tests
# compare results within tolerances or bitwise under the same flags, never across them).
SUITE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


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


CAPTION_COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230)}
CAPTION_PLACES = {"left": 1, "right": 9}


def make_captioned_folder(root, side: int = 16):
  """80 16x16 RGB images of a coloured square on the left or right, captioned, with splits
  (64 train, 16 test), averaged down to side x side (16 / side an integer). Returns
  (dataset name, metadata rows)."""
  import json
  import numpy as np
  from PIL import Image
  rows = []
  for i in range(80):
    colour, place = list(CAPTION_COLOURS)[i % 3], list(CAPTION_PLACES)[(i // 3) % 2]
    image = np.zeros((16, 16, 3), np.uint8)
    left = CAPTION_PLACES[place]
    image[5:11, left:left + 6] = CAPTION_COLOURS[colour]
    f = 16 // side
    image = image.reshape(side, f, side, f, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    Image.fromarray(image).save(root / f"{i:03d}.png")
    rows.append({"file_name": f"{i:03d}.png", "text": f"a {colour} square on the {place}",
                 "split": "test" if i >= 64 else "train"})
  (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  return f"captioned_folder:{root}", rows


def assert_resume_is_bitwise(config, workdir, scratch, stop_step: int):
  """Copies the finished run in `workdir` to `scratch`, removes its checkpoints after
  `stop_step`, resumes it with `config` and checks params, EMA and optimizer state equal the
  straight run's bit for bit."""
  import shutil
  import numpy as np
  import jax
  from genjax.train import loop
  from genjax.train.run import Run
  shutil.copytree(workdir, scratch)
  for step_dir in (scratch / "checkpoints").iterdir():
    if step_dir.name.isdigit() and int(step_dir.name) > stop_step:
      shutil.rmtree(step_dir)
  resumed = loop.train_and_evaluate(config, str(scratch))
  straight, _ = Run.from_workdir(str(workdir)).restore_latest()
  assert int(resumed.step) == int(straight.step)
  for a, b in zip(jax.tree.leaves((resumed.params, resumed.ema_params, resumed.opt_state)),
                  jax.tree.leaves((straight.params, straight.ema_params, straight.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def jiggled(params, scale: float = 0.5, seed: int = 9):
  """`params` plus N(0, scale^2) noise: a trained-for-a-few-steps model's near-constant
  predictions spread out, so a sampler's choices depend on its inputs."""
  import jax
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
