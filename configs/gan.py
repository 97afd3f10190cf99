"""DCGAN with non-saturating or hinge loss, optional R1, optional class conditioning.

  python launch.py --config=configs/gan.py:dataset=fashion_mnist,size=small --workdir=W
  python launch.py --config=configs/gan.py:size=small,loss=hinge,conditional=True --workdir=W

Hyperparameters are DCGAN's proven ones (Radford et al., 2016): Adam with
lr 2e-4, b1 0.5, b2 0.999 for both networks, one D step per G step, and an
EMA (decay 0.999) of the generator for sampling.
"""

from __future__ import annotations

from configs.common import (COMMON_ARG_DEFAULTS, base_config, parse_arg, pick_size, set_cadence,
                            shrink_eval_for_smoke)

SIZES = {
    # Trains in seconds; used by the tests.
    "smoke": dict(batch_size=16, total_steps=20, log_every=5, eval_every=10, checkpoint_every=10,
                  latent_dim=16, g_channels=(16, 8), d_channels=(8, 16), fid_samples=0, fid_reference=-1),
    # 2 CPU cores: ~13.5 steps/s on 2 idle cores, so 20k steps (~21 epochs of Fashion-MNIST)
    # take ~25 min of training; FID/KID of 1,000 EMA samples vs the first 1,000 test images.
    "small": dict(batch_size=64, total_steps=20_000, log_every=200, eval_every=5_000,
                  checkpoint_every=1_000, latent_dim=100, g_channels=(128, 64),
                  d_channels=(64, 128), fid_samples=1000, fid_reference=1000),
    # Accelerator size.
    "full": dict(batch_size=128, total_steps=100_000, log_every=500, eval_every=10_000,
                 checkpoint_every=5_000, latent_dim=128, g_channels=(512, 256),
                 d_channels=(128, 256, 512), fid_samples=10_000, fid_reference=-1),
}


def get_config(arg=None):
  a = parse_arg(arg, {**COMMON_ARG_DEFAULTS, "loss": "non_saturating", "conditional": False})
  s = pick_size(a.size, SIZES)
  c = base_config("gan", a.dataset)
  set_cadence(c, s)  # small: FID vs the first 1,000 test images
  c.ema_decay = 0.999  # of the generator only (GAN.ema_view)

  c.model.conditional = a.conditional  # label-conditioned G + projection D
  c.model.loss = a.loss  # non_saturating | hinge
  c.model.latent_dim = s["latent_dim"]
  c.model.g_channels = s["g_channels"]  # feature maps from the lowest resolution up
  c.model.d_channels = s["d_channels"]  # one stride-2 4x4 conv each
  c.model.g_norm = "group"  # none | group | layer | pixel (stateless: no BatchNorm)
  c.model.d_norm = "none"
  c.model.embed_dim = 32  # generator label embedding (conditional only)
  c.model.d_steps = 1  # D updates per G update, all on the same real batch
  c.model.r1_gamma = 0.0  # R1 weight on real data; 0 disables

  # Generator optimizer (config.optim) and discriminator optimizer (config.optim_d).
  c.optim.name = "adam"
  c.optim.learning_rate = 2e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.optim_d = c.optim.copy_and_resolve_references()

  if a.size == "smoke":
    shrink_eval_for_smoke(c)
  return c


def get_hyper(h):
  """Sweep (expanded by genjax.train.sweep): one learning rate shared by G and D,
  with and without a small R1 penalty."""
  lrs = [1e-4, 2e-4, 4e-4]
  return h.product([
      h.zipit([h.sweep("optim.learning_rate", lrs), h.sweep("optim_d.learning_rate", lrs)]),
      h.sweep("model.r1_gamma", [0.0, 0.1]),
  ])
