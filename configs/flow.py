"""Glow-style multi-scale normalizing flow (exact likelihood, bits/dim).

  python launch.py --config=configs/flow.py:dataset=fashion_mnist,size=small --workdir=/tmp/flow
Sizes: smoke (seconds; tests), small (~11 min of training on 2 idle CPU cores: 3,000 steps at
~4.7 steps/s), full (accelerator).
`levels` squeezes need H and W divisible by 2**levels: 2 levels for 28x28 images.
"""

from configs import common

SIZES = {
    #        levels  K  hidden  batch  steps   lr     warmup  log  eval  ckpt
    "smoke": (2, 1, 16, 16, 6, 1e-3, 2, 2, 6, 3),
    "small": (2, 8, 96, 64, 3000, 1e-3, 200, 50, 500, 500),
    "full": (2, 32, 512, 128, 100000, 5e-4, 2000, 200, 5000, 5000),
}


def get_config(arg=None):
  a = common.parse_arg(arg, dict(common.COMMON_ARG_DEFAULTS, conditional=False, temperature=0.7,
                                 coupling_scale="tanh"))
  levels, k, hidden, batch, steps, lr, warmup, log_every, eval_every, ckpt_every = (
      common.pick_size(a.size, SIZES))

  c = common.base_config("flow", a.dataset)
  common.set_cadence(c, dict(batch_size=batch, total_steps=steps, log_every=log_every,
                             eval_every=eval_every, checkpoint_every=ckpt_every))
  # Flows want Adam ~1e-3 with warmup (the first steps move data-initialised
  # ActNorms) and clipping (rare large gradients from the exp() scales).
  c.optim.learning_rate = lr
  c.optim.warmup_steps = warmup
  c.optim.schedule = "cosine"
  c.optim.grad_clip = 50.0
  # Short EMA horizon for short runs: an EMA over the whole run would average in
  # early, much worse flows (any parameters are a valid flow, so eval stays exact).
  c.ema_decay = 0.995 if a.size == "small" else 0.999

  c.model.conditional = a.conditional
  c.model.levels = levels
  c.model.steps_per_level = k
  c.model.hidden = hidden
  c.model.coupling_scale = a.coupling_scale  # tanh | sigmoid
  c.model.temperature = a.temperature  # prior std multiplier when sampling

  if a.size == "smoke":
    common.shrink_eval_for_smoke(c)
  return c


def get_hyper(h):
  """A small sweep: learning rate x coupling scale (expanded by genjax.train.sweep)."""
  return h.product([
      h.sweep("optim.learning_rate", [5e-4, 1e-3, 2e-3]),
      h.sweep("model.coupling_scale", ["tanh", "sigmoid"]),
  ])
