"""The VQ tokenizer and the two token models on it (one smoke tokenizer run serves both).

VQ: the EMA codebook converges to the normalised means of its clusters, dead codes are
restarted (on a contrived batch), codebook use is counted over the whole eval split (checked
against the tokens of every test image), and it trains, resumes bitwise, tokenizes and decodes.
Token models: the KV-cached autoregressive sampler gives the uncached decoder's codes,
MaskGIT's training masks follow the cosine schedule's distribution and its decoder masks the
schedule's counts and never re-masks or changes a kept code; both train, resume bitwise and
sample through the loop; a wrong tokenizer stage is a clear error."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.errors import ConfigError
from genjax.families import DataSpec, StageInfo, build_family
from genjax.nn import vector_quantizer as vq
from genjax.train import loop, steps
from genjax.train.run import Run
from genjax.train.stages import read_run_config
from tests.helpers import assert_resume_is_bitwise, jiggled, smoke_config


@pytest.fixture(scope="module")
def tokenizer(data_dir, tmp_path_factory):
  """(config, workdir, final state) of a smoke VQ tokenizer (32 codes) on mnist5k."""
  workdir = tmp_path_factory.mktemp("vqvae")
  config = smoke_config("vqvae", {"model.codebook_size": 32}, data_dir=data_dir)
  return config, workdir, loop.train_and_evaluate(config, workdir=str(workdir))


def test_vq_ema_codebook_converges_to_the_normalised_cluster_means():
  rs = np.random.RandomState(0)
  centres = vq.normalize(jnp.asarray(rs.normal(size=(4, 8)), jnp.float32))
  z = vq.normalize(jnp.repeat(centres, 25, axis=0) + 0.05 * rs.normal(size=(100, 8)).astype(np.float32))
  codebook = {"codes": centres, "code_sum": centres, "cluster_size": jnp.ones(4)}
  index = vq.nearest_code(z, codebook["codes"])
  assert np.array_equal(np.asarray(index), np.repeat(np.arange(4), 25))  # noise small enough
  for i in range(600):
    codebook = vq.ema_update(codebook, z, index, jax.random.PRNGKey(i), decay=0.99, restart_below=1e-3)
  means = np.stack([np.asarray(z)[i * 25:(i + 1) * 25].mean(0) for i in range(4)])
  expected = means / np.linalg.norm(means, axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(codebook["codes"]), expected, atol=1e-3)
  np.testing.assert_allclose(np.asarray(codebook["cluster_size"]), 25.0, rtol=1e-2)


def test_vq_dead_codes_are_restarted_on_batch_vectors():
  """A contrived batch: 4 distinct directions that all start nearest to code 0 of 16. Without
  restarts one code takes everything forever; with them the 15 unused codes die, restart on
  batch vectors, and the 4 directions end up with codes of their own."""
  rs = np.random.RandomState(1)
  base = np.zeros(8, np.float32)
  base[0] = 1
  directions = vq.normalize(jnp.asarray(base + 0.3 * np.eye(8, dtype=np.float32)[1:5]))
  z = jnp.repeat(directions, 8, axis=0)
  codes = np.array(vq.normalize(jnp.asarray(rs.normal(size=(16, 8)), jnp.float32)))
  codes[:, 0] = -np.abs(codes[:, 0])  # every code points away from the batch ...
  codes[0] = base  # ... except code 0
  def run(restart_below, steps=400):
    codebook = {"codes": jnp.asarray(codes), "code_sum": jnp.asarray(codes), "cluster_size": jnp.ones(16)}
    for i in range(steps):
      index = vq.nearest_code(z, codebook["codes"])
      codebook = vq.ema_update(codebook, z, index, jax.random.PRNGKey(i), 0.9, restart_below)
    return np.asarray(vq.nearest_code(directions, codebook["codes"]))
  assert len(set(run(restart_below=0.0))) == 1  # no restarts: one code for all four
  assert len(set(run(restart_below=0.05))) == 4  # revived codes separate the directions


def test_vector_metrics_are_masked_averages_over_the_split():
  collection = steps.averages({"freq": jax.ShapeDtypeStruct((3, 4), jnp.float32),
                               "loss": jax.ShapeDtypeStruct((3,), jnp.float32)})
  rs = np.random.RandomState(0)
  values = [rs.uniform(size=(3, 4)).astype(np.float32) for _ in range(2)]
  masks = [np.ones(3, np.float32), np.array([1, 1, 0], np.float32)]  # a padded last batch
  acc = collection.empty()
  for v, m in zip(values, masks):
    acc = acc.merge(collection.single_from_model_output(freq=jnp.asarray(v), loss=jnp.asarray(v[:, 0]),
                                                        mask=jnp.asarray(m)))
  kept = np.concatenate([values[0], values[1][:2]])
  out = acc.compute()
  np.testing.assert_allclose(np.asarray(out["freq"]), kept.mean(0), rtol=1e-6)
  assert float(out["loss"]) == pytest.approx(kept[:, 0].mean(), rel=1e-6)




def test_code_use_is_counted_over_the_whole_split(tokenizer):
  """eval/code_usage and eval/code_perplexity against the tokens of every eval image, counted
  here with numpy."""
  config, workdir, state = tokenizer
  run = Run.from_workdir(str(workdir))
  counts = np.zeros(32)
  per_batch_usage = []
  for batch in run.eval_batches():
    keep = np.asarray(batch["mask"]) > 0
    tokens = np.asarray(run.family.tokens(state.ema_params, batch["image"]))[keep]
    assert tokens.shape[1:] == (14, 14)  # 28x28 at f = 2: 196 tokens per image
    counts += np.bincount(tokens.reshape(-1), minlength=32)
    per_batch_usage.append(len(np.unique(tokens)) / 32)
  p = counts / counts.sum()
  expected_usage = np.mean(counts > 0)
  expected_perplexity = np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())
  final = [r for r in map(json.loads, open(workdir / "metrics.jsonl")) if "eval/code_usage" in r][-1]
  assert final["eval/code_usage"] == pytest.approx(expected_usage, abs=1e-6)
  assert final["eval/code_perplexity"] == pytest.approx(expected_perplexity, rel=1e-4)
  assert expected_usage >= max(per_batch_usage)  # the split sees at least what any batch sees


def test_vq_tokens_decode_and_resume_is_bitwise(tokenizer, tmp_path):
  config, workdir, state = tokenizer
  run = Run.from_workdir(str(workdir))
  batch = next(run.eval_batches())
  tokens = run.family.tokens(state.ema_params, batch["image"])
  images = run.family.decode_tokens(state.ema_params, tokens)
  np.testing.assert_allclose(np.asarray(images), np.asarray(run.family.reconstruct(state.ema_params, batch["image"])),
                             atol=1e-6)
  drawn = run.sample(state, 4)  # random codes decoded
  assert drawn.shape == (4, 28, 28, 1) and np.isfinite(np.asarray(drawn)).all()
  assert (workdir / "samples" / f"reconstructions_{config.total_steps:07d}.png").exists()
  resumed = config.copy_and_resolve_references()
  resumed.eval_every = 0  # compared by its parameters, not evaluated again
  assert_resume_is_bitwise(resumed, workdir, tmp_path / "resumed", stop_step=3)


@pytest.fixture(scope="module")
def runs(tokenizer, data_dir, tmp_path_factory):
  """{family: (config, workdir, final state)}: both token models trained 6 steps."""
  out = {}
  for family in ("token_ar", "maskgit"):
    workdir = tmp_path_factory.mktemp(family)
    config = smoke_config(family, {"stages.tokenizer": str(tokenizer[1]), "model.conditional": True},
                          data_dir=data_dir)
    out[family] = (config, workdir, loop.train_and_evaluate(config, str(workdir)))
  return out


def test_cached_autoregressive_sampling_equals_uncached_decoding(runs):
  config, workdir, state = runs["token_ar"]
  family = Run.from_workdir(str(workdir)).family
  assert family.length == 196  # 14 x 14 codes of 28x28 images
  params = jiggled(state.ema_params)  # a spread-out distribution, not a near-constant one
  prefix = {"prefix": family.prefix(jnp.arange(3), 3)}
  sample = jax.jit(family.sample_codes, static_argnames="cached")
  cached = np.asarray(sample(params, jax.random.PRNGKey(1), prefix, cached=True))
  uncached = np.asarray(sample(params, jax.random.PRNGKey(1), prefix, cached=False))
  np.testing.assert_array_equal(cached, uncached)
  assert len(np.unique(cached)) > 5 and (cached < family.num_codes).all()


def test_maskgit_training_masks_follow_the_cosine_schedule(runs):
  family = Run.from_workdir(str(runs["maskgit"][1])).family
  masks = np.asarray(family.random_mask(jax.random.PRNGKey(0), 4000))
  counts = masks.sum(axis=1)
  n, floor = family.length, family.config.model.min_mask_rate
  assert counts.min() >= math.ceil(floor * n) and counts.max() <= n
  # E[max(cos(pi r / 2), m)], r ~ U(0, 1), in closed form; ceil adds up to 1/N.
  r0 = 2 / math.pi * math.acos(floor)
  expected = 2 / math.pi * math.sin(math.pi * r0 / 2) + floor * (1 - r0)
  assert expected <= counts.mean() / n <= expected + 1 / n + 0.01
  assert abs(masks.mean(axis=0) - masks.mean()).max() < 0.05  # positions chosen uniformly


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_maskgit_decoding_masks_the_stated_counts_and_keeps_what_it_kept(runs, steps):
  config, workdir, state = runs["maskgit"]
  family = Run.from_workdir(str(workdir)).family
  prefix = {"prefix": family.prefix(jnp.arange(4), 4)}
  codes, history = jax.jit(family.decode, static_argnums=3)(jiggled(state.ema_params), jax.random.PRNGKey(2),
                                                             prefix, steps)
  history = np.asarray(history)
  masked = history == family.mask_id
  n = previous = family.length
  for t in range(steps):  # the schedule, written out: floor(N cos(pi/2 (t+1)/T)), one fewer at least
    expected = min(math.floor(n * math.cos(math.pi / 2 * (t + 1) / steps)), previous - 1) if t < steps - 1 else 0
    expected = max(expected, 0)
    assert (masked[t].sum(axis=1) == expected).all(), (t, masked[t].sum(axis=1), expected)
    previous = expected
    if t > 0:  # a kept code is never re-masked and never changes
      kept = ~masked[t - 1]
      assert not (masked[t] & kept).any()
      np.testing.assert_array_equal(history[t][kept], history[t - 1][kept])
  np.testing.assert_array_equal(np.asarray(codes), history[-1])
  assert (np.asarray(codes) < family.num_codes).all()


@pytest.mark.parametrize("family_name", ["token_ar", "maskgit"])
def test_token_model_trains_resumes_bitwise_and_samples(runs, family_name, tmp_path):
  config, workdir, state = runs[family_name]
  run = Run.from_workdir(str(workdir))
  evals = [r for r in map(json.loads, open(workdir / "metrics.jsonl")) if "eval/nats_per_token" in r]
  assert evals and 0 < evals[-1]["eval/nats_per_token"] < 2 * math.log(32)
  options = {"steps": 2} if family_name == "maskgit" else {}
  images = run.sample(state, 4, run.conditions(4), **options)
  assert images.shape == (4, 28, 28, 1) and np.isfinite(np.asarray(images)).all()
  resumed = config.copy_and_resolve_references()
  resumed.eval_every = 0
  assert_resume_is_bitwise(resumed, workdir, tmp_path / "resumed", stop_step=3)


def test_tokenizer_stage_must_be_a_vq_run_of_the_same_data(tokenizer, runs):
  config = runs["maskgit"][0]
  spec = DataSpec((28, 28, 1), 10)
  vq_config = read_run_config(tokenizer[1])
  assert build_family(config, spec, {"tokenizer": StageInfo("tokenizer", "/t", vq_config)}).length == 196
  other = vq_config.copy_and_resolve_references()
  other.family = "autoencoder"
  with pytest.raises(ConfigError, match="is a autoencoder run, not a VQ tokenizer"):
    build_family(config, spec, {"tokenizer": StageInfo("tokenizer", "/x", other)})
  other = vq_config.copy_and_resolve_references()
  other.dataset = "fashion_mnist"
  with pytest.raises(ConfigError, match="was trained on fashion_mnist"):
    build_family(config, spec, {"tokenizer": StageInfo("tokenizer", "/x", other)})
  with pytest.raises(ConfigError, match="must be a workdir"):
    build_family(config, spec, {"tokenizer": StageInfo("tokenizer", "pretrained:minilm")})


def test_sample_mode_takes_maskgit_steps_and_refuses_them_for_the_ar_model(runs, tmp_path):
  from genjax import entry
  out = entry.sample(str(runs["maskgit"][1]), 4, steps=1, out_dir=str(tmp_path / "one_shot"))
  assert (out / "grid.png").exists() and len(list(out.glob("0*.png"))) == 4
  with pytest.raises(ConfigError, match="--steps is not an option of the token_ar family's sampler"):
    entry.sample(str(runs["token_ar"][1]), 4, steps=2)


def test_ar_vs_nar_table_is_cached_per_model(runs, tiny_inception, tmp_path, monkeypatch):
  """The AR-vs-NAR table from the smoke token models: one row per model and T, sequential
  evaluations as the samplers do them, and a re-run measures nothing and rewrites the same table."""
  import csv
  from experiments import ar_vs_nar
  args = [f"--token_ar={runs['token_ar'][1]}", f"--maskgit={runs['maskgit'][1]}", "--maskgit_steps=1,3",
          "--fid_samples=8", "--fid_reference=8", "--batch=4", "--repeats=1", f"--out={tmp_path}"]
  ar_vs_nar.main(args)
  rows = list(csv.DictReader(open(tmp_path / "table.csv")))
  length = Run.from_workdir(str(runs["token_ar"][1])).family.length
  assert [(r["model"], r["sequential evaluations"]) for r in rows] == [
      ("token AR, KV cache", str(length)), ("MaskGIT T=1", "1"), ("MaskGIT T=3", "3")]
  assert all(float(r["FID"]) >= 0 and float(r["ms/image batch 1"]) > 0 for r in rows)
  assert (tmp_path / "fid_vs_speed.png").exists()
  table = (tmp_path / "table.md").read_text()
  monkeypatch.setattr("experiments.ar_vs_nar.draw", lambda *_, **__: pytest.fail("measured again"))
  monkeypatch.setattr("experiments.ar_vs_nar.time_per_image", lambda *_, **__: pytest.fail("timed again"))
  ar_vs_nar.main(args)
  assert (tmp_path / "table.md").read_text() == table
