import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.errors import ConfigError
from genjax.families import DataSpec, build_family
from tests.helpers import smoke_config


def _batch(n=8, shape=(28, 28, 1)):
  rng = np.random.default_rng(0)
  return {"image": jnp.asarray(rng.integers(0, 256, (n,) + shape), jnp.uint8),
          "cond": {"label": jnp.asarray(rng.integers(0, 10, n), jnp.int32)}, "mask": jnp.ones(n)}


@pytest.mark.parametrize("conditional", [False, True])
def test_vae_step_sample_eval(conditional):
  config = smoke_config("vae", {"model.conditional": conditional})
  family = build_family(config, DataSpec((28, 28, 1), 10))
  batch = _batch()
  params, opt_state = family.init(jax.random.PRNGKey(0), batch)
  step = jax.jit(family.train_step)
  losses = []
  for i in range(8):
    params, opt_state, metrics = step(params, opt_state, batch, jax.random.PRNGKey(i), jnp.int32(i))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]  # it learns
  samples = family.sample(params, jax.random.PRNGKey(1), 4, {"label": jnp.arange(4)} if conditional else None)
  assert samples.shape == (4, 28, 28, 1) and samples.dtype == jnp.float32
  assert float(samples.min()) >= 0 and float(samples.max()) <= 1
  ev = family.eval_metrics(params, batch, jax.random.PRNGKey(2))
  assert ev["bits_per_dim"].shape == (8,)
  # bits/dim is the negative ELBO in nats over D ln 2, and nELBO = recon + KL.
  np.testing.assert_allclose(ev["bits_per_dim"], ev["nelbo_nats"] / (784 * math.log(2)), rtol=1e-6)
  np.testing.assert_allclose(ev["nelbo_nats"], ev["recon_nats"] + ev["kl_nats"], rtol=1e-5)
  recon = family.eval_images(params, batch, jax.random.PRNGKey(3))["reconstructions"]
  assert recon.shape == (16, 28, 28, 1)


def test_conditional_samples_depend_on_label():
  config = smoke_config("vae", {"model.conditional": True})
  family = build_family(config, DataSpec((28, 28, 1), 10))
  params, _ = family.init(jax.random.PRNGKey(0), _batch())
  a = family.sample(params, jax.random.PRNGKey(1), 2, {"label": jnp.array([0, 0])})
  b = family.sample(params, jax.random.PRNGKey(1), 2, {"label": jnp.array([5, 5])})
  assert not np.allclose(a, b)


def test_bad_image_size_is_a_config_error():
  config = smoke_config("vae")
  with pytest.raises(ConfigError, match="divisible"):
    build_family(config, DataSpec((27, 27, 1), 10))


# ----------------------------------------------------------------------------- ELBO vs importance sampling


def _two_factor_images(key, n):
  """8x8 grey images on a 2-d manifold (two intensity ramps) plus pixel noise: a latent-2 VAE can
  learn them in a few dozen steps, so its KL term is several nats (not ~0 as at random init)."""
  k_ab, k_noise = jax.random.split(key)
  a, b = jax.random.normal(k_ab, (2, n, 1, 1))
  ramp = (jnp.arange(8.0) - 3.5) / 3.5
  noise = 8 * jax.random.normal(k_noise, (n, 8, 8))
  img = 128 + 60 * a * ramp[:, None] + 60 * b * ramp[None, :] + noise
  return {"image": jnp.clip(jnp.round(img), 0, 255).astype(jnp.uint8)[..., None],
          "cond": {"label": jnp.zeros(n, jnp.int32)}}


def test_elbo_matches_importance_sampled_log_likelihood():
  """The family's ELBO (eval_metrics' -nelbo_nats) against an independent importance-sampled
  estimate of log p(x), IWAE_K = logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,
  z_k ~ q(z|x), computed here from the model's own encoder/decoder. For any q:
    E[IWAE_1] = ELBO,   ELBO <= E[IWAE_K] <= E[IWAE_K'] <= log p(x)  (K <= K'),
  and log p(x) <= 0 for a discrete (8-bit) likelihood. Tolerances are measured standard errors."""
  from genjax.families.vae import VAENet
  # log p(x|z) uses the family's own discretized-logistic likelihood (tested on its own in
  # tests/nn/test_likelihoods.py); everything else below (Gaussian log-densities, importance
  # weights, log-mean-exp) is written here, not taken from genjax.
  from genjax.nn.likelihoods import discretized_logistic_logprob

  latent, shape, n_ex = 2, (8, 8, 1), 8
  config = smoke_config("vae", {"model.channels": (8,), "model.latent_dim": latent,
                                "total_steps": 80, "optim.learning_rate": 5e-3})
  family = build_family(config, DataSpec(shape, 0))
  params, opt_state = jax.jit(family.init)(jax.random.PRNGKey(0),
                                           _two_factor_images(jax.random.PRNGKey(1), 32))
  step = jax.jit(family.train_step)
  for i in range(config.total_steps):
    params, opt_state, _ = step(params, opt_state, _two_factor_images(jax.random.PRNGKey(100 + i), 32),
                                jax.random.PRNGKey(1000 + i), jnp.int32(i))
  batch = _two_factor_images(jax.random.PRNGKey(2), n_ex)

  # The family's per-example ELBO, averaged over its rng: M copies of the batch draw M independent z.
  m_elbo = 1000
  tiled = {"image": jnp.tile(batch["image"], (m_elbo, 1, 1, 1)),
           "cond": {"label": jnp.zeros(m_elbo * n_ex, jnp.int32)}}
  ev = jax.jit(family.eval_metrics)(params, tiled, jax.random.PRNGKey(3))
  elbo = -np.asarray(ev["nelbo_nats"], np.float64).reshape(m_elbo, n_ex)
  kl = np.asarray(ev["kl_nats"], np.float64).reshape(m_elbo, n_ex)[0]  # closed form: no rng
  elbo_mean, elbo_se = elbo.mean(0), elbo.std(0, ddof=1) / math.sqrt(m_elbo)

  # N i.i.d. log importance weights per example, N = G groups of 100.
  n_groups, group = 20, 100
  n = n_groups * group
  x = batch["image"].astype(jnp.float32) / 127.5 - 1.0  # the 256 levels k/127.5 - 1 in [-1, 1]

  @jax.jit
  def log_weights(key):
    mean, log_var = family.net.apply({"params": params}, x, None, method=VAENet.encode)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, (n,) + mean.shape)  # [N, B, L]
    px_mean, px_log_scale = family.net.apply({"params": params}, z.reshape(n * n_ex, latent), None,
                                             method=VAENet.decode)
    px_mean, px_log_scale = (a.reshape((n, n_ex) + shape) for a in (px_mean, px_log_scale))
    log_px_z = discretized_logistic_logprob(x, px_mean, px_log_scale).sum(axis=(2, 3, 4))
    log2pi = math.log(2 * math.pi)
    log_pz = -0.5 * jnp.sum(z**2 + log2pi, axis=-1)
    log_qz = -0.5 * jnp.sum((z - mean)**2 / jnp.exp(log_var) + log_var + log2pi, axis=-1)
    return log_px_z, log_pz - log_qz

  log_px_z, log_ratio = (np.asarray(a, np.float64) for a in log_weights(jax.random.PRNGKey(4)))
  log_w = log_px_z + log_ratio  # [N, B]

  def iwae(k):  # [N/k, B]: N/k independent IWAE_k estimates per example (log-mean-exp in float64)
    w = log_w.reshape(n // k, k, n_ex)
    top = w.max(axis=1)
    return top + np.log(np.exp(w - top[:, None]).mean(axis=1))

  def mean_se(v):
    return v.mean(0), v.std(0, ddof=1) / math.sqrt(v.shape[0])

  est = {k: mean_se(iwae(k)) for k in (1, 10, 100)}
  z_tol = 4.0  # standard errors

  def avg(m, s):  # example-averaged estimate and its standard error
    return f"{m.mean():.3f} (se {np.sqrt(np.sum(s**2)) / n_ex:.3f})"
  report = (f"nats/example, mean over {n_ex} examples: ELBO {avg(elbo_mean, elbo_se)}, "
            f"KL {kl.mean():.3f}; " + ", ".join(f"IWAE_{k} {avg(m, s)}" for k, (m, s) in est.items()))

  # (1) E[IWAE_1] = ELBO, per example and on average; its two parts separately (the KL term is
  # the family's closed form, here a Monte-Carlo mean of log q - log p).
  m1, s1 = est[1]
  se_diff = np.sqrt(s1**2 + elbo_se**2)
  assert np.all(np.abs(m1 - elbo_mean) <= z_tol * se_diff), (m1 - elbo_mean, se_diff, report)
  assert abs(m1.mean() - elbo_mean.mean()) <= z_tol * np.sqrt(np.sum(se_diff**2)) / n_ex, report
  kl_mc, kl_mc_se = mean_se(-log_ratio)
  assert np.all(np.abs(kl_mc - kl) <= z_tol * kl_mc_se), (kl_mc, kl, kl_mc_se)
  recon_mc, recon_mc_se = mean_se(-log_px_z)
  recon_fam, recon_fam_se = mean_se(np.asarray(ev["recon_nats"], np.float64).reshape(m_elbo, n_ex))
  assert np.all(np.abs(recon_mc - recon_fam) <= z_tol * np.sqrt(recon_mc_se**2 + recon_fam_se**2))
  #     ELBO <= E[IWAE_K] for larger K.
  for k in (10, 100):
    m, s = est[k]
    assert np.all(elbo_mean <= m + z_tol * np.sqrt(s**2 + elbo_se**2)), (k, elbo_mean, m, s, report)

  # (2) IWAE_K is non-decreasing in K, averaged over examples: paired differences per group of
  # 100 weights (one IWAE_100, ten IWAE_10 and a hundred IWAE_1 estimates each), i.i.d. over groups.
  per_group = {k: iwae(k).reshape(n_groups, group // k, n_ex).mean(axis=(1, 2)) for k in (1, 10, 100)}
  for lo, hi in ((1, 10), (10, 100)):
    d_mean, d_se = mean_se(per_group[hi] - per_group[lo])
    assert d_mean >= -z_tol * d_se, (lo, hi, d_mean, d_se, report)
    report += f"; IWAE_{hi} - IWAE_{lo} {d_mean:.3f} (se {d_se:.3f})"

  # (3) Discrete log-likelihoods are <= 0: every sampled log p(x|z) and family ELBO (log p(x|z) - KL,
  # KL >= 0) exactly, and the IWAE means (estimates of lower bounds on log p(x)) within z_tol se.
  assert np.all(log_px_z <= 0) and np.all(elbo <= 0) and np.all(kl >= 0)
  for k, (m, s) in est.items():
    assert np.all(m <= z_tol * s), (k, m, s)
  print(report)
