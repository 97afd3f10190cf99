"""Convolutional autoencoder with a spatial latent (the latent-diffusion paper's first stage),
and a patch discriminator for its optional adversarial loss.

`SpatialEncoder` maps [B, H, W, C] to the posterior's mean and log-variance, each
[B, H/f, W/f, z], f = 2 ** (len(channels) - 1); `SpatialDecoder` maps such a latent back to an
image. Both are stacks of genjax.nn.conv.ResBlock; resolution halves with stride-2
convolutions and doubles with nearest-neighbour upsampling + a 3x3 convolution.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from genjax.nn.conv import ResBlock, norm_groups


def _norm_act(h):
  return nn.silu(nn.GroupNorm(norm_groups(h.shape[-1]))(h))


class SpatialEncoder(nn.Module):
  """(mean, log_var) of the posterior; with `posterior=False` one latent map (a VQ encoder's)."""

  channels: tuple[int, ...]  # per resolution level, from the image's down
  num_res_blocks: int
  latent_channels: int
  posterior: bool = True

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(self.channels[0], (3, 3))(x)
    for i, ch in enumerate(self.channels):
      for _ in range(self.num_res_blocks):
        h = ResBlock(ch)(h)
      if i < len(self.channels) - 1:
        h = nn.Conv(ch, (3, 3), strides=(2, 2))(h)
    h = ResBlock(self.channels[-1])(h)
    stats = nn.Conv((1 + self.posterior) * self.latent_channels, (3, 3))(_norm_act(h))
    if not self.posterior:
      return stats
    mean, log_var = jnp.split(stats, 2, axis=-1)
    return mean, jnp.clip(log_var, -30.0, 20.0)


class SpatialDecoder(nn.Module):
  """`features` returns the activations before the output convolution, so a loss can weigh
  gradients at that last layer (the adaptive GAN weight); `__call__` is the whole decoder."""

  channels: tuple[int, ...]  # the encoder's, from the image's resolution down
  num_res_blocks: int
  out_channels: int

  def setup(self):
    self.conv_in = nn.Conv(self.channels[-1], (3, 3))
    self.mid = ResBlock(self.channels[-1])
    blocks, ups = [], []
    for i, ch in reversed(list(enumerate(self.channels))):
      blocks.append([ResBlock(ch) for _ in range(self.num_res_blocks)])
      ups.append(nn.Conv(self.channels[i - 1], (3, 3)) if i > 0 else None)
    self.blocks, self.ups = blocks, ups
    self.norm_out = nn.GroupNorm(norm_groups(self.channels[0]))
    self.conv_out = nn.Conv(self.out_channels, (3, 3))

  def features(self, z):
    h = self.mid(self.conv_in(z))
    for level, up in zip(self.blocks, self.ups):
      for block in level:
        h = block(h)
      if up is not None:
        h = up(jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2))
    return nn.silu(self.norm_out(h))

  def __call__(self, z):
    return self.conv_out(self.features(z))


class PatchDiscriminator(nn.Module):
  """PatchGAN (Isola et al., 2017): 4x4 stride-2 convolutions, one logit per overlapping patch.
  GroupNorm instead of BatchNorm, so the result never depends on how the batch is split over
  devices."""

  channels: int = 64
  num_layers: int = 3

  @nn.compact
  def __call__(self, x):
    h = nn.leaky_relu(nn.Conv(self.channels, (4, 4), strides=(2, 2))(x), 0.2)
    for i in range(1, self.num_layers + 1):
      ch = self.channels * min(2 ** i, 8)
      h = nn.Conv(ch, (4, 4), strides=(2, 2) if i < self.num_layers else (1, 1), use_bias=False)(h)
      h = nn.leaky_relu(nn.GroupNorm(norm_groups(ch))(h), 0.2)
    return nn.Conv(1, (4, 4))(h)[..., 0]  # [B, h, w] patch logits
