"""Sweeps that end in a table: `--mode=sweep` skips finished runs and resumes unfinished ones,
`--dry_run` lists the runs and one launch command per run, the collector reads real run
folders, and an experiment script (experiments/families.py --smoke) trains, measures and
writes its table, and re-running it trains and measures nothing and rewrites the same table."""

import csv
import json
import shutil

import jax
import pytest

from genjax import entry, experiment
from genjax.train import loop
from genjax.train.run import Run
from tests.helpers import REPO, launch

SEED_SWEEP = """
def get_hyper(h):
  return h.sweep("seed", [0, 1])
"""
SMOKE = {"total_steps": 4, "checkpoint_every": 2, "eval_every": 4, "log_every": 2}


def _sweep_config(tmp_path, data_dir):
  path = tmp_path / "seeds.py"
  path.write_text(SEED_SWEEP)
  config = experiment.load_config("configs/vae.py:dataset=mnist5k,size=smoke")
  config = experiment.sweep.apply_overrides(config, SMOKE)
  config.data_dir = data_dir
  return config, f"{path}:dataset=mnist5k,size=smoke"


def _last(workdir, key):
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r[key] for r in records if key in r][-1]


def test_sweep_skips_finished_runs_resumes_the_rest_and_collects_a_table(tmp_path, data_dir, monkeypatch, capsys):
  config, config_arg = _sweep_config(tmp_path, data_dir)
  sweep_dir = tmp_path / "sweep"
  entry.run_sweep(config, str(sweep_dir), config_arg, dry_run=True,
                  base_args=[f"--config={config_arg}", "--slurm", "--nodes=2"])
  listing = capsys.readouterr().out
  assert "# 1/2 seed=0: new" in listing and "# 2/2 seed=1: new" in listing, listing
  assert f"--workdir={sweep_dir}/seed=1 --config.seed=1" in listing and "--slurm --nodes=2" in listing
  assert not sweep_dir.exists()  # a dry run trains and writes nothing

  entry.run_sweep(config, str(sweep_dir), config_arg)
  runs = [sweep_dir / "seed=0", sweep_dir / "seed=1"]
  assert all(json.loads((r / "finished.json").read_text())["step"] == 4 for r in runs)
  # Run 1 interrupted after its step-2 checkpoint: no finished.json, step 4 gone.
  (runs[1] / "finished.json").unlink()
  shutil.rmtree(runs[1] / "checkpoints" / "4")
  entry.run_sweep(config, str(sweep_dir), config_arg, dry_run=True, base_args=[])
  listing = capsys.readouterr().out
  assert "seed=0: finished" in listing and "seed=1: at step 2" in listing, listing
  trained = []
  real_train = loop.train_and_evaluate
  monkeypatch.setattr(loop, "train_and_evaluate", lambda c, w, p=None: trained.append(w) or real_train(c, w, p))
  seconds_at_2 = [json.loads(l) for l in (runs[1] / "metrics.jsonl").read_text().splitlines()
                  if json.loads(l)["step"] == 2 and "perf/train_seconds" in l][0]["perf/train_seconds"]
  entry.run_sweep(config, str(sweep_dir), config_arg)
  assert trained == [str(runs[1])]  # the finished run is skipped, the other resumed
  # Training time adds up over the interruption (the first 2 steps are not forgotten).
  assert json.loads((runs[1] / "finished.json").read_text())["train_seconds"] > seconds_at_2 > 0
  assert "resumed from checkpoint step 2" in capsys.readouterr().out

  rows = experiment.collect(str(sweep_dir), {"train loss": "train/loss", "bits/dim": "eval/bits_per_dim",
                                             "params": "finished.params", "seconds": "finished.train_seconds",
                                             "batch": "config.batch_size"})
  assert [r["seed"] for r in rows] == [0, 1] and all(r["status"] == "finished" for r in rows)
  for row, workdir in zip(rows, runs):
    state, _ = Run.from_workdir(str(workdir)).restore_latest()
    assert row["params"] == sum(x.size for x in jax.tree.leaves(state.params))
    assert row["bits/dim"] == _last(workdir, "eval/bits_per_dim") and row["batch"] == config.batch_size
    assert row["train loss"] == _last(workdir, "train/loss") and row["seconds"] > 0
  experiment.write_table(str(tmp_path / "out"), rows, ["a header line"])
  with open(tmp_path / "out" / "table.csv") as f:
    back = list(csv.DictReader(f))
  assert [float(r["bits/dim"]) for r in back] == [r["bits/dim"] for r in rows]
  markdown = (tmp_path / "out" / "table.md").read_text().splitlines()
  assert markdown[0] == "a header line" and markdown[2].startswith("| seed | status | train loss")


def test_sweep_dry_run_from_the_command_line(tmp_path, data_dir):
  proc = launch(["--config=configs/vae.py:dataset=mnist5k,size=smoke", f"--workdir={tmp_path}",
                 "--mode=sweep", "--dry_run", "--config.total_steps=3"], data_dir=data_dir, check=True)
  commands = [l for l in proc.stdout.splitlines() if l.startswith("python launch.py")]
  assert len(commands) == 6 and all("--config.total_steps=3" in c for c in commands), proc.stdout
  assert f"--workdir={tmp_path}/model.beta=0.5,optim.learning_rate=0.001" in commands[0]
  assert "--mode" not in proc.stdout.replace("--mode=sweep", "") and not list(tmp_path.iterdir())


def test_experiment_smoke_writes_its_table_and_a_rerun_repeats_nothing(tmp_path, tiny_inception, monkeypatch):
  from experiments import families
  args = ["--smoke", "--families=vae,flow", f"--runs={tmp_path / 'runs'}", f"--out={tmp_path / 'out'}"]
  monkeypatch.setattr("sys.argv", ["experiments/families.py", *args])
  families.main(args)
  out = tmp_path / "out"
  table = (out / "table.md").read_text()
  rows = list(csv.DictReader(open(out / "table.csv")))
  assert [r["family"] for r in rows] == ["vae", "flow"] and (out / "fid_vs_time.png").stat().st_size > 1000
  for row in rows:
    finished = json.loads((tmp_path / "runs" / row["family"] / "finished.json").read_text())
    assert float(row["steps"]) == finished["step"] and float(row["FID"]) > 0
    measured = json.loads((tmp_path / "runs" / row["family"] / "measurements" / "families_fid.json").read_text())
    assert float(row["FID"]) == measured["result"]["FID"] and measured["result"]["samples"] == 16
  assert "python launch.py --config=configs/flow.py:dataset=mnist5k,size=smoke" in (out / "provenance.md").read_text()

  def nothing(*_, **__):
    raise AssertionError("a finished experiment trained or measured again")
  monkeypatch.setattr(loop, "train_and_evaluate", nothing)
  monkeypatch.setattr("experiments.measure.draw", nothing)
  families.main(args)
  assert (out / "table.md").read_text() == table
  # A subset keeps the rows of the other finished runs (adding families never drops rows).
  families.main([a.replace("--families=vae,flow", "--families=flow") for a in args])
  assert (out / "table.md").read_text() == table


def test_bad_sweeps_are_one_line_errors(tmp_path):
  config = experiment.load_config("configs/vae.py:size=smoke")
  (tmp_path / "twice.py").write_text("def get_hyper(h):\n  return h.sweep('seed', [1, 1])\n")
  with pytest.raises(experiment.ConfigError, match="same run more than once: seed=1"):
    entry.run_sweep(config, str(tmp_path / "w"), str(tmp_path / "twice.py"), dry_run=True)
  (tmp_path / "typo.py").write_text("def get_hyper(h):\n  return h.sweep('model.betta', [1.0])\n")
  with pytest.raises(experiment.ConfigError, match="config has no 'betta'"):
    entry.run_sweep(config, str(tmp_path / "w"), str(tmp_path / "typo.py"), dry_run=True)
  with pytest.raises(experiment.ConfigError, match="no sweep.json"):
    experiment.collect(str(tmp_path), {})
  assert experiment.sweep.run_dirname({"stages.autoencoder": "runs/ae@1000"}).startswith("stages.autoencoder=runs_ae_1000-")
  assert REPO


def test_ddim_steps_smoke_measures_each_sampler_once(tmp_path, tiny_inception, monkeypatch):
  from experiments import ddim_steps
  args = ["--smoke", "--samplers=ddim-2,ddim-4@1", f"--runs={tmp_path}", f"--out={tmp_path / 'out'}"]
  ddim_steps.main(args)
  rows = list(csv.DictReader(open(tmp_path / "out" / "table.csv")))
  assert [(r["sampler"], r["network evaluations"], r["eta"]) for r in rows] == [("ddim-2", "2", "0.0"),
                                                                             ("ddim-4@1", "4", "1.0")]
  assert all(float(r["FID"]) > 0 and float(r["ms/image (batch 8)"]) > 0 for r in rows)
  table = (tmp_path / "out" / "table.md").read_text()
  monkeypatch.setattr("experiments.measure.draw", lambda *_, **__: pytest.fail("measured again"))
  ddim_steps.main(args)
  assert (tmp_path / "out" / "table.md").read_text() == table


def test_families_table_keeps_earlier_rows_whose_runs_are_elsewhere(tmp_path):
  """Adding rows (`--families=pixelcnn,maskgit`) on a machine without the other families' runs
  keeps their earlier rows, numbers unchanged, with the commit they were measured at."""
  from experiments import families
  earlier = [{"family": "vae", "FID": 136.25, "params": "852,306", "bits/dim": 3.75, "steps": 1000},
             {"family": "gan", "FID": 54.79, "params": "1,069,893", "bits/dim": None, "steps": 20000},
             {"family": "pixelcnn", "FID": 99.0, "params": "1", "bits/dim": 3.0, "steps": 10}]
  experiment.write_table(str(tmp_path), earlier, ["Command: `python experiments/families.py`"])
  (tmp_path / "provenance.md").write_text("# Provenance\n\nCommand: `x`\nCommit f55369f; 2 CPU cores.\n")
  now = [{"family": "pixelcnn", "FID": 80.5, "params": "2", "bits/dim": 3.1, "steps": 6000, "measured at": "abc1234"}]
  rows, kept = families.with_earlier_rows(now, str(tmp_path))
  assert kept == ["vae", "gan"] and [r["family"] for r in rows] == ["vae", "gan", "pixelcnn"]
  assert rows[0] == {**earlier[0], "measured at": "f55369f"} and rows[1]["bits/dim"] is None
  assert rows[2] == now[0]  # the row measured now replaces the earlier one
  assert families.with_earlier_rows(now, str(tmp_path / "none")) == (now, [])
