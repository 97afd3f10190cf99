"""PixelCNN++ (Salimans et al., 2017): an autoregressive model of 8-bit pixels.

Model.  log P(x) = sum over pixels i in raster order of log P(x_i | x_<i), where the network
(genjax.nn.pixelcnn, causal by construction) maps the pixels before i to a mixture of K
discretized logistics over pixel i's 256^C values (genjax.nn.likelihoods: within a pixel the
channels are autoregressive too, each mean shifted by the earlier channels). The likelihood is
exact and discrete, so

    bits/dim = -log P(x) / (H W C ln 2)

is the model's true code length: no bound and no dequantization (a uniform model gives 8).
Training minimises its batch mean; evaluation reports it per test image.

Sampling.  One pixel at a time: H x W evaluations of the whole network, each drawing pixel i
from its mixture and writing it into the canvas the next evaluation reads, all inside one
jitted `lax.fori_loop`. That sequential cost (784 network evaluations for 28x28) is what the
autoregressive-vs-parallel comparison measures.

With model.conditional=True every residual block adds a class embedding: samples come from
p(x | label).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from genjax.errors import ConfigError
from genjax.families.base import Family
from genjax.nn import images as image_ranges
from genjax.nn.likelihoods import (discretized_logistic_mixture_logprob, num_mixture_outputs,
                                   sample_discretized_logistic_mixture)
from genjax.nn.pixelcnn import PixelCNNPlusPlus
from genjax.optim import make_optimizer


class PixelCNN(Family):

  def __init__(self, config, data, stages=None):
    super().__init__(config, data, stages)
    m = config.model
    for key in ("filters", "num_resnet", "levels", "num_mixtures"):
      if m[key] < 1:
        raise ConfigError(f"model.{key} must be >= 1, got {m[key]}")
    if not 0 <= m.dropout < 1:
      raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")
    h, w, channels = data.image_shape
    down = 2 ** (m.levels - 1)
    if h % down or w % down:
      raise ConfigError(f"image size {h}x{w} must be divisible by 2**(levels-1) = {down} "
                        f"(model.levels={m.levels}); lower model.levels")
    self.net = PixelCNNPlusPlus(filters=m.filters, num_resnet=m.num_resnet, levels=m.levels,
                                out_features=num_mixture_outputs(channels, m.num_mixtures),
                                dropout=m.dropout,
                                num_classes=data.num_classes if self.conditional else 0)
    self.optimizer = make_optimizer(config.optim, config.total_steps)
    self.num_dims = math.prod(data.image_shape)

  def init(self, rng, batch, frozen=None):
    x = image_ranges.uint8_to_symmetric(batch["image"])
    params = self.net.init(rng, x, self.class_labels(batch["cond"]))["params"]
    return params, self.optimizer.init(params)

  def log_prob_per_pixel(self, params, images, labels=None, dropout_rng=None):
    """log P(x_i | x_<i) in nats, [B, H, W], for uint8 images [B, H, W, C]."""
    x = image_ranges.uint8_to_symmetric(images)
    train = dropout_rng is not None
    outputs = self.net.apply({"params": params}, x, labels, train=train,
                             rngs={"dropout": dropout_rng} if train else None)
    return discretized_logistic_mixture_logprob(x, outputs)

  def bits_per_dim(self, params, batch, dropout_rng=None):
    """Per-image exact bits/dim, [B]."""
    log_p = self.log_prob_per_pixel(params, batch["image"], self.class_labels(batch["cond"]),
                                    dropout_rng).sum(axis=(1, 2))
    return -log_p / (self.num_dims * math.log(2.0))

  def train_step(self, params, opt_state, batch, rng, step, frozen=None):
    del step  # the learning-rate schedule lives in the optimizer state

    def loss_fn(p):
      return jnp.mean(self.bits_per_dim(p, batch, dropout_rng=rng))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {"loss": loss, "bits_per_dim": loss, "grad_norm": optax.global_norm(grads)}

  def eval_metrics(self, ema_params, batch, rng, frozen=None):
    """Exact per-image bits/dim (no dropout)."""
    return {"bits_per_dim": self.bits_per_dim(ema_params, batch)}

  def sample(self, ema_params, rng, num, cond, frozen=None):
    h, w, channels = self.data.image_shape
    labels = self.class_labels(cond)
    label_rng, rng = jax.random.split(rng)
    if self.conditional and labels is None:
      labels = jax.random.randint(label_rng, (num,), 0, self.data.num_classes)

    def draw_pixel(index, canvas):
      i, j = index // w, index % w
      outputs = self.net.apply({"params": ema_params}, canvas, labels)
      pixel_outputs = jax.lax.dynamic_slice_in_dim(
          jax.lax.dynamic_slice_in_dim(outputs, i, 1, axis=1), j, 1, axis=2)
      pixel = sample_discretized_logistic_mixture(jax.random.fold_in(rng, index), pixel_outputs, channels)
      return jax.lax.dynamic_update_slice(canvas, pixel, (0, i, j, 0))

    canvas = jax.lax.fori_loop(0, h * w, draw_pixel, jnp.zeros((num, h, w, channels), jnp.float32))
    return image_ranges.symmetric_to_unit(canvas)
