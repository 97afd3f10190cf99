"""Denoising diffusion (DDPM training, DDIM/DDPM sampling) with a U-Net.

    python launch.py --config=configs/ddpm.py:dataset=fashion_mnist,size=small --workdir=W

Arguments: dataset, size (smoke | small | base | full), conditional (class labels + classifier-free
guidance), schedule (linear | cosine), parameterization (eps | v | x0).
"""


from configs.common import (COMMON_ARG_DEFAULTS, base_config, parse_arg, pick_size, set_cadence,
                            shrink_eval_for_smoke)

SIZES = {
    # Trains in seconds: used by the tests.
    "smoke": dict(ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7, 8), num_heads=2,
                  dropout=0.0, norm_groups=8, timesteps=100, sample_steps=10, batch_size=16,
                  total_steps=20, learning_rate=1e-3, warmup_steps=5, log_every=5,
                  eval_every=10, checkpoint_every=10),
    # CPU (2 cores): ~1.2M params, 1.45 steps/s at batch 64 on 2 idle cores, so 2500 steps
    # take ~29 min (measured: 29m43s from launch to the last step). Feature maps 28/14/7 (32/16/8 for 32x32 data),
    # attention at the lowest resolution only; no dropout (a run this short underfits).
    # FID/KID of 1,000 EMA samples vs the first 1,000 test images at the end, drawn with
    # stochastic DDIM-100 (eta=1): on the same weights that scored FID 35.4 where deterministic
    # DDIM-100 scored 48.3 and DDIM-50 50.6, though KID rates them alike (README "Results").
    "small": dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7, 8), num_heads=4,
                  dropout=0.0, norm_groups=8, timesteps=1000, sample_steps=100, eta=1.0,
                  batch_size=64,
                  total_steps=2500, learning_rate=1e-3, warmup_steps=100, log_every=50,
                  eval_every=2500, checkpoint_every=500, fid_samples=1000, fid_reference=1000),
    # Longer CPU runs (hours): ~3.9M params, ~3.5x the compute of `small` per step.
    "base": dict(ch=48, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(7, 8), num_heads=4,
                 dropout=0.1, norm_groups=8, timesteps=1000, sample_steps=50, batch_size=64,
                 total_steps=8000, learning_rate=5e-4, warmup_steps=200, log_every=100,
                 eval_every=2000, checkpoint_every=1000, fid_samples=1000, fid_reference=1000),
    # Accelerator: DDPM-CIFAR-like, 38M params (28x28 is padded to 32x32: maps 32/16/8/4).
    "full": dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                 num_heads=4, dropout=0.1, norm_groups=32, timesteps=1000, sample_steps=100,
                 batch_size=128, total_steps=200_000, learning_rate=2e-4, warmup_steps=5000,
                 log_every=100, eval_every=10_000, checkpoint_every=5000, fid_samples=10_000,
                 fid_reference=-1),
}


def get_config(arg=None):
  args = parse_arg(arg, dict(COMMON_ARG_DEFAULTS, conditional=False, schedule="cosine",
                             parameterization="eps"))
  size = pick_size(args.size, SIZES)
  c = base_config("ddpm", args.dataset)
  set_cadence(c, size)
  # A ~2k-step CPU run moves fast until the end: average over ~500 steps, not ~1000.
  c.ema_decay = {"smoke": 0.9, "small": 0.998, "base": 0.999}.get(args.size, 0.9999)

  c.optim.name = "adam"
  c.optim.learning_rate = size["learning_rate"]
  c.optim.warmup_steps = size["warmup_steps"]
  c.optim.grad_clip = 1.0

  m = c.model
  # U-Net (genjax.nn.unet.UNet).
  m.ch = size["ch"]
  m.ch_mult = size["ch_mult"]
  m.num_res_blocks = size["num_res_blocks"]
  m.attn_resolutions = size["attn_resolutions"]  # feature-map side lengths
  m.num_heads = size["num_heads"]
  m.dropout = size["dropout"]
  m.norm_groups = size["norm_groups"]  # max GroupNorm groups (gcd with channels is used)
  m.position_embedding = False  # add sinusoidal pixel positions (genjax.nn.unet)
  m.cross_attn_resolutions = ()  # sides with cross-attention only (text models)
  m.layout_resolutions = ()  # sides with a per-position map of the pooled caption (text models)
  # Diffusion process and objective.
  m.timesteps = size["timesteps"]
  m.schedule = args.schedule  # linear | cosine
  m.parameterization = args.parameterization  # eps | v | x0
  m.loss_weighting = "none"  # none | min_snr
  m.timestep_power = 1.0  # training t = floor(T u^power), u ~ U(0, 1): 1 uniform, < 1 noisier
  m.min_snr_gamma = 5.0
  # float32 | bfloat16: the U-Net and text encoder compute in bfloat16 on float32 parameters
  # (genjax/nn/precision.py); for accelerators (on CPU bfloat16 is emulated and slower).
  m.compute_dtype = "float32"
  # Class conditioning and classifier-free guidance.
  m.conditional = args.conditional
  m.p_uncond = 0.1  # prob. of training on the null label
  m.guidance_scale = 1.0  # 1: plain conditional; >1: guided (doubled batch)
  # Sampling (what Family.sample uses).
  m.sampler = "ddim"  # ddim | ddpm
  m.sample_steps = size["sample_steps"]  # DDIM steps (respaced); DDPM always uses all T
  m.eta = size.get("eta", 0.0)  # DDIM noise: 0 deterministic, 1 DDPM-like
  m.ddpm_variance = "small"  # small (posterior btilde) | large (beta)
  m.latent = False  # True: diffuse a frozen autoencoder stage's latents (configs/ldm.py)
  m.clip_denoised = True
  # Evaluation.
  m.eval_bpd = True  # also estimate the variational bound (2 extra network calls/example)
  if args.size in ("small", "base"):  # 3 network calls per test image: score 2048, not all 10k
    c.eval.num_batches = 8
  if args.size == "smoke":
    shrink_eval_for_smoke(c)
  return c


def get_hyper(h):
  """A small sweep: learning rate x parameterization (expanded by genjax.train.sweep)."""
  return h.product([
      h.sweep("optim.learning_rate", [3e-4, 1e-3]),
      h.sweep("model.parameterization", ["eps", "v"]),
  ])
