"""PixelCNN++: autoregressive pixels, exact bits/dim (genjax/families/pixelcnn.py).

  python launch.py --config=configs/pixelcnn.py:dataset=fashion_mnist,size=small --workdir=runs/pixelcnn
Sizes: smoke (seconds; tests), small (2 CPU cores: 6,000 steps at ~2.65 steps/s alone, 43m27s
with its two evaluations; test bits/dim 2.840 on Fashion-MNIST, 2.893 at step 3,000), full (the
paper's CIFAR-10 network, for an accelerator).
Sampling draws one pixel per network evaluation (784 for 28x28), so the FID evaluator is off by
default: bits/dim is the training metric, and experiments/ar_vs_nar.py measures FID and speed.
"""

from configs import common

SIZES = {
    #        filters resnet levels mix dropout batch  steps    lr     warmup log  eval  ckpt
    "smoke": (8, 1, 2, 2, 0.0, 8, 6, 1e-3, 2, 2, 6, 3),
    "small": (32, 1, 3, 5, 0.0, 32, 6000, 1e-3, 200, 50, 3000, 500),
    "full": (160, 5, 3, 10, 0.5, 64, 500_000, 2e-4, 1000, 200, 10_000, 5000),
}


def get_config(arg=None):
  a = common.parse_arg(arg, dict(common.COMMON_ARG_DEFAULTS, conditional=False))
  (filters, resnet, levels, mixtures, dropout, batch, steps, lr, warmup, log_every, eval_every,
   ckpt_every) = common.pick_size(a.size, SIZES)
  c = common.base_config("pixelcnn", a.dataset)
  common.set_cadence(c, dict(batch_size=batch, total_steps=steps, log_every=log_every,
                             eval_every=eval_every, checkpoint_every=ckpt_every, fid_samples=0))
  c.optim.update(learning_rate=lr, warmup_steps=warmup, schedule="cosine", grad_clip=1.0)
  c.ema_decay = 0.999 if a.size == "small" else 0.9995
  # num_resnet: gated residual blocks per resolution (the down pass adds one); levels 3:
  # resolutions H, H/2, H/4; num_mixtures: discretized logistics per pixel.
  c.model.update(conditional=a.conditional, filters=filters, num_resnet=resnet, levels=levels,
                 num_mixtures=mixtures, dropout=dropout)

  if a.size == "smoke":
    common.shrink_eval_for_smoke(c)
    c.eval.grid_size = 4  # each grid image costs H*W network evaluations
  else:
    c.eval.grid_size = 16
  return c
