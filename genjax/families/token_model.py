"""What the two token families share (genjax/families/token_ar.py: one code at a time;
genjax/families/maskgit.py: all codes in parallel, refined in a few steps): the frozen VQ
tokenizer stage (`config.stages.tokenizer`, a run of configs/vqvae.py) that turns images into
codes and codes back into images, the vocabulary, the conditions, guidance and the training step.

Sequences are [prefix, code_0, ..., code_{N-1}], N = the tokenizer's (H/f) x (W/f) codes in
raster order. Vocabulary: ids [0, K) are the K codes, K is MASK (MaskGIT), K + 1 the
unconditional prefix, K + 2 + c the prefix of class c (model.conditional), then (text prefix)
the caption's token ids shifted by T0 = K + 2 + classes, and T0 + text vocabulary for padding.

Text conditioning (`model.text`, on a captioned dataset):
* "prefix": the caption's L tokens are the sequence's prefix (padding replaced by the padding
  id), one transformer over text then image tokens: DALL-E's structure. The loss scores the
  image codes only (the model of p(codes | caption)).
* "cross_attention": the prefix is the unconditional token and every block cross-attends to the
  caption encoded by a text encoder (`model.text_encoder`: trainable or frozen MiniLM,
  genjax/families/captions.py): Muse's structure.
In training each caption is replaced by the empty caption with prob `model.p_uncond`; sampling
with guidance scale w != 1 runs the doubled batch [caption, empty caption] and samples from
logits_null + w (logits_caption - logits_null) (w = 1: the plain conditional model).

A family defines `per_example_loss(params, codes, conditioning, rng)` (nats per scored token,
[B]) and `sample_codes(params, rng, conditioning, guidance_scale, ...)`; `conditioning` is
{"prefix": int32[B, P]} plus, with cross-attention, "context" = (text tokens, their mask).
"""

from __future__ import annotations

import abc
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from genjax.errors import ConfigError
from genjax.families import captions
from genjax.families.base import Family
from genjax.nn.token_transformer import TokenTransformer
from genjax.optim import make_optimizer

TEXT_MODES = ("none", "prefix", "cross_attention")


class TokenModel(Family):
  causal: bool  # the transformer's attention
  sampling_options = ("guidance_scale",)

  def __init__(self, config, data, stages=None):
    super().__init__(config, data, stages)
    m = config.model
    for key in ("width", "depth", "num_heads"):
      if m[key] < 1:
        raise ConfigError(f"model.{key} must be >= 1, got {m[key]}")
    if m.width % m.num_heads:
      raise ConfigError(f"model.width={m.width} must be divisible by model.num_heads={m.num_heads}")
    self._check_text(m, data)
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
    self.text_offset = self.num_codes + 2 + (data.num_classes if self.conditional else 0)
    self.text_encoder = (captions.build_text_encoder(m.text_encoder, m, data, self.stages)
                         if self.text_mode == "cross_attention" else None)
    text_vocab = data.text.vocab_size + 1 if self.text_mode == "prefix" else 0  # + the padding id
    self.prefix_length = data.text.max_length if self.text_mode == "prefix" else 1
    self.net = TokenTransformer(vocab_size=self.text_offset + text_vocab, num_outputs=self.num_codes,
                                max_length=self.prefix_length + self.length, width=m.width, depth=m.depth,
                                num_heads=m.num_heads, causal=self.causal,
                                cross_attention=self.text_mode == "cross_attention")
    self.optimizer = make_optimizer(config.optim, config.total_steps)

  def _check_text(self, m, data):
    self.text_mode = m.get("text", "none")
    if self.text_mode not in TEXT_MODES:
      raise ConfigError(f"unknown model.text {self.text_mode!r}; choose one of: {', '.join(TEXT_MODES)}")
    if self.text_mode != "none" and data.text is None:
      raise ConfigError(f"model.text={self.text_mode!r} needs caption tokens: set text.tokenizer (e.g. "
                        f"'minilm') and use a captioned dataset (e.g. scenes)")
    if self.text_mode != "none" and self.conditional:
      raise ConfigError("model.conditional (a class prefix) and model.text are exclusive: choose one")
    if not 0.0 <= m.get("p_uncond", 0.0) < 1.0:
      raise ConfigError(f"model.p_uncond must be in [0, 1), got {m.p_uncond}")
    if m.get("guidance_scale", 1.0) != 1.0 and self.text_mode == "none":
      raise ConfigError("model.guidance_scale != 1 needs a text-conditioned model (model.text)")

  def required_stages(self):
    frozen_text = self.text_mode == "cross_attention" and self.config.model.text_encoder == "frozen"
    return ("tokenizer",) + (("text_encoder",) if frozen_text else ())

  def _net_params(self, params):
    return params["transformer"] if self.trains_text_encoder else params

  @property
  def trains_text_encoder(self) -> bool:
    return self.text_mode == "cross_attention" and self.config.model.text_encoder == "trainable"

  def logits(self, params, tokens, conditioning):
    """The transformer's logits [B, L, K] on tokens [B, L] under `conditioning`'s context."""
    return self.net.apply({"params": self._net_params(params)}, tokens, conditioning.get("context"))

  def prefill(self, params, conditioning):
    """(logits, cache) of the conditioning's prefix (the causal model's first decoding pass)."""
    return self.net.apply({"params": self._net_params(params)}, conditioning["prefix"],
                          conditioning.get("context"), method=self.net.prefill)

  def step(self, params, token, index, cache, conditioning):
    """(logits [B, K], cache) of one token at sequence position `index` (the cached pass)."""
    return self.net.apply({"params": self._net_params(params)}, token, index, cache,
                          conditioning.get("context"), method=self.net.step)

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

  def conditioning(self, params, cond, num: int, rng, frozen, drop: Optional[jax.Array] = None) -> dict:
    """The transformer's conditions for the batch conditions `cond` (None: unconditional, or
    the empty caption); `drop` bool[num] replaces those examples' captions by the empty one.
    A class-conditional model without labels in `cond` draws them from `rng`."""
    labels = self.class_labels(cond)
    if self.conditional and labels is None:
      labels = jax.random.randint(rng, (num,), 0, self.data.num_classes)
    if self.text_mode == "none":
      return {"prefix": self.prefix(labels, num)}
    if cond is None or "tokens" not in cond:
      cond, drop = {"tokens": jnp.zeros((num, self.data.text.max_length), jnp.int32),
                    "token_mask": jnp.zeros((num, self.data.text.max_length), bool)}, jnp.ones((num,), bool)
    ids, mask = captions.caption_tokens(self.data.text, cond, drop)
    if self.text_mode == "prefix":
      padding = self.text_offset + self.data.text.vocab_size
      return {"prefix": jnp.where(mask, ids + self.text_offset, padding)}
    encoder = params["text_encoder"] if self.trains_text_encoder else frozen["text_encoder"]
    context, _ = self.text_encoder.apply(encoder, ids, mask)
    return {"prefix": self.prefix(None, num), "context": (context, mask)}

  def guided_conditioning(self, params, cond, num: int, rng, frozen, guidance_scale=None):
    """(conditioning, w) for sampling: with w != 1 the conditioning of the doubled batch
    [captions, empty captions], whose logits `guide` combines."""
    w = self.config.model.get("guidance_scale", 1.0) if guidance_scale is None else guidance_scale
    conditioning = self.conditioning(params, cond, num, rng, frozen)
    if w == 1.0:
      return conditioning, 1.0
    if self.text_mode == "none":
      raise ConfigError("guidance_scale != 1 needs a text-conditioned model (model.text)")
    null = self.conditioning(params, cond, num, rng, frozen, drop=jnp.ones((num,), bool))
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), conditioning, null), w

  @staticmethod
  def guide(logits, w: float):
    """The guided logits of the doubled batch's first half (w = 1: the logits unchanged)."""
    if w == 1.0:
      return logits
    with_caption, without = jnp.split(logits, 2)
    return without + w * (with_caption - without)

  @staticmethod
  def images_per_batch(conditioning, w: float) -> int:
    """How many images `conditioning` is for (half its rows when guided: [captions, empty])."""
    return conditioning["prefix"].shape[0] // (1 if w == 1.0 else 2)

  @staticmethod
  def doubled(tokens, w: float):
    """Tokens [B, ...] for both halves of a guided batch."""
    return tokens if w == 1.0 else jnp.concatenate([tokens, tokens])

  # ---- training -------------------------------------------------------------------------------
  def init(self, rng, batch, frozen=None):
    # Split only for a text model: models without text keep the streams of earlier runs.
    net_rng, text_rng = jax.random.split(rng) if self.text_mode != "none" else (rng, rng)
    first = jax.tree.map(lambda a: a[:1], batch["cond"])
    params = {}
    if self.trains_text_encoder:
      params["text_encoder"] = self.text_encoder.init(text_rng, first["tokens"], first["token_mask"])
    conditioning = self.conditioning(params, first, 1, text_rng, frozen)
    tokens = jnp.zeros((1, self.prefix_length + self.length), jnp.int32)
    net = self.net.init(net_rng, tokens, conditioning.get("context"))["params"]
    params = dict(params, transformer=net) if self.trains_text_encoder else net
    return params, self.optimizer.init(params)

  @abc.abstractmethod
  def per_example_loss(self, params, codes, conditioning, rng):
    """Nats per scored token of each sequence, [B]."""

  def train_step(self, params, opt_state, batch, rng, step, frozen=None):
    del step
    codes = self.codes(batch["image"], frozen)
    drop = None
    if self.text_mode != "none":
      drop_rng, rng = jax.random.split(rng)
      drop = jax.random.bernoulli(drop_rng, self.config.model.p_uncond, codes.shape[:1])

    def loss_fn(p):
      conditioning = self.conditioning(p, batch["cond"], codes.shape[0], None, frozen, drop)
      return jnp.mean(self.per_example_loss(p, codes, conditioning, rng))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state,
            {"loss": loss, "nats_per_token": loss, "grad_norm": optax.global_norm(grads)})

  def eval_metrics(self, ema_params, batch, rng, frozen=None):
    codes = self.codes(batch["image"], frozen)
    conditioning = self.conditioning(ema_params, batch["cond"], codes.shape[0], None, frozen)
    return {"nats_per_token": self.per_example_loss(ema_params, codes, conditioning, rng)}

  @abc.abstractmethod
  def sample_codes(self, params, rng, conditioning, guidance_scale: float = 1.0, **options):
    """Code ids [B, N] under `conditioning` (of the doubled batch when guidance_scale != 1)."""

  def sample(self, ema_params, rng, num, cond, frozen=None):
    return self.sample_with(ema_params, rng, num, cond, frozen)

  def sample_with(self, ema_params, rng, num, cond, frozen=None, guidance_scale=None, **options):
    label_rng, rng = jax.random.split(rng)
    conditioning, w = self.guided_conditioning(ema_params, cond, num, label_rng, frozen, guidance_scale)
    return self.images(self.sample_codes(ema_params, rng, conditioning, w, **options), frozen)
