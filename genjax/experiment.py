"""Experiments: runs in, a table and plots out.

An experiment script (experiments/<name>.py) lists its runs (`RunSpec`s), trains the unfinished ones (`train_runs`: a finished run,
one with finished.json for its total_steps, is skipped; an interrupted one resumes), measures
what the runs' own evaluations do not hold (`measured`: cached in the run's folder, keyed by
the settings and checkpoint step, so a re-run recomputes nothing), and writes a table
(`write_table`: markdown + CSV), plots (`plot`) and the provenance (`write_provenance`: the
exact commands, git commit, machine, wall time) under experiments/results/<name>/.

`collect` reads a `--mode=sweep` workdir (sweep.json + every run's config.json, metrics.jsonl
and finished.json) into rows: the swept values as columns, then chosen metrics.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import ml_collections

from genjax import paths
from genjax.errors import ConfigError
from genjax.train import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- runs ---------------------------------------------------------------------------------------
def load_config(spec: str) -> ml_collections.ConfigDict:
  """`configs/<family>.py[:args]` as launch.py's --config reads it."""
  module = sweep.config_module(spec)
  arg = spec.partition(":")[2]
  return module.get_config(arg) if arg else module.get_config()


def shown_path(path: str) -> str:
  """`path` as a table or command shows it: relative to the checkout when inside it (tables are
  committed and read on other machines), else as given."""
  inside = os.path.abspath(path).startswith(REPO + os.sep)
  return os.path.relpath(os.path.abspath(path), REPO) if inside else path


@dataclass
class RunSpec:
  """One run of an experiment: a config file spec, dotted overrides, its folder's name."""
  name: str
  config: str
  overrides: dict = field(default_factory=dict)

  def build(self, extra: Optional[dict] = None) -> ml_collections.ConfigDict:
    return sweep.apply_overrides(load_config(self.config), {**self.overrides, **(extra or {})})

  def command(self, runs_dir: str) -> str:
    flags = " ".join(f"--config.{k}={sweep.flag_value(v)}" for k, v in self.overrides.items())
    workdir = f"{shown_path(runs_dir).rstrip('/')}/{self.name}"
    return (f"python launch.py --config={self.config} --workdir={workdir}"
            + (f" {flags}" if flags else ""))


def train_runs(specs: Sequence[RunSpec], runs_dir: str, extra: Optional[dict] = None,
               log: Callable[[str], None] = print) -> dict[str, str]:
  """Trains every run not yet finished, in order, in runs_dir/<name> (`extra`: overrides on
  top of each run's, e.g. the smoke settings). Returns {name: "trained" | "finished"}."""
  from genjax.train import loop  # pylint: disable=import-outside-toplevel
  done = {}
  for i, spec in enumerate(specs):
    config = spec.build(extra)
    workdir = os.path.join(runs_dir, spec.name)
    sweep_run = sweep.SweepRun(spec.name, spec.overrides, workdir)
    state = sweep.status(sweep_run, config.total_steps)
    if state == "finished":
      log(f"experiment: run {i + 1}/{len(specs)} {spec.name}: finished, not trained again")
      done[spec.name] = "finished"
      continue
    log(f"experiment: run {i + 1}/{len(specs)} {spec.name} ({state})")
    loop.train_and_evaluate(config, workdir)
    if sweep.status(sweep_run, config.total_steps) != "finished":
      raise RuntimeError(f"run {workdir} stopped before finishing; rerun the experiment to resume it")
    done[spec.name] = "trained"
  return done


# ---- reading runs -------------------------------------------------------------------------------
def flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def read_run(workdir: str) -> dict:
  """{"config": dotted config, "metrics": last value of every metrics.jsonl key (with the step
  it was logged at under "<key>@step"), "finished": finished.json or None}."""
  from genjax.train.loop import read_finished  # pylint: disable=import-outside-toplevel
  folder = paths.resolve(workdir)
  config_path = folder / "config.json"
  if not config_path.exists():
    raise ConfigError(f"{workdir} is not a run (no config.json)")
  metrics = {}
  if (folder / "metrics.jsonl").exists():
    for line in (folder / "metrics.jsonl").read_text().splitlines():
      try:
        record = json.loads(line)
      except ValueError:
        continue  # a line cut short by a crash
      for k, v in record.items():
        if k != "step":
          metrics[k], metrics[f"{k}@step"] = v, record["step"]
  return {"config": flatten(json.loads(config_path.read_text())), "metrics": metrics,
          "finished": read_finished(workdir)}


def run_value(run: dict, key: str):
  """A column's value: "finished.<field>", "config.<dotted key>" or a metrics key."""
  if key.startswith("finished."):
    return (run["finished"] or {}).get(key[len("finished."):])
  if key.startswith("config."):
    return run["config"].get(key[len("config."):])
  return run["metrics"].get(key)


def collect(sweep_dir: str, columns: dict[str, str]) -> list[dict]:
  """One row per run of a `--mode=sweep` workdir: its swept values, "status", then
  {column: run_value(key)} for `columns`."""
  index_path = paths.resolve(sweep_dir) / "sweep.json"
  if not index_path.exists():
    raise ConfigError(f"{sweep_dir} has no sweep.json: run `launch.py --mode=sweep` there first")
  index = json.loads(index_path.read_text())
  swept = list(dict.fromkeys(k for r in index["runs"] for k in r["overrides"]))
  rows = []
  for entry in index["runs"]:
    workdir = f"{sweep_dir.rstrip('/')}/{entry['name']}"
    row = {k: entry["overrides"].get(k) for k in swept}
    if not (paths.resolve(workdir) / "config.json").exists():
      rows.append({**row, "status": "not started", **{c: None for c in columns}})
      continue
    run = read_run(workdir)
    row["status"] = sweep.status(sweep.SweepRun(entry["name"], entry["overrides"], workdir),
                                 run["config"]["total_steps"])
    row.update({c: run_value(run, key) for c, key in columns.items()})
    rows.append(row)
  return rows


# ---- measurements after training ----------------------------------------------------------------
def _measurement_path(workdir: str, name: str):
  return paths.resolve(workdir) / "measurements" / f"{name}.json"


def _measurement_key(workdir: str, settings: dict) -> dict:
  from genjax.train.loop import read_finished  # pylint: disable=import-outside-toplevel
  return json.loads(json.dumps({"settings": settings, "step": (read_finished(workdir) or {}).get("step")}))


def cached(workdir: str, name: str, settings: dict) -> Optional[dict]:
  """What `measured` cached under `name` for these settings at the run's final step, or None."""
  try:
    found = json.loads(_measurement_path(workdir, name).read_text())
  except (OSError, ValueError):
    return None  # absent or unreadable: measure again
  return found["result"] if found.get("key") == _measurement_key(workdir, settings) else None


def cached_settings(workdir: str, prefix: str) -> dict[str, dict]:
  """{name: settings} of the run's cached measurements whose names start with `prefix`."""
  found = {}
  for path in sorted((paths.resolve(workdir) / "measurements").glob(f"{prefix}*.json")):
    try:
      found[path.stem] = json.loads(path.read_text())["key"]["settings"]
    except (OSError, ValueError, KeyError, TypeError):
      continue
  return found


def measured(workdir: str, name: str, settings: dict, compute: Callable[[], dict]) -> dict:
  """compute()'s result, cached in WORKDIR/measurements/<name>.json for these settings and the
  run's final step: re-running an experiment re-measures nothing and rewrites the same table."""
  result = cached(workdir, name, settings)
  if result is None:
    result = compute()
    path = _measurement_path(workdir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": _measurement_key(workdir, settings), "result": result}, indent=2) + "\n")
  return result


# ---- uncertainty --------------------------------------------------------------------------------
def bootstrap_interval(values, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean of `values` (one per prompt): the prompts are
  resampled with replacement `resamples` times."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  values = np.asarray(values, np.float64)
  rows = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
  means = values[rows].mean(axis=1)
  return (float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2)))


def bootstrap_difference(a, b, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict:
  """mean(a) - mean(b) for paired per-prompt values (a[i] and b[i] scored on the same prompt and
  noise) and its percentile bootstrap interval, the prompts resampled together."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired values need one shape, got {a.shape} and {b.shape}")
  low, high = bootstrap_interval(a - b, level, resamples, seed)
  return {"difference": float(a.mean() - b.mean()), "low": low, "high": high}


# ---- writing results ----------------------------------------------------------------------------
def _format(value) -> str:
  if value is None:
    return "—"
  if isinstance(value, float):
    return f"{value:.4g}"
  if isinstance(value, (list, tuple)):
    return ",".join(map(str, value))
  return str(value)


def write_table(out_dir: str, rows: list[dict], header: Sequence[str] = (), stem: str = "table") -> str:
  """out_dir/<stem>.md (header lines, then the table) and <stem>.csv; returns the markdown."""
  os.makedirs(out_dir, exist_ok=True)
  columns = list(dict.fromkeys(k for r in rows for k in r))
  with open(os.path.join(out_dir, stem + ".csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows([{k: _format(v) if isinstance(v, (list, tuple)) else v for k, v in r.items()}
                      for r in rows])
  lines = [*header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_format(r.get(c)) for c in columns) + " |" for r in rows]
  text = "\n".join(lines).lstrip("\n") + "\n"
  with open(os.path.join(out_dir, stem + ".md"), "w") as f:
    f.write(text)
  return text


def read_table(out_dir: str, stem: str = "table") -> list[dict]:
  """The rows write_table() wrote to out_dir/<stem>.csv, numbers as numbers and empty cells as
  None; [] when there is no table."""
  def parse(text: str):
    if text == "":
      return None
    for kind in (int, float):
      try:
        return kind(text)
      except ValueError:
        pass
    return text
  try:
    with open(os.path.join(out_dir, stem + ".csv"), newline="") as f:
      return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]
  except FileNotFoundError:
    return []


def provenance_commit(out_dir: str) -> Optional[str]:
  """The commit named by out_dir/provenance.md (the table there was written at it), or None."""
  try:
    text = open(os.path.join(out_dir, "provenance.md")).read()
  except FileNotFoundError:
    return None
  found = re.search(r"^Commit (.+?); ", text, re.MULTILINE)
  return found.group(1) if found else None


def plot(path: str, rows: list[dict], x: str, y: str, series: Optional[str] = None,
         label: Optional[str] = None, logx: bool = False, title: str = "") -> None:
  """A PNG of column y against column x: one line per value of `series`, or labelled points."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  usable = [r for r in rows if isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))]
  if series:
    for value in dict.fromkeys(r.get(series) for r in usable):
      points = sorted((r[x], r[y]) for r in usable if r.get(series) == value)
      ax.plot(*zip(*points), marker="o", label=f"{series}={_format(value)}")
    ax.legend(fontsize=8)
  else:
    ax.scatter([r[x] for r in usable], [r[y] for r in usable])
    for r in usable:
      ax.annotate(_format(r.get(label)) if label else "", (r[x], r[y]), fontsize=8,
                  xytext=(4, 4), textcoords="offset points")
  if logx:
    ax.set_xscale("log")
  ax.set_xlabel(x)
  ax.set_ylabel(y)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def machine() -> str:
  import jax  # pylint: disable=import-outside-toplevel
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
  except OSError:
    pass
  return (f"{os.cpu_count()} CPU cores ({cpu}), {jax.device_count()} {jax.devices()[0].platform} "
          f"device(s), jax {jax.__version__}")


def commit() -> str:
  def git(*args):
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
  head = git("rev-parse", "--short", "HEAD") or "unknown"
  # Results written by experiments are not code: only other uncommitted changes are flagged.
  changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!experiments/results")
  return head + (" (with uncommitted changes)" if changed else "")


def write_provenance(out_dir: str, commands: Sequence[str], started: float, notes: Sequence[str] = ()) -> list[str]:
  """out_dir/provenance.md: the experiment's command line, the launch command of every run it
  trained, commit, machine and this invocation's wall time. Returns the table's header lines
  (command, commit, machine, notes: no wall time, so a re-run rewrites the same table)."""
  os.makedirs(out_dir, exist_ok=True)
  script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO) if sys.argv and sys.argv[0] else "?"
  header = [f"Command: `{' '.join(['python', script, *sys.argv[1:]])}`",
            f"Commit {commit()}; {machine()}.", *notes]
  lines = ["# Provenance", "", *header, "",
           f"This invocation's wall time: {time.perf_counter() - started:.0f} s (trained runs, measurements "
           f"not yet cached, and the table).", "", "Runs (each trains or resumes with):", "",
           *(f"    {c}" for c in commands), ""]
  with open(os.path.join(out_dir, "provenance.md"), "w") as f:
    f.write("\n".join(lines))
  return header
