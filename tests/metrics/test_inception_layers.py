"""Layer rewrites in the FID Inception that must give the reference op's exact numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.metrics.inception import avg_pool_valid, max_pool


@pytest.mark.parametrize("window,stride,pad,size", [(3, 2, 0, 17), (3, 2, 0, 18), (3, 1, 1, 8)])
def test_max_pool_equals_reduce_window(window, stride, pad, size):
  x = jnp.asarray(np.random.default_rng(size).normal(size=(2, size, size, 5)), jnp.float32)
  ref = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                              (1, stride, stride, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  np.testing.assert_array_equal(np.asarray(max_pool(x, window, stride, pad)), np.asarray(ref))


@pytest.mark.parametrize("size", [8, 17, 35])
def test_avg_pool_valid_equals_reduce_window_mean_over_valid_pixels(size):
  x = jnp.asarray(np.random.default_rng(size).normal(size=(2, size, size, 5)), jnp.float32)
  pads = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
  count = jax.lax.reduce_window(jnp.ones_like(x), 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1),
                                pads)
  np.testing.assert_allclose(np.asarray(avg_pool_valid(x)), np.asarray(total / count),
                             rtol=1e-6, atol=1e-6)
  assert float(avg_pool_valid(jnp.ones_like(x)).min()) == 1.0  # corners divide by 4, edges by 6
