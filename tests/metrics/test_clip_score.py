"""CLIP score and R-precision: definitions on constructed embeddings, batch-size and padding
invariance, the in-domain CLIP family trained by the loop, the CLI and its errors."""

import json

import numpy as np
import pytest

from configs import clip as clip_configs
from genjax import entry
from genjax.errors import ConfigError, InputError, WeightsError
from genjax.metrics import clip_score
from genjax.train import loop
from tests.helpers import make_captioned_folder


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_clip_score_is_w_times_clamped_cosine():
  img = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  txt = np.array([[0.6, 0.8], [-0.3, np.sqrt(1 - 0.09)], [0.0, 1.0]])
  np.testing.assert_allclose(clip_score.clip_scores(img, txt), [60.0, 0.0, 100.0])
  np.testing.assert_allclose(clip_score.clip_scores(img, txt, w=2.5), [1.5, 0.0, 2.5])
  with pytest.raises(InputError, match="3 images but 2 captions"):
    clip_score.clip_scores(img, txt[:2])


def test_r_precision_rule():
  rng = np.random.default_rng(0)
  # Perfectly matched pairs, with repeated captions (identical text, identical embedding): every
  # image is a hit only because a caption equal to the true one is never drawn as a negative.
  texts = [f"caption {i % 40}" for i in range(200)]
  base = _unit(rng.normal(size=(40, 64)))
  txt = base[[i % 40 for i in range(200)]]
  score, hits = clip_score.r_precision(txt, texts, txt, r=30, seed=1)
  assert score == 1.0 and hits.all()
  # Unrelated embeddings: chance is 1/R (expected 0.1; 2,000 images, binomial sd 0.0067).
  texts = [f"c{i}" for i in range(2000)]
  score, _ = clip_score.r_precision(_unit(rng.normal(size=(2000, 64))), texts,
                                    _unit(rng.normal(size=(2000, 64))), r=10, seed=0)
  assert 0.075 < score < 0.125
  # Seeded: the same negatives, the same result.
  img = _unit(txt[:100] + 0.8 * rng.normal(size=(100, 64)))
  a = clip_score.r_precision(img, texts[:100], txt[:100], r=20, seed=3)[1]
  b = clip_score.r_precision(img, texts[:100], txt[:100], r=20, seed=3)[1]
  np.testing.assert_array_equal(a, b)
  with pytest.raises(InputError, match="R=100"):
    clip_score.r_precision(img[:50], texts[:50], txt[:50])


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
  """The in-domain CLIP's smoke preset trained 4 steps on a captioned folder of 16x16 images."""
  folder = tmp_path_factory.mktemp("captioned")
  dataset, rows = make_captioned_folder(folder)
  workdir = tmp_path_factory.mktemp("clip_run")
  config = clip_configs.get_config(f"dataset={dataset},size=smoke")
  config.model.patch_size = 4
  loop.train_and_evaluate(config, str(workdir))
  return folder, rows, workdir


def test_clip_family_trains_and_evaluates_retrieval(clip_run):
  _, _, workdir = clip_run
  metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  evals = [m for m in metrics if "eval/image_to_text_top1" in m]
  assert evals and 0.0 <= evals[-1]["eval/image_to_text_top1"] <= 1.0
  assert np.isfinite([m["train/loss"] for m in metrics if "train/loss" in m]).all()
  assert not (workdir / "samples").exists() or not any((workdir / "samples").iterdir())
  with pytest.raises(ConfigError, match="does not generate images"):
    entry.sample(str(workdir), 4)


def test_scores_do_not_depend_on_batch_size_or_padding(clip_run):
  folder, rows, workdir = clip_run
  paths = [str(folder / r["file_name"]) for r in rows[:11]]
  texts = [r["text"] for r in rows[:11]]
  per_size = {}
  for bs in (1, 4, 11, 16):
    scorer = clip_score.load_scorer(str(workdir), batch_size=bs)
    per_size[bs] = clip_score.clip_scores(scorer.embed_images(paths), scorer.embed_texts(texts))
  for bs in (4, 11, 16):
    np.testing.assert_allclose(per_size[bs], per_size[1], rtol=0, atol=1e-4)
  # The same compiled batch size, with 3 of 4 rows of the last batch real or all 4: bitwise.
  scorer = clip_score.load_scorer(str(workdir), batch_size=4)
  ten = clip_score.clip_scores(scorer.embed_images(paths[:10]), scorer.embed_texts(texts[:10]))
  twelve = clip_score.clip_scores(scorer.embed_images(paths + paths[:1]),
                                  scorer.embed_texts(texts + texts[:1]))
  np.testing.assert_array_equal(ten, per_size[4][:10])
  np.testing.assert_array_equal(twelve[:11], per_size[4])


def test_cli_on_a_folder_with_metadata_and_with_a_caption_file(clip_run, tmp_path, capsys):
  folder, rows, workdir = clip_run
  out = tmp_path / "scores.json"
  assert clip_score.main([str(folder), str(folder / "metadata.jsonl"), f"--checkpoint={workdir}",
                          f"--out={out}", "--r=2"]) == 0
  result = json.loads(out.read_text())
  assert result["pairs"] == len(rows) == len(result["per_pair"])
  assert 0 <= result["clip_score"] <= 100 and 0 <= result["clip_r_precision"] <= 1
  assert result["params_sha256"] and result["checkpoint"].endswith("@4")
  # The same pairs as a caption file in file-name order give the same score.
  captions = tmp_path / "captions.txt"
  captions.write_text("\n".join(r["text"] for r in sorted(rows, key=lambda r: r["file_name"])))
  capsys.readouterr()
  assert clip_score.main([str(folder), str(captions), f"--checkpoint={workdir}"]) == 0
  assert json.loads(capsys.readouterr().out)["clip_score"] == pytest.approx(result["clip_score"],
                                                                            abs=1e-9)
  # A `--mode=sample` folder: ID_slug.png images, a grid.png, "ID<TAB>caption" lines.
  import shutil
  samples = tmp_path / "samples_4"
  samples.mkdir()
  shutil.copy(folder / rows[0]["file_name"], samples / "grid.png")
  for i, r in enumerate(rows[:3]):
    shutil.copy(folder / r["file_name"], samples / f"{i:04d}_{r['text'].replace(' ', '_')}.png")
  (samples / "captions.txt").write_text("".join(f"{i:04d}\t{r['text']}\n" for i, r in enumerate(rows[:3])))
  paths, texts = clip_score.read_pairs(str(samples), str(samples / "captions.txt"))
  assert [p.rsplit("/", 1)[1][:4] for p in paths] == ["0000", "0001", "0002"]
  assert texts == [r["text"] for r in rows[:3]]
  captions.write_text("only one caption\n")
  assert clip_score.main([str(folder), str(captions), f"--checkpoint={workdir}"]) == 2
  assert "has 1 captions but" in capsys.readouterr().err


def test_checkpoint_errors_say_what_was_expected(tmp_path):
  with pytest.raises(WeightsError, match="cannot download CLIP weights"):
    clip_score.read_clip_checkpoint(tmp_path / "ViT-B-32.pt")
  from safetensors.numpy import save_file
  save_file({"encoder.weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "other.safetensors"))
  state, _, _ = clip_score.read_clip_checkpoint(tmp_path / "other.safetensors", "gelu")
  from genjax.nn.clip import ClipSpec
  with pytest.raises(WeightsError, match="not a CLIP state dict"):
    ClipSpec.from_state_dict(state, "gelu")
  (tmp_path / "corrupt.bin").write_bytes(b"PK\x03\x04 not really a zip")
  with pytest.raises(WeightsError):
    clip_score.read_clip_checkpoint(tmp_path / "corrupt.bin", "gelu")


def test_tokenizer_file_errors_name_the_install_command(tmp_path):
  from genjax.data.clip_tokenizer import ClipTokenizer
  from genjax.errors import DatasetError
  with pytest.raises(DatasetError, match="pip install --no-deps open_clip_torch==3.3.0"):
    ClipTokenizer(tmp_path / "bpe_simple_vocab_16e6.txt.gz")
  (tmp_path / "bad.txt.gz").write_bytes(b"not the merges")
  with pytest.raises(DatasetError, match="sha256"):
    ClipTokenizer(tmp_path / "bad.txt.gz")
  with pytest.raises(InputError):
    ClipTokenizer()("a single string, not a batch")


def test_config_check_refuses_fewer_samples_than_r_precision_candidates():
  from configs import t2i
  from genjax.train.config_check import validate_config
  config = t2i.get_config("size=smoke")
  config.eval.clip_score, config.eval.clip_samples, config.eval.clip_r = "runs/clip", 2, 3
  with pytest.raises(ConfigError, match="clip_samples=2 must be >= config.eval.clip_r=3"):
    validate_config(config)
