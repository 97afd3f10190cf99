"""The token models on a frozen VQ tokenizer: the KV-cached autoregressive sampler gives the
uncached decoder's codes, MaskGIT's training masks follow the cosine schedule's distribution
and its decoder masks the schedule's counts and never re-masks or changes a kept code; both
train, resume bitwise and sample through the loop; a wrong tokenizer stage is a clear error."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.errors import ConfigError
from genjax.families import DataSpec, StageInfo, build_family
from genjax.train import loop
from genjax.train.run import Run
from genjax.train.stages import read_run_config
from tests.helpers import assert_resume_is_bitwise, smoke_config


@pytest.fixture(scope="module")
def tokenizer(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("vqvae")
  loop.train_and_evaluate(smoke_config("vqvae", {"model.codebook_size": 32}, data_dir=data_dir), str(workdir))
  return workdir


@pytest.fixture(scope="module")
def runs(tokenizer, data_dir, tmp_path_factory):
  """{family: (config, workdir, final state)}: both token models trained 6 steps."""
  out = {}
  for family in ("token_ar", "maskgit"):
    workdir = tmp_path_factory.mktemp(family)
    config = smoke_config(family, {"stages.tokenizer": str(tokenizer), "model.conditional": True},
                          data_dir=data_dir)
    out[family] = (config, workdir, loop.train_and_evaluate(config, str(workdir)))
  return out


def _jiggled(params, scale=0.5):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
  return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_cached_autoregressive_sampling_equals_uncached_decoding(runs):
  config, workdir, state = runs["token_ar"]
  family = Run.from_workdir(str(workdir)).family
  assert family.length == 196  # 14 x 14 codes of 28x28 images
  params = _jiggled(state.ema_params)  # a spread-out distribution, not a near-constant one
  prefix = family.prefix(jnp.arange(3), 3)
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
  prefix = family.prefix(jnp.arange(4), 4)
  codes, history = jax.jit(family.decode, static_argnums=3)(_jiggled(state.ema_params), jax.random.PRNGKey(2),
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
  import json
  evals = [r for r in map(json.loads, open(workdir / "metrics.jsonl")) if "eval/nats_per_token" in r]
  assert evals and 0 < evals[-1]["eval/nats_per_token"] < 2 * math.log(32)
  options = {"steps": 2} if family_name == "maskgit" else {}
  images = run.sample(state, 4, run.conditions(4), **options)
  assert images.shape == (4, 28, 28, 1) and np.isfinite(np.asarray(images)).all()
  assert_resume_is_bitwise(config, workdir, tmp_path / "resumed", stop_step=3)


def test_tokenizer_stage_must_be_a_vq_run_of_the_same_data(tokenizer, runs):
  config = runs["maskgit"][0]
  spec = DataSpec((28, 28, 1), 10)
  vq = read_run_config(tokenizer)
  assert build_family(config, spec, {"tokenizer": StageInfo("tokenizer", str(tokenizer), vq)}).length == 196
  other = vq.copy_and_resolve_references()
  other.family = "autoencoder"
  with pytest.raises(ConfigError, match="is a autoencoder run, not a VQ tokenizer"):
    build_family(config, spec, {"tokenizer": StageInfo("tokenizer", "/x", other)})
  other = vq.copy_and_resolve_references()
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
