"""MaskGIT (Chang et al., 2022): a bidirectional transformer over a frozen VQ tokenizer's codes
(genjax/families/token_model.py) that predicts masked codes, decoded in T parallel steps.

Training: per image r ~ U(0, 1), the masking ratio gamma(r) = cos(pi r / 2) (at least
`model.min_mask_rate`), ceil(gamma N) random positions replaced by MASK; the loss is the
cross-entropy of the original codes at the masked positions (nats per masked code, which
evaluation reports on the test split with the same random masking).

Decoding with T steps (`model.sample_steps`, or `sample_with(steps=T)`): start all-MASK; at step
t = 1..T sample every masked position from the network's prediction, keep the positions it is
most confident in (log-probability of the sampled code plus Gumbel noise scaled by
`model.choice_temperature` * (1 - t/T), annealed to zero), and re-mask the
floor(N gamma(t/T)) least confident of the newly sampled ones (at least one fewer masked than
before, none after step T). A kept code is never re-masked or changed. T = 1 is the one-shot
non-autoregressive decoder. `decode` also returns the sequence after every step (for tests).
With a caption (`model.text`, genjax/families/token_model.py; Muse's structure is
"cross_attention") and guidance scale w != 1, every step's logits are the guided ones of the
doubled batch [caption, empty caption].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from genjax.errors import ConfigError
from genjax.families.token_model import TokenModel


def mask_ratio(r):
  """The cosine schedule gamma(r) = cos(pi r / 2): 1 at r = 0 (all masked), 0 at r = 1."""
  return jnp.cos(0.5 * math.pi * r)


class MaskGIT(TokenModel):
  causal = False
  sampling_options = ("steps", "guidance_scale")

  def __init__(self, config, data, stages=None):
    super().__init__(config, data, stages)
    m = config.model
    if not 0 <= m.min_mask_rate < 1:
      raise ConfigError(f"model.min_mask_rate must be in [0, 1), got {m.min_mask_rate}")
    if m.sample_steps < 1:
      raise ConfigError(f"model.sample_steps must be >= 1, got {m.sample_steps}")

  def random_mask(self, rng, num):
    """bool [num, N]: ceil(N max(gamma(r), min_mask_rate)) random positions per row, r ~ U(0, 1)."""
    ratio_rng, order_rng = jax.random.split(rng)
    ratio = jnp.maximum(mask_ratio(jax.random.uniform(ratio_rng, (num,))), self.config.model.min_mask_rate)
    count = jnp.clip(jnp.ceil(ratio * self.length), 1, self.length)
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(order_rng, (num, self.length)), axis=1), axis=1)
    return rank < count[:, None]

  def _logits(self, params, conditioning, tokens):
    prefix = conditioning["prefix"]
    return self.logits(params, jnp.concatenate([prefix, tokens], axis=1), conditioning)[:, prefix.shape[1]:]

  def per_example_loss(self, params, codes, conditioning, rng):
    masked = self.random_mask(rng, codes.shape[0])
    logits = self._logits(params, conditioning, jnp.where(masked, self.mask_id, codes))
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), codes[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * masked, axis=1) / jnp.sum(masked, axis=1)

  def decode(self, params, rng, conditioning, steps: int, guidance_scale: float = 1.0):
    """(codes [B, N], tokens [steps, B, N]: the sequence after each step, MASK where masked)."""
    m, w = self.config.model, guidance_scale
    num = self.images_per_batch(conditioning, w)

    def one_step(carry, t):
      tokens, masked = carry
      sample_rng, choice_rng = jax.random.split(jax.random.fold_in(rng, t))
      logits = self.guide(self._logits(params, conditioning, self.doubled(tokens, w)), w) / m.temperature
      sampled = jax.random.categorical(sample_rng, logits)
      log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), sampled[..., None], axis=-1)[..., 0]
      sampled = jnp.where(masked, sampled, tokens)  # kept codes stay as they are
      progress = (t + 1) / steps
      still_masked = jnp.floor(self.length * mask_ratio(progress)).astype(jnp.int32)
      still_masked = jnp.clip(still_masked, 0, jnp.sum(masked, axis=1) - 1)  # at least one fewer
      confidence = log_p + m.choice_temperature * (1 - progress) * jax.random.gumbel(choice_rng, log_p.shape)
      confidence = jnp.where(masked, confidence, jnp.inf)  # kept codes are never re-masked
      rank = jnp.argsort(jnp.argsort(confidence, axis=1), axis=1)
      masked = rank < still_masked[:, None]
      tokens = jnp.where(masked, self.mask_id, sampled)
      return (tokens, masked), tokens

    start = (jnp.full((num, self.length), self.mask_id, jnp.int32), jnp.ones((num, self.length), bool))
    (codes, _), history = jax.lax.scan(one_step, start, jnp.arange(steps))
    return codes, history

  def sample_codes(self, params, rng, conditioning, guidance_scale: float = 1.0, steps=None):
    steps = self.config.model.sample_steps if steps is None else steps
    return self.decode(params, rng, conditioning, steps, guidance_scale)[0]
