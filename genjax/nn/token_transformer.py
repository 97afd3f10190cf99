"""A pre-LayerNorm transformer over token sequences, causal (autoregressive decoding with a
key/value cache) or bidirectional (MaskGIT).

`TokenTransformer.__call__` runs a whole sequence; with `causal=True`, `prefill` runs a prefix
and returns its keys/values, and `step` feeds one token at position `index`, attending to the
cached keys/values of positions <= index, so sampling N tokens costs N single-token passes
instead of N whole-sequence ones. Both paths share every parameter, so cached and uncached
decoding give the same logits (tests/families/test_token_models.py).

With `cross_attention=True` every block also attends, after its self-attention, to a context
(a text encoder's token outputs [B, L, C] and their padding mask [B, L], Muse's structure); the
context is fixed during decoding, so `step` recomputes its keys/values instead of caching them.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.nn.text_encoder import masked_attention


class Block(nn.Module):
  width: int
  num_heads: int
  mlp_ratio: float = 4.0
  cross_attention: bool = False

  def setup(self):
    self.norm_attn = nn.LayerNorm()
    self.qkv = nn.Dense(3 * self.width)
    self.proj = nn.Dense(self.width)
    if self.cross_attention:
      self.norm_cross = nn.LayerNorm()
      self.cross_q = nn.Dense(self.width)
      self.cross_kv = nn.Dense(2 * self.width)
      # Zero-initialised: the block starts as the unconditional one and learns to read the text.
      self.cross_proj = nn.Dense(self.width, kernel_init=nn.initializers.zeros)
    self.norm_mlp = nn.LayerNorm()
    self.fc_in = nn.Dense(int(self.mlp_ratio * self.width))
    self.fc_out = nn.Dense(self.width)

  def _qkv(self, x):
    b, length, _ = x.shape
    q, k, v = jnp.split(self.qkv(self.norm_attn(x)), 3, axis=-1)
    heads = lambda t: t.reshape(b, length, self.num_heads, self.width // self.num_heads)
    return heads(q), heads(k), heads(v)

  def _attend_and_mlp(self, x, q, k, v, mask, context):
    """x + attention(q over k, v where `mask` [.., Lq, Lk] allows), the cross-attention
    residual when `context` = (tokens, mask) is given, then the MLP residual."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
      logits = jnp.where(mask, logits, -1e30)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
    x = x + self.proj(out.reshape(x.shape))
    if self.cross_attention:
      keys, values = jnp.split(self.cross_kv(context[0]), 2, axis=-1)
      attended = masked_attention(self.cross_q(self.norm_cross(x)), keys, values, context[1], self.num_heads)
      x = x + self.cross_proj(attended)
    return x + self.fc_out(nn.gelu(self.fc_in(self.norm_mlp(x))))

  def __call__(self, x, causal: bool, context=None):
    """(output, (keys, values)) of a whole sequence x [B, L, W]."""
    q, k, v = self._qkv(x)
    length = x.shape[1]
    mask = jnp.tril(jnp.ones((length, length), bool)) if causal else None
    return self._attend_and_mlp(x, q, k, v, mask, context), (k, v)

  def step(self, x, cache, index, context=None):
    """One token x [B, 1, W] at position `index`; cache = (keys, values) [B, L, H, D] of the
    positions before it (the rest is ignored). Returns (output, updated cache)."""
    q, k, v = self._qkv(x)
    keys = jax.lax.dynamic_update_slice_in_dim(cache[0], k, index, axis=1)
    values = jax.lax.dynamic_update_slice_in_dim(cache[1], v, index, axis=1)
    mask = (jnp.arange(keys.shape[1]) <= index)[None, None, None, :]
    return self._attend_and_mlp(x, q, keys, values, mask, context), (keys, values)


class TokenTransformer(nn.Module):
  """Token ids [B, L] (L <= max_length) -> logits [B, L, num_outputs]. With
  `cross_attention`, every call also takes `context` = (tokens [B, Lc, C], mask bool[B, Lc])."""

  vocab_size: int
  num_outputs: int
  max_length: int
  width: int
  depth: int
  num_heads: int
  causal: bool
  cross_attention: bool = False

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.width)
    self.position = self.param("position", nn.initializers.normal(0.02), (self.max_length, self.width))
    self.blocks = [Block(self.width, self.num_heads, cross_attention=self.cross_attention)
                   for _ in range(self.depth)]
    self.norm_out = nn.LayerNorm()
    self.head = nn.Dense(self.num_outputs)

  def __call__(self, tokens, context=None):
    return self.prefill(tokens, context)[0]

  def prefill(self, tokens, context=None):
    """(logits [B, L, V], cache: per block (keys, values) [B, max_length, H, D], the first L
    positions filled)."""
    x = self.embed(tokens) + self.position[:tokens.shape[1]]
    cache = []
    for block in self.blocks:
      x, (k, v) = block(x, self.causal, context)
      pad = ((0, 0), (0, self.max_length - tokens.shape[1]), (0, 0), (0, 0))
      cache.append((jnp.pad(k, pad), jnp.pad(v, pad)))
    return self.head(self.norm_out(x)), cache

  def step(self, token, index, cache, context=None):
    """Logits [B, V] for the token [B] at position `index`, and the cache with it added."""
    x = self.embed(token[:, None]) + jax.lax.dynamic_slice_in_dim(self.position, index, 1)[None]
    new_cache = []
    for block, layer_cache in zip(self.blocks, cache):
      x, layer_cache = block.step(x, layer_cache, index, context)
      new_cache.append(layer_cache)
    return self.head(self.norm_out(x))[:, 0], new_cache
