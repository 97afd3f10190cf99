r"""VQ tokenizer: the autoencoder family with a vector-quantised bottleneck (van den Oord et al.,
2017), the image tokenizer that token models (autoregressive or MaskGIT) generate codes for.

x -> encoder -> z_e [H/f, W/f, D] -> l2-normalised, replaced by its nearest code (by cosine) of
an EMA codebook of K l2-normalised codes with dead-code restarts (genjax/nn/vector_quantizer.py)
-> decoder. The decoder trains through the quantisation by the straight-through estimator
(z + stop_gradient(code - z)); the encoder is pulled towards its codes by the commitment loss
    commitment_weight * mean over positions of ||z - stop_gradient(code)||^2,
which takes the KL term's place in the autoencoder family's loss (L1 + LPIPS [+ patch GAN with
the adaptive weight], genjax/families/autoencoder.py). The codebook itself moves by EMA, not by
the optimizer; it is part of the EMA view, so evaluation uses the codes the EMA weights saw.

Evaluation (test split): l1, lpips, psnr as the autoencoder, the commitment, and the codebook's
use over the WHOLE split: each image's code frequencies are averaged over the split, then
`code_usage` = share of the K codes used at least once and `code_perplexity` = exp(entropy of
the code distribution) (K if all are used equally). rFID as the autoencoder (reconstructions of
the reference images).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.errors import ConfigError
from genjax.families.autoencoder import Autoencoder
from genjax.nn import vector_quantizer as vq
from genjax.nn.images import symmetric_to_unit, uint8_to_symmetric


class VQAutoencoder(Autoencoder):
  """params = {"encoder", "decoder", "codebook"[, "discriminator"]}."""

  gaussian_posterior = False  # the encoder outputs one map, quantised
  regularizer_name = "commitment"

  def __init__(self, config, data, stages=None):
    super().__init__(config, data, stages)
    m = config.model
    if m.codebook_size < 2:
      raise ConfigError(f"model.codebook_size must be >= 2, got {m.codebook_size}")
    if not 0 < m.codebook_decay < 1:
      raise ConfigError(f"model.codebook_decay must be in (0, 1), got {m.codebook_decay}")
    if m.commitment_weight < 0 or m.restart_below < 0:
      raise ConfigError("model.commitment_weight and model.restart_below must be >= 0")
    self.token_shape = self.latent_shape[:2]

  @property
  def regularizer_weight(self) -> float:
    return self.config.model.commitment_weight

  def init(self, rng, batch, frozen=None):
    params, opt_state = super().init(rng, batch, frozen)
    params["codebook"] = vq.init_codebook(jax.random.fold_in(rng, 7), self.config.model.codebook_size,
                                          self.config.model.latent_channels)
    return params, opt_state

  def ema_view(self, params):
    return {**self.trained_view(params), "codebook": params["codebook"]}

  # ---- the bottleneck -------------------------------------------------------------------------
  def bottleneck(self, ae, params, x, rng):
    z, code, index = vq.quantize(self.encoder.apply({"params": ae["encoder"]}, x), params["codebook"])
    commitment = jnp.mean(jnp.sum((z - jax.lax.stop_gradient(code)) ** 2, axis=-1))
    straight_through = z + jax.lax.stop_gradient(code - z)
    dim = z.shape[-1]
    return straight_through, commitment, {"z": z.reshape(-1, dim), "index": index.reshape(-1)}

  def update_bottleneck(self, params, aux, rng):
    m = self.config.model
    return {"codebook": vq.ema_update(params["codebook"], jax.lax.stop_gradient(aux["z"]), aux["index"],
                                      rng, m.codebook_decay, m.restart_below)}

  def tokens(self, params, images_uint8):
    """Code indices [B, H/f, W/f] of uint8 images: what token models are trained on."""
    z = self.encoder.apply({"params": params["encoder"]}, uint8_to_symmetric(images_uint8))
    return vq.nearest_code(z, params["codebook"]["codes"])

  def decode_tokens(self, params, tokens):
    """Images in [0, 1] from code indices [B, H/f, W/f]."""
    return jnp.clip(symmetric_to_unit(self.decode(params, params["codebook"]["codes"][tokens])), 0.0, 1.0)

  def latents(self, params, images_uint8):
    return params["codebook"]["codes"][self.tokens(params, images_uint8)]

  # ---- evaluation -----------------------------------------------------------------------------
  def eval_metrics(self, ema_params, batch, rng, frozen=None):
    z, code, index = vq.quantize(self.encoder.apply({"params": ema_params["encoder"]},
                                                    uint8_to_symmetric(batch["image"])), ema_params["codebook"])
    one_hot = jax.nn.one_hot(index, self.config.model.codebook_size)
    return {**self.reconstruction_metrics(ema_params, batch, code, frozen),
            "commitment": jnp.mean(jnp.sum((z - code) ** 2, axis=-1), axis=(1, 2)),
            "code_frequency": jnp.mean(one_hot, axis=(1, 2))}  # [B, K]: summarised over the split

  def summarize_eval(self, averages):
    out = dict(averages)
    out["code_usage"], out["code_perplexity"] = vq.code_usage(out.pop("code_frequency"))
    return out

  def train_statistics(self, ema_params, batch, rng, frozen=None):
    return {}

  def sample(self, ema_params, rng, num, cond, frozen=None):
    """Reconstructions of cond["image"]; without images, uniformly random codes decoded."""
    if cond is not None and "image" in cond:
      return self.reconstruct(ema_params, cond["image"])
    tokens = jax.random.randint(rng, (num,) + self.token_shape, 0, self.config.model.codebook_size)
    return self.decode_tokens(ema_params, tokens)
