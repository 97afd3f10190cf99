"""A family-agnostic U-Net for denoising models (DDPM / Improved DDPM / ADM style).

    UNet(ch, ch_mult, num_res_blocks, attn_resolutions, ...)(x, t, labels=None, context=None,
                                                               train=False)

* `x` float[B, H, W, C] with H and W divisible by 2**(len(ch_mult) - 1);
* `t` [B] timesteps (int or float; embedded sinusoidally, then by an MLP);
* `labels` int32[B] class ids in [0, num_classes]; id `num_classes` is the reserved "null"
  class used for classifier-free guidance (`null_label(num_classes)`);
* `context` float[B, L, D] (optional): tokens that every attention block also cross-attends
  to, e.g. text-encoder outputs for a text-to-image U-Net, with `context_mask` bool[B, L]
  (True on real tokens) so that padding tokens are never attended. The cross-attention
  parameters are created when the module is initialised WITH a context, so a model meant to
  take one must be initialised with one.

* `pooled` float[B, D] (optional): a global condition vector (e.g. a caption's pooled text
  embedding) projected and added to the timestep embedding, as Imagen does.

With `position_embedding=True`, fixed 2-D sinusoids of each pixel's row and column, projected
by a learned dense layer, are added after the first convolution. A small network then knows
where every feature sits from the first step, so a caption's "top left" can be tied to places
by (cross-)attention at once instead of being inferred from border effects of zero padding.

With `layout_resolutions`, the pooled vector is also mapped, by a dense layer with a separate
weight per position, to a feature map added wherever the U-Net's maps have one of those sides.
Every layer after it is a convolution, which treats all places alike, so without it the words
about places ("top left") must reach places through attention or border effects that take
thousands of steps to form; the per-position map ties them to places linearly from the start
(on 32x32 scenes, cell accuracy stayed at chance after 2,400 steps without it).

Returns float[B, H, W, out_channels]. The final convolution and every residual branch's last
layer are zero-initialised, so a fresh network is the identity on its skip paths and predicts 0.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

zero_init = nn.initializers.zeros


def conv_init(key, shape, dtype=jnp.float32):
  """flax's default (lecun normal, fan_in = kh * kw * c_in), drawn as a 2-D matrix and reshaped:
  the same distribution, but XLA:CPU compiles the 2-D draw several times faster than a 4-D one."""
  return nn.initializers.lecun_normal()(key, (math.prod(shape[:-1]), shape[-1]), dtype).reshape(shape)


def conv(features: int, kernel: int = 3, stride: int = 1, zero: bool = False) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 kernel_init=zero_init if zero else conv_init)


def null_label(num_classes: int) -> int:
  """The class id reserved for "no condition" (classifier-free guidance)."""
  return num_classes


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """Transformer-style sinusoidal embedding of (possibly fractional) timesteps: [B] -> [B, dim]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def position_features(height: int, width: int, dim: int) -> jax.Array:
  """float32[H, W, dim]: sin/cos of the row and of the column at dim // 4 frequencies each
  (periods from 2 pixels to ~4x the side), zero-padded to dim."""
  n_freq = max(dim // 4, 1)

  def axis(n):
    freqs = jnp.pi * jnp.exp2(-jnp.arange(n_freq) * math.log2(2 * n) / max(n_freq - 1, 1))
    angles = jnp.arange(n, dtype=jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)

  rows = jnp.broadcast_to(axis(height)[:, None, :], (height, width, 2 * n_freq))
  cols = jnp.broadcast_to(axis(width)[None, :, :], (height, width, 2 * n_freq))
  features = jnp.concatenate([rows, cols], axis=-1)
  return jnp.pad(features, ((0, 0), (0, 0), (0, max(dim - features.shape[-1], 0))))[..., :dim]


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
  """GroupNorm with the largest group count <= max_groups that divides `channels`."""
  return nn.GroupNorm(num_groups=math.gcd(channels, max_groups), epsilon=1e-5)


class ResBlock(nn.Module):
  """GroupNorm -> SiLU -> conv, conditioned on `emb`, -> GroupNorm -> SiLU -> dropout -> conv.

  With `scale_shift` the embedding modulates the second norm as h * (1 + scale) + shift
  (Improved DDPM's "use_scale_shift_norm"); otherwise it is added to h.
  """
  out_ch: int
  dropout: float = 0.0
  scale_shift: bool = True
  max_groups: int = 32

  @nn.compact
  def __call__(self, x, emb, train: bool):
    h = conv(self.out_ch)(nn.silu(group_norm(x.shape[-1], self.max_groups)(x)))
    emb_out = nn.Dense(2 * self.out_ch if self.scale_shift else self.out_ch)(nn.silu(emb))
    emb_out = emb_out[:, None, None, :]
    norm = group_norm(self.out_ch, self.max_groups)
    if self.scale_shift:
      scale, shift = jnp.split(emb_out, 2, axis=-1)
      h = norm(h) * (1.0 + scale) + shift
    else:
      h = norm(h + emb_out)
    h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
    h = conv(self.out_ch, zero=True)(h)
    if x.shape[-1] != self.out_ch:
      x = conv(self.out_ch, kernel=1)(x)
    return x + h


def _attention(q, k, v, num_heads: int, mask: Optional[jax.Array] = None):
  """Multi-head scaled dot-product attention: q [B, N, C], k/v [B, L, C] -> [B, N, C];
  `mask` bool[B, L] keeps the keys that are True (at least one per row must be)."""
  b, n, c = q.shape
  split = lambda a: a.reshape(a.shape[0], a.shape[1], num_heads, c // num_heads)
  q, k, v = split(q), split(k), split(v)
  logits = jnp.einsum("bnhd,blhd->bhnl", q, k) / math.sqrt(c // num_heads)
  if mask is not None:
    logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
  return jnp.einsum("bhnl,blhd->bnhd", weights, v).reshape(b, n, c)


class AttentionBlock(nn.Module):
  """Residual self-attention over the H*W positions (unless `self_attention` is False), then
  (if `context` is given) residual cross-attention from the positions to the context tokens.
  Output projections start at 0."""
  num_heads: int = 1
  max_groups: int = 32
  self_attention: bool = True

  @nn.compact
  def __call__(self, x, context: Optional[jax.Array] = None,
               context_mask: Optional[jax.Array] = None):
    b, hgt, wid, c = x.shape
    if c % self.num_heads:
      raise ValueError(f"attention channels {c} not divisible by num_heads {self.num_heads}")
    if self.self_attention:
      h = group_norm(c, self.max_groups)(x).reshape(b, hgt * wid, c)
      q, k, v = jnp.split(nn.Dense(3 * c, name="qkv")(h), 3, axis=-1)
      h = nn.Dense(c, kernel_init=zero_init, name="proj")(_attention(q, k, v, self.num_heads))
      x = x + h.reshape(x.shape)
    if context is not None:
      h = nn.LayerNorm(name="cross_norm")(x.reshape(b, hgt * wid, c))
      q = nn.Dense(c, name="cross_q")(h)
      k = nn.Dense(c, name="cross_k")(context)
      v = nn.Dense(c, name="cross_v")(context)
      h = nn.Dense(c, kernel_init=zero_init, name="cross_proj")(
          _attention(q, k, v, self.num_heads, context_mask))
      x = x + h.reshape(x.shape)
    return x


class Downsample(nn.Module):
  @nn.compact
  def __call__(self, x):
    return conv(x.shape[-1], stride=2)(x)


class Upsample(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest neighbour
    return conv(x.shape[-1])(x)


class UNet(nn.Module):
  """See the module docstring. `attn_resolutions` are feature-map side lengths (e.g. (8,)
  puts attention wherever the map is 8x8, including the middle block if it is 8x8);
  `cross_attn_resolutions` add cross-attention-only blocks (no self-attention, whose cost grows
  with the square of the positions) at other sides, used only when a context is given."""
  ch: int = 64
  ch_mult: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (8,)
  num_heads: int = 1
  dropout: float = 0.0
  num_classes: int = 0  # 0: unconditional; else label table of num_classes + 1 (null class)
  out_channels: Optional[int] = None
  scale_shift: bool = True
  max_groups: int = 32
  position_embedding: bool = False
  cross_attn_resolutions: Sequence[int] = ()
  layout_resolutions: Sequence[int] = ()
  # Compute dtype: with bfloat16 parameters (genjax.nn.precision.cast_floats) every layer
  # computes in bfloat16 once its inputs are; normalisation statistics and the attention
  # softmax stay float32; the output is float32.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, t, labels: Optional[jax.Array] = None,
               context: Optional[jax.Array] = None, context_mask: Optional[jax.Array] = None,
               pooled: Optional[jax.Array] = None, low_res: Optional[jax.Array] = None,
               low_res_t: Optional[jax.Array] = None, train: bool = False):
    levels = len(self.ch_mult)
    factor = 2 ** (levels - 1)
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"U-Net input {x.shape[1]}x{x.shape[2]} must be divisible by {factor}")
    emb_dim = 4 * self.ch
    x = x.astype(self.dtype)
    cast = lambda a: None if a is None else a.astype(self.dtype)
    context, pooled = cast(context), cast(pooled)
    emb = timestep_embedding(t, self.ch).astype(self.dtype)
    emb = nn.Dense(emb_dim)(nn.silu(nn.Dense(emb_dim)(emb)))
    if self.num_classes > 0:
      if labels is None:
        labels = jnp.full((x.shape[0],), null_label(self.num_classes), jnp.int32)
      emb = emb + nn.Embed(self.num_classes + 1, emb_dim, name="label_embed")(labels)
    if pooled is not None:
      emb = emb + nn.Dense(emb_dim, name="pooled_proj")(pooled)
    if low_res is not None:  # super-resolution: the upsampled low-res image and its noise level
      x = jnp.concatenate([x, low_res.astype(self.dtype)], axis=-1)
      aug = timestep_embedding(low_res_t, self.ch).astype(self.dtype)
      emb = emb + nn.Dense(emb_dim, name="low_res_t_proj")(nn.silu(nn.Dense(emb_dim, name="low_res_t_embed")(aug)))

    res = lambda out_ch: ResBlock(out_ch, self.dropout, self.scale_shift, self.max_groups)
    def attend(h):
      if h.shape[1] in self.attn_resolutions:
        return AttentionBlock(self.num_heads, self.max_groups)(h, context, context_mask)
      if context is not None and h.shape[1] in self.cross_attn_resolutions:
        return AttentionBlock(self.num_heads, self.max_groups, self_attention=False)(
            h, context, context_mask)
      return h

    def add_layout(h):
      side = h.shape[1]
      if pooled is None or side not in self.layout_resolutions:
        return h
      b, hgt, wid, c = h.shape
      layout = nn.Dense(hgt * wid * c, kernel_init=zero_init, name=f"layout_{side}")(pooled)
      return h + layout.reshape(b, hgt, wid, c)

    h = conv(self.ch)(x)
    if self.position_embedding:
      h = h + nn.Dense(self.ch, name="position_proj")(
          position_features(x.shape[1], x.shape[2], self.ch).astype(self.dtype))
    h = add_layout(h)
    skips = [h]
    for level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        h = res(self.ch * mult)(h, emb, train)
        h = attend(h)
        skips.append(h)
      if level != levels - 1:
        h = add_layout(Downsample()(h))
        skips.append(h)

    h = res(h.shape[-1])(h, emb, train)
    h = attend(h)
    h = res(h.shape[-1])(h, emb, train)

    for level, mult in reversed(list(enumerate(self.ch_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = res(self.ch * mult)(jnp.concatenate([h, skips.pop()], axis=-1), emb, train)
        h = attend(h)
      if level != 0:
        h = Upsample()(h)
    assert not skips

    h = nn.silu(group_norm(h.shape[-1], self.max_groups)(h))
    return conv(self.out_channels or x.shape[-1], zero=True)(h).astype(jnp.float32)
