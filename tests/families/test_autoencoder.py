"""The KL autoencoder family (genjax/families/autoencoder.py): its hand-assembled gradient
(vjps through LPIPS and the discriminator, the adaptive weight at the output convolution)
against plain autodiff of the written-out loss; the discriminator's schedule; the loop run
with LPIPS/PSNR evaluation, reconstructions as samples and the stored latent statistics;
clear errors."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import autoencoder as ae_config
from genjax.errors import ConfigError
from genjax.families import DataSpec, StageInfo, build_family
from genjax.families.autoencoder import latent_scale, psnr, quantize
from genjax.nn import lpips
from genjax.nn.images import symmetric_to_unit, uint8_to_symmetric
from genjax.train.loop import train_and_evaluate
from tests.helpers import assert_resume_is_bitwise, smoke_config

SHAPE = (64, 64, 3)  # AlexNet LPIPS (cheaper to compile than VGG16) needs >= 64 px
STAGES = {"lpips": StageInfo("lpips", "pretrained:lpips_alexnet")}


@pytest.fixture(scope="module")
def lpips_params():
  return lpips.load_params("alexnet")


def _family(**model):
  config = ae_config.get_config("size=smoke")
  config.model.update(model)
  return build_family(config, DataSpec(SHAPE, 0), STAGES)


def _batch(n=4):
  rs = np.random.RandomState(0)
  blocks = rs.randint(0, 256, (n, 8, 8, 3)).repeat(8, 1).repeat(8, 2)  # smooth-ish images
  return {"image": jnp.asarray(blocks, jnp.uint8), "cond": {"label": jnp.zeros((n,), jnp.int32)}}


def test_gradient_and_adaptive_weight_match_plain_autodiff(lpips_params):
  """The family builds its generator gradient from vjps; here the same loss is written out
  as one function and differentiated by jax.grad, and the adaptive weight is computed from
  the two full gradients at the output convolution's kernel."""
  family = _family(kl_weight=0.01, disc_weight=0.5)  # a visible KL term
  batch, frozen = _batch(), {"lpips": lpips_params}
  params, _ = family.init(jax.random.PRNGKey(0), batch, frozen)
  x = uint8_to_symmetric(batch["image"])
  rng = jax.random.PRNGKey(3)
  m, n_pixels = family.config.model, math.prod(SHAPE)

  def parts(ae):
    mean, log_var = family.encoder.apply({"params": ae["encoder"]}, x)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
    x_hat = family.decoder.apply({"params": ae["decoder"]}, z)
    rec = jnp.mean(jnp.abs(x - x_hat)) + m.lpips_weight * jnp.mean(
        lpips.distance(family.lpips_net, lpips_params, x, x_hat))
    kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var) / x.shape[0] / n_pixels
    gan = -jnp.mean(family.discriminator.apply({"params": params["discriminator"]}, x_hat))
    return rec, kl, gan

  @jax.jit
  def brute_force(ae):
    kernel = lambda g: g["decoder"]["conv_out"]["kernel"]
    g_rec = jax.grad(lambda p: parts(p)[0])(ae)
    g_gan = jax.grad(lambda p: parts(p)[2])(ae)
    weight = m.disc_weight * jnp.clip(optax.global_norm(kernel(g_rec)) /
                                      (optax.global_norm(kernel(g_gan)) + 1e-4), 0, 1e4)
    total = lambda p: parts(p)[0] + m.kl_weight * parts(p)[1] + weight * parts(p)[2]
    return weight, jax.grad(total)(ae), parts(ae)[1]

  weight, expected, kl = brute_force(family.ema_view(params))
  grads, _, metrics, _ = jax.jit(family.generator_gradients)(params, x, rng, 1.0, frozen)
  assert float(metrics["adaptive_weight"]) == pytest.approx(float(weight), rel=1e-4)
  assert 0.0 < float(weight) < 0.5 * 1e4  # inside the clip: the ratio itself is tested
  # atol: entries that are analytically ~0 (1e-8 beside 1e-3 in the same bias) are float32
  # rounding of sums taken in another order; 1e-6 of the largest entry failed on an AVX2 CPU.
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5 * float(np.abs(b).max() + 1e-12))
  assert float(metrics["kl"]) == pytest.approx(float(kl), rel=1e-5)


def test_discriminator_waits_for_disc_start(lpips_params):
  family = _family(disc_start=2)
  batch, frozen = _batch(), {"lpips": lpips_params}
  params, opt_state = family.init(jax.random.PRNGKey(0), batch, frozen)
  step = jax.jit(family.train_step)
  before, _, metrics = step(params, opt_state, batch, jax.random.PRNGKey(1), jnp.int32(1), frozen)
  assert float(metrics["adaptive_weight"]) == 0.0
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before["discriminator"]),
                                                   jax.tree.leaves(params["discriminator"])))
  after, _, metrics = step(params, opt_state, batch, jax.random.PRNGKey(1), jnp.int32(2), frozen)
  assert float(metrics["adaptive_weight"]) > 0.0
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after["discriminator"]),
                                                       jax.tree.leaves(params["discriminator"])))


def test_psnr_against_numpy():
  rs = np.random.RandomState(0)
  x, y = rs.uniform(0, 1, (2, 8, 8, 3)), rs.uniform(0, 1, (2, 8, 8, 3))
  y[1] = x[1] + 0.01
  expected = [10 * np.log10(1.0 / np.mean((a - b) ** 2)) for a, b in zip(x, y)]
  np.testing.assert_allclose(psnr(jnp.asarray(x), jnp.asarray(y)), expected, rtol=1e-5)
  assert np.allclose(np.asarray(quantize(jnp.asarray(x))) * 255, np.round(x * 255))


def test_loop_trains_evaluates_stores_latent_statistics_and_resumes_bitwise(tmp_path, data_dir):
  """The smoke run through the loop (checkpoints every 3 of 6 steps), then 3 steps, stop, resume
  to 6 == the straight run, bit for bit (tests/train/test_loop.py's resume check, done here on
  this run rather than on a second one: the autoencoder's LPIPS network makes each compile dear)."""
  workdir = tmp_path / "ae"
  config = smoke_config("autoencoder", data_dir=data_dir)
  assert (config.total_steps, config.checkpoint_every) == (6, 3)
  state = train_and_evaluate(config, str(workdir))
  assert int(state.step) == config.total_steps
  assert set(state.params) == {"encoder", "decoder", "discriminator"}
  assert set(state.ema_params) == {"encoder", "decoder"}
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  evals = [r for r in records if "eval/psnr" in r]
  assert evals and all(k in evals[-1] for k in ("eval/lpips", "eval/l1", "eval/kl"))
  assert 0 < evals[-1]["eval/psnr"] < 60 and evals[-1]["eval/lpips"] >= 0
  stats = json.loads((workdir / "statistics" / f"step_{config.total_steps}.json").read_text())
  assert stats["train_batches"] == 2 and stats["latent_sq"] > stats["latent_mean"] ** 2
  assert evals[-1]["stats/latent_sq"] == stats["latent_sq"]
  assert latent_scale(stats) == pytest.approx(1 / math.sqrt(stats["latent_sq"] - stats["latent_mean"] ** 2))
  assert (workdir / "samples" / f"reconstructions_{config.total_steps:07d}.png").exists()
  config.eval_every = 0  # the straight run was evaluated above; the parameters are compared
  assert_resume_is_bitwise(config, workdir, tmp_path / "resumed", stop_step=3)


def test_samples_are_reconstructions_of_the_condition_images(lpips_params):
  family = _family()
  batch = _batch()
  params, _ = family.init(jax.random.PRNGKey(0), batch, {"lpips": lpips_params})
  ae = family.ema_view(params)
  out = family.sample(ae, jax.random.PRNGKey(0), 4, {"image": batch["image"]})
  mean, _ = family.encode(ae, batch["image"])
  np.testing.assert_allclose(out, jnp.clip(symmetric_to_unit(family.decode(ae, mean)), 0, 1), atol=1e-6)
  assert family.sample(ae, jax.random.PRNGKey(0), 3, None).shape == (3,) + SHAPE


def test_clear_errors():
  with pytest.raises(ConfigError, match="divisible by the downsampling factor 8"):
    build_family(ae_config.get_config("size=smoke,f=8"), DataSpec((28, 28, 1), 0), STAGES)
  with pytest.raises(ConfigError, match="f must be one of"):
    ae_config.get_config("size=smoke,f=2")
  with pytest.raises(ConfigError, match="stages.lpips must be one of"):
    build_family(ae_config.get_config("size=smoke"), DataSpec(SHAPE, 0),
                 {"lpips": StageInfo("lpips", "pretrained:minilm")})
  with pytest.raises(ConfigError, match="AlexNet LPIPS needs images of at least 64x64"):
    build_family(ae_config.get_config("size=smoke"), DataSpec((28, 28, 1), 0),
                 {"lpips": StageInfo("lpips", "pretrained:lpips_alexnet")})
  with pytest.raises(ConfigError, match="latent statistics"):
    latent_scale({"latent_mean": 1.0, "latent_sq": 1.0})
