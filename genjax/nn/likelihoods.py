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


def num_mixture_outputs(channels: int, num_mixtures: int) -> int:
  """Network outputs per pixel for `discretized_logistic_mixture_logprob`: per component a
  logit, C means, C log-scales and C(C-1)/2 channel coefficients (10 per component for RGB)."""
  return num_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)


def _split_mixture(outputs, channels: int):
  """[..., K * (1 + 2C + C(C-1)/2)] -> logits [..., K], means, log_scales [..., K, C],
  coefficients [..., K, C(C-1)/2] in (-1, 1)."""
  per = 1 + 2 * channels + channels * (channels - 1) // 2
  k = outputs.shape[-1] // per
  logits, rest = outputs[..., :k], outputs[..., k:].reshape(*outputs.shape[:-1], k, per - 1)
  means, log_scales = rest[..., :channels], rest[..., channels:2 * channels]
  return logits, means, log_scales, jnp.tanh(rest[..., 2 * channels:])


def _channel_means(means, coefficients, x):
  """PixelCNN++'s within-pixel autoregression: channel c's mean is shifted by a linear
  function of the pixel's channels before it, mean_c + sum_{c' < c} a_{c c'} x_{c'}.
  means [..., K, C], coefficients [..., K, C(C-1)/2] (row-major over c > c'), x [..., C]."""
  channels = means.shape[-1]
  shifted, index = [means[..., 0]], 0
  for c in range(1, channels):
    shift = sum(coefficients[..., index + j] * x[..., None, j] for j in range(c))
    shifted.append(means[..., c] + shift)
    index += c
  return jnp.stack(shifted, axis=-1)


def discretized_logistic_mixture_logprob(x, outputs):
  """log P(x) per pixel (nats) under PixelCNN++'s mixture of discretized logistics.

  x: [..., C] on the 8-bit grid in [-1, 1]; outputs: [..., num_mixture_outputs(C, K)].
  Each component k is a product over channels of discretized logistics whose means depend on
  the earlier channels of the same pixel (`_channel_means`), so for every earlier context the
  256^C probabilities of a pixel sum to 1. Returns [...]."""
  outputs = jnp.broadcast_to(outputs, x.shape[:-1] + outputs.shape[-1:])
  logits, means, log_scales, coefficients = _split_mixture(outputs, x.shape[-1])
  means = _channel_means(means, coefficients, x)
  per_channel = discretized_logistic_logprob(x[..., None, :], means, log_scales)  # [..., K, C]
  return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + per_channel.sum(-1), axis=-1)


def sample_discretized_logistic_mixture(rng, outputs, channels: int):
  """Draws x [..., C] on the 8-bit grid in [-1, 1] from the mixture `outputs` describes:
  one component per pixel (Gumbel-max over the logits), then channel by channel, each mean
  shifted by the already drawn channels, rounded to the nearest of the 256 levels."""
  logits, means, log_scales, coefficients = _split_mixture(outputs, channels)
  component_rng, *channel_rngs = jax.random.split(rng, channels + 1)
  component = jnp.argmax(logits + jax.random.gumbel(component_rng, logits.shape), axis=-1)
  pick = lambda a: jnp.take_along_axis(a, component[..., None, None], axis=-2)[..., 0, :]
  means, log_scales, coefficients = pick(means), pick(log_scales), pick(coefficients)
  x = jnp.zeros(means.shape, means.dtype)
  for c in range(channels):
    # Channel c's mean needs only channels < c of x, which are drawn already.
    mean = _channel_means(means[..., None, :], coefficients[..., None, :], x)[..., 0, c]
    u = jax.random.uniform(channel_rngs[c], mean.shape, minval=1e-5, maxval=1 - 1e-5)
    value = mean + jnp.exp(jnp.maximum(log_scales[..., c], -7.0)) * (jnp.log(u) - jnp.log1p(-u))
    x = x.at[..., c].set(jnp.round((jnp.clip(value, -1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0)
  return x
