"""A trainable transformer text encoder for caption-conditioned models.

    enc = text_encoder_from_preset("mini", vocab_size=tok.vocab_size, max_length=tok.max_length)
    tokens, pooled = enc.apply(params, ids, mask)   # float32[B, L, width], float32[B, width]

`ids` int[B, L] with L <= max_length and `mask` bool[B, L] (True on real tokens) come from
`genjax.data.tokenizer.Tokenizer`. Pre-LN blocks (LayerNorm before attention and MLP, one final
LayerNorm) train stably from scratch without warm-up tricks; positions are learned.

Padding never leaks into real positions: padded keys get exactly zero attention weight and the
pooled vector is the mean over real tokens only, so outputs at real positions and `pooled` do not
depend on what sits at padded positions (tested). Outputs AT padded positions are computed but
meaningless; cross-attention over `tokens` should pass the same mask. A row with no real token
(an empty "null" caption) gives finite tokens and pooled = 0.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.errors import ConfigError

# Width/depth/heads of each preset; every preset uses mlp_ratio 4. "mini" has BERT-mini's shape;
# "minilm_size" has all-MiniLM-L6-v2's (384 wide, 6 layers, 12 heads; with its WordPiece
# vocabulary, within 1% of its parameters), the from-scratch twin of the frozen pretrained stage.
TEXT_ENCODER_SIZES = {
    "tiny": dict(width=64, depth=2, num_heads=2, mlp_ratio=4.0),
    "mini": dict(width=256, depth=4, num_heads=4, mlp_ratio=4.0),
    "minilm_size": dict(width=384, depth=6, num_heads=12, mlp_ratio=4.0),
    "small": dict(width=512, depth=4, num_heads=8, mlp_ratio=4.0),
    "medium": dict(width=512, depth=8, num_heads=8, mlp_ratio=4.0),
}

# BERT/GPT-style init for embeddings; xavier for projections (as flax's ViT).
embed_init = nn.initializers.normal(stddev=0.02)
dense_init = nn.initializers.xavier_uniform()


def masked_attention(q, k, v, key_mask, num_heads: int):
  """Multi-head attention of q [B, N, C] over k/v [B, L, C]; key_mask bool[B, L] (True = attend).

  Masked keys get logit finfo.min, whose softmax weight is exactly 0 whenever any key is real, so
  masked positions cannot influence the result. With no real key the weights are uniform (finite).
  """
  b, n, c = q.shape
  if c % num_heads:
    raise ConfigError(f"width {c} is not divisible by num_heads {num_heads}")
  split = lambda a: a.reshape(a.shape[0], a.shape[1], num_heads, c // num_heads)
  q, k, v = split(q), split(k), split(v)
  logits = jnp.einsum("bnhd,blhd->bhnl", q, k) / math.sqrt(c // num_heads)
  logits = logits.astype(jnp.float32)
  logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhnl,blhd->bnhd", weights, v).reshape(b, n, c)


def masked_mean(tokens, mask):
  """Mean of tokens [B, L, C] over the positions where mask [B, L] is True; 0 for an empty row."""
  m = mask.astype(tokens.dtype)[..., None]
  return (tokens * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)


class EncoderBlock(nn.Module):
  """x + Attn(LN(x)), then x + MLP(LN(x)); GELU MLP of width mlp_ratio * C."""
  num_heads: int
  mlp_ratio: float = 4.0
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, mask, train: bool = False):
    c = x.shape[-1]
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.LayerNorm(name="attn_norm")(x)
    q, k, v = jnp.split(nn.Dense(3 * c, kernel_init=dense_init, name="qkv")(h), 3, axis=-1)
    h = masked_attention(q, k, v, mask, self.num_heads)
    x = x + drop(nn.Dense(c, kernel_init=dense_init, name="proj")(h))
    h = nn.LayerNorm(name="mlp_norm")(x)
    h = nn.gelu(nn.Dense(int(self.mlp_ratio * c), kernel_init=dense_init, name="mlp_in")(h))
    return x + drop(nn.Dense(c, kernel_init=dense_init, name="mlp_out")(h))


class TextEncoder(nn.Module):
  """See the module docstring. `__call__(ids, mask, train=False) -> (tokens, pooled)`."""
  vocab_size: int
  max_length: int
  width: int = 256
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: float = 4.0
  dropout: float = 0.0

  @nn.compact
  def __call__(self, ids, mask, train: bool = False):
    length = ids.shape[1]
    if length > self.max_length:
      raise ConfigError(f"ids have length {length} but the text encoder was built for "
                        f"max_length={self.max_length}")
    if self.width % self.num_heads:
      raise ConfigError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
    mask = mask.astype(bool)
    x = nn.Embed(self.vocab_size, self.width, embedding_init=embed_init, name="token_embed")(ids)
    pos = self.param("pos_embed", embed_init, (self.max_length, self.width))
    x = x + pos[None, :length]
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_ratio, self.dropout, name=f"block_{i}")(
          x, mask, train)
    tokens = nn.LayerNorm(name="final_norm")(x).astype(jnp.float32)
    return tokens, masked_mean(tokens, mask)


def text_encoder_from_preset(name: str, vocab_size: int, max_length: int,
                             dropout: float = 0.0) -> TextEncoder:
  """A `TextEncoder` of the named size (see TEXT_ENCODER_SIZES)."""
  if name not in TEXT_ENCODER_SIZES:
    raise ConfigError(f"unknown text encoder size {name!r}; choose one of "
                      f"{', '.join(TEXT_ENCODER_SIZES)}")
  return TextEncoder(vocab_size=vocab_size, max_length=max_length, dropout=dropout,
                     **TEXT_ENCODER_SIZES[name])
