r"""Text-conditional super-resolution diffusion: the second stage of an Imagen-style cascade.

The U-Net denoises the high-resolution image x (the diffusion family, unchanged) while seeing a
low-resolution version of it, upsampled (bilinear) and concatenated to x_t as extra channels,
plus the caption as in configs/t2i.py. The base model (any pixel diffusion run at the low
resolution, e.g. configs/t2i.py on scenes32) is the frozen stage `base`.

Noise-conditioning augmentation (Ho et al. 2022, "Cascaded diffusion models"; Imagen): the
low-res input is a diffused version q(z_s | low) at a level s the U-Net also receives (its own
timestep embedding). In training s ~ U{0..round(noise_aug_max (T-1))} on real low/high pairs
(low = the high-res image averaged over f x f blocks); at evaluation and sampling s is fixed at
round(noise_aug_sample (T-1)). s = 0 is the clean low-res image (noise_aug_max = 0 turns the
augmentation off). It makes the model robust to the base model's artefacts, which are unlike
the exact downsampled images seen in training.

Sampling: prompt -> base stage samples the low-res image (its own sampler, steps and guidance,
or model.base_guidance_scale) -> corrupted at the fixed level -> this model's DDIM/DDPM with
classifier-free guidance on the caption (the low-res image is kept in both halves).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.errors import ConfigError
from genjax.families.base import DataSpec
from genjax.families.diffusion import Diffusion, q_sample


def area_downsample(x: jax.Array, factor: int) -> jax.Array:
  """Means over factor x factor blocks of [B, H, W, C]."""
  b, h, w, c = x.shape
  return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


class SuperResolution(Diffusion):

  def __init__(self, config, data: DataSpec, stages=None):
    super().__init__(config, data, stages)
    m = config.model
    h, w, c = data.image_shape
    low = int(m.low_res)
    if self.latent or low <= 0 or h % low or w % low or h // low != w // low or h == low:
      raise ConfigError(f"model.low_res={low} must divide the {h}x{w} pixel images by an integer "
                        f"factor > 1, the same for both sides (and a super-resolution model is not latent)")
    for key in ("noise_aug_max", "noise_aug_sample"):
      if not 0.0 <= m[key] <= 1.0:
        raise ConfigError(f"model.{key} must be in [0, 1] (a fraction of the timesteps), got {m[key]}")
    self.factor = h // low
    self.low_shape = (low, w // self.factor, c)
    last = self.schedule.timesteps - 1
    self.aug_max, self.aug_sample = round(m.noise_aug_max * last), round(m.noise_aug_sample * last)
    self.base = self._build_base()

  def required_stages(self):
    return super().required_stages() + ("base",)

  def _build_base(self):
    info = self.stages.get("base")
    if info is None:  # check_required names the missing stage right after construction
      return None
    cfg = info.config
    if cfg is None or cfg.get("family") != "ddpm" or cfg.model.get("latent", False):
      raise ConfigError(f"stage 'base' ({info.source}) must be a pixel diffusion run (configs/t2i.py "
                        f"or configs/ddpm.py), got {cfg.get('family') if cfg else info.source}")
    mine, theirs = self.config.get("text"), cfg.get("text")
    if (mine and mine.tokenizer) != (theirs and theirs.tokenizer) or (
        mine and mine.tokenizer and mine.max_length != theirs.max_length):
      raise ConfigError(f"stage 'base' ({info.source}) tokenizes captions as {dict(theirs or {})}, "
                        f"this model as {dict(mine or {})}: both must read the same tokens")
    shared = {k: v for k, v in self.stages.items() if k == "text_encoder"}
    return Diffusion(cfg, DataSpec(self.low_shape, self.data.num_classes, self.data.text), shared)

  def _low_res_input(self, low: jax.Array, s: jax.Array, rng) -> dict:
    """The U-Net's extra inputs for low-res images in [-1, 1] at augmentation levels s."""
    noisy = q_sample(self.schedule, low, s, jax.random.normal(rng, low.shape))
    noisy = jnp.where((s > 0)[:, None, None, None], noisy, low)  # s = 0: the clean image
    b, h, w, c = low.shape
    up = jax.image.resize(noisy, (b, h * self.factor, w * self.factor, c), "bilinear")
    return {"low_res": up, "low_res_t": s}

  def image_conditioning(self, x0, rng, train):
    level_rng, noise_rng = jax.random.split(rng)
    n = x0.shape[0]
    s = (jax.random.randint(level_rng, (n,), 0, self.aug_max + 1) if train
         else jnp.full((n,), self.aug_sample, jnp.int32))
    return self._low_res_input(area_downsample(x0, self.factor), s, noise_rng)

  def sampling_conditioning(self, params, rng, num, cond, frozen):
    del params
    base_rng, noise_rng = jax.random.split(rng)
    guidance = self.config.model.get("base_guidance_scale", None)
    low = self.base.sample_with(frozen["base"], base_rng, num, cond, frozen=frozen,
                                guidance_scale=guidance)
    return self._low_res_input(2.0 * low - 1.0, jnp.full((num,), self.aug_sample, jnp.int32), noise_rng)
