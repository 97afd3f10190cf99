r"""Denoising diffusion (DDPM, Ho et al. 2020; Improved DDPM, Nichol & Dhariwal 2021; DDIM,
Song et al. 2021; classifier-free guidance, Ho & Salimans 2022).

Forward process. With a schedule beta_1..beta_T (stored 0-indexed: t = 0..T-1),
alpha_t = 1 - beta_t and abar_t = prod_{s<=t} alpha_s,
    q(x_t | x_0) = N(a_t x_0, s_t^2 I),   a_t = sqrt(abar_t),  s_t = sqrt(1 - abar_t),
i.e. x_t = a_t x_0 + s_t eps with eps ~ N(0, I). SNR(t) = a_t^2 / s_t^2.
Schedules: "linear" (beta from 1e-4 to 0.02, rescaled by 1000/T) and "cosine"
(abar(t) = f(t)/f(0), f(t) = cos^2(((t/T) + s)/(1 + s) * pi/2), s = 0.008, beta <= 0.999).

Posterior (Bayes, both Gaussians):
    q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, btilde_t I),
    c0_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t),   ct_t = sqrt(alpha_t)(1 - abar_{t-1}) / (1 - abar_t),
    btilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t),   with abar_{-1} = 1.

Parameterizations. The network output is eps ("eps"), x_0 ("x0") or the velocity
v = a_t eps - s_t x_0 ("v", Salimans & Ho 2022). Since a_t^2 + s_t^2 = 1 they convert exactly:
    x_0 = (x_t - s_t eps)/a_t,  eps = (x_t - a_t x_0)/s_t,  x_0 = a_t x_t - s_t v,  eps = s_t x_t + a_t v.

Loss ("simple"): E_{t, eps} w(t) * mean_pixels (target - net(x_t, t))^2, t uniform.
Weighting "none" is the plain MSE on the parameterization's own target. "min_snr" is
Min-SNR-gamma (Hang et al. 2023), which in x_0-units weights by min(SNR, gamma); expressed per
target it is w = min(SNR, gamma)/SNR for eps, min(SNR, gamma)/(SNR + 1) for v, min(SNR, gamma) for x0.

Class conditioning / classifier-free guidance. A conditional model embeds labels in
[0, K]; id K is "no label". In training each label is replaced by K with prob `p_uncond`.
At sampling, with guidance scale w, out = out(x, null) + w (out(x, y) - out(x, null))
(w = 1: the plain conditional model, w = 0: unconditional); the pair is ONE network call on the
doubled batch [x, x] with conditions [y, null]. Every parameterization is affine in the output
with the same x_t term, so guiding eps, v or x_0 is the same thing.

Text conditioning (`model.text_encoder` = "trainable" | "frozen"). The caption tokens of the
batch (`cond["tokens"]`, `cond["token_mask"]`) are encoded once per network call batch: by a
transformer trained with the U-Net ("trainable", its params under params["text_encoder"]) or
by a frozen stage named "text_encoder" (pretrained MiniLM, passed by the loop in `frozen`).
The U-Net cross-attends to the token outputs with the padding mask applied (output
projections zero-initialised) and adds the pooled output to its timestep embedding. The
text null condition is the empty caption: in training each caption is replaced by it with
prob `p_uncond`, so guidance contrasts the caption with the empty caption. At sampling the
captions (and the null) are encoded once, outside the denoising loop.

Samplers (both `lax.fori_loop`s, so `sample` jits into one loop):
* `ddpm_sample`: ancestral sampling over all T steps, x_{t-1} ~ N(mu(x_t, x0_hat), sigma_t^2)
  with sigma_t^2 = btilde_t ("small") or beta_t ("large").
* `ddim_sample`: S respaced steps tau_S > ... > tau_1 (evenly spaced in [0, T-1]); with
  abar' = abar_{tau_{i-1}} (1 for the last step),
    sigma = eta sqrt((1 - abar')/(1 - abar)) sqrt(1 - abar/abar'),
    x' = sqrt(abar') x0_hat + sqrt(1 - abar' - sigma^2) eps_hat + sigma z.
  eta = 0 is deterministic given x_T; eta = 1 with S = T is DDPM.
x0_hat is clipped to [-1, 1] (and eps_hat recomputed from it) when `clip_denoised`.

Latent diffusion (`model.latent`, configs/ldm.py). The U-Net diffuses the frozen stage
`autoencoder`'s posterior means times its latent scale (1 / std of its latents on training data,
read from the statistics that run stored for the loaded step) instead of pixels; samples are
decoded by its decoder (`to_model_space` / `to_images`). No clipping of x0_hat, no pixel bound.

Extra image inputs (`image_conditioning` / `sampling_conditioning`): hooks that add U-Net inputs
derived from the clean image in training and evaluation, or produced at sampling; empty here,
the super-resolution family (genjax/families/super_resolution.py) feeds its low-res image
through them, so it reuses this file's loss, samplers, guidance and evaluation unchanged.

Images live in [-1, 1] (genjax.nn.images). Inputs whose sides are not divisible by the U-Net's
downsampling factor are padded with -1 (background) to the next multiple; the model diffuses the
padded image and samples are cropped back.

Metrics:
* `loss` (train) / `eval_loss` (eval, per example): the weighted simple loss at a random t.
* `eval_mse_eps` (eval): the unweighted eps-prediction MSE at that t, comparable across
  parameterizations and weightings.
* `eval_bpd` (eval, if `model.eval_bpd`): an unbiased one-sample estimate of the variational
  bound in bits per (unpadded) dimension,
      L = KL(q(x_T|x_0) || N(0, I)) + (T-1) E_{t~U{1..T-1}} KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
          - log p(x_0 | x_1)   (discretized Gaussian decoder, 256 bins),
  with p's variance fixed to the sampler's `ddpm_variance` (so it is looser than a learned-variance
  bound). Padding pixels are modelled too, so this upper-bounds the NLL of the unpadded image.
  All network evaluations of an eval batch (1, or 3 with eval_bpd) run as one stacked batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax.errors import ConfigError
from genjax.families import captions
from genjax.families.base import Batch, DataSpec, Family, Metrics, PyTree
from genjax.nn import precision
from genjax.nn.images import symmetric_to_unit, uint8_to_symmetric
from genjax.nn.unet import UNet, null_label
from genjax.optim import make_optimizer

SCHEDULES = ("linear", "cosine")
PARAMETERIZATIONS = ("eps", "v", "x0")
WEIGHTINGS = ("none", "min_snr")
SAMPLERS = ("ddpm", "ddim")
DDPM_VARIANCES = ("small", "large")
IMAGE_COND_STREAM = 7919  # fold_in key of the randomness of image_/sampling_conditioning

# A model function maps (x_t [B,H,W,C], t int32[B]) to the network's raw output.
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


# ---------------------------------------------------------------------------------------------
# Schedules and closed forms
# ---------------------------------------------------------------------------------------------

def make_betas(name: str, timesteps: int) -> np.ndarray:
  """beta_t for t = 0..T-1 (float64)."""
  if name == "linear":
    scale = 1000.0 / timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)
  if name == "cosine":
    s = 0.008
    f = lambda u: np.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    u = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    return np.minimum(1.0 - f(u[1:]) / f(u[:-1]), 0.999)
  raise ConfigError(f"unknown model.schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Every per-timestep constant of the forward and reverse processes (numpy float64;
  `take` gathers them as float32 at traced timesteps)."""
  betas: np.ndarray
  alphas_cumprod: np.ndarray
  alphas_cumprod_prev: np.ndarray
  posterior_variance: np.ndarray
  posterior_log_variance_clipped: np.ndarray
  posterior_mean_coef_x0: np.ndarray
  posterior_mean_coef_xt: np.ndarray

  @classmethod
  def create(cls, name: str, timesteps: int) -> "Schedule":
    betas = make_betas(name, timesteps)
    abar = np.cumprod(1.0 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    return cls(
        betas=betas,
        alphas_cumprod=abar,
        alphas_cumprod_prev=abar_prev,
        posterior_variance=post_var,
        # btilde_0 = 0: use btilde_1 for the log so it stays finite (as in Ho et al.'s code).
        posterior_log_variance_clipped=np.log(np.append(post_var[1], post_var[1:])),
        posterior_mean_coef_x0=betas * np.sqrt(abar_prev) / (1.0 - abar),
        posterior_mean_coef_xt=np.sqrt(1.0 - betas) * (1.0 - abar_prev) / (1.0 - abar),
    )

  @property
  def timesteps(self) -> int:
    return len(self.betas)

  def take(self, name: str, t: jax.Array, ndim: int = 4) -> jax.Array:
    """Gathers `name` at int timesteps t [B] -> float32 [B, 1, ..., 1] (ndim dims)."""
    values = jnp.asarray(getattr(self, name), jnp.float32)[t]
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))

  def alpha_sigma(self, t: jax.Array, ndim: int = 4) -> tuple[jax.Array, jax.Array]:
    abar = self.take("alphas_cumprod", t, ndim)
    return jnp.sqrt(abar), jnp.sqrt(1.0 - abar)

  def snr(self, t: jax.Array) -> jax.Array:
    abar = self.take("alphas_cumprod", t, 1)
    return abar / (1.0 - abar)


def q_sample(schedule: Schedule, x0, t, noise):
  """x_t ~ q(x_t | x_0) given the noise: a_t x_0 + s_t eps."""
  a, s = schedule.alpha_sigma(t, x0.ndim)
  return a * x0 + s * noise


def q_posterior_mean_variance(schedule: Schedule, x0, x_t, t):
  """Mean, variance and (clipped) log-variance of q(x_{t-1} | x_t, x_0)."""
  mean = (schedule.take("posterior_mean_coef_x0", t, x0.ndim) * x0
          + schedule.take("posterior_mean_coef_xt", t, x0.ndim) * x_t)
  return (mean, schedule.take("posterior_variance", t, x0.ndim),
          schedule.take("posterior_log_variance_clipped", t, x0.ndim))


# Exact conversions between parameterizations, given a = sqrt(abar_t), s = sqrt(1 - abar_t).
def x0_from_eps(x_t, eps, a, s):
  return (x_t - s * eps) / a


def eps_from_x0(x_t, x0, a, s):
  return (x_t - a * x0) / s


def v_from_x0_eps(x0, eps, a, s):
  return a * eps - s * x0


def x0_from_v(x_t, v, a, s):
  return a * x_t - s * v


def eps_from_v(x_t, v, a, s):
  return s * x_t + a * v


def training_target(parameterization: str, x0, eps, a, s):
  """What the network is regressed onto."""
  if parameterization == "eps":
    return eps
  if parameterization == "x0":
    return x0
  if parameterization == "v":
    return v_from_x0_eps(x0, eps, a, s)
  raise ConfigError(f"unknown model.parameterization {parameterization!r}; "
                    f"choose one of: {', '.join(PARAMETERIZATIONS)}")


def prediction_to_x0_eps(parameterization: str, out, x_t, a, s, clip: bool = False):
  """Network output -> (x0_hat, eps_hat). With `clip`, x0_hat is clipped to [-1, 1] and
  eps_hat recomputed from it so the two stay consistent with x_t."""
  if parameterization == "eps":
    x0, eps = x0_from_eps(x_t, out, a, s), out
  elif parameterization == "x0":
    x0, eps = out, eps_from_x0(x_t, out, a, s)
  elif parameterization == "v":
    x0, eps = x0_from_v(x_t, out, a, s), eps_from_v(x_t, out, a, s)
  else:
    raise ConfigError(f"unknown model.parameterization {parameterization!r}; "
                      f"choose one of: {', '.join(PARAMETERIZATIONS)}")
  if clip:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = eps_from_x0(x_t, x0, a, s)
  return x0, eps


def loss_weight(weighting: str, parameterization: str, snr, gamma: float):
  """Per-example weight of the squared error on the parameterization's target (see docstring)."""
  if weighting == "none":
    return jnp.ones_like(snr)
  if weighting == "min_snr":
    clipped = jnp.minimum(snr, gamma)
    return {"eps": clipped / snr, "v": clipped / (snr + 1.0), "x0": clipped}[parameterization]
  raise ConfigError(f"unknown model.loss_weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------

def guided_model_fn(apply: Callable[[jax.Array, jax.Array, PyTree], jax.Array],
                    cond: PyTree, null_cond: PyTree, guidance_scale: float) -> ModelFn:
  """Classifier-free guidance as one doubled batch: apply(x, t, c) is called once on
  [x, x] with conditions [cond, null_cond] (pytrees with leading axis B, concatenated leaf by
  leaf); returns out_null + w (out_cond - out_null)."""
  both_cond = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), cond, null_cond)

  def model_fn(x, t):
    both = apply(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both_cond)
    cond, uncond = jnp.split(both, 2)
    return uncond + guidance_scale * (cond - uncond)
  return model_fn


def ddpm_sample(model_fn: ModelFn, schedule: Schedule, rng: jax.Array, shape, *,
                parameterization: str = "eps", variance: str = "small",
                clip_denoised: bool = True, x_T: Optional[jax.Array] = None) -> jax.Array:
  """Ancestral sampling over all T steps. Returns x_0 in (roughly) [-1, 1], shape `shape`."""
  if variance not in DDPM_VARIANCES:
    raise ConfigError(f"unknown model.ddpm_variance {variance!r}; choose small or large")
  init_rng, step_rng = jax.random.split(rng)
  x = jax.random.normal(init_rng, shape, jnp.float32) if x_T is None else x_T
  T = schedule.timesteps
  log_var = (schedule.posterior_log_variance_clipped if variance == "small"
             else np.log(np.append(schedule.posterior_variance[1], schedule.betas[1:])))
  log_var = jnp.asarray(log_var, jnp.float32)

  def body(i, x):
    t = jnp.full((shape[0],), T - 1 - i, jnp.int32)
    a, s = schedule.alpha_sigma(t, x.ndim)
    x0, _ = prediction_to_x0_eps(parameterization, model_fn(x, t), x, a, s, clip_denoised)
    mean, _, _ = q_posterior_mean_variance(schedule, x0, x, t)
    z = jax.random.normal(jax.random.fold_in(step_rng, i), shape, jnp.float32)
    not_last = (T - 1 - i > 0).astype(jnp.float32)
    return mean + not_last * jnp.exp(0.5 * log_var[T - 1 - i]) * z

  return jax.lax.fori_loop(0, T, body, x)


def respaced_timesteps(timesteps: int, num_steps: int) -> np.ndarray:
  """num_steps distinct timesteps evenly spaced over [0, T-1], ascending (both ends included)."""
  if not 1 <= num_steps <= timesteps:
    raise ConfigError(f"sample steps must be in [1, {timesteps}], got {num_steps}")
  return np.unique(np.round(np.linspace(0, timesteps - 1, num_steps)).astype(np.int32))


def ddim_sample(model_fn: ModelFn, schedule: Schedule, rng: jax.Array, shape, *,
                num_steps: int = 50, eta: float = 0.0, parameterization: str = "eps",
                clip_denoised: bool = True, x_T: Optional[jax.Array] = None) -> jax.Array:
  """DDIM over `num_steps` respaced timesteps (see module docstring). `rng` draws x_T (unless
  given) and, for eta > 0, the per-step noise."""
  init_rng, step_rng = jax.random.split(rng)
  x = jax.random.normal(init_rng, shape, jnp.float32) if x_T is None else x_T
  taus = respaced_timesteps(schedule.timesteps, num_steps)[::-1]  # descending
  abar = schedule.alphas_cumprod
  abar_t = jnp.asarray(abar[taus], jnp.float32)
  abar_next = jnp.asarray(np.append(abar[taus[1:]], 1.0), jnp.float32)  # abar' of the step
  taus = jnp.asarray(taus.copy())

  def body(i, x):
    t = jnp.full((shape[0],), taus[i], jnp.int32)
    ab, ab_next = abar_t[i], abar_next[i]
    a, s = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
    x0, eps = prediction_to_x0_eps(parameterization, model_fn(x, t), x, a, s, clip_denoised)
    sigma = eta * jnp.sqrt((1.0 - ab_next) / (1.0 - ab) * (1.0 - ab / ab_next))
    x = (jnp.sqrt(ab_next) * x0 + jnp.sqrt(jnp.maximum(1.0 - ab_next - sigma**2, 0.0)) * eps)
    if eta > 0:
      x = x + sigma * jax.random.normal(jax.random.fold_in(step_rng, i), shape, jnp.float32)
    return x

  return jax.lax.fori_loop(0, len(taus), body, x)


# ---------------------------------------------------------------------------------------------
# Variational bound pieces (for eval_bpd)
# ---------------------------------------------------------------------------------------------

def _normal_kl(mean1, logvar1, mean2, logvar2):
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def _discretized_gaussian_log_likelihood(x, mean, log_scale):
  """log P(x) of 256-bin data in [-1, 1] under N(mean, exp(log_scale)^2), edge bins open."""
  cdf = lambda z: jax.scipy.stats.norm.cdf(z)
  inv = jnp.exp(-log_scale)
  upper, lower = inv * (x - mean + 1.0 / 255.0), inv * (x - mean - 1.0 / 255.0)
  log_cdf_upper = jnp.log(jnp.maximum(cdf(upper), 1e-12))
  log_1m_cdf_lower = jnp.log(jnp.maximum(1.0 - cdf(lower), 1e-12))
  log_delta = jnp.log(jnp.maximum(cdf(upper) - cdf(lower), 1e-12))
  return jnp.where(x < -0.999, log_cdf_upper, jnp.where(x > 0.999, log_1m_cdf_lower, log_delta))


# ---------------------------------------------------------------------------------------------
# The family
# ---------------------------------------------------------------------------------------------

class Diffusion(Family):
  """DDPM/DDIM with a U-Net; see the module docstring. params = the U-Net's flax variables."""

  sampling_options = ("sampler", "steps", "eta", "guidance_scale")

  def __init__(self, config, data: DataSpec, stages=None):
    super().__init__(config, data, stages)
    m = config.model
    for key, allowed in (("schedule", SCHEDULES), ("parameterization", PARAMETERIZATIONS),
                         ("loss_weighting", WEIGHTINGS), ("sampler", SAMPLERS),
                         ("ddpm_variance", DDPM_VARIANCES)):
      if m[key] not in allowed:
        raise ConfigError(f"unknown model.{key} {m[key]!r}; choose one of: {', '.join(allowed)}")
    if not 0.0 <= m.p_uncond < 1.0:
      raise ConfigError(f"model.p_uncond must be in [0, 1), got {m.p_uncond}")
    self.text_mode = m.get("text_encoder", "none")
    self.text_encoder = (None if self.text_mode == "none" else
                         captions.build_text_encoder(self.text_mode, m, data, self.stages))
    if m.guidance_scale != 1.0 and not (self.conditional or self.text_mode != "none"):
      raise ConfigError("model.guidance_scale != 1 needs a conditional model (model.conditional=True "
                        "on a labelled dataset, or a text encoder)")
    self.schedule = Schedule.create(m.schedule, m.timesteps)
    respaced_timesteps(m.timesteps, m.sample_steps)  # validates sample_steps
    self.latent = bool(m.get("latent", False))
    self.autoencoder, self.latent_scale = None, None
    h, w, c = self._build_autoencoder() if self.latent else data.image_shape
    factor = 2 ** (len(m.ch_mult) - 1)
    ph, pw = -h % factor, -w % factor
    if self.latent and (ph or pw):
      raise ConfigError(f"the latents are {h}x{w}, not divisible by the U-Net's downsampling factor "
                        f"{factor} (model.ch_mult={tuple(m.ch_mult)}); use fewer levels")
    self.pad = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
    self.model_shape = (h + ph, w + pw, c)
    self.num_classes = data.num_classes if self.conditional else 0
    self.dtype = precision.compute_dtype(m.get("compute_dtype", "float32"))
    self.unet = UNet(dtype=self.dtype, ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                     attn_resolutions=tuple(m.attn_resolutions), num_heads=m.num_heads,
                     dropout=m.dropout, num_classes=self.num_classes, out_channels=c,
                     max_groups=m.norm_groups,
                     position_embedding=m.get("position_embedding", False),
                     cross_attn_resolutions=tuple(m.get("cross_attn_resolutions", ())),
                     layout_resolutions=tuple(m.get("layout_resolutions", ())))
    self.optimizer = make_optimizer(config.optim, config.total_steps)

  def _build_autoencoder(self):
    """Latent diffusion: the frozen autoencoder stage (a run of configs/autoencoder.py) and its
    latent scale (1 / std of its latents on training data, stored by that run). Returns the
    latent shape, which the U-Net models instead of the image."""
    m, info = self.config.model, self.stages.get("autoencoder")
    if m.eval_bpd or m.clip_denoised:
      raise ConfigError("a latent model needs model.eval_bpd=False (a pixel-space bound) and "
                        "model.clip_denoised=False (latents are not bounded to [-1, 1])")
    if info is None:  # check_required names the missing stage right after construction
      return self.data.image_shape
    family = info.config.get("family") if info.config is not None else info.source
    if family != "autoencoder":
      raise ConfigError(f"stage 'autoencoder' ({info.source}) is a {family} run, not an autoencoder: "
                        f"point config.stages.autoencoder at a run of configs/autoencoder.py")
    if info.config.dataset != self.config.dataset:
      raise ConfigError(f"stage 'autoencoder' ({info.source}) was trained on {info.config.dataset}, this "
                        f"model on {self.config.dataset}: its latents are of other images")
    from genjax.families.autoencoder import Autoencoder, latent_scale  # pylint: disable=import-outside-toplevel
    self.autoencoder = Autoencoder(info.config, self.data)
    if info.step is not None:  # loaded: the statistics of exactly that checkpoint
      if not info.statistics or "latent_sq" not in info.statistics:
        raise ConfigError(f"stage 'autoencoder' ({info.source}) stored no latent statistics for step "
                          f"{info.step} (statistics/step_{info.step}.json): evaluate that checkpoint "
                          f"with python launch.py --mode=eval --workdir=<its workdir>, or use a step "
                          f"it evaluated (config.stages.autoencoder=<workdir>@<step>)")
      self.latent_scale = latent_scale(info.statistics)
    return self.autoencoder.latent_shape

  def required_stages(self):
    return (("text_encoder",) if self.text_mode == "frozen" else ()) + (("autoencoder",) if self.latent else ())

  # ---- conditions ------------------------------------------------------------------------------
  def _unet_params(self, params):
    return params["unet"] if self.text_mode != "none" else params

  def conditioning(self, params, cond, frozen, drop: Optional[jax.Array] = None) -> dict:
    """The U-Net's condition inputs (labels; text context, its mask and pooled vector) for the
    batch conditions `cond`; `drop` bool[B] replaces those examples' conditions by the null
    (condition dropout). For an all-null batch use `null_conditioning`."""
    out = {}
    if self.num_classes:
      labels = cond["label"].astype(jnp.int32)
      out["labels"] = labels if drop is None else jnp.where(drop, null_label(self.num_classes), labels)
    if self.text_mode != "none":
      ids, mask = captions.caption_tokens(self.data.text, cond, drop)
      encoder_params = params["text_encoder"] if self.text_mode == "trainable" else frozen["text_encoder"]
      context, pooled = self.text_encoder.apply(precision.cast_floats(encoder_params, self.dtype), ids, mask)
      out.update(context=context, context_mask=mask, pooled=pooled)
    return out

  def null_conditioning(self, params, frozen, n: int) -> dict:
    cond = {"label": jnp.zeros((n,), jnp.int32)}
    if self.text_mode != "none":
      cond["tokens"], cond["token_mask"] = captions.null_tokens(self.data.text, n)
    return self.conditioning(params, cond, frozen, drop=jnp.ones((n,), bool))

  def denoise(self, params, x, t, conditioning: dict, **kwargs):
    """The U-Net on (x_t, t) under `conditioning` (from `conditioning`/`null_conditioning`)."""
    c = conditioning
    return self.unet.apply(precision.cast_floats(self._unet_params(params), self.dtype), x, t,
                           c.get("labels"), c.get("context"), c.get("context_mask"), c.get("pooled"),
                           c.get("low_res"), c.get("low_res_t"), **kwargs)

  def image_conditioning(self, x0: jax.Array, rng, train: bool) -> dict:
    """Extra U-Net inputs derived from the clean model-space images x0 (training and
    evaluation): none here; a super-resolution model returns its corrupted low-res input."""
    del x0, rng, train
    return {}

  def sampling_conditioning(self, params, rng, num: int, cond, frozen) -> dict:
    """The same inputs at sampling time, when there is no x0: none here; a super-resolution
    model samples its low-res input from its base stage."""
    del params, rng, num, cond, frozen
    return {}

  # ---- data <-> model space ----------------------------------------------------------------
  def to_model_space(self, images_uint8: jax.Array, frozen=None) -> jax.Array:
    """uint8 images -> what the U-Net diffuses: the image in [-1, 1] (padded), or for a latent
    model the frozen autoencoder's posterior mean times the latent scale."""
    if self.latent:
      mean, _ = self.autoencoder.encode(frozen["autoencoder"], images_uint8)
      return mean * self.latent_scale
    return jnp.pad(uint8_to_symmetric(images_uint8), self.pad, constant_values=-1.0)

  def to_images(self, x: jax.Array, frozen=None) -> jax.Array:
    """Model space -> images in [-1, 1] (cropped; a latent model decodes them)."""
    if self.latent:
      return jnp.clip(self.autoencoder.decode(frozen["autoencoder"], x / self.latent_scale), -1.0, 1.0)
    return self.crop(x)

  def crop(self, x: jax.Array) -> jax.Array:
    (_, _), (top, _), (left, _), _ = self.pad
    h, w, _ = self.data.image_shape
    return x[:, top:top + h, left:left + w, :]

  # ---- training ------------------------------------------------------------------------------
  def init(self, rng, batch, frozen=None):
    unet_rng, text_rng = jax.random.split(rng)
    x = self.to_model_space(batch["image"][:1], frozen)
    first = jax.tree.map(lambda a: a[:1], batch["cond"])
    params = {}
    if self.text_mode == "trainable":
      params["text_encoder"] = self.text_encoder.init(text_rng, first["tokens"], first["token_mask"])
    c = dict(self.conditioning(params, first, frozen), **self.image_conditioning(x, text_rng, train=False))
    unet = self.unet.init({"params": unet_rng}, x, jnp.zeros((1,), jnp.int32), c.get("labels"),
                          c.get("context"), c.get("context_mask"), c.get("pooled"),
                          c.get("low_res"), c.get("low_res_t"))
    params = dict(params, unet=unet) if self.text_mode != "none" else unet
    return params, self.optimizer.init(params)

  def condition_dropout(self, batch, rng) -> Optional[jax.Array]:
    """bool[B]: the examples trained on the null condition (prob p_uncond), or None."""
    if not (self.num_classes or self.text_mode != "none"):
      return None
    return jax.random.bernoulli(rng, self.config.model.p_uncond, batch["image"].shape[:1])

  def diffuse(self, x0, rng, t_min: int = 0):
    """t in {t_min..T-1} (uniform, or skewed to high noise by model.timestep_power < 1),
    eps ~ N(0, I) and x_t ~ q(x_t | x_0)."""
    t_rng, noise_rng = jax.random.split(rng)
    power = self.config.model.get("timestep_power", 1.0)
    if power == 1.0:
      t = jax.random.randint(t_rng, (x0.shape[0],), t_min, self.schedule.timesteps)
    else:  # t = t_min + floor((T - t_min) u^power): power < 1 draws the noisiest steps more often
      u = jax.random.uniform(t_rng, (x0.shape[0],))
      t = t_min + jnp.floor((self.schedule.timesteps - t_min) * u ** power).astype(jnp.int32)
    eps = jax.random.normal(noise_rng, x0.shape, jnp.float32)
    return t, eps, q_sample(self.schedule, x0, t, eps)

  def simple_loss(self, out, x0, eps, x_t, t):
    """Weighted simple loss [B] of the network output `out`, plus the eps-MSE [B] for reporting."""
    m = self.config.model
    a, s = self.schedule.alpha_sigma(t)
    target = training_target(m.parameterization, x0, eps, a, s)
    weight = loss_weight(m.loss_weighting, m.parameterization, self.schedule.snr(t), m.min_snr_gamma)
    _, eps_hat = prediction_to_x0_eps(m.parameterization, out, x_t, a, s)
    return (weight * jnp.mean((out - target) ** 2, axis=(1, 2, 3)),
            jnp.mean((eps_hat - eps) ** 2, axis=(1, 2, 3)))

  def train_step(self, params: PyTree, opt_state: PyTree, batch: Batch, rng, step, frozen=None):
    del step  # the loop has already folded it into rng
    drop_rng, loss_rng = jax.random.split(rng)
    x0 = self.to_model_space(batch["image"], frozen)
    drop = self.condition_dropout(batch, drop_rng)

    diffuse_rng, dropout_rng = jax.random.split(loss_rng)
    t, eps, x_t = self.diffuse(x0, diffuse_rng)
    extra = self.image_conditioning(x0, jax.random.fold_in(rng, IMAGE_COND_STREAM), train=True)

    def loss_fn(p):
      c = self.conditioning(p, batch["cond"], frozen, drop) if drop is not None else {}
      out = self.denoise(p, x_t, t, dict(c, **extra), train=True, rngs={"dropout": dropout_rng})
      loss, eps_mse = self.simple_loss(out, x0, eps, x_t, t)
      return jnp.mean(loss), jnp.mean(eps_mse)

    (loss, eps_mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {"loss": loss, "mse_eps": eps_mse, "grad_norm": optax.global_norm(grads)}

  # ---- sampling ------------------------------------------------------------------------------
  def model_fn(self, params, cond=None, guidance_scale: Optional[float] = None, frozen=None,
               num: Optional[int] = None, extra: Optional[dict] = None) -> ModelFn:
    """The denoiser (x_t, t) -> raw network output that the samplers call. For a conditional
    model, `cond` None means the null condition (for `num` examples); guidance_scale defaults
    to the config's, and != 1 evaluates the guided pair as one doubled batch. Conditions
    (text encodings) are computed here once, not at every denoising step."""
    w = self.config.model.guidance_scale if guidance_scale is None else guidance_scale
    extra = extra or {}  # inputs that guidance keeps in both halves (a low-res image)
    apply = lambda x, t, c: self.denoise(params, x, t, dict(c, **extra))
    if not (self.num_classes or self.text_mode != "none"):
      return lambda x, t: apply(x, t, {})
    if cond is None:
      null = self.null_conditioning(params, frozen, num)
      return lambda x, t: apply(x, t, null)
    c = self.conditioning(params, cond, frozen)
    if w == 1.0:
      return lambda x, t: apply(x, t, c)
    n = jax.tree.leaves(cond)[0].shape[0]
    null = self.null_conditioning(params, frozen, n)  # the doubled batch: extra goes with both halves
    return guided_model_fn(lambda x, t, c: self.denoise(params, x, t, c), dict(c, **extra),
                           dict(null, **extra), w)

  def sample_with(self, params, rng, num: int, cond=None, *, sampler: Optional[str] = None,
                  steps: Optional[int] = None, eta: Optional[float] = None,
                  guidance_scale: Optional[float] = None, frozen=None) -> jax.Array:
    """`sample` with the config's sampling options overridable. Returns [num, H, W, C] in [0, 1]."""
    m = self.config.model
    sampler = m.sampler if sampler is None else sampler
    extra = self.sampling_conditioning(params, jax.random.fold_in(rng, IMAGE_COND_STREAM), num, cond, frozen)
    fn = self.model_fn(params, cond, guidance_scale, frozen, num, extra)
    shape = (num,) + self.model_shape
    if sampler == "ddpm":
      x = ddpm_sample(fn, self.schedule, rng, shape, parameterization=m.parameterization,
                      variance=m.ddpm_variance, clip_denoised=m.clip_denoised)
    elif sampler == "ddim":
      x = ddim_sample(fn, self.schedule, rng, shape, num_steps=steps or m.sample_steps,
                      eta=m.eta if eta is None else eta, parameterization=m.parameterization,
                      clip_denoised=m.clip_denoised)
    else:
      raise ConfigError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    return symmetric_to_unit(self.to_images(x, frozen))

  def sample(self, ema_params, rng, num, cond, frozen=None):
    return self.sample_with(ema_params, rng, num, cond, frozen=frozen)

  # ---- evaluation ----------------------------------------------------------------------------
  def eval_metrics(self, ema_params: PyTree, batch: Batch, rng, frozen=None) -> Metrics:
    """eval_loss / eval_mse_eps at a random t, and eval_bpd; all network evaluations of a batch
    go through the U-Net as one stacked batch."""
    loss_rng, kl_rng, dec_rng = jax.random.split(rng, 3)
    x0 = self.to_model_space(batch["image"], frozen)
    b = x0.shape[0]
    # Score the conditional model (what guided sampling mostly uses).
    c = self.conditioning(ema_params, batch["cond"], frozen) if self.num_classes or self.text_mode != "none" else {}
    c = dict(c, **self.image_conditioning(x0, jax.random.fold_in(rng, IMAGE_COND_STREAM), train=False))
    t, eps, x_t = self.diffuse(x0, loss_rng)
    xs, ts = [x_t], [t]
    if self.config.model.eval_bpd:
      t_kl, _, x_kl = self.diffuse(x0, kl_rng, t_min=1)
      t_dec = jnp.zeros((b,), jnp.int32)  # the decoder term is at the first step
      x_dec = q_sample(self.schedule, x0, t_dec, jax.random.normal(dec_rng, x0.shape))
      xs, ts = xs + [x_kl, x_dec], ts + [t_kl, t_dec]
    reps = len(xs)
    outs = self.denoise(ema_params, jnp.concatenate(xs), jnp.concatenate(ts),
                        jax.tree.map(lambda a: jnp.concatenate([a] * reps), c))
    outs = jnp.split(outs, reps)
    loss, eps_mse = self.simple_loss(outs[0], x0, eps, x_t, t)
    metrics = {"eval_loss": loss, "eval_mse_eps": eps_mse}
    if self.config.model.eval_bpd:
      metrics["eval_bpd"] = self.vlb_bits_per_dim(x0, x_kl, t_kl, outs[1], x_dec, outs[2])
    return metrics

  def eval_images(self, ema_params: PyTree, batch: Batch, rng, frozen=None) -> dict[str, jax.Array]:
    """"denoised": one-step denoising of up to 7 test images as a 7-column grid; per row the
    image, then (x_t, x0_hat) at t = T/4, T/2 and 3T/4."""
    m, T = self.config.model, self.schedule.timesteps
    x0 = self.to_model_space(batch["image"][:7], frozen)
    n, levels = x0.shape[0], (T // 4, T // 2, 3 * T // 4)
    t = jnp.repeat(jnp.asarray(levels, jnp.int32), n)
    x0_rep = jnp.tile(x0, (len(levels), 1, 1, 1))
    x_t = q_sample(self.schedule, x0_rep, t, jax.random.normal(rng, x0_rep.shape))
    c = self.image_conditioning(x0, jax.random.fold_in(rng, IMAGE_COND_STREAM), train=False)
    if self.num_classes or self.text_mode != "none":
      first = jax.tree.map(lambda a: a[:n], batch["cond"])
      c.update(self.conditioning(ema_params, first, frozen))
    c = jax.tree.map(lambda a: jnp.concatenate([a] * len(levels)), c)
    a, s = self.schedule.alpha_sigma(t)
    x0_hat, _ = prediction_to_x0_eps(m.parameterization, self.denoise(ema_params, x_t, t, c),
                                     x_t, a, s, clip=not self.latent)
    per_level = lambda x: jnp.split(x, len(levels))
    columns = [x0] + [c for pair in zip(per_level(x_t), per_level(x0_hat)) for c in pair]
    grid = jnp.stack(columns, axis=1).reshape((-1,) + x0.shape[1:])  # row-major: image by image
    return {"denoised": symmetric_to_unit(self.to_images(grid, frozen))}

  def vlb_bits_per_dim(self, x0, x_t, t, out_t, x_1, out_1):
    """One-sample unbiased estimate of the variational bound in bits/dim, [B] (docstring):
    network output `out_t` at (x_t, t), t ~ U{1..T-1}, and `out_1` at (x_1, step 0)."""
    m, sch = self.config.model, self.schedule
    T, b, nd = sch.timesteps, x0.shape[0], x0.ndim
    log_var = (sch.posterior_log_variance_clipped if m.ddpm_variance == "small"
               else np.log(np.append(sch.posterior_variance[1], sch.betas[1:])))
    log_var = jnp.asarray(log_var, jnp.float32)

    def model_mean_logvar(out, x, tt):
      a, s = sch.alpha_sigma(tt, nd)
      x0_hat, _ = prediction_to_x0_eps(m.parameterization, out, x, a, s, clip=False)
      return q_posterior_mean_variance(sch, x0_hat, x, tt)[0], log_var[tt].reshape(b, 1, 1, 1)

    # Middle terms: (T-1) * KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)).
    q_mean, _, q_logvar = q_posterior_mean_variance(sch, x0, x_t, t)
    p_mean, p_logvar = model_mean_logvar(out_t, x_t, t)
    kl_mid = jnp.sum(_normal_kl(q_mean, q_logvar, p_mean, p_logvar), axis=(1, 2, 3)) * (T - 1)
    # Decoder: -log p(x0 | x_1), x_1 ~ q(x_1|x0) (index 0 of our 0-based timesteps).
    p_mean0, p_logvar0 = model_mean_logvar(out_1, x_1, jnp.zeros((b,), jnp.int32))
    nll0 = -jnp.sum(_discretized_gaussian_log_likelihood(x0, p_mean0, 0.5 * p_logvar0), axis=(1, 2, 3))
    # Prior: KL(q(x_T|x0) || N(0, I)).
    a_T, s_T = sch.alpha_sigma(jnp.full((b,), T - 1), nd)
    prior = jnp.sum(_normal_kl(a_T * x0, jnp.log(s_T**2), 0.0, 0.0), axis=(1, 2, 3))
    return (kl_mid + nll0 + prior) / (math.prod(self.data.image_shape) * math.log(2.0))
