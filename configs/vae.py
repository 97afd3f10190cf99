"""VAE on 8-bit images (discretized logistic likelihood).

  python launch.py --config=configs/vae.py:dataset=mnist5k,size=smoke --workdir=/tmp/vae
Sizes: smoke (seconds; tests), small (a few minutes on 2 CPU cores; `make demo`),
       base (a longer CPU run), full (accelerator).
"""

from configs import common

SIZES = {
    #        channels       latent  batch  steps  lr     log  eval  ckpt
    "smoke": ((8, 16), 8, 16, 6, 1e-3, 2, 6, 3),
    "small": ((16, 32, 64), 16, 64, 1000, 2e-3, 50, 500, 500),
    "base": ((32, 64, 128), 32, 128, 10000, 1e-3, 100, 2000, 1000),
    "full": ((64, 128, 256), 64, 256, 100000, 5e-4, 200, 5000, 5000),
}


def get_config(arg=None):
  a = common.parse_arg(arg, dict(common.COMMON_ARG_DEFAULTS, beta=1.0, conditional=False))
  channels, latent, batch, steps, lr, log_every, eval_every, ckpt_every = common.pick_size(a.size, SIZES)

  c = common.base_config("vae", a.dataset)
  common.set_cadence(c, dict(batch_size=batch, total_steps=steps, log_every=log_every,
                             eval_every=eval_every, checkpoint_every=ckpt_every))
  c.optim.learning_rate = lr
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = min(100, steps // 10)
  c.ema_decay = 0.999

  c.model.conditional = a.conditional
  c.model.channels = channels
  c.model.latent_dim = latent
  c.model.beta = a.beta

  if a.size == "smoke":
    common.shrink_eval_for_smoke(c)
  return c


def get_hyper(h):
  """A small sweep: beta and learning rate (expanded by genjax.train.sweep)."""
  return h.product([
      h.sweep("model.beta", [0.5, 1.0, 2.0]),
      h.sweep("optim.learning_rate", [1e-3, 2e-3]),
  ])
