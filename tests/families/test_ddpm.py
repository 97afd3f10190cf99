"""Tests of the diffusion family: closed forms, parameterizations, samplers, guidance, one real
training step and the U-Net's conditioning paths (smoke config throughout)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ddpm as ddpm_config
from genjax.errors import ConfigError
from genjax.families import DataSpec, build_family
from genjax.families import diffusion as D
from genjax.nn.images import uint8_to_symmetric
from genjax.nn.unet import UNet, null_label

DATA = DataSpec((28, 28, 1), 10)


def smoke(**model_overrides):
  c = ddpm_config.get_config("dataset=mnist5k,size=smoke")
  for k, v in model_overrides.items():
    c.model[k] = v
  return c


def random_batch(n, seed=0):
  rs = np.random.RandomState(seed)
  return {"image": jnp.asarray(rs.randint(0, 256, (n, 28, 28, 1)), jnp.uint8),
          "cond": {"label": jnp.asarray(rs.randint(0, 10, (n,)), jnp.int32)}}


def jiggle(params, scale=0.05, seed=0):
  """Random perturbation so zero-initialised output layers no longer hide bugs (drawn with numpy:
  a jax draw per leaf would compile one RNG kernel per shape)."""
  rs = np.random.RandomState(seed)
  return jax.tree.map(lambda p: jnp.asarray(p + scale * rs.randn(*p.shape), jnp.float32), params)


# ---- schedules and closed forms ----------------------------------------------------------------

def test_linear_schedule_endpoints_and_rescaling():
  np.testing.assert_allclose(D.make_betas("linear", 1000)[[0, -1]], [1e-4, 0.02])
  np.testing.assert_allclose(D.make_betas("linear", 250)[[0, -1]], [4e-4, 0.08])


def test_cosine_schedule_properties():
  T, s = 1000, 0.008
  sch = D.Schedule.create("cosine", T)
  abar = sch.alphas_cumprod
  f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
  closed = f(np.arange(1, T + 1) / T) / f(0.0)
  unclipped = sch.betas < 0.999
  assert unclipped[:-5].all() and not unclipped[-1]  # only the very end hits the clip
  np.testing.assert_allclose(abar[unclipped], closed[unclipped], rtol=1e-9)
  assert np.all(np.diff(abar) < 0) and np.all(sch.betas > 0) and np.all(sch.betas <= 0.999)
  assert abar[0] > 0.9999 and abar[-1] < 1e-6
  assert abs(abar[T // 2 - 1] - 0.494) < 0.01  # abar(1/2) = cos^2(0.504 * pi/2) / f(0)
  # Nichol & Dhariwal's point: log-SNR falls ~linearly in the middle, unlike "linear".
  log_snr = np.log(abar / (1 - abar))
  mid = np.diff(log_snr[200:800])
  assert mid.max() / mid.min() < 1.6
  with pytest.raises(ConfigError, match="schedule"):
    D.make_betas("quadratic", 10)


def test_q_sample_moments_monte_carlo():
  sch = D.Schedule.create("linear", 1000)
  x0 = jnp.full((20000, 1, 1, 1), 0.7)
  for t in (0, 250, 999):
    tt = jnp.full((20000,), t)
    x_t = D.q_sample(sch, x0, tt, jax.random.normal(jax.random.PRNGKey(t), x0.shape))
    abar = sch.alphas_cumprod[t]
    assert abs(float(x_t.mean()) - math.sqrt(abar) * 0.7) < 0.02
    assert abs(float(x_t.var()) - (1 - abar)) < 0.03 * (1 - abar) + 1e-6


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_matches_bayes_rule(name):
  """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): precision and mean by Gaussian products."""
  sch = D.Schedule.create(name, 1000)
  rs = np.random.RandomState(0)
  t = np.array([1, 2, 10, 500, 998, 999])
  x0, x_t = rs.randn(len(t)), rs.randn(len(t))
  beta, abar_prev = sch.betas[t], np.cumprod(1 - sch.betas)[t - 1]
  precision = 1 / (1 - abar_prev) + (1 - beta) / beta
  mean = (np.sqrt(abar_prev) * x0 / (1 - abar_prev) + np.sqrt(1 - beta) * x_t / beta) / precision
  got_mean, got_var, got_logvar = D.q_posterior_mean_variance(
      sch, jnp.asarray(x0, jnp.float32), jnp.asarray(x_t, jnp.float32), jnp.asarray(t))
  np.testing.assert_allclose(got_mean.ravel(), mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got_var.ravel(), 1 / precision, rtol=1e-4)
  np.testing.assert_allclose(np.exp(got_logvar.ravel()), 1 / precision, rtol=1e-4)
  # t = 0: x_{-1} is x_0 itself.
  m0, v0, _ = D.q_posterior_mean_variance(sch, jnp.ones(1) * 0.3, jnp.ones(1) * -2.0, jnp.zeros(1, int))
  np.testing.assert_allclose([float(m0[0]), float(v0[0])], [0.3, 0.0], atol=1e-6)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_parameterization_round_trips(name):
  sch = D.Schedule.create(name, 1000)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x0 = jax.random.uniform(k1, (64, 4, 4, 1), minval=-1, maxval=1)
  eps = jax.random.normal(k2, x0.shape)
  t = jax.random.randint(k3, (64,), 0, 990)  # a_t ~ 1e-5 at t = 999 (cosine) amplifies rounding
  a, s = sch.alpha_sigma(t)
  x_t = D.q_sample(sch, x0, t, eps)
  for p in D.PARAMETERIZATIONS:
    out = D.training_target(p, x0, eps, a, s)
    x0_hat, eps_hat = D.prediction_to_x0_eps(p, out, x_t, a, s)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-3, err_msg=p)
    np.testing.assert_allclose(eps_hat, eps, atol=2e-3, err_msg=p)
  v = D.v_from_x0_eps(x0, eps, a, s)
  np.testing.assert_allclose(D.x0_from_v(x_t, v, a, s), x0, atol=1e-5)
  np.testing.assert_allclose(D.eps_from_v(x_t, v, a, s), eps, atol=1e-5)
  np.testing.assert_allclose(D.eps_from_x0(x_t, D.x0_from_eps(x_t, eps, a, s), a, s), eps, atol=2e-3)
  with pytest.raises(ConfigError):
    D.training_target("score", x0, eps, a, s)


def test_min_snr_weighting_is_min_snr_in_x0_units():
  """For any prediction error, w_p * |err in p's target|^2 == min(SNR, gamma) * |x0 error|^2."""
  sch = D.Schedule.create("cosine", 1000)
  t = jnp.array([0, 10, 200, 700, 999])
  a, s = sch.alpha_sigma(t)
  x_t = jax.random.normal(jax.random.PRNGKey(0), (5, 3, 3, 1))
  x0_true, x0_pred = jnp.zeros_like(x_t) + 0.2, jnp.zeros_like(x_t) - 0.1
  eps_of = lambda x0: D.eps_from_x0(x_t, x0, a, s)
  gamma, snr = 5.0, sch.snr(t)
  want = jnp.minimum(snr, gamma) * 0.3**2
  for p, target in (("x0", lambda x0: x0), ("eps", eps_of),
                    ("v", lambda x0: D.v_from_x0_eps(x0, eps_of(x0), a, s))):
    err = jnp.mean((target(x0_pred) - target(x0_true)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(D.loss_weight("min_snr", p, snr, gamma) * err, want, rtol=2e-3, err_msg=p)
  np.testing.assert_array_equal(D.loss_weight("none", "eps", snr, gamma), 1.0)


# ---- samplers with an exact denoiser ------------------------------------------------------------

MEAN, STD = 0.3, 0.5  # data distribution N(MEAN, STD^2) per pixel: its denoiser is closed form


def gaussian_model_fn(sch, parameterization):
  def fn(x, t):
    a, s = sch.alpha_sigma(t, x.ndim)
    eps = s * (x - a * MEAN) / (a**2 * STD**2 + s**2)  # E[eps | x_t]
    x0 = D.x0_from_eps(x, eps, a, s)
    return {"eps": eps, "x0": x0, "v": D.v_from_x0_eps(x0, eps, a, s)}[parameterization]
  return fn


@pytest.mark.parametrize("parameterization", D.PARAMETERIZATIONS)
def test_samplers_recover_gaussian_data(parameterization):
  sch = D.Schedule.create("cosine", 1000)
  fn = gaussian_model_fn(sch, parameterization)
  shape = (1024, 2, 2, 1)
  common = dict(parameterization=parameterization, clip_denoised=False)

  @jax.jit
  def samples(rng):
    return {"ddpm": D.ddpm_sample(fn, sch, rng, shape, **common),
            "ddim50": D.ddim_sample(fn, sch, rng, shape, num_steps=50, eta=0.0, **common),
            # Few stochastic steps ignore Var(x0 | x_t) and under-disperse; 250 are enough here.
            "ddim250_eta1": D.ddim_sample(fn, sch, rng, shape, num_steps=250, eta=1.0, **common)}

  for name, x in samples(jax.random.PRNGKey(1)).items():
    assert x.shape == shape and x.dtype == jnp.float32
    assert abs(float(x.mean()) - MEAN) < 0.05, name
    assert abs(float(x.std()) - STD) < 0.05, name


def test_ddim_eta1_with_all_steps_is_ddpm():
  """DDIM's sigma at eta = 1 and S = T is the posterior std, so it reproduces ancestral DDPM
  (same x_T, same per-step noise)."""
  sch = D.Schedule.create("linear", 200)
  fn = gaussian_model_fn(sch, "v")
  shape, rng = (16, 2, 2, 1), jax.random.PRNGKey(3)
  ddim = D.ddim_sample(fn, sch, rng, shape, num_steps=200, eta=1.0, parameterization="v")
  ddpm = D.ddpm_sample(fn, sch, rng, shape, parameterization="v")
  np.testing.assert_allclose(ddim, ddpm, atol=1e-4)


def test_ddim_eta0_is_deterministic_given_initial_noise():
  sch = D.Schedule.create("linear", 100)
  fn = gaussian_model_fn(sch, "eps")
  shape = (8, 3, 3, 1)
  x_T = jax.random.normal(jax.random.PRNGKey(7), shape)
  run = jax.jit(lambda rng, x_T, eta: D.ddim_sample(fn, sch, rng, shape, num_steps=10, eta=eta,
                                                    x_T=x_T), static_argnums=2)
  draw = jax.jit(lambda rng: D.ddim_sample(fn, sch, rng, shape, num_steps=10, eta=0.0))
  k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
  np.testing.assert_array_equal(run(k1, x_T, 0.0), run(k1, x_T, 0.0))
  np.testing.assert_array_equal(run(k1, x_T, 0.0), run(k2, x_T, 0.0))  # only x_T matters at eta=0
  assert not np.allclose(run(k1, x_T, 1.0), run(k2, x_T, 1.0))  # eta > 0 uses the rng every step
  # x_T drawn from the rng: same rng -> same samples, other rng -> other samples.
  np.testing.assert_array_equal(draw(k1), draw(k1))
  assert not np.allclose(draw(k1), draw(k2))


def test_variational_bound_of_exact_denoiser_is_near_data_entropy():
  """Data: 8-bit discretised N(0, 0.2^2) pixels, whose entropy H is known. The bound of the exact
  Gaussian denoiser (fixed variances) must lie above H and within about a bit of it; a wrong
  term or factor of T would be off by orders of magnitude (an untrained net scores hundreds)."""
  from scipy.stats import norm
  global MEAN, STD
  family = build_family(smoke(timesteps=100), DataSpec((4, 4, 1), 0))
  sch, n = family.schedule, 4000
  saved, (MEAN, STD) = (MEAN, STD), (0.0, 0.2)
  try:
    fn = gaussian_model_fn(sch, "eps")
    k = np.clip(np.round((np.random.RandomState(0).randn(n, 4, 4, 1) * STD + 1) * 127.5), 0, 255)
    x0 = jnp.asarray(k / 127.5 - 1, jnp.float32)
    t, _, x_t = family.diffuse(x0, jax.random.PRNGKey(0), t_min=1)
    t0 = jnp.zeros((n,), jnp.int32)
    x_1 = D.q_sample(sch, x0, t0, jax.random.normal(jax.random.PRNGKey(1), x0.shape))
    bpd = np.asarray(family.vlb_bits_per_dim(x0, x_t, t, fn(x_t, t), x_1, fn(x_1, t0)))
  finally:
    MEAN, STD = saved
  edges = (np.arange(257) - 0.5) / 127.5 - 1
  edges[0], edges[-1] = -np.inf, np.inf
  p = np.diff(norm.cdf(edges, 0.0, 0.2))
  entropy = -np.sum(p[p > 0] * np.log2(p[p > 0]))
  mean, se = bpd.mean(), bpd.std() / np.sqrt(n)
  assert entropy < mean + 3 * se and mean < entropy + 1.5, (mean, se, entropy)


def test_respaced_timesteps():
  ts = D.respaced_timesteps(1000, 50)
  assert len(ts) == 50 and ts[0] == 0 and ts[-1] == 999 and np.all(np.diff(ts) > 0)
  assert len(D.respaced_timesteps(10, 10)) == 10
  with pytest.raises(ConfigError):
    D.respaced_timesteps(100, 0)
  with pytest.raises(ConfigError):
    D.respaced_timesteps(100, 101)


def test_guidance_is_one_doubled_batch():
  calls = []

  def apply(x, t, y):
    calls.append(x.shape[0])
    return x * (1.0 + y[:, None, None, None].astype(jnp.float32)) + t[:, None, None, None]

  x, t, y = jnp.ones((3, 2, 2, 1)), jnp.array([5, 6, 7]), jnp.array([0, 1, 2])
  got = D.guided_model_fn(apply, y, jnp.full_like(y, 10), guidance_scale=2.5)(x, t)
  assert calls == [6]
  cond, uncond = apply(x, t, y), apply(x, t, jnp.full_like(y, 10))
  np.testing.assert_allclose(got, uncond + 2.5 * (cond - uncond), rtol=1e-6)


# ---- the family on the smoke U-Net ------------------------------------------------------------
# Compiling the U-Net dominates the run time, so the module initialises ONE conditional smoke
# model and derives the unconditional parameters from it (same tree minus the label table).

@pytest.fixture(scope="module")
def cond_family():
  return build_family(smoke(conditional=True, p_uncond=0.0), DATA)


@pytest.fixture(scope="module")
def trained(cond_family):
  """4 jitted steps of the conditional smoke model on labels 0..7 with p_uncond = 0:
  (params_before, params_after, metrics, batch)."""
  batch = random_batch(16)
  batch["cond"]["label"] = batch["cond"]["label"] % 8
  params, opt_state = jax.jit(cond_family.init)(jax.random.PRNGKey(0), batch)
  step = jax.jit(cond_family.train_step)
  new, metrics = params, []
  for i in range(4):  # the first step has lr = 0 (warmup); zero-init layers open up one by one
    new, opt_state, m = step(new, opt_state, batch, jax.random.PRNGKey(i), jnp.int32(i))
    metrics.append(m)
  return params, new, metrics, batch


@pytest.fixture(scope="module")
def uncond(trained):
  """Unconditional family on 26x26 data (padded to 28, a multiple of 4) with trained weights."""
  family = build_family(smoke(), DataSpec((26, 26, 1), 0))
  params = jiggle({"params": {k: v for k, v in trained[1]["params"].items() if k != "label_embed"}})
  return family, params


def test_train_step_and_gradient_flow(trained):
  before, after, metrics, batch = trained
  for m in metrics:
    assert "loss" in m and all(np.isfinite(float(v)) and v.shape == () for v in m.values())
  # A fresh U-Net predicts 0, so the eps-MSE starts at E[eps^2] = 1.
  assert abs(float(metrics[0]["loss"]) - 1.0) < 0.15
  table_before = before["params"]["label_embed"]["embedding"]
  table_after = after["params"]["label_embed"]["embedding"]
  moved = np.any(np.asarray(table_before) != np.asarray(table_after), axis=1)
  # Rows of labels in the batch train; unused labels 8, 9 and the null class 10 (p_uncond = 0) don't.
  np.testing.assert_array_equal(moved, np.isin(np.arange(11), np.asarray(batch["cond"]["label"])))
  rest = lambda p: {k: v for k, v in p["params"].items() if k != "label_embed"}
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), rest(before), rest(after))
  assert all(jax.tree.leaves(changed))  # every other parameter receives gradient


def test_label_dropout():
  family = build_family(smoke(conditional=True, p_uncond=0.3), DATA)
  batch = {"image": jnp.zeros((10000, 1, 1, 1), jnp.uint8),
           "cond": {"label": jnp.arange(10000, dtype=jnp.int32) % 10}}
  drop = family.condition_dropout(batch, jax.random.PRNGKey(0))
  labels = family.conditioning({}, batch["cond"], None, drop)["labels"]
  dropped = np.asarray(labels == null_label(10))
  np.testing.assert_array_equal(dropped, np.asarray(drop))
  assert abs(dropped.mean() - 0.3) < 0.02
  np.testing.assert_array_equal(np.asarray(labels)[~dropped], np.asarray(batch["cond"]["label"])[~dropped])


def test_padding_round_trip(uncond):
  family = uncond[0]
  assert family.model_shape == (28, 28, 1)  # 26 padded to a multiple of 4
  images = random_batch(4)["image"][:, 1:27, 1:27]
  x = family.to_model_space(images)
  assert x.shape == (4, 28, 28, 1) and float(x[:, 0].max()) == -1.0 and float(x[:, :, -1].max()) == -1.0
  np.testing.assert_array_equal(family.crop(x), uint8_to_symmetric(images))


def test_sample_shapes_and_range(uncond):
  family, params = uncond

  @jax.jit
  def both(p, r):
    return family.sample(p, r, 4, None), family.sample_with(p, r, 3, None, sampler="ddpm")

  ddim, ddpm = both(params, jax.random.PRNGKey(0))
  for x, n in ((ddim, 4), (ddpm, 3)):
    assert x.shape == (n, 26, 26, 1) and x.dtype == jnp.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.std()) > 0
  np.testing.assert_array_equal(ddim, both(params, jax.random.PRNGKey(0))[0])  # eta = 0


def test_eval_metrics(cond_family, trained):
  out = jax.jit(cond_family.eval_metrics)(trained[1], random_batch(8, seed=1), jax.random.PRNGKey(0))
  assert set(out) == {"eval_loss", "eval_mse_eps", "eval_bpd"}
  for k, v in out.items():
    assert v.shape == (8,) and np.all(np.isfinite(v)), k
  # Uniform-noise images under an almost untrained model: a bound, so > 0, and far from absurd.
  assert np.all(out["eval_bpd"] > 0) and float(out["eval_bpd"].mean()) < 20
  batch = random_batch(8, seed=1)
  grid = jax.jit(cond_family.eval_images)(trained[1], batch, jax.random.PRNGKey(0))["denoised"]
  assert grid.shape == (49, 28, 28, 1) and float(grid.min()) >= 0 and float(grid.max()) <= 1
  np.testing.assert_allclose(grid[::7], uint8_to_symmetric(batch["image"][:7]) * 0.5 + 0.5, atol=1e-6)


def test_conditional_guidance_matches_separate_calls(trained):
  family = build_family(smoke(conditional=True, guidance_scale=3.0), DATA)
  params = jiggle(trained[1])
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 28, 28, 1))
  t, y = jnp.array([3, 60]), jnp.array([1, 7])
  guided = jax.jit(lambda p, x, t, y: family.model_fn(p, {"label": y})(x, t))(params, x, t, y)
  apply = jax.jit(family.unet.apply)
  cond, uncond = apply(params, x, t, y), apply(params, x, t, jnp.full((2,), null_label(10)))
  np.testing.assert_allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-4)
  assert not np.allclose(cond, uncond)  # the label reaches the output


def test_invalid_options_raise_config_error():
  for overrides, match in (({"schedule": "sigmoid"}, "schedule"),
                           ({"parameterization": "score"}, "parameterization"),
                           ({"sampler": "euler"}, "sampler"),
                           ({"loss_weighting": "p2"}, "loss_weighting"),
                           ({"guidance_scale": 2.0}, "guidance_scale"),
                           ({"sample_steps": 1000}, "sample steps"),
                           ({"p_uncond": 1.0}, "p_uncond")):
    with pytest.raises(ConfigError, match=match):
      build_family(smoke(**overrides), DATA)
  with pytest.raises(ConfigError, match="size"):
    ddpm_config.get_config("size=huge")


def test_configs_and_sweep():
  from genjax.train import sweep
  for size in ("smoke", "small", "base", "full"):
    c = ddpm_config.get_config(f"dataset=fashion_mnist,size={size}")
    assert c.family == "ddpm" and c.batch_size > 0 and c.model.sampler in D.SAMPLERS
  overrides = ddpm_config.get_hyper(sweep)
  assert len(overrides) == 4
  for o in overrides:
    sweep.apply_overrides(smoke(), o)


# ---- the U-Net's conditioning paths ----------------------------------------------------------

def test_unet_context_cross_attention():
  net = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_heads=2,
             max_groups=4)
  x, t = jnp.ones((2, 8, 8, 3)), jnp.array([1, 2])
  ctx = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 12))
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(1), x, t, context=ctx)
  rs = np.random.RandomState(0)
  params = jax.tree.map(lambda s: jnp.asarray(0.2 * rs.randn(*s.shape), jnp.float32), shapes)
  names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  assert any("cross_q" in n for n in names) and any("cross_proj" in n for n in names)
  apply = jax.jit(lambda p, t, c: net.apply(p, x, t, context=c))
  out = apply(params, t, ctx)
  assert out.shape == x.shape
  assert not np.allclose(out, apply(params, t, ctx * 2.0))  # the context reaches the output
  assert not np.allclose(out, apply(params, jnp.array([1, 500]), ctx))  # and so does t
  # Initialised without a context, the network has no cross-attention parameters.
  plain = jax.eval_shape(net.init, jax.random.PRNGKey(1), x, t)
  assert not any("cross" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(plain))


def test_unet_position_embedding_and_cross_attention_only_blocks():
  from genjax.nn.unet import position_features
  # Every pixel of a 32x32 map gets a distinct feature vector (brute force over all pairs).
  f = np.asarray(position_features(32, 32, 24)).reshape(-1, 24)
  d2 = ((f[:, None] - f[None]) ** 2).sum(-1) + np.eye(len(f)) * 1e9
  assert d2.min() > 1.0
  net = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_heads=2,
             max_groups=4, position_embedding=True, cross_attn_resolutions=(8,))
  x, t = jnp.zeros((2, 8, 8, 3)), jnp.array([1, 2])
  ctx = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 12))
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(1), x, t, context=ctx)
  blocks = {k: set(v) for k, v in shapes["params"].items() if k.startswith("AttentionBlock")}
  # 8x8 (1 down, 2 up blocks): cross-attention only (no qkv); 4x4 (1 down, middle, 2 up):
  # self- and cross-attention.
  assert sum("qkv" not in v and "cross_q" in v for v in blocks.values()) == 3
  assert sum("qkv" in v and "cross_q" in v for v in blocks.values()) == 4
  assert "position_proj" in shapes["params"]
  rs = np.random.RandomState(0)
  params = jax.tree.map(lambda s: jnp.asarray(0.2 * rs.randn(*s.shape), jnp.float32), shapes)
  out = np.asarray(net.apply(params, x, t, context=ctx))
  # The positions reach the output: zeroing their projection changes it.
  no_pos = jax.tree.map(lambda a: a, params)
  no_pos["params"]["position_proj"] = jax.tree.map(jnp.zeros_like, params["params"]["position_proj"])
  assert not np.allclose(out, np.asarray(net.apply(no_pos, x, t, context=ctx)))
  # Without a context there are no cross-attention-only blocks at all.
  plain = jax.eval_shape(net.init, jax.random.PRNGKey(1), x, t)
  assert sum(k.startswith("AttentionBlock") for k in plain["params"]) == 4


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_training_timesteps_follow_the_power_law(power):
  """t = floor(T u^power): P(t < k) = (k / T)^(1 / power); checked against that CDF with a
  Kolmogorov-Smirnov bound on 20,000 draws (the 1% critical value is 0.0115) (uniform for power 1, density 2x for 0.5)."""
  family = build_family(smoke(timestep_power=power), DATA)
  x0 = jnp.zeros((20_000, 1, 1, 1))
  t, _, _ = jax.jit(family.diffuse)(x0, jax.random.PRNGKey(3))
  t = np.asarray(t)
  T = family.schedule.timesteps
  assert t.min() >= 0 and t.max() < T
  k = np.arange(T)
  empirical = np.searchsorted(np.sort(t), k, side="right") / len(t)  # P(t <= k)
  expected = ((k + 1) / T) ** (1.0 / power)
  assert np.max(np.abs(empirical - expected)) < 0.015


def test_unet_layout_map_ties_the_pooled_caption_to_places():
  """`layout_resolutions`: a per-position dense map of the pooled vector is added at those
  sides (its own weights for every position and channel), and reaches the output."""
  net = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), max_groups=4,
             layout_resolutions=(4,))
  x, t = jnp.zeros((2, 8, 8, 3)), jnp.array([1, 2])
  pooled = jax.random.normal(jax.random.PRNGKey(0), (2, 6))
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(1), x, t, pooled=pooled)
  assert set(shapes["params"]["layout_4"]) == {"kernel", "bias"}
  # D x (side^2 * C): added right after the downsampling to 4x4, which keeps its 8 channels.
  assert shapes["params"]["layout_4"]["kernel"].shape == (6, 4 * 4 * 8)
  assert not any(k.startswith("layout_8") for k in shapes["params"])
  rs = np.random.RandomState(0)
  params = jax.tree.map(lambda s: jnp.asarray(0.2 * rs.randn(*s.shape), jnp.float32), shapes)
  # Cut the other path of the pooled vector (into the timestep embedding): it then reaches the
  # output only through the layout map, and not at all once that map is zeroed too.
  params["params"]["pooled_proj"] = jax.tree.map(jnp.zeros_like, params["params"]["pooled_proj"])
  apply = jax.jit(lambda p, v: net.apply(p, x, t, pooled=v))
  assert not np.allclose(apply(params, pooled), apply(params, 2.0 * pooled))
  params["params"]["layout_4"] = jax.tree.map(jnp.zeros_like, params["params"]["layout_4"])
  np.testing.assert_array_equal(apply(params, pooled), apply(params, 2.0 * pooled))
  # Without a pooled vector there is no layout map.
  plain = jax.eval_shape(net.init, jax.random.PRNGKey(1), x, t)
  assert "layout_4" not in plain["params"]



def _eqns(jaxpr):
  """Every equation of a jaxpr, inside jit/scan/cond/custom-vjp bodies too."""
  for e in jaxpr.eqns:
    yield e
    for value in e.params.values():
      for sub in (value if isinstance(value, (tuple, list)) else (value,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _eqns(inner)


def test_bfloat16_compute_keeps_float32_parameters():
  """model.compute_dtype=bfloat16: every convolution of the train step (forward and backward)
  runs in bfloat16, the parameters and their update stay float32, and the loss is the float32
  loss to bfloat16 precision (not bitwise: the switch really changes the arithmetic)."""
  batch = random_batch(8)
  tiny = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(14,), norm_groups=4)
  params, opt_state = jax.jit(D.Diffusion(smoke(**tiny), DATA).init)(jax.random.PRNGKey(0), batch)
  params = jiggle(params)
  results = {}
  for name in ("float32", "bfloat16"):
    family = D.Diffusion(smoke(compute_dtype=name, **tiny), DATA)
    args = (params, opt_state, batch, jax.random.PRNGKey(1), 0)
    jaxpr = jax.make_jaxpr(family.train_step)(*args).jaxpr
    convs = {str(e.invars[0].aval.dtype) for e in _eqns(jaxpr) if e.primitive.name == "conv_general_dilated"}
    new_params, _, metrics = jax.jit(family.train_step)(*args)
    results[name] = (float(metrics["loss"]), convs, {str(x.dtype) for x in jax.tree.leaves(new_params)})
  (loss32, convs32, params32), (loss16, convs16, params16) = results["float32"], results["bfloat16"]
  assert convs32 == {"float32"} and convs16 == {"bfloat16"}, results
  assert params32 == params16 == {"float32"}, results
  assert loss16 != loss32 and abs(loss16 - loss32) <= 2e-2 * abs(loss32), results
