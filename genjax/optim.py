"""Optimizer construction from a config block (shared by every family).

A family with several optimizers (a GAN) calls `make_optimizer` once per
config block, e.g. `config.optim_g` and `config.optim_d`.
"""

from __future__ import annotations

import ml_collections
import optax

from genjax.errors import ConfigError


def learning_rate_schedule(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  peak = optim.learning_rate
  warmup = int(optim.get("warmup_steps", 0))
  if optim.schedule == "constant":
    decay = optax.constant_schedule(peak)
  elif optim.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1))
  else:
    raise ConfigError(f"unknown optim.schedule {optim.schedule!r}; choose constant or cosine")
  if warmup <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  lr = learning_rate_schedule(optim, total_steps)
  if optim.name == "adam":
    core = optax.adam(lr, b1=optim.b1, b2=optim.b2)
  elif optim.name == "adamw":
    core = optax.adamw(lr, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay)
  else:
    raise ConfigError(f"unknown optim.name {optim.name!r}; choose adam or adamw")
  if optim.get("grad_clip", 0.0) > 0:
    return optax.chain(optax.clip_by_global_norm(optim.grad_clip), core)
  return core
