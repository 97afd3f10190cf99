"""Variational autoencoder (Kingma & Welling, 2014) for 8-bit images.

Model:   z ~ N(0, I),  x | z ~ DiscretizedLogistic(mu_theta(z), s_theta(z))  (per pixel)
Posterior: q(z | x) = N(m_phi(x), diag exp(v_phi(x))), sampled with the
reparameterization z = m + exp(v/2) * eps.

Objective (per image, nats):  ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)).
Training minimises  -E_q[log p(x|z)] + beta * KL  (beta-VAE; beta=1 is the ELBO).
Evaluation reports the true (beta=1) negative ELBO, an upper bound on -log p(x):
    nelbo_nats   = -ELBO                       per image
    bits_per_dim = -ELBO / (H * W * C * ln 2)  comparable with flows / PixelCNN
The likelihood is over the 256 discrete intensity levels, so these are proper
discrete log-likelihoods (no dequantization correction needed).

With `model.conditional=True` the label's embedding is given to both encoder
and decoder, so samples are drawn from p(x | y).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from genjax.errors import ConfigError
from genjax.families.base import Family
from genjax.nn import images as image_ranges
from genjax.nn.conv import ConvDecoder, ConvEncoder
from genjax.nn.likelihoods import discretized_logistic_logprob, gaussian_kl_to_standard
from genjax.optim import make_optimizer


class VAENet(nn.Module):
  """Encoder + decoder; `__call__` runs both (used for init and training)."""

  image_shape: tuple[int, int, int]
  channels: tuple[int, ...]
  latent_dim: int
  num_classes: int  # 0: unconditional

  def setup(self):
    self.encoder = ConvEncoder(channels=self.channels, out_dim=2 * self.latent_dim)
    self.decoder = ConvDecoder(channels=tuple(reversed(self.channels)),
                               image_shape=self.image_shape, out_channels_per_pixel=2)
    if self.num_classes:
      self.label_embed = nn.Embed(self.num_classes, 32)

  def _condition(self, labels):
    return self.label_embed(labels) if self.num_classes else None

  def encode(self, x, labels):
    stats = self.encoder(x, self._condition(labels))
    mean, log_var = jnp.split(stats, 2, axis=-1)
    return mean, jnp.clip(log_var, -30.0, 20.0)

  def decode(self, z, labels):
    out = self.decoder(z, self._condition(labels))
    mean, log_scale = jnp.split(out, 2, axis=-1)
    return jnp.tanh(mean), log_scale  # tanh keeps the logistic mean inside [-1, 1]

  def __call__(self, x, labels, rng):
    mean, log_var = self.encode(x, labels)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
    px_mean, px_log_scale = self.decode(z, labels)
    return mean, log_var, px_mean, px_log_scale


class VAE(Family):

  def __init__(self, config, data, stages=None):
    super().__init__(config, data, stages)
    m = config.model
    if m.beta <= 0:
      raise ConfigError(f"model.beta must be > 0, got {m.beta}")
    h, w, _ = data.image_shape
    down = 2 ** (len(m.channels) - 1)
    if h % down or w % down:
      raise ConfigError(f"image size {h}x{w} must be divisible by {down} for "
                        f"{len(m.channels)} encoder stages (model.channels={tuple(m.channels)})")
    self.net = VAENet(image_shape=data.image_shape, channels=tuple(m.channels),
                      latent_dim=m.latent_dim, num_classes=data.num_classes if self.conditional else 0)
    self.optimizer = make_optimizer(config.optim, config.total_steps)

  def _labels(self, batch):
    return self.class_labels(batch["cond"])

  def init(self, rng, batch, frozen=None):
    init_rng, z_rng = jax.random.split(rng)
    x = image_ranges.uint8_to_symmetric(batch["image"])
    params = self.net.init(init_rng, x, self._labels(batch), z_rng)["params"]
    return params, self.optimizer.init(params)

  def _elbo_terms(self, params, batch, rng):
    """Per-example (log p(x|z) with one z sample, KL), both in nats."""
    x = image_ranges.uint8_to_symmetric(batch["image"])
    mean, log_var, px_mean, px_log_scale = self.net.apply(
        {"params": params}, x, self._labels(batch), rng)
    log_px = discretized_logistic_logprob(x, px_mean, px_log_scale).sum(axis=(1, 2, 3))
    kl = gaussian_kl_to_standard(mean, log_var)
    return log_px, kl

  def _dims(self):
    return math.prod(self.data.image_shape)

  def train_step(self, params, opt_state, batch, rng, step, frozen=None):
    beta = self.config.model.beta

    def loss_fn(p):
      log_px, kl = self._elbo_terms(p, batch, rng)
      loss = jnp.mean(-log_px + beta * kl) / self._dims()  # per-dim scale keeps lr size-independent
      return loss, (log_px, kl)

    (loss, (log_px, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    nelbo = -(log_px - kl)
    metrics = {
        "loss": loss,
        "nelbo_nats": jnp.mean(nelbo),
        "bits_per_dim": jnp.mean(nelbo) / (self._dims() * math.log(2.0)),
        "kl_nats": jnp.mean(kl),
        "grad_norm": optax.global_norm(grads),
    }
    return params, opt_state, metrics

  def eval_metrics(self, ema_params, batch, rng, frozen=None):
    log_px, kl = self._elbo_terms(ema_params, batch, rng)
    nelbo = kl - log_px
    return {
        "nelbo_nats": nelbo,
        "bits_per_dim": nelbo / (self._dims() * math.log(2.0)),
        "kl_nats": kl,
        "recon_nats": -log_px,
    }

  def sample(self, ema_params, rng, num, cond, frozen=None):
    z = jax.random.normal(rng, (num, self.config.model.latent_dim))
    px_mean, _ = self.net.apply({"params": ema_params}, z, self.class_labels(cond),
                                method=VAENet.decode)
    return image_ranges.symmetric_to_unit(px_mean)

  def eval_images(self, ema_params, batch, rng, frozen=None):
    """Originals and their reconstructions (posterior mean), interleaved row by row."""
    n = min(32, batch["image"].shape[0])
    x = image_ranges.uint8_to_symmetric(batch["image"][:n])
    labels = self._labels(batch)
    labels = None if labels is None else labels[:n]
    mean, _ = self.net.apply({"params": ema_params}, x, labels, method=VAENet.encode)
    recon, _ = self.net.apply({"params": ema_params}, mean, labels, method=VAENet.decode)
    pairs = jnp.stack([x, recon], axis=1).reshape((2 * n,) + x.shape[1:])
    return {"reconstructions": image_ranges.symmetric_to_unit(pairs)}
