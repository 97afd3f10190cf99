"""PixelCNN++'s network (Salimans et al., 2017): two causal convolution streams, no blind spot.

Pixels are generated in raster order, so the network's output at pixel (i, j) may depend only
on pixels above row i and on pixels left of j in row i. Two streams enforce that by the
geometry of their kernels alone (nothing is masked):
  * the "up" stream `u` (down-shifted convolutions, kernel 2x3 padded above and at the sides):
    at (i, j) it sees rows < i, a cone widening upwards;
  * the "up-left" stream `ul` (down-right-shifted convolutions, kernel 2x2 padded above and on
    the left), which also receives `u`: at (i, j) it sees rows < i and row i left of j.
Both start shifted by one pixel (`down_shift` / `right_shift`) so that the pixel itself is
never seen. A U-Net of gated residual blocks runs over 3 resolutions (strided shifted
convolutions down, transposed shifted convolutions up); the down pass reads the up pass's
activations through the blocks' auxiliary input. No normalisation layer mixes positions (a
BatchNorm or GroupNorm over the image would leak later pixels into earlier outputs), so each
block's last convolution starts at zero instead: every block begins as the identity.
tests/families/test_pixelcnn.py checks the causality exactly, by the Jacobian.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def down_shift(x):
  """Moves the feature map one row down (row 0 becomes zeros)."""
  return jnp.pad(x[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0)))


def right_shift(x):
  """Moves the feature map one column right (column 0 becomes zeros)."""
  return jnp.pad(x[:, :, :-1], ((0, 0), (0, 0), (1, 0), (0, 0)))


def concat_elu(x):
  """ELU of x and of -x, concatenated: keeps both signs' information (PixelCNN++'s nonlinearity)."""
  return nn.elu(jnp.concatenate([x, -x], axis=-1))


class ShiftedConv(nn.Module):
  """A VALID convolution on an input padded so that output (i, j) sees only rows <= i and,
  with `right=True` ("down-right"), only columns <= j; otherwise columns j-k..j+k."""

  features: int
  kernel: tuple[int, int]
  right: bool = False
  stride: int = 1
  zero_init: bool = False

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel
    cols = (kw - 1, 0) if self.right else ((kw - 1) // 2, (kw - 1) // 2)
    x = jnp.pad(x, ((0, 0), (kh - 1, 0), cols, (0, 0)))
    init = nn.initializers.zeros if self.zero_init else nn.linear.default_kernel_init
    return nn.Conv(self.features, self.kernel, strides=self.stride, padding="VALID", kernel_init=init)(x)


class ShiftedDeconv(nn.Module):
  """The stride-2 transposed convolution of a `ShiftedConv`, cropped to twice the input size
  so that each output stays aligned with (never ahead of) the input position it came from."""

  features: int
  kernel: tuple[int, int]
  right: bool = False

  @nn.compact
  def __call__(self, x):
    _, h, w, _ = x.shape
    y = nn.ConvTranspose(self.features, self.kernel, strides=(2, 2), padding="VALID")(x)
    left = 0 if self.right else (self.kernel[1] - 1) // 2
    return y[:, :2 * h, left:left + 2 * w]


class GatedResnet(nn.Module):
  """x + a * sigmoid(b), where (a, b) is the output of two shifted convolutions of x (and of
  the auxiliary input, through a 1x1 layer), plus the condition's embedding."""

  right: bool
  dropout: float

  @nn.compact
  def __call__(self, x, aux=None, cond=None, train: bool = False):
    features = x.shape[-1]
    kernel = (2, 2) if self.right else (2, 3)
    h = ShiftedConv(features, kernel, self.right)(concat_elu(x))
    if aux is not None:
      h = h + nn.Dense(features)(concat_elu(aux))
    h = nn.Dropout(self.dropout, deterministic=not train)(concat_elu(h))
    h = ShiftedConv(2 * features, kernel, self.right, zero_init=True)(h)
    if cond is not None:
      h = h + nn.Dense(2 * features)(cond)[:, None, None, :]
    a, b = jnp.split(h, 2, axis=-1)
    return x + a * nn.sigmoid(b)


class PixelCNNPlusPlus(nn.Module):
  """Maps images x in [-1, 1] [B, H, W, C] to `out_features` per pixel, each pixel's output a
  function of the pixels before it in raster order only. H and W must be divisible by
  2 ** (levels - 1)."""

  filters: int
  num_resnet: int
  levels: int
  out_features: int
  dropout: float = 0.0
  num_classes: int = 0  # > 0: a class embedding enters every block

  @nn.compact
  def __call__(self, x, labels: Optional[jax.Array] = None, train: bool = False):
    f = self.filters
    cond = nn.Embed(self.num_classes, f)(labels) if self.num_classes else None
    # A channel of ones marks real pixels: the shifted convolutions' zero padding then differs
    # from a black border.
    x = jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], axis=-1)
    u = down_shift(ShiftedConv(f, (2, 3))(x))
    ul = down_shift(ShiftedConv(f, (1, 3))(x)) + right_shift(ShiftedConv(f, (2, 1), right=True)(x))
    block = lambda right: GatedResnet(right, self.dropout)
    us, uls = [u], [ul]
    for level in range(self.levels):  # up pass: full resolution to coarsest
      for _ in range(self.num_resnet):
        u = block(False)(u, cond=cond, train=train)
        ul = block(True)(ul, aux=u, cond=cond, train=train)
        us.append(u)
        uls.append(ul)
      if level < self.levels - 1:
        u = ShiftedConv(f, (2, 3), stride=2)(u)
        ul = ShiftedConv(f, (2, 2), right=True, stride=2)(ul)
        us.append(u)
        uls.append(ul)
    u, ul = us.pop(), uls.pop()
    for level in range(self.levels):  # down pass, reading the up pass's activations in reverse
      for _ in range(self.num_resnet + (level > 0)):
        u = block(False)(u, aux=us.pop(), cond=cond, train=train)
        ul = block(True)(ul, aux=jnp.concatenate([u, uls.pop()], axis=-1), cond=cond, train=train)
      if level < self.levels - 1:
        u = ShiftedDeconv(f, (2, 3))(u)
        ul = ShiftedDeconv(f, (2, 2), right=True)(ul)
    assert not us and not uls
    return nn.Dense(self.out_features)(nn.elu(ul))
