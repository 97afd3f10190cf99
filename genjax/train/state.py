"""The one pytree the loop trains, shards and checkpoints."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimisation steps completed
  params: Any  # family-defined
  opt_state: Any  # family-defined (a GAN holds two optimizer states)
  ema_params: Any  # EMA of family.ema_view(params); used for sampling and evaluation
  rng: jax.Array  # uint32[2] base key; step s uses fold_in(rng, s)
  nonfinite_step: jax.Array  # int32: first step whose metrics were NaN/inf, -1 if none

  @classmethod
  def create(cls, params, opt_state, ema_params, rng):
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
               ema_params=ema_params, rng=rng, nonfinite_step=jnp.full((), -1, jnp.int32))


def ema_decay_at(step, decay: float):
  """EMA decay with a warm-up, so short runs are not dominated by the init:
  min(decay, (1 + step) / (10 + step))."""
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema, new, decay):
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, new)
