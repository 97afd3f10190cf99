"""The VQ tokenizer: the EMA codebook converges to the normalised means of its clusters, dead
codes are restarted (on a contrived batch), codebook use is counted over the whole eval split
(checked against the tokens of every test image), and the family trains, resumes bitwise,
tokenizes and decodes through the loop."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.nn import vector_quantizer as vq
from genjax.train import loop, steps
from genjax.train.run import Run
from tests.helpers import assert_resume_is_bitwise, smoke_config


def test_ema_codebook_converges_to_the_normalised_cluster_means():
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


def test_dead_codes_are_restarted_on_batch_vectors():
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


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("vqvae")
  config = smoke_config("vqvae", {"model.codebook_size": 64}, data_dir=data_dir)
  state = loop.train_and_evaluate(config, str(workdir))
  return config, workdir, state


def test_code_use_is_counted_over_the_whole_split(trained):
  """eval/code_usage and eval/code_perplexity against the tokens of every eval image, counted
  here with numpy."""
  config, workdir, state = trained
  run = Run.from_workdir(str(workdir))
  counts = np.zeros(64)
  per_batch_usage = []
  for batch in run.eval_batches():
    keep = np.asarray(batch["mask"]) > 0
    tokens = np.asarray(run.family.tokens(state.ema_params, batch["image"]))[keep]
    assert tokens.shape[1:] == (14, 14)  # 28x28 at f = 2: 196 tokens per image
    counts += np.bincount(tokens.reshape(-1), minlength=64)
    per_batch_usage.append(len(np.unique(tokens)) / 64)
  p = counts / counts.sum()
  expected_usage = np.mean(counts > 0)
  expected_perplexity = np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())
  final = [r for r in map(json.loads, open(workdir / "metrics.jsonl")) if "eval/code_usage" in r][-1]
  assert final["eval/code_usage"] == pytest.approx(expected_usage, abs=1e-6)
  assert final["eval/code_perplexity"] == pytest.approx(expected_perplexity, rel=1e-4)
  assert expected_usage >= max(per_batch_usage)  # the split sees at least what any batch sees


def test_tokens_decode_and_resume_is_bitwise(trained, tmp_path):
  config, workdir, state = trained
  run = Run.from_workdir(str(workdir))
  batch = next(run.eval_batches())
  tokens = run.family.tokens(state.ema_params, batch["image"])
  images = run.family.decode_tokens(state.ema_params, tokens)
  np.testing.assert_allclose(np.asarray(images), np.asarray(run.family.reconstruct(state.ema_params, batch["image"])),
                             atol=1e-6)
  drawn = run.sample(state, 4)  # random codes decoded
  assert drawn.shape == (4, 28, 28, 1) and np.isfinite(np.asarray(drawn)).all()
  assert (workdir / "samples" / f"reconstructions_{config.total_steps:07d}.png").exists()
  assert_resume_is_bitwise(config, workdir, tmp_path / "resumed", stop_step=3)
