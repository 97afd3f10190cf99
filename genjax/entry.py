"""What `launch.py --mode=...` runs: train, eval, sample or sweep."""

from __future__ import annotations

import importlib.util
import json
import os

import jax
import ml_collections

from genjax.errors import CheckpointError, ConfigError
from genjax.train import loop, sweep
from genjax.train.checkpoint import Checkpointer
from genjax.train.metric_writer import MetricWriter


def _restore_latest(config, workdir):
  run = loop.build_run(config, workdir)
  state = loop.init_state(run)
  checkpointer = Checkpointer(os.path.join(os.path.abspath(workdir), "checkpoints"), keep=config.keep_checkpoints)
  step = checkpointer.latest_step()
  if step is None:
    raise CheckpointError(f"no checkpoint in {checkpointer.directory}; train first "
                          f"(python launch.py --config=... --workdir={workdir})")
  state, _ = checkpointer.restore(step, state)
  checkpointer.close()
  return run, state, step


def evaluate(config, workdir) -> dict:
  """Evaluates the latest checkpoint; writes eval_<step>.json and sample grids."""
  run, state, step = _restore_latest(config, workdir)
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  results = loop.Evaluator(run, state)(state, step, writer)
  writer.close()
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f"eval_{step}.json"), "w") as f:
      json.dump({"step": step, **results}, f, indent=2)
    print(json.dumps({"step": step, **results}, indent=2))
  return results


def sample(config, workdir, num_samples: int) -> str:
  run, state, step = _restore_latest(config, workdir)
  sample_fn = loop.steps.make_sample_fn(run.family, run.mesh)
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 10_000 + step)
  images = sample_fn(state.ema_params, rng, run.sample_labels(num_samples), num_samples)
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  path = writer.write_images(step, "final_samples", images)
  writer.close()
  print(f"genjax: {num_samples} samples from step {step} -> {path}")
  return path


def run_sweep(config, workdir, config_path: str) -> None:
  """Trains one run per override dict of the config file's get_hyper(h), each
  in its own sub-workdir (so every run resumes independently)."""
  spec = importlib.util.spec_from_file_location("genjax_sweep_config", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_hyper"):
    raise ConfigError(f"{config_path} defines no get_hyper(h); nothing to sweep")
  runs = module.get_hyper(sweep)
  for i, overrides in enumerate(runs):
    name = sweep.run_name(overrides)
    print(f"genjax: sweep run {i + 1}/{len(runs)}: {name}", flush=True)
    loop.train_and_evaluate(sweep.apply_overrides(config, overrides), os.path.join(workdir, f"{i:03d}"))


def run(mode: str, config: ml_collections.ConfigDict, workdir: str, *, num_samples: int = 64,
        config_path: str = "") -> None:
  if mode == "train":
    loop.train_and_evaluate(config, workdir)
  elif mode == "eval":
    evaluate(config, workdir)
  elif mode == "sample":
    sample(config, workdir, num_samples)
  elif mode == "sweep":
    run_sweep(config, workdir, config_path.split(":")[0])
  else:
    raise ConfigError(f"unknown mode {mode!r}")
