"""Tests of the GAN family: losses on known logits, R1 against finite differences,
update isolation (a D step leaves G bitwise unchanged and vice versa), both
optimizer states, d_steps, the conditional variant, sampling, collapse detection,
config errors, and one real run of the training loop (smoke config throughout)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import gan as gan_config
from genjax.errors import ConfigError
from genjax.families import DataSpec, build_family
from genjax.families import gan as G
from genjax.nn.dcgan import SubPixelUpsample, pixel_shuffle
from genjax.nn.images import uint8_to_symmetric
from genjax.train import sweep

DATA = DataSpec((28, 28, 1), 10)


def smoke(**model_overrides):
  c = gan_config.get_config("dataset=mnist5k,size=smoke")
  for k, v in model_overrides.items():
    c.model[k] = v
  return c


def random_batch(n, shape=(28, 28, 1), seed=0):
  rs = np.random.RandomState(seed)
  return {"image": jnp.asarray(rs.randint(0, 256, (n, *shape)), jnp.uint8),
          "cond": {"label": jnp.asarray(rs.randint(0, 10, (n,)), jnp.int32)}}


def leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def all_leaves_differ(a, b):
  return all(not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def base():
  """The smoke family, one batch, initial state and jitted update functions, compiled
  once and shared by the tests below (compilation dominates their run time)."""
  fam = build_family(smoke(), DATA)
  batch = random_batch(16)
  params, opt = jax.jit(fam.init)(jax.random.PRNGKey(0), batch)
  return dict(fam=fam, batch=batch, params=params, opt=opt,
              train_step=jax.jit(fam.train_step),
              d_update=jax.jit(fam.discriminator_update),
              g_update=jax.jit(fam.generator_update),
              sample=jax.jit(fam.sample, static_argnums=(2,)))


def adam_count(opt_state):
  counts = {int(v) for _, v in optax.tree_utils.tree_get_all_with_path(opt_state, "count")}
  assert len(counts) == 1, counts  # adam's and the schedule's step counters agree
  return counts.pop()


# ---- losses -----------------------------------------------------------------------------------

def test_non_saturating_losses_on_known_logits():
  zero = jnp.zeros(3)
  np.testing.assert_allclose(G.discriminator_loss(zero, zero, "non_saturating"), 2 * math.log(2), rtol=1e-6)
  np.testing.assert_allclose(G.generator_loss(zero, "non_saturating"), math.log(2), rtol=1e-6)
  real, fake = jnp.array([2.0, -1.0]), jnp.array([-1.0, 3.0])
  sig = lambda t: 1 / (1 + math.exp(-t))
  # -log sigmoid(l_r) - log(1 - sigmoid(l_f)), and -log sigmoid(l_f)
  want_d = [-math.log(sig(2.0)) - math.log(1 - sig(-1.0)), -math.log(sig(-1.0)) - math.log(1 - sig(3.0))]
  want_g = [-math.log(sig(-1.0)), -math.log(sig(3.0))]
  np.testing.assert_allclose(G.discriminator_loss(real, fake, "non_saturating"), want_d, rtol=1e-6)
  np.testing.assert_allclose(G.generator_loss(fake, "non_saturating"), want_g, rtol=1e-6)
  # softplus form stays finite where the naive log(sigmoid) would underflow
  assert np.isfinite(G.generator_loss(jnp.array([-200.0]), "non_saturating")).all()


def test_hinge_losses_on_known_logits():
  zero = jnp.zeros(2)
  np.testing.assert_allclose(G.discriminator_loss(zero, zero, "hinge"), 2.0)
  np.testing.assert_allclose(G.generator_loss(zero, "hinge"), 0.0)
  real, fake = jnp.array([0.5, 1.5, -2.0]), jnp.array([-0.3, -1.5, 2.0])
  np.testing.assert_allclose(G.discriminator_loss(real, fake, "hinge"), [0.5 + 0.7, 0.0, 3.0 + 3.0], rtol=1e-6)
  np.testing.assert_allclose(G.generator_loss(fake, "hinge"), [0.3, 1.5, -2.0], rtol=1e-6)


# ---- R1 ---------------------------------------------------------------------------------------

def finite_difference_grad_sq(d_fn, x, eps=1e-2):
  """||grad_x D(x_i)||^2 per example by central differences, one coordinate at a time
  (every perturbed copy of every example in one batched call of D)."""

  @jax.jit
  def brute(x):
    n, dim = x.shape[0], x[0].size
    basis = eps * jnp.eye(dim).reshape(1, dim, *x.shape[1:])
    plus = d_fn((x[:, None] + basis).reshape(n * dim, *x.shape[1:])).reshape(n, dim)
    minus = d_fn((x[:, None] - basis).reshape(n * dim, *x.shape[1:])).reshape(n, dim)
    return jnp.sum(jnp.square((plus - minus) / (2 * eps)), axis=1)

  return np.asarray(brute(x))


def test_r1_matches_finite_differences_on_tiny_d(base):
  """On the smoke D (~3k params): d_r1 equals the brute-force mean ||grad_x D(x_i)||^2
  over the batch, and the penalty enters the D objective (the update differs from
  the unpenalised one while the adversarial loss is the same)."""
  fam = build_family(smoke(r1_gamma=10.0), DATA)
  batch, params, opt = base["batch"], base["params"], base["opt"]
  p1, _, m = jax.jit(fam.discriminator_update)(params, opt, batch, jax.random.PRNGKey(1))
  d_fn = lambda v: fam._discriminate(params["discriminator"], v, None)
  brute = finite_difference_grad_sq(d_fn, uint8_to_symmetric(batch["image"]))
  assert (brute > 0).all()
  np.testing.assert_allclose(float(m["d_r1"]), brute.mean(), rtol=1e-2)
  p0, _, m0 = base["d_update"](params, opt, batch, jax.random.PRNGKey(1))
  assert "d_r1" not in m0
  assert float(m0["d_loss"]) == pytest.approx(float(m["d_loss"]), rel=1e-6)
  assert not leaves_equal(p0["discriminator"], p1["discriminator"])


# ---- update isolation and optimizer states --------------------------------------------------

def test_each_update_changes_only_its_own_network(base):
  params, opt, batch = base["params"], base["opt"], base["batch"]
  assert set(params) == set(opt) == {"generator", "discriminator"}

  p, o, _ = base["d_update"](params, opt, batch, jax.random.PRNGKey(1))
  assert leaves_equal(p["generator"], params["generator"])
  assert leaves_equal(o["generator"], opt["generator"])
  assert all_leaves_differ(p["discriminator"], params["discriminator"])
  assert adam_count(o["discriminator"]) == 1

  p, o, _ = base["g_update"](params, opt, batch, jax.random.PRNGKey(2))
  assert leaves_equal(p["discriminator"], params["discriminator"])
  assert leaves_equal(o["discriminator"], opt["discriminator"])
  assert all_leaves_differ(p["generator"], params["generator"])
  assert adam_count(o["generator"]) == 1


def test_train_step_updates_both_optimizers_and_reports_metrics(base):
  fam, batch, params, opt = base["fam"], base["batch"], base["params"], base["opt"]
  p, o = params, opt
  for i in range(3):
    p, o, m = base["train_step"](p, o, batch, jax.random.PRNGKey(10 + i), jnp.int32(i))
  assert adam_count(o["generator"]) == adam_count(o["discriminator"]) == 3
  assert all_leaves_differ(o["generator"], opt["generator"])
  assert all_leaves_differ(o["discriminator"], opt["discriminator"])
  want = {"loss", "d_loss", "g_loss", "d_real", "d_fake", "d_accuracy", "d_grad_norm", "g_grad_norm",
          "g_output_std", "real_output_std"}
  assert set(m) == want
  assert all(v.shape == () and np.isfinite(v) for v in m.values())
  assert float(m["loss"]) == pytest.approx(float(m["d_loss"] + m["g_loss"]), rel=1e-6)
  assert 0 <= float(m["d_accuracy"]) <= 1 and float(m["g_output_std"]) > 0
  # real_output_std is the plain batch statistic of the real images in [-1, 1]
  x = np.asarray(batch["image"], np.float64) / 127.5 - 1
  assert float(m["real_output_std"]) == pytest.approx(x.std(axis=0).mean(), rel=1e-5)
  assert fam.ema_view(p) is p["generator"]


def test_d_steps_hinge_and_r1_in_one_train_step():
  """d_steps=3 runs three D updates (lax.fori_loop) per G update; hinge + R1 stay finite."""
  fam = build_family(smoke(d_steps=3, loss="hinge", r1_gamma=1.0), DATA)
  batch = random_batch(8)
  params, opt = jax.jit(fam.init)(jax.random.PRNGKey(0), batch)
  _, o, m = jax.jit(fam.train_step)(params, opt, batch, jax.random.PRNGKey(1), jnp.int32(0))
  assert adam_count(o["discriminator"]) == 3 and adam_count(o["generator"]) == 1
  assert all(np.isfinite(v) for v in m.values()) and "d_r1" in m


# ---- sampling and the conditional variant -------------------------------------------------------

def test_sample_shape_dtype_and_range(base):
  x = base["sample"](base["fam"].ema_view(base["params"]), jax.random.PRNGKey(1), 7, None)
  assert x.shape == (7, 28, 28, 1) and x.dtype == jnp.float32
  assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(x.std()) > 0


def test_odd_image_size_and_rgb():
  """30x18 is not a multiple of 4: the generator draws 32x20 and crops the centre."""
  spec = DataSpec((30, 18, 3), 0)
  fam = build_family(smoke(), spec)
  batch = random_batch(4, spec.image_shape)
  params, _ = jax.jit(fam.init)(jax.random.PRNGKey(0), batch)
  x = jax.jit(fam.sample, static_argnums=(2,))(fam.ema_view(params), jax.random.PRNGKey(1), 3, None)
  assert x.shape == (3, 30, 18, 3) and 0 <= float(x.min()) and float(x.max()) <= 1
  logits = jax.jit(fam._discriminate)(params["discriminator"], x * 2 - 1, None)
  assert logits.shape == (3,) and np.isfinite(logits).all()


def test_conditional_variant_shapes_and_label_dependence():
  fam = build_family(smoke(conditional=True), DATA)
  assert fam.conditional
  batch = random_batch(8)
  params, opt = jax.jit(fam.init)(jax.random.PRNGKey(0), batch)
  assert params["generator"]["label_embed"]["embedding"].shape == (10, fam.config.model.embed_dim)
  d_params = params["discriminator"]
  n_features = d_params["logit"]["kernel"].shape[0]
  assert d_params["label_projection"]["embedding"].shape == (10, n_features)

  sample = jax.jit(fam.sample, static_argnums=(2,))
  g = fam.ema_view(params)
  rng = jax.random.PRNGKey(1)
  a = sample(g, rng, 5, {"label": jnp.zeros(5, jnp.int32)})
  b = sample(g, rng, 5, {"label": jnp.full(5, 3, jnp.int32)})
  assert a.shape == (5, 28, 28, 1) and 0 <= float(a.min()) and float(a.max()) <= 1
  assert not np.allclose(a, b)  # same z, different class -> different images
  assert sample(g, rng, 5, None).shape == (5, 28, 28, 1)  # labels drawn when none given

  # Projection D: logit(x, y) - logit(x, y') = (embed(y) - embed(y')) . phi(x)
  x = uint8_to_symmetric(batch["image"])
  logits = jax.jit(fam._discriminate)
  l0, l1 = logits(d_params, x, jnp.zeros(8, jnp.int32)), logits(d_params, x, jnp.ones(8, jnp.int32))
  assert l0.shape == (8,) and not np.allclose(l0, l1)

  p, o, m = jax.jit(fam.train_step)(params, opt, batch, jax.random.PRNGKey(2), jnp.int32(0))
  assert np.isfinite(float(m["loss"])) and adam_count(o["discriminator"]) == 1


def test_pixel_shuffle_layout():
  x = np.arange(2 * 3 * 5 * 8, dtype=np.float32).reshape(2, 3, 5, 8)  # C = 2 per phase
  want = np.zeros((2, 6, 10, 2), np.float32)
  for a in range(2):
    for b in range(2):
      want[:, a::2, b::2, :] = x[..., (2 * a + b) * 2:(2 * a + b + 1) * 2]
  np.testing.assert_array_equal(pixel_shuffle(jnp.asarray(x)), want)


def test_sub_pixel_upsample_is_nearest_upsampling_at_init():
  """ICNR: the four phase kernels start equal, so the output is a 2x nearest upsampling."""
  layer = SubPixelUpsample(3)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 5, 6))
  p = layer.init(jax.random.PRNGKey(1), x)
  y = np.asarray(layer.apply(p, x))
  assert y.shape == (2, 8, 10, 3)
  np.testing.assert_array_equal(y, np.repeat(np.repeat(y[:, ::2, ::2], 2, axis=1), 2, axis=2))
  bumped = jax.tree.map(lambda w: w + 0.1 * jax.random.normal(jax.random.PRNGKey(2), w.shape), p)
  y2 = np.asarray(layer.apply(bumped, x))
  assert not np.allclose(y2[:, 0::2, 0::2], y2[:, 1::2, 1::2])  # phases are free to differ


# ---- collapse detection -----------------------------------------------------------------------

def test_collapse_message_on_constant_generator(base):
  params, opt, batch = base["params"], base["opt"], base["batch"]
  _, _, healthy = base["train_step"](params, opt, batch, jax.random.PRNGKey(1), jnp.int32(0))
  assert G.collapse_message({k: float(v) for k, v in healthy.items()}) is None

  # Zero the last conv's kernel: G(z) = tanh(bias) for every z, a complete collapse.
  g = params["generator"]
  last = g["to_image"]["conv"]
  g = {**g, "to_image": {"conv": {**last, "kernel": jnp.zeros_like(last["kernel"])}}}
  _, _, m = base["g_update"]({**params, "generator": g}, opt, batch, jax.random.PRNGKey(1))
  assert float(m["g_output_std"]) == 0.0
  msg = G.collapse_message({"g_output_std": float(m["g_output_std"]), "real_output_std": 0.5})
  assert msg is not None and "collapse" in msg
  assert base["fam"].health_message({"g_output_std": 0.001, "real_output_std": 0.5}) is not None
  assert G.collapse_message({"g_output_std": 0.2, "real_output_std": 0.5}) is None
  assert G.collapse_message({"loss": 1.0}) is None


# ---- config ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value,match", [
    ("loss", "wasserstein", "model.loss"),
    ("g_norm", "batch", "model.g_norm"),
    ("d_norm", "spectral", "model.d_norm"),
    ("d_steps", 0, "d_steps"),
    ("r1_gamma", -1.0, "r1_gamma"),
])
def test_invalid_options_raise_config_error(key, value, match):
  with pytest.raises(ConfigError, match=match):
    build_family(smoke(**{key: value}), DATA)


def test_conditional_without_labels_and_missing_optim_d_raise():
  with pytest.raises(ConfigError, match="conditional"):
    build_family(smoke(conditional=True), DataSpec((28, 28, 1), 0))
  c = smoke()
  del c["optim_d"]
  with pytest.raises(ConfigError, match="optim_d"):
    build_family(c, DATA)


def test_configs_and_sweep():
  for size in ("smoke", "small", "full"):
    c = gan_config.get_config(f"size={size},loss=hinge,conditional=True")
    assert c.family == "gan" and c.model.loss == "hinge" and c.model.conditional
    assert c.optim.learning_rate == c.optim_d.learning_rate == 2e-4 and c.optim_d.b1 == 0.5
    build_family(c, DATA)
  with pytest.raises(ConfigError, match="size"):
    gan_config.get_config("size=huge")
  runs = gan_config.get_hyper(sweep)
  assert len(runs) == 6
  for overrides in runs:
    c = sweep.apply_overrides(gan_config.get_config("size=smoke"), overrides)
    assert c.optim.learning_rate == c.optim_d.learning_rate


def test_small_size_param_count():
  fam = build_family(gan_config.get_config("size=small"), DATA)
  shapes = jax.eval_shape(fam.init, jax.random.PRNGKey(0), random_batch(2))[0]
  n = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in shapes.items()}
  assert 0.5e6 < n["generator"] + n["discriminator"] < 3e6


# ---- the real training loop -----------------------------------------------------------------------

def test_training_loop_end_to_end(tmp_path, data_dir):
  """Smoke config through train_and_evaluate on real data: both optimizers step, the
  EMA is the generator's, metrics and a sample grid are written, and the checkpoint
  holds both networks and both optimizer states."""
  from genjax.train.checkpoint import Checkpointer
  from genjax.train.loop import train_and_evaluate
  from tests.helpers import smoke_config
  n = 4
  config = smoke_config("gan", {"total_steps": n, "checkpoint_every": n, "log_every": 1,
                                "eval_every": n}, data_dir=data_dir)
  state = train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == n
  assert adam_count(state.opt_state["generator"]) == adam_count(state.opt_state["discriminator"]) == n
  assert jax.tree.structure(state.ema_params) == jax.tree.structure(state.params["generator"])
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert sum("train/g_output_std" in l for l in lines) == n
  assert list((tmp_path / "samples").glob("samples_*.png"))

  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=1)
  restored, _, _ = ckpt.restore(n, state)
  ckpt.close()
  assert leaves_equal(restored.params, state.params)
  assert leaves_equal(restored.opt_state, state.opt_state)
  assert leaves_equal(restored.ema_params, state.ema_params)
