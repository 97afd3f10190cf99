"""Conversions between the uint8 images the data pipeline yields and model ranges."""

import jax.numpy as jnp


def uint8_to_symmetric(x):
  """uint8 [0, 255] -> float32 [-1, 1] (pixel centres at (2k+1)/256 - 1 would be
  the dequantized view; this is the plain affine map k/127.5 - 1)."""
  return x.astype(jnp.float32) / 127.5 - 1.0


def symmetric_to_unit(x):
  """float [-1, 1] -> float32 [0, 1], clipped (what Family.sample returns)."""
  return jnp.clip((x + 1.0) * 0.5, 0.0, 1.0)


def uint8_to_unit(x):
  return x.astype(jnp.float32) / 255.0
