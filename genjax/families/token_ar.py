"""Autoregressive token model: a causal transformer over a frozen VQ tokenizer's codes in raster
order (genjax/families/token_model.py), the honest autoregressive baseline of the
autoregressive-vs-parallel comparison.

log P(codes) = sum_i log P(code_i | prefix, code_<i); training minimises the mean negative
log-likelihood per code (nats), which evaluation reports exactly on the test split.

Sampling: the prefix is run once (`prefill`), then one code per step through the key/value
cache (`TokenTransformer.step`): N sequential single-token passes, N = 196 for 14x14 codes.
`sample_codes(..., cached=False)` decodes the same way without the cache (N whole-sequence
passes); with the same key both give the same codes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.families.token_model import TokenModel


class TokenAR(TokenModel):
  causal = True

  def per_example_loss(self, params, codes, prefix, rng):
    del rng
    inputs = jnp.concatenate([prefix, codes[:, :-1]], axis=1)  # position i predicts code i
    logits = self.net.apply({"params": params}, inputs)
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), codes[..., None], axis=-1)[..., 0]
    return -jnp.mean(log_p, axis=1)

  def _draw(self, rng, index, logits):
    return jax.random.categorical(jax.random.fold_in(rng, index), logits / self.config.model.temperature)

  def sample_codes(self, params, rng, prefix, cached: bool = True):
    num = prefix.shape[0]
    codes = jnp.zeros((num, self.length), jnp.int32)
    if not cached:  # position i of [prefix, codes] predicts code i; later positions are masked off
      def uncached(i, codes):
        logits = self.net.apply({"params": params}, jnp.concatenate([prefix, codes], axis=1))[:, i]
        return codes.at[:, i].set(self._draw(rng, i, logits))
      return jax.lax.fori_loop(0, self.length, uncached, codes)

    logits, cache = self.net.apply({"params": params}, prefix, method=self.net.prefill)
    codes = codes.at[:, 0].set(self._draw(rng, 0, logits[:, -1]))

    def cached_step(i, carry):  # position i holds code i - 1 and predicts code i
      codes, cache = carry
      logits, cache = self.net.apply({"params": params}, codes[:, i - 1], i, cache, method=self.net.step)
      return codes.at[:, i].set(self._draw(rng, i, logits)), cache

    return jax.lax.fori_loop(1, self.length, cached_step, (codes, cache))[0]
