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


def test_bootstrap_intervals_match_the_normal_approximation():
  """A mean of 0/1 values: the bootstrap interval's half-width agrees with 1.96 sqrt(p(1-p)/n),
  and a paired difference's with the standard error of the per-prompt differences."""
  import numpy as np
  rng = np.random.default_rng(1)
  hits = (rng.random(1000) < 0.3).astype(float)
  low, high = experiment.bootstrap_interval(hits)
  p = hits.mean()
  assert low < p < high and abs((high - low) / 2 - 1.96 * np.sqrt(p * (1 - p) / 1000)) < 0.003
  other = np.where(rng.random(1000) < 0.8, hits, 1 - hits)  # correlated with `hits`
  d = experiment.bootstrap_difference(other, hits)
  se = (other - hits).std() / np.sqrt(1000)
  assert d["difference"] == pytest.approx(other.mean() - p)
  assert abs((d["high"] - d["low"]) / 2 - 1.96 * se) < 0.003 and d["low"] < d["difference"] < d["high"]
  with pytest.raises(ValueError, match="paired"):
    experiment.bootstrap_difference(hits, hits[:10])


@pytest.fixture
def tiny_scenes(tmp_path_factory, monkeypatch):
  """scenes32 with small splits in a temporary data folder, and a scene reader trained in a few steps."""
  from genjax import data
  from genjax.data import scenes
  from genjax.metrics import scene_reader
  from tests.metrics.test_scene_reader import TINY
  for split, n in {"train": 160, "validation": 40, "test": 160, "heldout_combos": 40, "heldout_words": 60}.items():
    monkeypatch.setitem(scenes.SPLIT_SIZES, split, n)
  monkeypatch.setitem(scene_reader._SETTINGS, 32, {**scene_reader._SETTINGS[32], **TINY})
  path = str(tmp_path_factory.mktemp("tfds_scenes32"))
  data.prepare("scenes32", path)
  monkeypatch.setenv("GENJAX_DATA_DIR", path)
  return path


def test_text_to_image_tables_smoke_and_rerun_repeat_nothing(tmp_path, tiny_scenes, tiny_inception, monkeypatch):
  """Tables 4-6 (guidance, encoder x U-Net, unseen words) on shared smoke runs: each cell is
  trained once, a table's numbers are those of the cached per-prompt measurements, and
  re-running every table trains and draws nothing and rewrites the same tables."""
  from experiments import encoder_vs_unet, guidance, t2i_grid, unseen_words
  monkeypatch.setattr(t2i_grid, "_TOOLS", {})  # the tiny reader/Inception must not outlive the test
  monkeypatch.setenv("GENJAX_DATA_DIR", tiny_scenes)
  runs = tmp_path / "runs"
  commands = {
      encoder_vs_unet: ["--encoders=tiny,minilm", "--unets=16,24"],
      unseen_words: ["--encoders=tiny,minilm", "--unet=16"],
      guidance: ["--encoder=minilm", "--unet=16", "--scales=1,3"],
  }
  tables = {}
  for module, args in commands.items():
    out = tmp_path / module.__name__.split(".")[-1]
    module.main(["--smoke", f"--runs={runs}", f"--out={out}", *args])
    tables[module] = (out / "table.md").read_text()
  assert sorted(p.name for p in runs.iterdir() if p.name.startswith("enc=")) == [
      "enc=minilm,unet=16", "enc=minilm,unet=24", "enc=tiny,unet=16", "enc=tiny,unet=24"]

  grid = list(csv.DictReader(open(tmp_path / "encoder_vs_unet" / "table.csv")))
  assert [(r["text encoder"], r["U-Net width"]) for r in grid] == [
      ("tiny", "16"), ("minilm", "16"), ("tiny", "24"), ("minilm", "24")]
  cached = json.loads((runs / "enc=tiny,unet=16" / "measurements" / "t2i_test_8_g2_fid_clip.json").read_text())
  per_prompt = cached["result"]["per_prompt"]
  assert len(per_prompt["overall"]) == 8 and float(grid[0]["overall"]) == pytest.approx(sum(per_prompt["overall"]) / 8)
  assert float(grid[0]["CLIP score"]) == pytest.approx(sum(per_prompt["clip_score"]) / 8)
  assert float(grid[0]["count"]) == pytest.approx(sum(per_prompt["count"]) / 8) and float(grid[0]["count"]) <= 1
  assert grid[1]["encoder is"] == "frozen" and int(grid[1]["encoder params"]) > 20_000_000
  assert int(grid[2]["U-Net params"]) > int(grid[0]["U-Net params"]) and float(grid[0]["train PFLOP"]) > 0
  summary = (tmp_path / "encoder_vs_unet" / "summary.md").read_text()
  assert "encoder tiny -> minilm | U-Net 16" in summary and "- colour: text encoder" not in summary  # one trained size: no headline

  words = list(csv.DictReader(open(tmp_path / "unseen_words" / "table.csv")))
  assert [(r["text encoder"], r["pretrained"]) for r in words] == [("tiny", "False"), ("minilm", "True")]
  guided = list(csv.DictReader(open(tmp_path / "guidance" / "table.csv")))
  assert [r["guidance"] for r in guided] == ["real scenes", "1.0", "3.0"]
  assert all(float(r["FID"]) >= 0 for r in guided) and (tmp_path / "guidance" / "fid_vs_clip.png").exists()

  def nothing(*_, **__):
    raise AssertionError("a finished experiment trained or drew again")
  monkeypatch.setattr(loop, "train_and_evaluate", nothing)
  monkeypatch.setattr("experiments.t2i_compositional.draw", nothing)
  for module, args in commands.items():
    out = tmp_path / module.__name__.split(".")[-1]
    module.main(["--smoke", f"--runs={runs}", f"--out={out}", *args])
    assert (out / "table.md").read_text() == tables[module]


def test_encoder_vs_unet_headline_recovers_known_gains():
  """Per-prompt cells built with a known effect: every prompt gains 0.2 from the larger encoder
  (0.1 from the pretrained one) and 0.05 from the wider U-Net, so the headline must report
  exactly those gains and their differences, with intervals of zero width (the same gain on
  every prompt)."""
  import numpy as np
  from experiments import encoder_vs_unet
  base = np.random.default_rng(0).random(50) * 0.5
  encoders, unets = ["tiny", "mini", "minilm"], [16, 40]
  gain = {"tiny": 0.0, "mini": 0.2, "minilm": 0.1}
  cells = {(e, u): {"overall": (base + gain[e] + (0.05 if u == 40 else 0.0)).tolist()}
           for e in encoders for u in unets}
  rows = [{"text encoder": e, "U-Net width": u, "encoder params": 10 if e == "tiny" else 40,
           "U-Net params": 100 if u == 16 else 300} for e in encoders for u in unets]
  unet, trained, pretrained = encoder_vs_unet.headline(cells, rows, encoders, unets, "overall")
  assert unet == "- overall: U-Net 16 -> 40 (3.0x its parameters), averaged over encoders: +0.050 (+0.050 to +0.050)"
  assert trained.endswith("tiny -> mini (trained, 4.0x its parameters), averaged over U-Net widths: "
                          "+0.200 (+0.200 to +0.200); minus the U-Net's gain: +0.150 (+0.150 to +0.150)")
  assert "tiny -> minilm (frozen pretrained, 4.0x" in pretrained and pretrained.endswith(
      "+0.100 (+0.100 to +0.100); minus the U-Net's gain: +0.050 (+0.050 to +0.050)")
