"""Mixed precision: float32 parameters (what the optimizer updates and the checkpoint keeps),
computed with in a lower precision (`model.compute_dtype = "bfloat16"`, the accelerators'
fast path). The cast sits inside the loss, so gradients flow back to the float32 copy."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.errors import ConfigError

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  if name not in COMPUTE_DTYPES:
    raise ConfigError(f"unknown model.compute_dtype {name!r}; choose one of: {', '.join(COMPUTE_DTYPES)}")
  return COMPUTE_DTYPES[name]


def cast_floats(tree, dtype):
  """Every floating-point leaf of `tree` as `dtype` (integers, e.g. token ids, untouched)."""
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
