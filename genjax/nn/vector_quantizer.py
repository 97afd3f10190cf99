"""Vector quantisation with an EMA codebook of l2-normalised codes and dead-code restarts.

Encoder outputs and codes are compared after l2 normalisation (ViT-VQGAN, Yu et al., 2022):
the nearest code by cosine, so no code can win by its length alone and every code sits on
the unit sphere where the encoder's outputs are. The codebook is not trained by gradients
but, as in VQ-VAE-2 (Razavi et al., 2019), moved towards the mean of the outputs assigned to
it by exponential moving averages of

    cluster_size_k  <- d cluster_size_k + (1 - d) n_k        (n_k: uses of code k this step)
    code_sum_k      <- d code_sum_k + (1 - d) sum of the outputs assigned to k
    code_k           = normalise(code_sum_k / cluster_size_k)

A code whose cluster size falls below `restart_below` is dead: it is restarted on a random
encoder output of the current batch (cluster size reset to 1), so the codebook stays in use.
Everything is a pure function of arrays, so the state lives in the family's params and the
loop checkpoints it; the batch is the global one, so every device computes the same update.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalize(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def init_codebook(rng, num_codes: int, dim: int) -> dict:
  codes = normalize(jax.random.normal(rng, (num_codes, dim)))
  return {"codes": codes, "code_sum": codes, "cluster_size": jnp.ones((num_codes,))}


def nearest_code(z, codes):
  """Index of the nearest code (by cosine) of every vector z [..., D], codes [K, D]."""
  return jnp.argmax(normalize(z) @ normalize(codes).T, axis=-1)


def quantize(z, codebook):
  """(normalised z, its nearest code, the code's index) for encoder outputs z [..., D]."""
  z = normalize(z)
  index = nearest_code(z, codebook["codes"])
  return z, codebook["codes"][index], index


def ema_update(codebook: dict, z, index, rng, decay: float, restart_below: float) -> dict:
  """The codebook after one step: z [N, D] normalised encoder outputs, index [N] their codes."""
  num_codes = codebook["codes"].shape[0]
  one_hot = jax.nn.one_hot(index, num_codes, dtype=z.dtype)
  cluster_size = decay * codebook["cluster_size"] + (1 - decay) * one_hot.sum(0)
  code_sum = decay * codebook["code_sum"] + (1 - decay) * one_hot.T @ z
  codes = normalize(code_sum / jnp.maximum(cluster_size, 1e-8)[:, None])
  dead = cluster_size < restart_below
  restart = z[jax.random.randint(rng, (num_codes,), 0, z.shape[0])]
  return {"codes": jnp.where(dead[:, None], restart, codes),
          "code_sum": jnp.where(dead[:, None], restart, code_sum),
          "cluster_size": jnp.where(dead, 1.0, cluster_size)}


def code_usage(frequencies):
  """(share of codes used at least once, perplexity exp(H(p))) of code frequencies p [K]
  averaged over a whole split (not per batch: a batch sees only some codes)."""
  p = frequencies / jnp.maximum(frequencies.sum(), 1e-12)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return jnp.mean(frequencies > 0), jnp.exp(entropy)
