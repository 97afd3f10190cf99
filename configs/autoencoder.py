"""KL autoencoder (latent diffusion's first stage): L1 + LPIPS + small KL, optional patch GAN.

  python launch.py --config=configs/autoencoder.py:dataset=scenes,size=small,f=4 --workdir=W
  python launch.py --config=configs/autoencoder.py:size=small,disc=true --workdir=W

Arguments: dataset (default scenes, 64x64), size (smoke | small | full), f (downsampling
factor: 4 -> 16x16x3 latents on 64x64 images, 8 -> 8x8x4), disc (the patch discriminator:
auto = on except for size=small, true, false).
Loss weights are the latent-diffusion paper's KL-f4/f8 ones: LPIPS 1, KL 1e-6 (per pixel
units, see genjax/families/autoencoder.py), discriminator 0.5 with the adaptive weight,
Adam b1 0.5 / b2 0.9 for both networks.
"""

from __future__ import annotations

from configs.common import (COMMON_ARG_DEFAULTS, base_config, parse_arg, pick_size, set_cadence,
                            shrink_eval_for_smoke)

LATENT_CHANNELS = {4: 3, 8: 4}

SIZES = {
    # Trains in seconds; used by the tests (mnist5k, 28x28: f=4 -> 7x7 latents).
    "smoke": dict(batch_size=8, total_steps=6, log_every=2, eval_every=6, checkpoint_every=3,
                  width=8, num_res_blocks=1, disc_channels=8, disc_layers=2, learning_rate=1e-3,
                  fid_samples=0, fid_reference=-1, statistics_batches=2, lpips="vgg16"),
    # 2 CPU cores: ~1.0 steps/s on 64x64 scenes (measured 2026-11-30; with VGG16 LPIPS 0.47),
    # so 2,000 steps take ~35 min; rFID of 1,000 test reconstructions vs those images.
    "small": dict(batch_size=16, total_steps=2000, log_every=50, eval_every=1000,
                  checkpoint_every=500, width=32, num_res_blocks=1, disc_channels=32,
                  disc_layers=3, learning_rate=4.5e-4, fid_samples=1000, fid_reference=1000,
                  statistics_batches=20, lpips="alexnet"),
    # Accelerator size (the paper's KL-f4 widths).
    "full": dict(batch_size=64, total_steps=100_000, log_every=200, eval_every=10_000,
                 checkpoint_every=5_000, width=128, num_res_blocks=2, disc_channels=64,
                 disc_layers=3, learning_rate=4.5e-6 * 64, fid_samples=10_000, fid_reference=-1,
                 statistics_batches=100, lpips="vgg16"),
}


def get_config(arg=None):
  a = parse_arg(arg, {**COMMON_ARG_DEFAULTS, "dataset": "scenes", "f": 4, "disc": "auto"})
  if a.disc not in ("auto", "true", "false"):
    from genjax.errors import ConfigError  # pylint: disable=import-outside-toplevel
    raise ConfigError(f"disc must be auto, true or false, got {a.disc!r}")
  s = pick_size(a.size, SIZES)
  if a.f not in LATENT_CHANNELS:
    from genjax.errors import ConfigError  # pylint: disable=import-outside-toplevel
    raise ConfigError(f"f must be one of {sorted(LATENT_CHANNELS)}, got {a.f}")
  c = base_config("autoencoder", a.dataset)
  set_cadence(c, s)
  c.eval.statistics_batches = s["statistics_batches"]  # latent moments for stage 2
  c.ema_decay = 0.999
  # The perceptual loss's network (frozen), also the reported LPIPS: VGG16 as in the paper;
  # the CPU preset uses AlexNet's (half the step time at 64x64; needs images >= 64 px).
  c.stages.lpips = f"pretrained:lpips_{s['lpips']}"

  levels = {4: 3, 8: 4}[a.f]  # resolution levels: f = 2 ** (levels - 1)
  w = s["width"]
  c.model.channels = tuple(w * m for m in (1, 2, 2, 4)[:levels])
  c.model.num_res_blocks = s["num_res_blocks"]
  c.model.latent_channels = LATENT_CHANNELS[a.f]
  c.model.lpips_weight = 1.0
  c.model.kl_weight = 1e-6
  # auto: on, except for the CPU preset: there, from step 1,000 of 2,000 the discriminator stayed
  # at chance (hinge loss 1.0), the adaptive weight grew 8.6 -> 111 in 250 steps and the training
  # PSNR fell from 29.4 to 24.2 dB (runs/ae_small, 2026-11-30): a GAN needs a longer run.
  use_disc = a.disc == "true" or (a.disc == "auto" and a.size != "small")
  c.model.disc_weight = 0.5 if use_disc else 0.0  # 0: no discriminator at all
  c.model.disc_start = max(1, s["total_steps"] // 2)  # the GAN loss joins once reconstructions are good
  c.model.disc_channels = s["disc_channels"]
  c.model.disc_layers = s["disc_layers"]

  c.optim.name = "adam"
  c.optim.learning_rate = s["learning_rate"]
  c.optim.b1, c.optim.b2 = 0.5, 0.9
  c.optim_d = c.optim.copy_and_resolve_references()

  if a.size == "smoke":
    shrink_eval_for_smoke(c)
    c.eval.batch_size = 8
  return c
