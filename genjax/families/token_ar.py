"""Autoregressive token model: a causal transformer over a frozen VQ tokenizer's codes in raster
order (genjax/families/token_model.py), the honest autoregressive baseline of the
autoregressive-vs-parallel comparison.

log P(codes) = sum_i log P(code_i | prefix, code_<i); training minimises the mean negative
log-likelihood per code (nats), which evaluation reports exactly on the test split.

Sampling: the prefix (one token, or a caption's L tokens) is run once (`prefill`), then one
code per step through the key/value cache (`TokenTransformer.step`): N - 1 sequential
single-token passes after the prefill, N = 196 for 14x14 codes.
`sample_codes(..., cached=False)` decodes the same way without the cache (N whole-sequence
passes); with the same key both give the same codes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.families.token_model import TokenModel


class TokenAR(TokenModel):
  causal = True

  def per_example_loss(self, params, codes, conditioning, rng):
    del rng
    prefix = conditioning["prefix"]  # its last position predicts code 0, code i's predicts code i + 1
    logits = self.logits(params, jnp.concatenate([prefix, codes[:, :-1]], axis=1), conditioning)
    logits = logits[:, prefix.shape[1] - 1:]
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), codes[..., None], axis=-1)[..., 0]
    return -jnp.mean(log_p, axis=1)

  def _draw(self, rng, index, logits):
    return jax.random.categorical(jax.random.fold_in(rng, index), logits / self.config.model.temperature)

  def sample_codes(self, params, rng, conditioning, guidance_scale: float = 1.0, cached: bool = True):
    w, prefix = guidance_scale, conditioning["prefix"]
    num, start = self.images_per_batch(conditioning, w), prefix.shape[1] - 1
    codes = jnp.zeros((num, self.length), jnp.int32)
    if not cached:  # position start + i of [prefix, codes] predicts code i; later ones are masked off
      def uncached(i, codes):
        tokens = jnp.concatenate([prefix, self.doubled(codes, w)], axis=1)
        logits = self.logits(params, tokens, conditioning)[:, start + i]
        return codes.at[:, i].set(self._draw(rng, i, self.guide(logits, w)))
      return jax.lax.fori_loop(0, self.length, uncached, codes)

    logits, cache = self.prefill(params, conditioning)
    codes = codes.at[:, 0].set(self._draw(rng, 0, self.guide(logits[:, -1], w)))

    def cached_step(i, carry):  # position start + i holds code i - 1 and predicts code i
      codes, cache = carry
      logits, cache = self.step(params, self.doubled(codes[:, i - 1], w), start + i, cache, conditioning)
      return codes.at[:, i].set(self._draw(rng, i, self.guide(logits, w))), cache

    return jax.lax.fori_loop(1, self.length, cached_step, (codes, cache))[0]
