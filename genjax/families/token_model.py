"""What the two token families share (genjax/families/token_ar.py: one code at a time;
genjax/families/maskgit.py: all codes in parallel, refined in a few steps): the frozen VQ
tokenizer stage (`config.stages.tokenizer`, a run of configs/vqvae.py) that turns images into
codes and codes back into images, the vocabulary, and the training step.

Sequences are [prefix, code_0, ..., code_{N-1}], N = the tokenizer's (H/f) x (W/f) codes in
raster order. Vocabulary: ids [0, K) are the K codes, K is MASK (MaskGIT), K + 1 the
unconditional prefix, K + 2 + c the prefix of class c (model.conditional). A family defines
`per_example_loss(params, codes, prefix, rng)` (nats per scored token, [B]) and `sample_codes`.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
import optax

from genjax.errors import ConfigError
from genjax.families.base import Family
from genjax.nn.token_transformer import TokenTransformer
from genjax.optim import make_optimizer


class TokenModel(Family):
  causal: bool  # the transformer's attention

  def __init__(self, config, data, stages=None):
    super().__init__(config, data, stages)
    m = config.model
    for key in ("width", "depth", "num_heads"):
      if m[key] < 1:
        raise ConfigError(f"model.{key} must be >= 1, got {m[key]}")
    if m.width % m.num_heads:
      raise ConfigError(f"model.width={m.width} must be divisible by model.num_heads={m.num_heads}")
    info = self.stages.get("tokenizer")
    self.tokenizer = None
    if info is not None and info.config is not None:
      if info.config.get("family") != "vqvae":
        raise ConfigError(f"stage 'tokenizer' ({info.source}) is a {info.config.get('family')} run, not a "
                          f"VQ tokenizer: point config.stages.tokenizer at a run of configs/vqvae.py")
      if info.config.dataset != config.dataset:
        raise ConfigError(f"stage 'tokenizer' ({info.source}) was trained on {info.config.dataset}, this "
                          f"model on {config.dataset}: its codes are of other images")
      from genjax.families.vqvae import VQAutoencoder  # pylint: disable=import-outside-toplevel
      self.tokenizer = VQAutoencoder(info.config, data)
    elif info is not None:
      raise ConfigError(f"stage 'tokenizer' must be a workdir of configs/vqvae.py, got {info.source!r}")
    # Without the stage (check_required names it right after construction) nothing is built.
    self.num_codes = info.config.model.codebook_size if self.tokenizer else 2
    self.token_shape = self.tokenizer.token_shape if self.tokenizer else (1, 1)
    self.length = self.token_shape[0] * self.token_shape[1]
    self.mask_id, self.start_id = self.num_codes, self.num_codes + 1
    num_classes = data.num_classes if self.conditional else 0
    self.net = TokenTransformer(vocab_size=self.num_codes + 2 + num_classes, num_outputs=self.num_codes,
                                max_length=self.length + 1, width=m.width, depth=m.depth,
                                num_heads=m.num_heads, causal=self.causal)
    self.optimizer = make_optimizer(config.optim, config.total_steps)

  def required_stages(self):
    return ("tokenizer",)

  # ---- images <-> codes -----------------------------------------------------------------------
  def codes(self, images_uint8, frozen):
    """Code ids [B, N] of uint8 images, raster order."""
    tokens = self.tokenizer.tokens(frozen["tokenizer"], images_uint8)
    return tokens.reshape(tokens.shape[0], -1)

  def images(self, codes, frozen):
    """Images in [0, 1] from code ids [B, N]."""
    return self.tokenizer.decode_tokens(frozen["tokenizer"], codes.reshape((-1,) + self.token_shape))

  def prefix(self, labels, num: int):
    """The prefix token [num, 1]: the class's, or the unconditional one."""
    if labels is None:
      return jnp.full((num, 1), self.start_id, jnp.int32)
    return (self.num_codes + 2 + labels.astype(jnp.int32))[:, None]

  def _prefix_for(self, cond, num, rng):
    labels = self.class_labels(cond)
    if self.conditional and labels is None:
      labels = jax.random.randint(rng, (num,), 0, self.data.num_classes)
    return self.prefix(labels, num)

  # ---- training -------------------------------------------------------------------------------
  def init(self, rng, batch, frozen=None):
    params = self.net.init(rng, jnp.zeros((1, self.length + 1), jnp.int32))["params"]
    return params, self.optimizer.init(params)

  @abc.abstractmethod
  def per_example_loss(self, params, codes, prefix, rng):
    """Nats per scored token of each sequence, [B]."""

  def train_step(self, params, opt_state, batch, rng, step, frozen=None):
    del step
    codes = self.codes(batch["image"], frozen)
    prefix = self.prefix(self.class_labels(batch["cond"]), codes.shape[0])
    loss, grads = jax.value_and_grad(lambda p: jnp.mean(self.per_example_loss(p, codes, prefix, rng)))(params)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state,
            {"loss": loss, "nats_per_token": loss, "grad_norm": optax.global_norm(grads)})

  def eval_metrics(self, ema_params, batch, rng, frozen=None):
    codes = self.codes(batch["image"], frozen)
    prefix = self.prefix(self.class_labels(batch["cond"]), codes.shape[0])
    return {"nats_per_token": self.per_example_loss(ema_params, codes, prefix, rng)}

  @abc.abstractmethod
  def sample_codes(self, params, rng, prefix, **options):
    """Code ids [B, N] for the prefixes [B, 1]."""

  def sample(self, ema_params, rng, num, cond, frozen=None):
    return self.sample_with(ema_params, rng, num, cond, frozen)

  def sample_with(self, ema_params, rng, num, cond, frozen=None, **options):
    label_rng, rng = jax.random.split(rng)
    return self.images(self.sample_codes(ema_params, rng, self._prefix_for(cond, num, label_rng), **options), frozen)
