"""What `launch.py --mode=...` runs: train, eval, sample or sweep, all through
genjax.train.run.Run (eval and sample rebuild the run from WORKDIR/config.json)."""

from __future__ import annotations

import os
import re
from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np

from genjax import multihost, paths
from genjax.errors import ConfigError
from genjax.train import loop, sweep
from genjax.train.image_grid import make_grid, save_png
from genjax.train.preemption import PreemptionWatcher
from genjax.train.run import PROMPT_STREAM, Run


def evaluate(workdir) -> dict:
  """Evaluates the latest checkpoint; writes eval_<step>.json and sample grids."""
  return loop.evaluate_latest(Run.from_workdir(workdir))


def _slug(text: str, limit: int = 40) -> str:
  return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "prompt"


def read_prompts(prompts: Sequence[str], prompts_file: Optional[str]) -> list[str]:
  out = [p for p in prompts or []]
  if prompts_file:
    if not os.path.isfile(prompts_file):
      raise ConfigError(f"--prompts_file {prompts_file} does not exist")
    with open(prompts_file, encoding="utf-8") as f:
      out += [line.strip() for line in f if line.strip()]
  return out


def sample(workdir, num_samples: int, prompts: Sequence[str] = (), prompts_file: Optional[str] = None,
           guidance: Optional[float] = None, out_dir: Optional[str] = None,
           steps: Optional[int] = None) -> str:
  """Draws samples from the latest checkpoint into WORKDIR/samples_<step>/ (or out_dir): a grid
  and one PNG per image. With prompts, `num_samples` images per prompt (one grid row each);
  otherwise `num_samples` images under the eval split's first conditions (for a text model,
  the captions of the first test images, written to captions.txt)."""
  run = Run.from_workdir(workdir)
  if not run.family.generates_images:
    raise ConfigError(f"{workdir} is a {run.config.family} run, which scores images and captions "
                      f"but does not generate images (score with python -m genjax.metrics.clip_score)")
  prompts = read_prompts(prompts, prompts_file)
  state, step = run.restore_latest()
  options = {key: kind(value) for key, kind, value in (("guidance_scale", float, guidance), ("steps", int, steps))
             if value is not None}
  for key, flag in (("guidance_scale", "--guidance"), ("steps", "--steps")):
    if key in options and key not in run.family.sampling_options:
      raise ConfigError(f"{flag} is not an option of the {run.config.family} family's sampler "
                        f"(it takes: {', '.join(run.family.sampling_options) or 'none'})")
  if prompts:
    captions = [p for p in prompts for _ in range(num_samples)]
    cond = run.prompt_conditions(captions)
    columns = num_samples
  else:
    cond, columns = run.conditions(num_samples), None
    captions = list(run.host_captions(num_samples)) if run.tokenizer is not None else []
  rng = jax.random.fold_in(jax.random.fold_in(run.base_rng, PROMPT_STREAM), step)
  images = np.asarray(run.sample(state, len(captions) or num_samples, cond, rng, **options))
  out_dir = paths.resolve(out_dir or paths.resolve(workdir) / f"samples_{step}")
  if jax.process_index() == 0:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_png(out_dir / "grid.png", make_grid(images, columns))
    for i, image in enumerate(images):
      name = f"{i:04d}" + (f"_{_slug(captions[i])}" if captions else "")
      save_png(out_dir / (name + ".png"), make_grid(image[None], 1, pad=0))
    if captions:
      (out_dir / "captions.txt").write_text(
          "\n".join(f"{i:04d}\t{c}" for i, c in enumerate(captions)) + "\n", encoding="utf-8")
    what = f"{len(prompts)} prompt(s) x {num_samples}" if prompts else str(num_samples)
    g = f", guidance {guidance}" if guidance is not None else ""
    print(f"genjax: {what} samples from step {step}{g} -> {out_dir}/grid.png (+ one PNG per image)")
  return out_dir


def sweep_runs(workdir: str, config_path: str) -> list[sweep.SweepRun]:
  """The runs of the config file's get_hyper(h), each with its own sub-workdir."""
  module = sweep.config_module(config_path)
  if not hasattr(module, "get_hyper"):
    raise ConfigError(f"{config_path.split(':')[0]} defines no get_hyper(h); nothing to sweep")
  return sweep.plan(module.get_hyper(sweep), workdir)


def run_sweep(config, workdir, config_path: str, dry_run: bool = False,
              base_args: Sequence[str] = ()) -> None:
  """Trains one run per override dict of the config file's get_hyper(h), each in its own
  sub-workdir: finished runs are skipped, unfinished ones resume. `dry_run` lists the runs,
  their state and launch commands (`base_args`: launch.py's other arguments) instead."""
  runs = sweep_runs(workdir, config_path)
  configs = [sweep.apply_overrides(config, r.overrides) for r in runs]  # every typo fails first
  states = [sweep.status(r, c.total_steps) for r, c in zip(runs, configs)]
  if dry_run:
    for i, (r, state) in enumerate(zip(runs, states)):
      print(f"# {i + 1}/{len(runs)} {r.name}: {state}\n{sweep.command(r, list(base_args))}")
    return
  if jax.process_index() == 0:
    sweep.write_index(workdir, config_path, runs)
  preemption = PreemptionWatcher()  # one for the whole sweep: a SIGTERM ends it, not one run
  try:
    for i, (r, run_config, state) in enumerate(zip(runs, configs, states)):
      if state == "finished":
        multihost.say(f"genjax: sweep run {i + 1}/{len(runs)}: {r.name}: finished, skipped")
        continue
      multihost.say(f"genjax: sweep run {i + 1}/{len(runs)}: {r.name} ({state})")
      loop.train_and_evaluate(run_config, r.workdir, preemption)
      if preemption.stopped:
        multihost.say(f"genjax: sweep preempted during run {i + 1}/{len(runs)}; rerun the same "
                      f"command to resume it and the runs after it")
        return
  finally:
    preemption.close()


def run(mode: str, config: Optional[ml_collections.ConfigDict], workdir: str, *, num_samples: int = 64,
        config_path: str = "", prompts: Sequence[str] = (), prompts_file: Optional[str] = None,
        guidance: Optional[float] = None, steps: Optional[int] = None, dry_run: bool = False,
        base_args: Sequence[str] = ()) -> None:
  if mode in ("train", "sweep") and config is None:
    raise ConfigError(f"--mode={mode} needs --config=configs/<family>.py[:args]")
  if mode == "train":
    loop.train_and_evaluate(config, workdir)
  elif mode == "eval":
    evaluate(workdir)
  elif mode == "sample":
    sample(workdir, num_samples, prompts, prompts_file, guidance, steps=steps)
  elif mode == "sweep":
    run_sweep(config, workdir, config_path, dry_run, base_args)
  else:
    raise ConfigError(f"unknown mode {mode!r}")
