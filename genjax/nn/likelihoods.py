"""Per-pixel likelihoods for 8-bit images.

Images are modelled in [-1, 1] where the 256 intensity levels are the points
k/127.5 - 1. A discrete likelihood over those 256 bins gives log-probabilities
in nats that convert directly to bits/dim, comparable across models.
"""

import jax
import jax.numpy as jnp

_HALF_BIN = 1.0 / 255.0  # half the spacing between adjacent levels in [-1, 1]


def discretized_logistic_logprob(x, mean, log_scale):
  """log P(x) per element under a logistic(mean, exp(log_scale)) integrated over x's bin.

  x: values on the 8-bit grid in [-1, 1]. The two edge bins absorb the tails
  (-inf, -1 + 1/255] and [1 - 1/255, inf), so the 256 probabilities sum to 1.
  Numerics follow PixelCNN++ (Salimans et al., 2017): log-sigmoid forms at the
  edges, and a density approximation where the bin mass underflows.
  """
  log_scale = jnp.maximum(log_scale, -7.0)
  centered = x - mean
  inv_scale = jnp.exp(-log_scale)
  upper = inv_scale * (centered + _HALF_BIN)
  lower = inv_scale * (centered - _HALF_BIN)
  log_cdf_upper = upper - jax.nn.softplus(upper)  # log sigmoid(upper), for the bottom edge bin
  log_one_minus_cdf_lower = -jax.nn.softplus(lower)  # log (1 - sigmoid(lower)), for the top edge bin
  bin_mass = jax.nn.sigmoid(upper) - jax.nn.sigmoid(lower)
  mid = inv_scale * centered
  # log density at the bin centre times the bin width (2/255): used only when the mass underflows.
  log_density_times_width = mid - log_scale - 2.0 * jax.nn.softplus(mid) + jnp.log(2.0 / 255.0)
  log_mass = jnp.where(bin_mass > 1e-5, jnp.log(jnp.maximum(bin_mass, 1e-12)), log_density_times_width)
  return jnp.where(x < -0.999, log_cdf_upper, jnp.where(x > 0.999, log_one_minus_cdf_lower, log_mass))


def gaussian_kl_to_standard(mean, log_var):
  """KL(N(mean, exp(log_var)) || N(0, I)), summed over the last axis, in nats."""
  return 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
