"""Normalizing flow: exact inverses, log-determinants against brute-force Jacobians,
ActNorm's data-dependent init, the LU 1x1 convolution, closed-form bits/dim, and
one real end-to-end run of the family on the smoke config."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.errors import ConfigError
from genjax.families import DataSpec, build_family
from genjax.families.flow import bits_per_dim, dequantize
from genjax.nn import flow_layers as fl
from genjax.train import sweep
from tests.helpers import smoke_config

SHAPE = (4, 4, 2)  # tiny inputs: the brute-force Jacobian is 32 x 32
LABELS = jnp.array([0, 1, 2, 1, 0])

LAYERS = {
    "squeeze": (fl.Squeeze(), False),
    "actnorm": (fl.ActNorm(), False),
    "invconv1x1": (fl.InvertibleConv1x1(seed=3), False),
    "coupling_tanh": (fl.AffineCoupling(hidden=8, scale="tanh"), False),
    "coupling_sigmoid": (fl.AffineCoupling(hidden=8, scale="sigmoid"), False),
    "flow_step": (fl.FlowStep(hidden=8, seed=1), False),
    "split": (fl.Split(), False),
    "top_prior": (fl.TopGaussianize(num_classes=3), True),
    "multiscale_flow": (fl.MultiScaleFlow(levels=2, steps_per_level=1, hidden=8, num_classes=3), True),
}


def _flat(tree):
  """One example's outputs (array, tuple or list of arrays) as a single vector."""
  return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _perturbed_variables(layer, x, extra):
  """Init on x (data-dependent), then add noise so no layer sits at its identity init."""
  variables = jax.jit(lambda x, extra: layer.init(jax.random.PRNGKey(0), x, *extra,
                                                  method=layer.forward))(x, extra)
  noise = np.random.default_rng(1)  # host-side: no per-leaf RNG programs to compile
  return jax.tree.map(lambda v: v + 0.1 * noise.normal(size=v.shape).astype(np.float32), variables)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_inverse_and_logdet_match_brute_force(name):
  layer, conditional = LAYERS[name]
  x = jax.random.normal(jax.random.PRNGKey(2), (5, *SHAPE))
  extra = (LABELS,) if conditional else ()
  variables = _perturbed_variables(layer, x, extra)

  def one_example_flat(flat_x, *label):
    out, _ = layer.apply(variables, flat_x.reshape(1, *SHAPE), *(l[None] for l in label),
                         method=layer.forward)
    return _flat(out)

  @jax.jit
  def check(x):
    y, logdet = layer.apply(variables, x, *extra, method=layer.forward)
    x_back = layer.apply(variables, y, *extra, method=layer.inverse)
    jacobians = jax.vmap(jax.jacfwd(one_example_flat))(x.reshape(x.shape[0], -1), *extra)
    return x_back, logdet, jnp.linalg.slogdet(jacobians)[1]

  x_back, logdet, brute = check(x)
  assert logdet.shape == (5,)
  np.testing.assert_allclose(x_back, x, atol=1e-4)
  np.testing.assert_allclose(logdet, brute, atol=2e-3, rtol=1e-4)


def test_actnorm_data_dependent_init_normalises_the_init_batch():
  layer = fl.ActNorm()
  scale = jnp.array([0.5, 3.0, 20.0])
  x = jnp.array([-2.0, 0.0, 7.0]) + scale * jax.random.normal(jax.random.PRNGKey(0), (16, 4, 4, 3))
  variables = layer.init(jax.random.PRNGKey(1), x, method=layer.forward)
  y, logdet = layer.apply(variables, x, method=layer.forward)
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, atol=1e-4)
  # logdet = H W sum_c log(1 / std_c)
  expected = -16 * jnp.sum(jnp.log(x.std(axis=(0, 1, 2))))
  np.testing.assert_allclose(logdet, jnp.full(16, expected), rtol=1e-4)


def test_lu_conv1x1_is_a_dense_matmul_with_the_reconstructed_weight():
  c = 6
  layer = fl.InvertibleConv1x1(seed=7)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, c))
  variables = layer.init(jax.random.PRNGKey(1), x, method=layer.forward)
  # At init W is a random rotation: orthogonal, logdet 0.
  w0 = np.asarray(layer.apply(variables, c, method=layer.weight))
  np.testing.assert_allclose(w0 @ w0.T, np.eye(c), atol=1e-5)
  np.testing.assert_allclose(layer.apply(variables, x, method=layer.forward)[1], 0.0, atol=1e-5)

  # Away from init: y = W x with W = P L (U + diag(sign exp(log_s))) built here by hand.
  rng = np.random.default_rng(0)
  params = {k: np.asarray(v, np.float64) + 0.3 * rng.normal(size=v.shape)
            for k, v in variables["params"].items()}
  perm, _, upper0 = fl.rotation_lu(c, 7)
  assert sorted(perm.argmax(axis=1)) == list(range(c))  # a real permutation matrix
  sign = np.sign(np.diag(upper0))
  lower = np.tril(params["lower"], -1) + np.eye(c)
  upper = np.triu(params["upper"], 1) + np.diag(sign * np.exp(params["log_s"]))
  w = perm @ lower @ upper
  variables = {"params": jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params)}
  np.testing.assert_allclose(layer.apply(variables, c, method=layer.weight), w, rtol=1e-5, atol=1e-6)
  y, logdet = layer.apply(variables, x, method=layer.forward)
  np.testing.assert_allclose(y, np.asarray(x) @ w.T, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(logdet, 9 * np.linalg.slogdet(w)[1], rtol=1e-5)


def test_squeeze_matches_space_to_depth_layout():
  x = jnp.arange(2 * 4 * 4 * 3.0).reshape(2, 4, 4, 3)
  y = fl.squeeze2x2(x)
  assert y.shape == (2, 2, 2, 12)
  # Channel 4c + 2 row + col of output pixel (i, j) is input pixel (2i + row, 2j + col), channel c.
  np.testing.assert_array_equal(y[1, 1, 0, 4 * 2 + 2 * 1 + 0], x[1, 3, 0, 2])
  np.testing.assert_array_equal(fl.unsqueeze2x2(y), x)


def test_latent_shapes_cover_every_dimension():
  shapes = fl.latent_shapes((28, 28, 1), levels=2)
  assert shapes == [(14, 14, 2), (7, 7, 8)]
  assert sum(math.prod(s) for s in shapes) == 28 * 28


# ---- the family ----------------------------------------------------------------------

def _batch(n=8):
  """Smooth random blobs in a narrow grey range: structured enough to learn in a few steps."""
  rng = np.random.default_rng(0)
  grid = np.linspace(-1, 1, 28)
  centres = rng.uniform(-0.5, 0.5, (n, 2, 1, 1))
  blob = np.exp(-4 * ((grid[None, :, None] - centres[:, 0]) ** 2 + (grid[None, None, :] - centres[:, 1]) ** 2))
  images = 96 + 64 * blob + rng.integers(0, 4, blob.shape)
  return {"image": jnp.asarray(images[..., None], jnp.uint8),
          "cond": {"label": jnp.asarray(rng.integers(0, 10, n), jnp.int32)}, "mask": jnp.ones(n)}


@pytest.fixture(scope="module")
def smoke():
  """(family, freshly initialised params, opt_state, batch, jitted eval_metrics) for the
  unconditional smoke config."""
  family = build_family(smoke_config("flow"), DataSpec((28, 28, 1), 10))
  batch = _batch()
  params, opt_state = family.init(jax.random.PRNGKey(0), batch)
  return family, params, opt_state, batch, jax.jit(family.eval_metrics)


def test_bits_per_dim_closed_forms(smoke):
  family, params, _, batch, eval_metrics = smoke
  d = 784
  # A uniform density on [-1/2, 1/2)^D (log p = 0) is 8 bits/dim: the dequantization term.
  assert float(bits_per_dim(jnp.zeros(()), d)) == pytest.approx(8.0)
  # With every parameter zero the flow is a pure permutation of coordinates (ActNorm,
  # coupling and priors at identity, W = P), so log p(y) = sum_i log N(y_i; 0, 1).
  zeros = jax.tree.map(jnp.zeros_like, params)
  rng = jax.random.PRNGKey(3)
  got = eval_metrics(zeros, batch, rng)["bits_per_dim"]
  y = np.asarray(dequantize(batch["image"], rng), np.float64).reshape(8, -1)
  assert y.min() >= -0.5 and y.max() < 0.5
  log_p = np.sum(-0.5 * y**2 - 0.5 * np.log(2 * np.pi), axis=1)
  expected = -(log_p - d * np.log(256)) / (d * np.log(2))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_flow_family_trains_samples_and_evaluates(smoke):
  family, params, opt_state, batch, eval_metrics = smoke
  init_params = params
  # Data-dependent init: the first ActNorm standardises the squeezed, dequantized batch.
  y = fl.squeeze2x2(dequantize(batch["image"], jax.random.split(jax.random.PRNGKey(0))[1]))
  first = params["steps_0"]["actnorm"]
  np.testing.assert_allclose(first["bias"], -y.mean(axis=(0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(first["log_scale"], -jnp.log(y.std(axis=(0, 1, 2))), rtol=1e-4)

  step = jax.jit(family.train_step)
  losses = []
  for i in range(5):
    params, opt_state, metrics = step(params, opt_state, batch, jax.random.PRNGKey(i), jnp.int32(i))
    losses.append(float(metrics["loss"]))
  assert set(metrics) >= {"loss", "bits_per_dim", "grad_norm"}
  assert np.all(np.isfinite(losses)) and 0 < losses[0] < 8  # DDI already beats uniform
  assert losses[-1] < losses[0] - 0.1  # it learns
  # Every parameter trains (the zero-init last convs pass gradients on after step 1);
  # the fixed permutations are constants, not parameters.
  unchanged = [jax.tree_util.keystr(path) for (path, new), old in
               zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(init_params))
               if np.array_equal(new, old)]
  assert not unchanged, unchanged

  ev = eval_metrics(params, batch, jax.random.PRNGKey(9))["bits_per_dim"]
  assert ev.shape == (8,) and np.all(np.isfinite(ev))
  assert abs(float(ev.mean()) - losses[-1]) < 0.5

  sample = jax.jit(family.sample, static_argnums=2)
  images = sample(params, jax.random.PRNGKey(1), 4, None)
  assert images.shape == (4, 28, 28, 1) and images.dtype == jnp.float32
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  assert not np.allclose(images, sample(params, jax.random.PRNGKey(2), 4, None))


def test_sampling_at_zero_temperature_is_the_prior_mean(smoke):
  family, params, *_ = smoke
  cold = build_family(smoke_config("flow", {"model.temperature": 0.0}), family.data)
  sample = jax.jit(cold.sample, static_argnums=2)
  # T = 0: every level's latent is its prior mean, so the sample ignores the rng.
  np.testing.assert_allclose(sample(params, jax.random.PRNGKey(1), 2, None),
                             sample(params, jax.random.PRNGKey(2), 2, None), atol=1e-6)


def test_conditional_samples_depend_on_label(smoke):
  unconditional, params, *_ = smoke
  family = build_family(smoke_config("flow", {"model.conditional": True}), unconditional.data)
  # The conditional flow only adds a per-class offset (zero-initialised) to the top prior.
  shapes = jax.eval_shape(family.init, jax.random.PRNGKey(0), _batch())[0]
  offset = shapes["top"]["class_offset"]["kernel"]
  assert offset.shape == (10, 2 * 8)
  assert jax.tree.structure(shapes["steps_0"]) == jax.tree.structure(params["steps_0"])
  params = dict(params, top=dict(params["top"], class_offset={
      "kernel": jax.random.normal(jax.random.PRNGKey(1), offset.shape)}))
  sample = jax.jit(family.sample, static_argnums=2)
  a = sample(params, jax.random.PRNGKey(1), 2, {"label": jnp.array([0, 0])})
  b = sample(params, jax.random.PRNGKey(1), 2, {"label": jnp.array([5, 5])})
  assert not np.allclose(a, b)
  assert sample(params, jax.random.PRNGKey(1), 2, None).shape == (2, 28, 28, 1)


@pytest.mark.parametrize("overrides, shape, match", [
    ({"model.coupling_scale": "exp"}, (28, 28, 1), "coupling_scale"),
    ({"model.levels": 3}, (28, 28, 1), "divisible"),
    ({"model.levels": 0}, (28, 28, 1), "levels"),
    ({"model.temperature": -1.0}, (28, 28, 1), "temperature"),
])
def test_invalid_options_are_config_errors(overrides, shape, match):
  with pytest.raises(ConfigError, match=match):
    build_family(smoke_config("flow", overrides), DataSpec(shape, 10))


def test_configs_and_sweep_resolve():
  from configs import flow as flow_config
  for size in ("smoke", "small", "full"):
    c = flow_config.get_config(f"dataset=fashion_mnist,size={size}")
    assert c.family == "flow" and c.optim.grad_clip > 0 and c.optim.warmup_steps > 0
  with pytest.raises(ConfigError):
    flow_config.get_config("size=huge")
  runs = flow_config.get_hyper(sweep)
  assert len(runs) == 6
  for overrides in runs:
    sweep.apply_overrides(flow_config.get_config("size=smoke"), overrides)
