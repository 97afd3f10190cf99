"""benchmarks/torch_reference.py: each PyTorch twin has exactly genjax's parameter count and
trains and samples (eager, one step) on the settings benchmarks/vs_pytorch.py derives from a
genjax config; the driver refuses configs its twins do not implement."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from configs import ddpm, gan, vae
from genjax.families import DataSpec, build_family
from tests.conftest import REPO, ref_python

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import vs_pytorch  # noqa: E402

SHAPE = (28, 28, 1)


def genjax_param_count(config) -> int:
  family = build_family(config, DataSpec(SHAPE, 0))
  batch = {"image": jnp.zeros((2, *SHAPE), jnp.uint8), "cond": {}}
  params, _ = jax.eval_shape(family.init, jax.random.PRNGKey(0), batch)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


@pytest.fixture(scope="module", autouse=True)
def _flags():
  vs_pytorch.FLAGS(["vs_pytorch", "--sample_num=2", "--sample_steps=2"])


@pytest.mark.parametrize("module", [ddpm, vae, gan], ids=["ddpm", "vae", "gan"])
def test_twin_matches_genjax_parameter_count_and_runs(module):
  config = module.get_config("dataset=fashion_mnist,size=smoke")
  settings = vs_pytorch.torch_settings(config, SHAPE, steps=1)
  proc = subprocess.run([ref_python(), os.path.join(REPO, "benchmarks", "torch_reference.py"),
                         "--json", json.dumps(settings), "--variants", "eager"],
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["params"] == genjax_param_count(config)
  assert 0 < result["eager_step_s"] < 60
  if module is ddpm:
    assert 0 < result["eager_ddim_s_per_image"] < 60


def test_refuses_what_the_twins_do_not_implement():
  config = ddpm.get_config("dataset=fashion_mnist,size=smoke,parameterization=v")
  with pytest.raises(SystemExit, match="eps-prediction"):
    vs_pytorch.torch_settings(config, SHAPE, steps=1)
  config = gan.get_config("dataset=fashion_mnist,size=smoke,loss=hinge")
  with pytest.raises(SystemExit, match="non-saturating"):
    vs_pytorch.torch_settings(config, SHAPE, steps=1)
