"""PixelCNN++: the network is causal in raster and channel order (exactly, by the Jacobian),
the discretized logistic mixture is a distribution over the 256^C values and equals a
written-out float64 formula, the sampler draws from that distribution, bits/dim is exact, and
the family trains, resumes bitwise and samples pixel by pixel through the loop."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.families import DataSpec, build_family
from genjax.nn.likelihoods import (discretized_logistic_mixture_logprob, num_mixture_outputs,
                                   sample_discretized_logistic_mixture)
from genjax.nn.pixelcnn import PixelCNNPlusPlus
from tests.helpers import assert_resume_is_bitwise, smoke_config

LEVELS = np.arange(256) / 127.5 - 1.0


def _jiggle(params, seed=2, scale=0.3):
  """Random weights everywhere (the blocks' last convolutions start at zero)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_network_is_strictly_causal_in_raster_and_channel_order_with_no_blind_spot():
  h = w = 6
  net = PixelCNNPlusPlus(filters=4, num_resnet=1, levels=2, out_features=num_mixture_outputs(3, 2))
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, h, w, 3), minval=-1, maxval=1)
  params = _jiggle(net.init(jax.random.PRNGKey(1), x)["params"])
  outputs_of = lambda x: net.apply({"params": params}, x)[0].sum(-1)  # [H, W]
  jacobian = np.abs(np.asarray(jax.jit(jax.jacrev(outputs_of))(x)))[:, :, 0].max(-1)  # [H, W, H, W]: any channel
  for i in range(h):
    for j in range(w):
      seen = jacobian[i, j].reshape(-1) != 0
      k = i * w + j
      assert not seen[k:].any(), (i, j)  # the pixel itself (every channel) and all after it
      if j > 0:
        assert seen[k - 1], (i, j)
      if i > 0:  # the region a masked PixelCNN's blind spot misses: above and to the right
        assert all(seen[(i - 1) * w + b] for b in range(max(0, j - 1), min(w, j + 3))), (i, j)
  # Within a pixel the channels are autoregressive through the mixture's coefficients: the
  # log-probability of (R, G, B) with B summed out must not depend on B's value, etc.
  outputs = jax.random.normal(jax.random.PRNGKey(3), (num_mixture_outputs(3, 2),))
  def marginal_of_first(c, x):  # log P(x_0..x_c) by summing later channels out exactly
    grid = jnp.stack(jnp.meshgrid(*([jnp.asarray(LEVELS, jnp.float32)] * (2 - c)), indexing="ij"), -1)
    grid = grid.reshape(-1, 2 - c)
    full = jnp.concatenate([jnp.broadcast_to(x[:c + 1], (grid.shape[0], c + 1)), grid], -1)
    return jax.nn.logsumexp(discretized_logistic_mixture_logprob(full, outputs))
  x = jnp.asarray([0.2, -0.4, 0.6])
  for c in (0, 1):
    grad = np.asarray(jax.jit(jax.grad(lambda x, c=c: marginal_of_first(c, x)))(x))
    assert np.all(grad[c + 1:] == 0) and np.all(grad[:c + 1] != 0), (c, grad)


def _reference_mixture_logprob(x, outputs, channels):
  """log P(x) of one pixel in float64, written out from the PixelCNN++ paper's definition:
  sum_k pi_k prod_c [sigma((x_c + 1/255 - m_kc) / s_kc) - sigma((x_c - 1/255 - m_kc) / s_kc)],
  with the edge bins open and m_kc = mu_kc + sum_{c'<c} a_k(c, c') x_c'."""
  outputs = np.asarray(outputs, np.float64)
  per = 1 + 2 * channels + channels * (channels - 1) // 2
  k = outputs.size // per
  logits, rest = outputs[:k], outputs[k:].reshape(k, per - 1)
  sigmoid = lambda v: 1 / (1 + np.exp(-v))
  total = 0.0
  weights = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  for comp in range(k):
    mu, log_s, coef = rest[comp, :channels], rest[comp, channels:2 * channels], np.tanh(rest[comp, 2 * channels:])
    p, pairs = weights[comp], iter(coef)
    for c in range(channels):
      m = mu[c] + sum(next(pairs) * x[cp] for cp in range(c))
      s = np.exp(max(log_s[c], -7.0))
      upper = 1.0 if x[c] > 0.999 else sigmoid((x[c] + 1 / 255 - m) / s)
      lower = 0.0 if x[c] < -0.999 else sigmoid((x[c] - 1 / 255 - m) / s)
      p *= upper - lower
    total += p
  return np.log(total)


@pytest.mark.parametrize("channels", [1, 3])
def test_mixture_equals_the_written_out_formula(channels):
  rs = np.random.RandomState(channels)
  for trial in range(20):
    outputs = rs.normal(size=num_mixture_outputs(channels, 3)) * [1.0, 0.5, 2.0][trial % 3]
    x = LEVELS[rs.randint(0, 256, channels)]
    x[0] = LEVELS[[0, 255, 128][trial % 3]]  # the two edge bins and the middle
    got = float(discretized_logistic_mixture_logprob(jnp.asarray(x, jnp.float32), jnp.asarray(outputs, jnp.float32)))
    # 1e-4 relative: where a bin's mass underflows float32 (< 1e-5) the code uses the density
    # at the bin centre times its width, as PixelCNN++ does.
    assert got == pytest.approx(_reference_mixture_logprob(x, outputs, channels), rel=1e-4, abs=1e-4), trial


def _all_rgb_logprobs(outputs):
  """log P of every one of the 256^3 RGB values of a pixel: [256, 256, 256]."""
  levels = jnp.asarray(LEVELS, jnp.float32)
  gb = jnp.stack(jnp.meshgrid(levels, levels, indexing="ij"), -1).reshape(-1, 2)
  def for_red(r):
    x = jnp.concatenate([jnp.full((gb.shape[0], 1), r), gb], -1)
    return discretized_logistic_mixture_logprob(x, outputs).reshape(256, 256)
  return jax.lax.map(for_red, levels)


def test_mixture_is_a_distribution_over_all_values_and_the_sampler_draws_from_it():
  logprob = jax.jit(discretized_logistic_mixture_logprob)
  sample = jax.jit(sample_discretized_logistic_mixture, static_argnums=2)
  rs = np.random.RandomState(0)
  # Gray: 256 values, several mixtures (sharp, wide, at the edges).
  for scale in (0.3, 1.0, 3.0):
    outputs = jnp.asarray(rs.normal(size=num_mixture_outputs(1, 4)) * scale, jnp.float32)
    logp = logprob(jnp.asarray(LEVELS, jnp.float32)[:, None], outputs)
    assert float(jnp.exp(logp).sum()) == pytest.approx(1.0, abs=2e-4), scale
  # RGB: all 16,777,216 values of a pixel, brute force.
  outputs = jnp.asarray(rs.normal(size=num_mixture_outputs(3, 2)), jnp.float32)
  logp = jax.jit(_all_rgb_logprobs)(outputs)
  assert float(jax.nn.logsumexp(logp)) == pytest.approx(0.0, abs=1e-3)
  # The sampler: 200,000 draws; their mean log-probability is minus the entropy of the
  # brute-forced distribution (a sampler that mixed up the channel order would not be).
  draws = sample(jax.random.PRNGKey(1), jnp.broadcast_to(outputs, (200_000, outputs.size)), 3)
  codes = np.round((np.asarray(draws) + 1) * 127.5).astype(int)
  assert np.allclose(np.asarray(draws), LEVELS[codes], atol=1e-6)  # on the 8-bit grid
  logp = np.asarray(logp, np.float64)
  entropy = -(np.exp(logp) * logp).sum()
  mean_logp = logp[codes[:, 0], codes[:, 1], codes[:, 2]].mean()
  assert mean_logp == pytest.approx(-entropy, abs=0.03), (mean_logp, entropy)
  # Gray: the draws' histogram against the probabilities (total variation).
  outputs = jnp.asarray(rs.normal(size=num_mixture_outputs(1, 3)), jnp.float32)
  draws = sample(jax.random.PRNGKey(2), jnp.broadcast_to(outputs, (200_000, outputs.size)), 1)
  hist = np.bincount(np.round((np.asarray(draws[:, 0]) + 1) * 127.5).astype(int), minlength=256) / 200_000
  probs = np.exp(np.asarray(logprob(jnp.asarray(LEVELS, jnp.float32)[:, None], outputs)))
  assert 0.5 * np.abs(hist - probs).sum() < 0.02


def _family(**model):
  config = smoke_config("pixelcnn")
  for key, value in model.items():
    config.model[key] = value
  return build_family(config, DataSpec((8, 8, 1), 10))


def test_bits_per_dim_is_exact():
  """With the output layer zeroed every pixel is a mixture of identical logistic(0, 1)
  components: bits/dim is then a closed form of the image's pixel values."""
  family = _family()
  images = jnp.asarray(np.random.RandomState(0).randint(0, 256, (3, 8, 8, 1)), jnp.uint8)
  batch = {"image": images, "cond": {"label": jnp.zeros(3, jnp.int32)}}
  params, _ = jax.jit(family.init)(jax.random.PRNGKey(0), batch)
  params = _jiggle(params)
  params["Dense_0"] = jax.tree.map(jnp.zeros_like, params["Dense_0"])
  x = np.asarray(images, np.float64)[..., 0] / 127.5 - 1
  sigmoid = lambda v: 1 / (1 + np.exp(-v))
  upper = np.where(x > 0.999, 1.0, sigmoid(x + 1 / 255))
  lower = np.where(x < -0.999, 0.0, sigmoid(x - 1 / 255))
  expected = -np.log(upper - lower).sum(axis=(1, 2)) / (64 * math.log(2))
  np.testing.assert_allclose(np.asarray(jax.jit(family.bits_per_dim)(params, batch)), expected, rtol=1e-5)


def test_each_sampled_pixel_is_a_draw_from_the_final_images_own_conditionals():
  """Causality in the sampler: re-running the network on the finished sample gives, at every
  pixel, the outputs the pixel was drawn from (later pixels change nothing), so redrawing with
  the same key reproduces the sample exactly."""
  family = _family(num_mixtures=3)
  batch = {"image": jnp.zeros((2, 8, 8, 1), jnp.uint8), "cond": {"label": jnp.zeros(2, jnp.int32)}}
  params = _jiggle(jax.jit(family.init)(jax.random.PRNGKey(0), batch)[0], scale=0.1)
  rng = jax.random.PRNGKey(5)
  images = jax.jit(family.sample, static_argnums=2)(params, rng, 2, None)
  x = np.asarray(images) * 2 - 1
  assert np.allclose(x, np.round((x + 1) * 127.5) / 127.5 - 1, atol=1e-5)  # 8-bit values
  _, pixel_rng = jax.random.split(rng)  # the family's split: (labels, pixels)

  @jax.jit
  def redraw(x):  # every pixel again, from the finished image's outputs, with its own key
    outputs = family.net.apply({"params": params}, x).reshape(2, 64, 1, 1, -1)
    keys = jax.vmap(lambda k: jax.random.fold_in(pixel_rng, k))(jnp.arange(64))
    return jax.vmap(lambda k, o: sample_discretized_logistic_mixture(k, o, 1), in_axes=(0, 1), out_axes=1)(keys, outputs)

  redrawn = np.asarray(redraw(jnp.asarray(x, jnp.float32))).reshape(2, 8, 8, 1)
  np.testing.assert_allclose(redrawn, x, atol=1e-5)
  assert len(np.unique(x)) > 10  # not a constant image


def test_loop_trains_evaluates_samples_and_resumes_bitwise(data_dir, tmp_path):
  from genjax.train import loop
  import json
  config = smoke_config("pixelcnn", {"model.conditional": True}, data_dir=data_dir)
  state = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert int(state.step) == config.total_steps
  evals = [r for r in map(json.loads, open(tmp_path / "run" / "metrics.jsonl")) if "eval/bits_per_dim" in r]
  assert evals and 0 < evals[-1]["eval/bits_per_dim"] < 8.5  # at most a little worse than uniform
  assert (tmp_path / "run" / "samples" / f"samples_{config.total_steps:07d}.png").exists()
  config.eval_every = 0  # the resumed run is compared by its parameters, not evaluated again
  assert_resume_is_bitwise(config, tmp_path / "run", tmp_path / "resumed", stop_step=3)
