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
