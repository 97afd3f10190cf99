"""Layer rewrites in the FID Inception that must give the reference op's exact numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.metrics.inception import max_pool


@pytest.mark.parametrize("window,stride,pad,size", [(3, 2, 0, 17), (3, 2, 0, 18), (3, 1, 1, 8)])
def test_max_pool_equals_reduce_window(window, stride, pad, size):
  x = jnp.asarray(np.random.default_rng(size).normal(size=(2, size, size, 5)), jnp.float32)
  ref = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                              (1, stride, stride, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  np.testing.assert_array_equal(np.asarray(max_pool(x, window, stride, pad)), np.asarray(ref))
