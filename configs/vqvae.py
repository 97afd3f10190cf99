"""VQ tokenizer (genjax/families/vqvae.py): the autoencoder family's networks and losses with a
vector-quantised bottleneck, for the token models.

  python launch.py --config=configs/vqvae.py:dataset=fashion_mnist,size=small --workdir=runs/vqvae
Arguments: dataset, size (smoke | small | full), codes (codebook size K), f (downsampling:
2 -> 14x14 = 196 tokens on 28x28 images, 4 -> 7x7), lpips (the LPIPS loss weight; 0 keeps
LPIPS as a reported metric only), disc (the patch discriminator, true | false).
"""

from configs import autoencoder
from configs.common import COMMON_ARG_DEFAULTS, parse_arg, pick_size, set_cadence

SIZES = {
    "smoke": dict(batch_size=8, total_steps=6, log_every=2, eval_every=6, checkpoint_every=3,
                  width=8, code_dim=4, learning_rate=1e-3),
    # 2 CPU cores; README gives the measured steps/s.
    # rFID of 1,000 test reconstructions vs those images.
    "small": dict(batch_size=32, total_steps=3000, log_every=50, eval_every=1500,
                  checkpoint_every=500, width=32, code_dim=16, learning_rate=1e-3,
                  fid_samples=1000, fid_reference=1000),
    "full": dict(batch_size=128, total_steps=100_000, log_every=200, eval_every=10_000,
                 checkpoint_every=5000, width=128, code_dim=32, learning_rate=2e-4),
}


def get_config(arg=None):
  a = parse_arg(arg, {**COMMON_ARG_DEFAULTS, "dataset": "fashion_mnist", "codes": 512, "f": 2,
                      "lpips": 0.0, "disc": False})
  s = pick_size(a.size, SIZES)
  base_size = "smoke" if a.size == "smoke" else "small" if a.size == "small" else "full"
  c = autoencoder.get_config(f"dataset={a.dataset},size={base_size},disc={str(a.disc).lower()}")
  c.family = "vqvae"
  set_cadence(c, {"fid_samples": 0, **s})
  c.eval.statistics_batches = 0  # no latent moments: token models read code indices
  c.stages.lpips = "pretrained:lpips_vgg16"  # AlexNet's needs >= 64x64 images
  levels = {2: 2, 4: 3}[a.f] if a.f in (2, 4) else None
  if levels is None:
    from genjax.errors import ConfigError  # pylint: disable=import-outside-toplevel
    raise ConfigError(f"f must be 2 or 4, got {a.f}")
  c.model.channels = tuple(s["width"] * m for m in (1, 2, 2)[:levels])
  c.model.latent_channels = s["code_dim"]  # the codes' dimension
  c.model.lpips_weight = a.lpips
  del c.model["kl_weight"]  # the commitment loss takes its place
  c.model.codebook_size = a.codes
  c.model.codebook_decay = 0.99  # EMA of cluster sizes and code sums
  c.model.commitment_weight = 0.25  # VQ-VAE's beta
  # Dead: used less than once per ~30 steps on average (cluster sizes count uses per step; an
  # unused code's falls from 1 to 0.03 in ~350 steps at decay 0.99).
  c.model.restart_below = 0.03
  c.optim.b1, c.optim.b2 = 0.9, 0.99
  c.optim.learning_rate = s["learning_rate"]
  c.ema_decay = 0.99 if a.size == "smoke" else 0.995  # short runs: the EMA must follow the codebook
  return c
