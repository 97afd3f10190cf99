import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.nn.likelihoods import discretized_logistic_logprob, gaussian_kl_to_standard

LEVELS = jnp.arange(256, dtype=jnp.float32) / 127.5 - 1.0


@pytest.mark.parametrize("mean,log_scale", [(0.0, -2.0), (0.7, -4.0), (-1.0, -1.0), (0.99, -6.0), (0.3, 1.5)])
def test_discretized_logistic_is_a_distribution_over_256_levels(mean, log_scale):
  logp = discretized_logistic_logprob(LEVELS, jnp.full(256, mean), jnp.full(256, log_scale))
  assert float(jnp.exp(logp).sum()) == pytest.approx(1.0, abs=2e-4)


def test_discretized_logistic_matches_cdf_differences():
  mean, scale = 0.1, np.exp(-3.0)
  k = 140
  x = LEVELS[k]
  cdf = lambda v: 1.0 / (1.0 + np.exp(-(v - mean) / scale))
  expected = np.log(cdf(float(x) + 1 / 255) - cdf(float(x) - 1 / 255))
  got = discretized_logistic_logprob(x, jnp.float32(mean), jnp.float32(-3.0))
  assert float(got) == pytest.approx(expected, rel=1e-4)


def test_gaussian_kl_matches_monte_carlo():
  mean = jnp.array([0.5, -1.0, 0.0])
  log_var = jnp.array([-1.0, 0.5, 0.0])
  z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(jax.random.PRNGKey(0), (400_000, 3))
  log_q = -0.5 * (((z - mean) ** 2) / jnp.exp(log_var) + log_var + jnp.log(2 * jnp.pi)).sum(-1)
  log_p = -0.5 * (z**2 + jnp.log(2 * jnp.pi)).sum(-1)
  assert float(gaussian_kl_to_standard(mean, log_var)) == pytest.approx(float(jnp.mean(log_q - log_p)), abs=1e-2)
