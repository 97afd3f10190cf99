"""Condition pytrees and frozen stages through the one loop, on a caption-conditioned
diffusion model (configs/t2i.py smoke) trained on a small captioned folder."""

import json
import shutil

import jax
import numpy as np
import pytest

from genjax.errors import CheckpointError, ConfigError
from genjax.train import loop, stages
from genjax.train.checkpoint import Checkpointer
from genjax.train.run import Run
from tests.helpers import launch, make_captioned_folder

@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
  return make_captioned_folder(tmp_path_factory.mktemp("captioned"))


def t2i_config(dataset, **overrides):
  from configs import t2i
  from genjax.train.sweep import apply_overrides
  encoder = overrides.pop("encoder", "trainable")
  config = t2i.get_config(f"dataset={dataset},size=smoke,encoder={encoder}")
  config.eval.fid_samples = 0
  return apply_overrides(config, overrides)


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_batches_carry_caption_tokens(captioned, tmp_path):
  dataset, rows = captioned
  run = Run.create(t2i_config(dataset), str(tmp_path))
  batch = run.to_model_batch(next(run.train_iterator()))
  assert set(batch) == {"image", "cond"} and set(batch["cond"]) == {"label", "tokens", "token_mask"}
  assert batch["cond"]["tokens"].shape == (8, 16) and batch["cond"]["token_mask"].dtype == bool
  # The conditions a model is sampled/scored under are the eval split's, in order.
  test_captions = [r["text"] for r in rows if r["split"] == "test"]
  assert list(run.host_captions(3)) == test_captions[:3]
  ids, mask = run.tokenizer(test_captions[:3])
  cond = run.conditions(3)
  np.testing.assert_array_equal(np.asarray(cond["tokens"]), ids)
  np.testing.assert_array_equal(np.asarray(cond["token_mask"]), mask)
  with pytest.raises(ConfigError, match="captioned"):
    Run.create(t2i_config("mnist5k"), str(tmp_path / "no_captions"))


@pytest.fixture(scope="module")
def trained(captioned, tmp_path_factory):
  """One t2i smoke run (6 steps, checkpoints at 3 and 6, FID with a tiny feature net, CLIP score
  with an in-domain CLIP smoke run as the scorer), with every `Run.sample` call's caption tokens
  recorded: (workdir, final state, recorded tokens)."""
  from configs import clip as clip_configs
  from genjax.train import fid_evaluator
  from tests.metrics.tiny import tiny_features
  dataset, _ = captioned
  clip_dir = tmp_path_factory.mktemp("clip")
  clip_config = clip_configs.get_config(f"dataset={dataset},size=smoke")
  clip_config.model.patch_size = 4
  loop.train_and_evaluate(clip_config, str(clip_dir))
  config = t2i_config(dataset, **{"eval.fid_samples": 12, "eval.fid_reference_count": 12,
                                  "eval.clip_score": str(clip_dir), "eval.clip_samples": 12,
                                  "eval.clip_r": 3})
  seen, original = [], Run.sample

  def spy(self, state, num, cond=None, rng=None, **options):
    seen.append(None if cond is None else np.asarray(cond["tokens"]))
    return original(self, state, num, cond, rng, **options)

  workdir = tmp_path_factory.mktemp("t2i")
  with pytest.MonkeyPatch.context() as m:
    m.setattr(fid_evaluator, "InceptionFeatures", lambda: tiny_features(batch_size=8))
    m.setattr(Run, "sample", spy)
    state = loop.train_and_evaluate(config, str(workdir))
  return workdir, state, seen, config


def test_text_model_trains_evaluates_scores_fid_and_samples(captioned, trained):
  """The condition pytree reaches training, eval metrics, the grid, FID (each sample drawn
  under the caption of the reference image it is compared with), CLIP score / R-precision
  (genjax/train/clip_evaluator.py) and prompt sampling."""
  _, rows = captioned
  workdir, state, seen, _ = trained
  lines = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  final = [l for l in lines if "eval/fid" in l][-1]
  assert np.isfinite(final["eval/fid"]) and final["eval/fid_num_samples"] == 12
  assert np.isfinite(final["eval/eval_loss"])
  assert 0 <= final["eval/clip_score"] <= 100 and 0 <= final["eval/clip_r_precision"] <= 1
  run = Run.from_workdir(str(workdir))
  test_captions = [r["text"] for r in rows if r["split"] == "test"]
  # Call 0 draws the grid (eval split's first 8 captions); calls 1-2 the FID batches of 8:
  # samples 0..11 under the captions of reference images 0..11.
  np.testing.assert_array_equal(seen[0], run.tokenizer(test_captions[:8])[0])
  fid_tokens = np.concatenate(seen[1:3])[:12]
  np.testing.assert_array_equal(fid_tokens, run.tokenizer(test_captions[:12])[0])
  # Calls 3-4: the CLIP evaluator's 12 samples under the same first 12 captions.
  clip_tokens = np.concatenate(seen[3:5])[:12]
  np.testing.assert_array_equal(clip_tokens, run.tokenizer(test_captions[:12])[0])
  # Prompts: the text changes the sample (same noise), guidance is one doubled batch.
  red = run.sample(state, 2, run.prompt_conditions(["a red square on the left"] * 2))
  blue = run.sample(state, 2, run.prompt_conditions(["a blue square on the right"] * 2))
  assert red.shape == (2, 16, 16, 3) and not np.allclose(red, blue)
  guided = run.sample(state, 2, run.prompt_conditions(["a red square on the left"] * 2), guidance_scale=3.0)
  assert np.all(np.isfinite(guided)) and not np.allclose(guided, red)


def test_text_model_resume_is_bitwise(trained, tmp_path):
  """6 steps straight == 3 steps, stop, resume to 6 (the fixture's run, its step-6 checkpoint removed)."""
  workdir, straight, _, config = trained
  shutil.copytree(workdir, tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "6")
  config = t2i_config(config.dataset)  # no FID this time: the parameters are what is compared
  resumed = loop.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert int(resumed.step) == 6
  assert _leaves_equal(straight.params, resumed.params)
  assert _leaves_equal(straight.ema_params, resumed.ema_params)
  assert _leaves_equal(straight.opt_state, resumed.opt_state)


def test_frozen_stage_is_passed_but_never_trained_or_saved(captioned, tmp_path, monkeypatch):
  """MiniLM as a frozen stage: not in params/EMA/opt state, not in the checkpoint files (only
  its record is); a changed stage is refused on resume."""
  dataset, _ = captioned
  config = t2i_config(dataset, encoder="minilm", **{"total_steps": 2, "checkpoint_every": 2,
                                                   "eval_every": 0})
  state = loop.train_and_evaluate(config, str(tmp_path))
  minilm = stages.load_stage("text_encoder", "pretrained:minilm")
  trained = sum(x.size for x in jax.tree.leaves(state.params))
  assert set(state.params) == {"unet"} and trained < 1_000_000  # MiniLM alone is 22.6M
  minilm_shapes = {x.shape for x in jax.tree.leaves(minilm.params) if x.size > 10_000}
  assert not minilm_shapes & {x.shape for x in jax.tree.leaves(state.ema_params)}
  step_dir = tmp_path / "checkpoints" / "2"
  size = sum(f.stat().st_size for f in step_dir.rglob("*") if f.is_file())
  assert size < 20e6, size  # the 90 MB of MiniLM never reach the checkpoint
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=3)
  _, _, records = ckpt.restore(2, state)
  ckpt.close()
  assert records == {"text_encoder": minilm.record}
  assert records["text_encoder"]["params_sha256"] == stages.params_sha256(minilm.params)
  # Different weights are refused on resume with a clear error (the same weights resuming is
  # what the latent and cascade stacks' bitwise-resume tests do).
  changed = jax.tree.map(lambda x: x * 1.001, minilm.params)
  monkeypatch.setitem(stages.PRETRAINED, "minilm", lambda: changed)
  config.total_steps = 3
  with pytest.raises(CheckpointError, match="stage 'text_encoder' changed"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_workdir_stage_and_missing_stage_errors(data_dir, tmp_path):
  from tests.helpers import smoke_config
  config = smoke_config("vae", {"total_steps": 2, "checkpoint_every": 2, "eval_every": 0},
                        data_dir=data_dir)
  state = loop.train_and_evaluate(config, str(tmp_path / "vae"))
  stage = stages.load_stage("autoencoder", str(tmp_path / "vae"))
  assert stage.record["step"] == 2 and stage.info.config.family == "vae"
  assert _leaves_equal(stage.params, state.ema_params)
  assert stages.load_stage("autoencoder", f"{tmp_path / 'vae'}@2").record == stage.record
  with pytest.raises(ConfigError, match="no checkpoint at step 5"):
    stages.load_stage("autoencoder", f"{tmp_path / 'vae'}@5")
  with pytest.raises(ConfigError, match="does not exist"):
    stages.load_stage("autoencoder", str(tmp_path / "nowhere"))
  with pytest.raises(ConfigError, match="unknown pretrained"):
    stages.load_stage("text_encoder", "pretrained:t5")
  with pytest.raises(ConfigError, match="needs the frozen stage"):
    stages.check_required(config, ("text_encoder",))


def test_sample_mode_rebuilds_the_run_from_its_workdir(trained, data_dir, tmp_path):
  """A run trained with non-default settings samples from --workdir alone (no --config)."""
  workdir = tmp_path / "vae"
  launch(["--config=configs/vae.py:dataset=mnist5k,size=smoke", f"--workdir={workdir}",
          "--config.model.latent_dim=5", "--config.total_steps=2", "--config.eval_every=0"],
         data_dir=data_dir, check=True)
  proc = launch([f"--workdir={workdir}", "--mode=sample", "--num_samples=4"], data_dir=data_dir, check=True)
  assert (workdir / "samples_2" / "grid.png").exists() and len(list((workdir / "samples_2").glob("0*.png"))) == 4
  # A text model: one grid row and one PNG per image per prompt, guided.
  t2i = trained[0]
  proc = launch([f"--workdir={t2i}", "--mode=sample", "--num_samples=2", "--guidance=3",
                 "--prompt=a red square on the left", "--prompt=a blue square on the right"],
                data_dir=data_dir, check=True)
  out = t2i / "samples_6"
  assert "2 prompt(s) x 2 samples" in proc.stdout, proc.stdout
  assert sorted(p.name for p in out.glob("0*.png"))[0] == "0000_a_red_square_on_the_left.png"
  assert len(list(out.glob("0*.png"))) == 4 and (out / "captions.txt").exists()
  bad = launch([f"--workdir={tmp_path / 'vae'}", "--mode=sample", "--prompt=a red square"],
               data_dir=data_dir)
  assert bad.returncode == 2 and "text-conditioned" in bad.stderr, bad.stderr


def test_reading_a_run_never_touches_a_save_in_flight(trained):
  """eval/sample beside a run still training: opening its checkpoints for reading must not
  clean up the trainer's unfinished (temporary) save."""
  workdir = trained[0]
  in_flight = workdir / "checkpoints" / "9.orbax-checkpoint-tmp"
  (in_flight / "state").mkdir(parents=True)
  try:
    _, step = Run.from_workdir(str(workdir)).restore_latest()
    assert step == 6 and in_flight.is_dir()
  finally:
    shutil.rmtree(in_flight)
