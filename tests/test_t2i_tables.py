"""Tables 4-6 (guidance, text encoder x U-Net, unseen words) on smoke runs of one shared grid,
and the statistics they report (bootstrap intervals, the headline's paired gains). Its own file
so that the suite's workers run it beside tests/test_experiments.py."""

import csv
import json

import pytest

from genjax import experiment
from genjax.train import loop


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
      encoder_vs_unet: ["--encoders=tiny,minilm", "--unets=16"],
      unseen_words: ["--encoders=tiny,minilm", "--unet=16"],
      guidance: ["--encoder=minilm", "--unet=16", "--scales=1,3"],
  }
  tables = {}
  for module, args in commands.items():
    out = tmp_path / module.__name__.split(".")[-1]
    module.main(["--smoke", f"--runs={runs}", f"--out={out}", *args])
    tables[module] = (out / "table.md").read_text()
  # Two cells (the suite's time: one U-Net width; the headline over widths is tested below on
  # known gains), shared by the three tables.
  assert sorted(p.name for p in runs.iterdir() if p.name.startswith("enc=")) == ["enc=minilm,unet=16", "enc=tiny,unet=16"]

  grid = list(csv.DictReader(open(tmp_path / "encoder_vs_unet" / "table.csv")))
  assert [(r["text encoder"], r["U-Net width"]) for r in grid] == [("tiny", "16"), ("minilm", "16")]
  measurements = runs / "enc=tiny,unet=16" / "measurements"
  cached = json.loads((measurements / "t2i_test_8_g2_fid_clip.json").read_text())
  per_prompt = cached["result"]["per_prompt"]
  assert len(per_prompt["overall"]) == 8 and float(grid[0]["overall"]) == pytest.approx(sum(per_prompt["overall"]) / 8)
  assert float(grid[0]["CLIP score"]) == pytest.approx(sum(per_prompt["clip_score"]) / 8)
  assert float(grid[0]["count"]) == pytest.approx(sum(per_prompt["count"]) / 8) and float(grid[0]["count"]) <= 1
  assert grid[1]["encoder is"] == "frozen" and int(grid[1]["encoder params"]) > 20_000_000
  assert float(grid[0]["train PFLOP"]) > 0
  summary = (tmp_path / "encoder_vs_unet" / "summary.md").read_text()
  assert "encoder tiny -> minilm | U-Net 16" in summary and "- colour: text encoder" not in summary  # one trained size: no headline

  words = list(csv.DictReader(open(tmp_path / "unseen_words" / "table.csv")))
  assert [(r["text encoder"], r["pretrained"]) for r in words] == [("tiny", "False"), ("minilm", "True")]
  # Table 6's test prompts are table 5's measurement (FID/CLIP included), not drawn again.
  assert not (measurements / "t2i_test_8_g2.json").exists() and (measurements / "t2i_heldout_words_8_g2.json").exists()
  assert float(words[0]["test colour"]) == pytest.approx(float(grid[0]["colour"]))
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
