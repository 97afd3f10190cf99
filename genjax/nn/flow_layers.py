"""Invertible layers for multi-scale normalizing flows (RealNVP / Glow).

Every bijective layer is a linen Module with two methods

    forward(x) -> (y, logdet)      logdet = log|det dy/dx|, float32 [B] (per example)
    inverse(y) -> x

on NHWC tensors. Layers with parameters create them lazily on their first call,
so running `forward` under `Module.init` on a real batch gives data-dependent
initialisation (ActNorm). The layers:

  Squeeze            [B,H,W,C] -> [B,H/2,W/2,4C] (space-to-depth), logdet 0.
  ActNorm            y = (x + b) * exp(s) per channel;  logdet = H W sum_c s_c.
                     Data-dependent init: b = -mean(x), s = -log std(x) on the
                     init batch, so y starts zero-mean / unit-variance.
  InvertibleConv1x1  y_ij = W x_ij with the LU parameterisation (Glow)
                         W = P L (U + diag(sign * exp(log_s)))
                     L unit lower-triangular, U strictly upper, log_s the
                     log|diagonal| (trained); the permutation P and the diagonal's
                     sign are constants. W starts as a random rotation Q = P L0 U0
                     (pivoted LU, numpy, from the layer's `seed`).
                     logdet = H W sum(log_s).
  AffineCoupling     x = (x_a, x_b);  (t, h) = NN(x_a);  y_b = x_b * exp(log_s) + t,
                     y_a = x_a;  logdet = sum log_s over H, W, channels of x_b, with
                         log_s = tanh(h)              ("tanh": |log_s| <= 1), or
                         log_s = log sigmoid(h + 2)   ("sigmoid", Glow).
                     NN's last conv is zero-initialised, so with "tanh" the
                     coupling starts as the identity.
  Split              x = (z1, z2) along channels -> (z1, eps2) with
                         eps2 = (z2 - mu(z1)) * exp(-log_sigma(z1)),
                     (mu, log_sigma) from a zero-initialised 3x3 conv of z1: the
                     learned conditional prior p(z2 | z1) = N(mu, sigma^2) written
                     as a bijection onto a standard-normal eps2.
                     logdet = -sum log_sigma.
  TopGaussianize     the same for the last level's z with a learned (mu, log_sigma)
                     per position/channel, plus a per-class offset if conditional.

`MultiScaleFlow` stacks them (Dinh et al. 2017; Kingma & Dhariwal 2018):
    for each of L levels: Squeeze, K x [ActNorm, InvertibleConv1x1, AffineCoupling],
    then Split (all but the last level), and TopGaussianize at the end.
It maps y -> (eps_1, ..., eps_L) with every eps ~ N(0, I) under the model, so
    log p(y) = sum_l log N(eps_l; 0, I) + logdet,
and sampling with temperature T is  y = inverse(T * N(0, I) draws), i.e. the
prior std of every level scaled by T.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

_HIGHEST = jax.lax.Precision.HIGHEST  # the 1x1 conv and its inverse must agree to ~1e-6


def _per_example_sum(x):
  return jnp.sum(x.reshape(x.shape[0], -1), axis=1)


def standard_normal_logpdf(eps):
  """Per-example sum of log N(eps; 0, 1), [B]."""
  return _per_example_sum(-0.5 * jnp.square(eps) - 0.5 * math.log(2 * math.pi))


# ---- squeeze -------------------------------------------------------------------------

def squeeze2x2(x):
  """[B,H,W,C] -> [B,H/2,W/2,4C]; channel index = 4*c + 2*row + col (Glow's order)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c)
  return x.transpose(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze2x2(x):
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, c // 4, 2, 2)
  return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, c // 4)


class Squeeze(nn.Module):
  """Space-to-depth; a permutation of coordinates, so logdet = 0."""

  def forward(self, x):
    return squeeze2x2(x), jnp.zeros(x.shape[0], x.dtype)

  def inverse(self, y):
    return unsqueeze2x2(y)


# ---- actnorm -------------------------------------------------------------------------

class ActNorm(nn.Module):
  """Per-channel affine y = (x + bias) * exp(log_scale) with data-dependent init."""

  eps: float = 1e-6

  @nn.compact
  def _params(self, x: Optional[jax.Array], channels: int):
    # Initialisers run only under `init`; they see the real batch, so the
    # first output is normalised per channel (statistics over batch, H, W).
    def init_bias(_):
      if x is None:
        return jnp.zeros((channels,), jnp.float32)
      return -jnp.mean(x, axis=(0, 1, 2))

    def init_log_scale(_):
      if x is None:
        return jnp.zeros((channels,), jnp.float32)
      return -0.5 * jnp.log(jnp.var(x, axis=(0, 1, 2)) + self.eps)

    return self.param("bias", init_bias), self.param("log_scale", init_log_scale)

  def forward(self, x):
    bias, log_scale = self._params(x, x.shape[-1])
    logdet = x.shape[1] * x.shape[2] * jnp.sum(log_scale)
    return (x + bias) * jnp.exp(log_scale), jnp.full((x.shape[0],), logdet)

  def inverse(self, y):
    bias, log_scale = self._params(None, y.shape[-1])
    return y * jnp.exp(-log_scale) - bias


# ---- invertible 1x1 convolution ------------------------------------------------------

@functools.lru_cache(maxsize=None)
def rotation_lu(c: int, seed: int):
  """Glow's init: Q = P L U, the pivoted LU of a random rotation drawn from `seed`.

  Computed with numpy at trace time, so P and sign(diag U) are constants of the
  layer (never parameters) and W starts exactly at the rotation Q.
  Returns numpy (P, L, U); treat them as read-only.
  """
  q, _ = np.linalg.qr(np.random.RandomState(seed).randn(c, c))
  p, lower, upper = scipy.linalg.lu(q)
  return p.astype(np.float32), lower.astype(np.float32), upper.astype(np.float32)


class InvertibleConv1x1(nn.Module):
  """Glow's invertible 1x1 convolution, LU-parameterised:
  W = P L (U + diag(sign * exp(log_s))); trained: L (unit lower), U (strictly upper), log_s."""

  seed: int = 0  # picks the initial rotation and with it the constants P and sign

  @nn.compact
  def factors(self, c: int):
    """(P, L, U_full, log_s) with U_full = U + diag(sign * exp(log_s))."""
    p, lower0, upper0 = rotation_lu(c, self.seed)
    lower = self.param("lower", lambda _: jnp.tril(lower0, -1))
    upper = self.param("upper", lambda _: jnp.triu(upper0, 1))
    log_s = self.param("log_s", lambda _: jnp.log(jnp.abs(jnp.diag(upper0))))
    sign = np.sign(np.diag(upper0))
    lower = jnp.tril(lower, -1) + jnp.eye(c)  # masks keep the triangular structure exact
    upper = jnp.triu(upper, 1) + jnp.diag(sign * jnp.exp(log_s))
    return jnp.asarray(p), lower, upper, log_s

  def weight(self, c: int):
    p, lower, upper, _ = self.factors(c)
    return jnp.matmul(p, jnp.matmul(lower, upper, precision=_HIGHEST), precision=_HIGHEST)

  def forward(self, x):
    _, h, w, c = x.shape
    log_s = self.factors(c)[3]
    y = jnp.einsum("bhwc,dc->bhwd", x, self.weight(c), precision=_HIGHEST)
    return y, jnp.full((x.shape[0],), h * w * jnp.sum(log_s))

  def inverse(self, y):
    c = y.shape[-1]
    p, lower, upper, _ = self.factors(c)
    # W^-1 = U^-1 L^-1 P^T by two triangular solves, no general inverse.
    w_inv = jax.scipy.linalg.solve_triangular(lower, p.T, lower=True, unit_diagonal=True)
    w_inv = jax.scipy.linalg.solve_triangular(upper, w_inv, lower=False)
    return jnp.einsum("bhwc,dc->bhwd", y, w_inv, precision=_HIGHEST)


# ---- affine coupling -----------------------------------------------------------------

class CouplingNet(nn.Module):
  """Glow's coupling network: conv3x3 -> ActNorm -> ReLU -> conv1x1 -> ActNorm -> ReLU
  -> zero-initialised conv3x3 (so the coupling it drives starts at its fixed point)."""

  hidden: int
  out_channels: int

  @nn.compact
  def __call__(self, x):
    for kernel in ((3, 3), (1, 1)):
      x = nn.Conv(self.hidden, kernel, use_bias=False)(x)
      x = nn.relu(ActNorm().forward(x)[0])
    return nn.Conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros)(x)


COUPLING_SCALES = ("tanh", "sigmoid")


class AffineCoupling(nn.Module):
  """y_a = x_a,  y_b = x_b * exp(log_s(x_a)) + t(x_a)  (x split in two along channels)."""

  hidden: int
  scale: str = "tanh"  # one of COUPLING_SCALES

  @nn.compact
  def _shift_log_scale(self, x_a, channels_b: int):
    out = CouplingNet(self.hidden, 2 * channels_b)(x_a)
    shift, h = jnp.split(out, 2, axis=-1)
    if self.scale == "tanh":
      log_s = jnp.tanh(h)
    elif self.scale == "sigmoid":
      log_s = jax.nn.log_sigmoid(h + 2.0)
    else:
      raise ValueError(f"unknown coupling scale {self.scale!r}; choose one of {COUPLING_SCALES}")
    return shift, log_s

  def forward(self, x):
    x_a, x_b = jnp.split(x, [x.shape[-1] // 2], axis=-1)
    shift, log_s = self._shift_log_scale(x_a, x_b.shape[-1])
    y_b = x_b * jnp.exp(log_s) + shift
    return jnp.concatenate([x_a, y_b], axis=-1), _per_example_sum(log_s)

  def inverse(self, y):
    y_a, y_b = jnp.split(y, [y.shape[-1] // 2], axis=-1)
    shift, log_s = self._shift_log_scale(y_a, y_b.shape[-1])
    return jnp.concatenate([y_a, (y_b - shift) * jnp.exp(-log_s)], axis=-1)


class FlowStep(nn.Module):
  """One Glow step: ActNorm -> InvertibleConv1x1 -> AffineCoupling."""

  hidden: int
  coupling_scale: str = "tanh"
  seed: int = 0  # of the 1x1 convolution's initial rotation

  def setup(self):
    self.actnorm = ActNorm()
    self.invconv = InvertibleConv1x1(self.seed)
    self.coupling = AffineCoupling(self.hidden, self.coupling_scale)

  def forward(self, x):
    return chain_forward([self.actnorm, self.invconv, self.coupling], x)

  def inverse(self, y):
    return chain_inverse([self.actnorm, self.invconv, self.coupling], y)


def chain_forward(layers: Sequence[nn.Module], x):
  logdet = jnp.zeros(x.shape[0], jnp.float32)
  for layer in layers:
    x, ld = layer.forward(x)
    logdet = logdet + ld
  return x, logdet


def chain_inverse(layers: Sequence[nn.Module], y):
  for layer in reversed(layers):
    y = layer.inverse(y)
  return y


# ---- priors as bijections onto N(0, I) -----------------------------------------------

def _gaussianize(z, mean, log_std):
  return (z - mean) * jnp.exp(-log_std), -_per_example_sum(jnp.broadcast_to(log_std, z.shape))


class Split(nn.Module):
  """(z1, z2) -> (z1, eps2 = (z2 - mu(z1)) / sigma(z1)); z1 is the first half of the channels."""

  @nn.compact
  def _mean_log_std(self, z1, channels: int):
    out = nn.Conv(2 * channels, (3, 3), kernel_init=nn.initializers.zeros, name="prior")(z1)
    return jnp.split(out, 2, axis=-1)

  def forward(self, x):
    z1, z2 = jnp.split(x, [x.shape[-1] // 2], axis=-1)
    eps2, logdet = _gaussianize(z2, *self._mean_log_std(z1, z2.shape[-1]))
    return (z1, eps2), logdet

  def inverse(self, y):
    z1, eps2 = y
    mean, log_std = self._mean_log_std(z1, eps2.shape[-1])
    return jnp.concatenate([z1, mean + jnp.exp(log_std) * eps2], axis=-1)


class TopGaussianize(nn.Module):
  """z -> (z - mu) / sigma with learned (mu, log sigma) per position and channel,
  plus a per-class offset when `num_classes` > 0 (labels then required)."""

  num_classes: int = 0

  @nn.compact
  def _mean_log_std(self, shape, labels):
    stats = self.param("stats", nn.initializers.zeros, (*shape[1:3], 2 * shape[3]))
    stats = jnp.broadcast_to(stats, (shape[0], *stats.shape))
    if self.num_classes:
      onehot = jax.nn.one_hot(labels, self.num_classes)
      offset = nn.Dense(2 * shape[3], use_bias=False, kernel_init=nn.initializers.zeros,
                        name="class_offset")(onehot)
      stats = stats + offset[:, None, None, :]
    return jnp.split(stats, 2, axis=-1)

  def forward(self, z, labels=None):
    return _gaussianize(z, *self._mean_log_std(z.shape, labels))

  def inverse(self, eps, labels=None):
    mean, log_std = self._mean_log_std(eps.shape, labels)
    return mean + jnp.exp(log_std) * eps


# ---- the multi-scale flow ------------------------------------------------------------

def latent_shapes(image_shape, levels: int):
  """Shapes (without batch) of eps_1..eps_L for an [H, W, C] input."""
  h, w, c = image_shape
  shapes = []
  for level in range(levels):
    h, w, c = h // 2, w // 2, 4 * c
    if level < levels - 1:
      shapes.append((h, w, c - c // 2))
      c = c // 2
  shapes.append((h, w, c))
  return shapes


class MultiScaleFlow(nn.Module):
  """Glow: L levels of [Squeeze, K FlowSteps, Split] (no Split on the last level).

  forward(y, labels) -> ([eps_1, ..., eps_L], logdet);  inverse(eps list, labels) -> y;
  log_prob(y, labels) -> log p(y) [B] (nats; density w.r.t. Lebesgue measure on y).
  H and W must be divisible by 2 ** levels.
  """

  levels: int
  steps_per_level: int
  hidden: int
  coupling_scale: str = "tanh"
  num_classes: int = 0  # > 0: class-conditional top prior

  def setup(self):
    k = self.steps_per_level
    self.squeeze = Squeeze()
    self.steps = [FlowStep(self.hidden, self.coupling_scale, seed=i)
                  for i in range(self.levels * k)]
    self.splits = [Split() for _ in range(self.levels - 1)]
    self.top = TopGaussianize(self.num_classes)

  def _level_steps(self, level):
    k = self.steps_per_level
    return self.steps[level * k:(level + 1) * k]

  def forward(self, y, labels=None):
    logdet = jnp.zeros(y.shape[0], jnp.float32)
    eps = []
    z = y
    for level in range(self.levels):
      z, ld = chain_forward([self.squeeze, *self._level_steps(level)], z)
      logdet = logdet + ld
      if level < self.levels - 1:
        (z, eps_l), ld = self.splits[level].forward(z)
        eps.append(eps_l)
        logdet = logdet + ld
    eps_top, ld = self.top.forward(z, labels)
    return eps + [eps_top], logdet + ld

  def inverse(self, eps, labels=None):
    z = self.top.inverse(eps[-1], labels)
    for level in reversed(range(self.levels)):
      if level < self.levels - 1:
        z = self.splits[level].inverse((z, eps[level]))
      z = chain_inverse([self.squeeze, *self._level_steps(level)], z)
    return z

  def log_prob(self, y, labels=None):
    eps, logdet = self.forward(y, labels)
    return sum(standard_normal_logpdf(e) for e in eps) + logdet
