"""Multi-scale normalizing flow (RealNVP / Glow) trained by exact maximum likelihood.

Model.  A bijection f = MultiScaleFlow (genjax.nn.flow_layers: squeeze, actnorm,
LU 1x1 convolution, affine coupling, split with a learned prior) maps a
continuous image y to standard-normal latents eps = f(y), so
    log p_model(y) = log N(f(y); 0, I) + log|det df/dy|.

Dequantization.  Pixels are integers x in {0..255}^D, D = H W C. With uniform
noise u ~ U[0,1)^D the flow models
    y = (x + u) / 256 - 1/2   in [-1/2, 1/2)^D,
a map with log|det dy/d(x+u)| = -D log 256. The density of the dequantized
v = x + u is p(v) = p_model(y) 256^-D, and since the cells [x, x+1) have unit
volume,  log P(x) = log E_u[p(x + u)] >= E_u[log p(x + u)]  (Jensen). Hence
    bits/dim = -(log p_model(y) - D log 256) / (D ln 2)
is, averaged over u, an upper bound on the discrete model's -log2 P(x) / D
(Theis et al. 2016; Ho et al. 2019). A uniform model gives exactly 8.
`train_step` minimises the batch mean of it; `eval_metrics` returns it per
example with one draw of u per example (an unbiased estimate of the bound, so
still an upper-bound estimate of the true bits/dim).

Sampling.  eps_l ~ N(0, T^2 I) for every level (T = model.temperature scales the
prior std of every level, Glow's "temperature"), y = f^-1(eps); the returned
image is clip(y + 1/2, 0, 1) in [0, 1]. T < 1 trades diversity for cleaner samples.

Initialisation.  `init` runs the flow forward on the real (dequantized) batch it
receives: every ActNorm sets its bias/scale so that its output is zero-mean,
unit-variance per channel; 1x1 convolutions start as random rotations; coupling
and prior convolutions end in zero-initialised convs (identity coupling with
model.coupling_scale="tanh", standard-normal priors).

With model.conditional=True the top-level prior gets a learned per-class mean /
log-std offset, and `sample` draws from p(x | label).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from genjax.errors import ConfigError
from genjax.families.base import Family
from genjax.nn.flow_layers import COUPLING_SCALES, MultiScaleFlow, latent_shapes
from genjax.optim import make_optimizer


def dequantize(images, rng):
  """uint8 [B,H,W,C] -> y = (x + u) / 256 - 1/2 with u ~ U[0,1) per pixel."""
  u = jax.random.uniform(rng, images.shape, jnp.float32)
  return (images.astype(jnp.float32) + u) / 256.0 - 0.5


def bits_per_dim(log_p_y, num_dims: int):
  """-(log p_model(y) - D log 256) / (D ln 2): bits/dim of the dequantized data x + u."""
  return -(log_p_y - num_dims * math.log(256.0)) / (num_dims * math.log(2.0))


class Flow(Family):

  def __init__(self, config, data, stages=None):
    super().__init__(config, data, stages)
    m = config.model
    if m.coupling_scale not in COUPLING_SCALES:
      raise ConfigError(f"unknown model.coupling_scale {m.coupling_scale!r}; "
                        f"choose one of {', '.join(COUPLING_SCALES)}")
    for key in ("levels", "steps_per_level", "hidden"):
      if m[key] < 1:
        raise ConfigError(f"model.{key} must be >= 1, got {m[key]}")
    if m.temperature < 0:
      raise ConfigError(f"model.temperature must be >= 0, got {m.temperature}")
    h, w, _ = data.image_shape
    down = 2 ** m.levels
    if h % down or w % down:
      raise ConfigError(f"image size {h}x{w} must be divisible by 2**levels = {down} "
                        f"(model.levels={m.levels}); lower model.levels")
    self.net = MultiScaleFlow(levels=m.levels, steps_per_level=m.steps_per_level,
                              hidden=m.hidden, coupling_scale=m.coupling_scale,
                              num_classes=data.num_classes if self.conditional else 0)
    self.optimizer = make_optimizer(config.optim, config.total_steps)
    self.num_dims = math.prod(data.image_shape)

  def _labels(self, batch):
    return self.class_labels(batch["cond"])

  def init(self, rng, batch, frozen=None):
    init_rng, noise_rng = jax.random.split(rng)
    y = dequantize(batch["image"], noise_rng)
    # Data-dependent init: ActNorm initialisers see this batch's activations.
    init_fn = jax.jit(lambda r, y, labels: self.net.init(r, y, labels, method=MultiScaleFlow.forward))
    params = init_fn(init_rng, y, self._labels(batch))["params"]
    return params, self.optimizer.init(params)

  def _bits_per_dim(self, params, batch, rng):
    y = dequantize(batch["image"], rng)
    log_p = self.net.apply({"params": params}, y, self._labels(batch), method=MultiScaleFlow.log_prob)
    return bits_per_dim(log_p, self.num_dims)

  def train_step(self, params, opt_state, batch, rng, step, frozen=None):
    del step  # the learning-rate schedule lives in the optimizer state

    def loss_fn(p):
      return jnp.mean(self._bits_per_dim(p, batch, rng))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {"loss": loss, "bits_per_dim": loss, "grad_norm": optax.global_norm(grads)}
    return params, opt_state, metrics

  def eval_metrics(self, ema_params, batch, rng, frozen=None):
    """Per-example bits/dim with one dequantization draw each (upper-bound estimate)."""
    return {"bits_per_dim": self._bits_per_dim(ema_params, batch, rng)}

  def sample(self, ema_params, rng, num, cond, frozen=None):
    shapes = latent_shapes(self.data.image_shape, self.config.model.levels)
    *eps_rngs, label_rng = jax.random.split(rng, len(shapes) + 1)
    temperature = self.config.model.temperature
    eps = [temperature * jax.random.normal(r, (num, *s)) for r, s in zip(eps_rngs, shapes)]
    labels = self.class_labels(cond)
    if self.conditional and labels is None:
      labels = jax.random.randint(label_rng, (num,), 0, self.data.num_classes)
    y = self.net.apply({"params": ema_params}, eps, labels, method=MultiScaleFlow.inverse)
    return jnp.clip(y + 0.5, 0.0, 1.0)
