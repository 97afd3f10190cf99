"""Sweeps: a config file's `get_hyper(h)` returns a list of override dicts,
built with the helpers below (`h` is this module), e.g.

    def get_hyper(h):
      return h.product([h.sweep("model.beta", [0.5, 1.0]),
                        h.sweep("optim.learning_rate", [1e-3, 2e-3])])

Each dict maps dotted config keys to values; `apply_overrides` sets them with
ml_collections' type checks, so a typo fails before anything trains.

Each run trains in WORKDIR/<its overrides> (`run_dirname`), and WORKDIR/sweep.json lists the
runs (what `genjax.experiment.collect` reads). A run with a finished.json for its total_steps
is skipped; any other resumes from its last checkpoint, so re-running a sweep finishes it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
from dataclasses import dataclass

import ml_collections

from genjax.errors import ConfigError


def config_module(config_path: str):
  """The config file of `configs/<family>.py[:args]` as a module (relative to the working
  directory, else to the checkout)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  path = config_path.split(":")[0]
  if not os.path.isfile(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), path)
  if not os.path.isfile(path):
    raise ConfigError(f"config file {config_path.split(':')[0]} does not exist")
  spec = importlib.util.spec_from_file_location(f"genjax_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sweep(key: str, values) -> list[dict]:
  return [{key: v} for v in values]


def product(axes: list[list[dict]]) -> list[dict]:
  out = []
  for combo in itertools.product(*axes):
    merged = {}
    for d in combo:
      merged.update(d)
    out.append(merged)
  return out


def zipit(axes: list[list[dict]]) -> list[dict]:
  if len({len(a) for a in axes}) > 1:
    raise ConfigError("zipit needs sweeps of equal length")
  return [dict(kv for d in combo for kv in d.items()) for combo in zip(*axes)]


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      if p not in node:
        raise ConfigError(f"sweep key {dotted!r}: config has no {p!r}")
      node = node[p]
    if leaf not in node:
      raise ConfigError(f"sweep key {dotted!r}: config has no {leaf!r}")
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f"sweep key {dotted!r}: {e}") from None
  return config


def run_name(overrides: dict) -> str:
  return ",".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "base"


def run_dirname(overrides: dict) -> str:
  """A readable, path-safe folder name for a run, stable however the sweep is reordered:
  `model.beta=0.5,optim.learning_rate=0.001`; a hash is appended where characters had to be
  replaced (paths in values) or the name is long, so distinct runs never share a folder."""
  name = run_name(overrides)
  safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)
  if safe != name or len(safe) > 100:
    safe = f"{safe[:80]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
  return safe


@dataclass
class SweepRun:
  name: str
  overrides: dict
  workdir: str


def plan(runs: list[dict], workdir: str) -> list[SweepRun]:
  names = [run_dirname(o) for o in runs]
  if len(set(names)) != len(names):
    repeated = sorted({n for n in names if names.count(n) > 1})
    raise ConfigError(f"the sweep lists the same run more than once: {', '.join(repeated)}")
  return [SweepRun(n, o, f"{workdir.rstrip('/')}/{n}") for n, o in zip(names, runs)]


def write_index(workdir, config_arg: str, runs: list[SweepRun]) -> None:
  """WORKDIR/sweep.json: the config and every run's folder and overrides."""
  from genjax import paths  # pylint: disable=import-outside-toplevel
  folder = paths.resolve(workdir)
  folder.mkdir(parents=True, exist_ok=True)
  index = {"config": config_arg, "runs": [{"name": r.name, "overrides": _jsonable(r.overrides)} for r in runs]}
  (folder / "sweep.json").write_text(json.dumps(index, indent=2) + "\n")


def _jsonable(overrides: dict) -> dict:
  return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}


def status(run: SweepRun, total_steps: int) -> str:
  """"finished", "at step S" (resumes from its last checkpoint) or "new"."""
  from genjax import paths  # pylint: disable=import-outside-toplevel
  from genjax.train.loop import read_finished  # pylint: disable=import-outside-toplevel
  finished = read_finished(run.workdir)
  if finished is not None and finished.get("step") == total_steps:
    return "finished"
  checkpoints = paths.resolve(run.workdir) / "checkpoints"
  saved = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] if checkpoints.is_dir() else []
  return f"at step {max(saved)}" if saved else "new"


def flag_value(value) -> str:
  """A value as ml_collections' --config.KEY=VALUE flag parses it back."""
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(flag_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def command(run: SweepRun, base_args: list[str]) -> str:
  """The launch command of one run: launch.py's own arguments (launcher flags included, so each
  run can be sent as its own job) with the run's workdir and overrides."""
  args = [*base_args, f"--workdir={run.workdir}",
          *(f"--config.{k}={flag_value(v)}" for k, v in run.overrides.items())]
  return " ".join(shlex.quote(a) for a in ["python", "launch.py", *args])
