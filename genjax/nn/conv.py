"""Plain convolutional encoder/decoder stacks (VAE-style), any image size.

Each stage halves (encoder) or doubles (decoder) the resolution, so an
H x W image needs H and W divisible by 2 ** (len(channels) - 1).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp


def norm_groups(channels: int) -> int:
  """GroupNorm groups for `channels`: the most of 32, 16, ..., 1 that leaves >= 2 channels each."""
  for g in (32, 16, 8, 4, 2, 1):
    if channels % g == 0 and channels // g >= 2:
      return g
  return 1


class ResBlock(nn.Module):
  """GroupNorm -> SiLU -> 3x3 conv, twice, with a residual connection."""

  channels: int

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(self.channels, (3, 3))(nn.silu(nn.GroupNorm(norm_groups(x.shape[-1]))(x)))
    h = nn.Conv(self.channels, (3, 3))(nn.silu(nn.GroupNorm(norm_groups(self.channels))(h)))
    if x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1))(x)
    return x + h


class ConvEncoder(nn.Module):
  """Image [B,H,W,C] (+ optional condition vector [B,D]) -> vector [B, out_dim]."""

  channels: tuple[int, ...]
  out_dim: int

  @nn.compact
  def __call__(self, x, condition: Optional[jnp.ndarray] = None):
    h = nn.Conv(self.channels[0], (3, 3))(x)
    for i, ch in enumerate(self.channels):
      if i > 0:
        h = nn.Conv(ch, (3, 3), strides=(2, 2))(h)  # downsample
      h = ResBlock(ch)(h)
    h = nn.silu(nn.GroupNorm(norm_groups(h.shape[-1]))(h)).reshape((h.shape[0], -1))
    if condition is not None:
      h = jnp.concatenate([h, condition], axis=-1)
    h = nn.silu(nn.Dense(4 * self.out_dim)(h))
    return nn.Dense(self.out_dim)(h)


class ConvDecoder(nn.Module):
  """Vector [B, D] (+ optional condition [B, E]) -> per-pixel outputs [B, H, W, C * k]."""

  channels: tuple[int, ...]  # from the lowest resolution up
  image_shape: tuple[int, int, int]
  out_channels_per_pixel: int

  @nn.compact
  def __call__(self, z, condition: Optional[jnp.ndarray] = None):
    h_img, w_img, c_img = self.image_shape
    down = 2 ** (len(self.channels) - 1)
    if condition is not None:
      z = jnp.concatenate([z, condition], axis=-1)
    h = nn.silu(nn.Dense(4 * z.shape[-1])(z))
    h = nn.Dense((h_img // down) * (w_img // down) * self.channels[0])(h)
    h = h.reshape((z.shape[0], h_img // down, w_img // down, self.channels[0]))
    for i, ch in enumerate(self.channels):
      if i > 0:
        b, hh, ww, cc = h.shape
        h = nn.Conv(ch, (3, 3))(jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2))  # nearest upsample
      h = ResBlock(ch)(h)
    h = nn.silu(nn.GroupNorm(norm_groups(h.shape[-1]))(h))
    return nn.Conv(c_img * self.out_channels_per_pixel, (3, 3))(h)
