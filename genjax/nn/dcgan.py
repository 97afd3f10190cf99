"""DCGAN-style generator and discriminator (Radford et al., 2016) with no mutable state.

Both networks keep everything in `params`: there is no BatchNorm (whose running
averages would live in a separate mutable collection). Normalisation is chosen
by name from these per-example, statistics-free layers:

  "none"   identity
  "group"  GroupNorm (Wu & He, 2018), up to 32 groups
  "layer"  LayerNorm over (H, W, C), i.e. GroupNorm with one group
  "pixel"  PixelNorm (Karras et al., 2018): x / sqrt(mean_c x^2 + eps), no parameters

Because every layer acts on each example alone, D(x)_i depends only on x_i. The
R1 penalty relies on this (grad of sum_i D(x_i) w.r.t. x gives per-example
gradients), as does data-parallel sharding.

Generator: z (+ a label embedding, concatenated) -> Dense to (h0, w0, channels[0])
-> [nearest 2x upsample -> 3x3 conv -> norm -> ReLU] per further entry of
`channels` -> 3x3 conv to the image channels -> tanh, so outputs lie in
[-1, 1]. With k = len(channels) - 1 upsamplings, h0 = ceil(H / 2^k); when H or W
is not a multiple of 2^k the generator draws a slightly larger image and crops
its centre, so any image size works.

Discriminator: [4x4 conv, stride 2 -> norm (not on the first layer) -> LeakyReLU(0.2)]
per entry of `channels`, flatten to features phi(x), logit = w . phi(x) + b.
With `num_classes > 0` it is a projection discriminator (Miyato & Koyama, 2018):
logit = w . phi(x) + b + embed(y) . phi(x).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMS = ("none", "group", "layer", "pixel")


class PixelNorm(nn.Module):
  eps: float = 1e-8

  @nn.compact
  def __call__(self, x):
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)


def make_norm(kind: str, channels: int, name: Optional[str] = None) -> nn.Module | None:
  """A per-example normalisation layer by name (see module docstring); None for "none"."""
  if kind == "none":
    return None
  if kind == "group":
    return nn.GroupNorm(num_groups=math.gcd(channels, 32), name=name)
  if kind == "layer":
    return nn.GroupNorm(num_groups=1, name=name)
  if kind == "pixel":
    return PixelNorm(name=name)
  raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def _apply_norm(kind, x, name):
  layer = make_norm(kind, x.shape[-1], name)
  return x if layer is None else layer(x)


def upsample_nearest_2x(x):
  """[B, H, W, C] -> [B, 2H, 2W, C] by repeating pixels (a broadcast: ~100x faster
  on CPU than jax.image.resize's gather, forward and backward)."""
  b, h, w, c = x.shape
  return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)


class DCGANGenerator(nn.Module):
  """z [B, latent] (+ labels [B]) -> images [B, H, W, C] in [-1, 1]."""

  image_shape: tuple[int, int, int]
  channels: Sequence[int] = (128, 64, 32)
  norm: str = "group"
  num_classes: int = 0  # > 0: label-conditioned
  embed_dim: int = 32

  @nn.compact
  def __call__(self, z, labels=None):
    height, width, out_channels = self.image_shape
    scale = 2 ** (len(self.channels) - 1)
    h0, w0 = -(-height // scale), -(-width // scale)  # ceil: draw big, crop below
    if self.num_classes > 0:
      if labels is None:
        raise ValueError("a class-conditional generator needs labels")
      z = jnp.concatenate([z, nn.Embed(self.num_classes, self.embed_dim, name="label_embed")(labels)],
                          axis=-1)
    x = nn.Dense(h0 * w0 * self.channels[0], name="project")(z)
    x = x.reshape(z.shape[0], h0, w0, self.channels[0])
    x = nn.relu(_apply_norm(self.norm, x, "project_norm"))
    for i, ch in enumerate(self.channels[1:]):
      x = upsample_nearest_2x(x)
      x = nn.Conv(ch, (3, 3), name=f"up{i}_conv")(x)
      x = nn.relu(_apply_norm(self.norm, x, f"up{i}_norm"))
    x = jnp.tanh(nn.Conv(out_channels, (3, 3), name="to_image")(x))
    top, left = (x.shape[1] - height) // 2, (x.shape[2] - width) // 2
    return x[:, top:top + height, left:left + width, :]


class DCGANDiscriminator(nn.Module):
  """images [B, H, W, C] in [-1, 1] (+ labels [B]) -> real/fake logits [B]."""

  channels: Sequence[int] = (64, 128)
  norm: str = "none"
  num_classes: int = 0  # > 0: projection discriminator

  @nn.compact
  def __call__(self, x, labels=None):
    for i, ch in enumerate(self.channels):
      x = nn.Conv(ch, (4, 4), strides=(2, 2), name=f"down{i}_conv")(x)
      if i > 0:  # DCGAN: no normalisation on the layer that sees pixels
        x = _apply_norm(self.norm, x, f"down{i}_norm")
      x = nn.leaky_relu(x, 0.2)
    features = x.reshape(x.shape[0], -1)
    logits = nn.Dense(1, name="logit")(features)[:, 0]
    if self.num_classes > 0:
      if labels is None:
        raise ValueError("a projection discriminator needs labels")
      embed = nn.Embed(self.num_classes, features.shape[-1], name="label_projection",
                       embedding_init=nn.initializers.normal(0.02))(labels)
      logits = logits + jnp.sum(embed * features, axis=-1)
    return logits
