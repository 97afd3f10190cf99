"""TextEncoder: shapes, padding invariance, presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.errors import ConfigError
from genjax.nn.text_encoder import TEXT_ENCODER_SIZES, TextEncoder, text_encoder_from_preset

VOCAB, LENGTH = 100, 12


def tiny():
  # With dropout, so the dropout test reuses the compiled init; eval mode ignores it.
  return text_encoder_from_preset("tiny", vocab_size=VOCAB, max_length=LENGTH, dropout=0.5)


def batch(lengths, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, VOCAB, (len(lengths), LENGTH)).astype(np.int32)
  mask = np.arange(LENGTH)[None, :] < np.asarray(lengths)[:, None]
  return jnp.asarray(np.where(mask, ids, 0)), jnp.asarray(mask)


@pytest.fixture(scope="module")
def model_and_params():
  """(jitted apply, params): eager flax runs op by op, jit is several times faster here."""
  model = tiny()
  ids, mask = batch([3, LENGTH, 1, 7])
  params = jax.jit(model.init)(jax.random.key(0), ids, mask)
  return jax.jit(model.apply, static_argnames="train"), params


def test_shapes_and_dtype(model_and_params):
  apply, params = model_and_params
  ids, mask = batch([3, LENGTH, 1, 7])
  tokens, pooled = apply(params, ids, mask)
  assert tokens.shape == (4, LENGTH, 64) and pooled.shape == (4, 64)
  assert tokens.dtype == pooled.dtype == jnp.float32
  # Shorter sequences than max_length use the first position embeddings.
  tokens_short, _ = apply(params, ids[:, :5], mask[:, :5])
  assert tokens_short.shape == (4, 5, 64)
  # pooled is the mean over real tokens.
  np.testing.assert_allclose(pooled[0], tokens[0, :3].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_padding_does_not_leak_into_real_positions(model_and_params):
  apply, params = model_and_params
  ids, mask = batch([3, LENGTH, 1, 7])
  other = jnp.where(mask, ids, (jnp.arange(LENGTH) * 7 + 3) % VOCAB)  # new ids at padding
  assert (other != ids).any()
  (t1, p1), (t2, p2) = apply(params, ids, mask), apply(params, other, mask)
  real = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(t1)[real], np.asarray(t2)[real], rtol=0, atol=1e-6)
  np.testing.assert_allclose(p1, p2, rtol=0, atol=1e-6)
  # Sanity: outputs do depend on the real tokens.
  changed = jnp.where(jnp.arange(LENGTH) == 0, (ids + 1) % VOCAB, ids)
  assert not np.allclose(apply(params, changed, mask)[1], p1)


def test_empty_caption_is_finite(model_and_params):
  apply, params = model_and_params
  ids, mask = batch([0, 2, 1, 1])  # same shape as the fixture's batch: no recompilation
  tokens, pooled = apply(params, ids, mask)
  assert np.isfinite(tokens).all() and np.isfinite(pooled).all()
  np.testing.assert_array_equal(pooled[0], 0.0)


def test_dropout_only_in_training(model_and_params):
  apply, params = model_and_params
  ids, mask = batch([5, 9, 2, 12])
  _, eval_pooled = apply(params, ids, mask)
  _, train_pooled = apply(params, ids, mask, train=True, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(eval_pooled, train_pooled)


@pytest.mark.parametrize("name", list(TEXT_ENCODER_SIZES))
def test_presets_build(name):
  model = text_encoder_from_preset(name, vocab_size=30522, max_length=32)
  ids = jnp.zeros((2, 32), jnp.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), ids, ids > 0)
  out = jax.eval_shape(model.apply, shapes, ids, ids > 0)
  width = TEXT_ENCODER_SIZES[name]["width"]
  assert out[0].shape == (2, 32, width) and out[1].shape == (2, width)
  depth = TEXT_ENCODER_SIZES[name]["depth"]
  assert sorted(k for k in shapes["params"] if k.startswith("block_")) == sorted(
      f"block_{i}" for i in range(depth))


def test_minilm_size_preset_matches_the_pretrained_minilm():
  """The from-scratch twin of the frozen MiniLM stage (the unseen-words experiment compares
  them): the same width and depth, and its parameter count within 1% of MiniLM's own (they
  differ by MiniLM's 512 positions vs 32 here and its token-type/embedding-norm parameters)."""
  from genjax.nn.minilm import MiniLM
  ids = jnp.zeros((1, 32), jnp.int32)
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  ours = jax.eval_shape(text_encoder_from_preset("minilm_size", 30522, 32).init, jax.random.key(0), ids, ids > 0)
  theirs = jax.eval_shape(MiniLM().init, jax.random.key(0), ids, ids > 0)
  assert abs(count(ours) / count(theirs) - 1) < 0.01
  assert len([k for k in ours["params"] if k.startswith("block_")]) == len(
      [k for k in theirs["params"] if k.startswith("layer_")])


def test_configuration_errors():
  with pytest.raises(ConfigError, match="tiny, mini, minilm_size, small, medium"):
    text_encoder_from_preset("huge", VOCAB, LENGTH)
  ids, mask = batch([3])
  with pytest.raises(ConfigError, match="max_length=4"):
    TextEncoder(VOCAB, max_length=4, width=64, depth=1, num_heads=2).init(
        jax.random.key(0), ids, mask)
  with pytest.raises(ConfigError, match="divisible"):
    TextEncoder(VOCAB, LENGTH, width=30, depth=1, num_heads=4).init(jax.random.key(0), ids, mask)
