"""The token models conditioned on captions: DALL-E's structure (the caption's tokens as the
autoregressive model's prefix) and Muse's (MaskGIT cross-attending to a text encoder), on a
smoke VQ tokenizer of a tiny captioned folder (16x16 squares, 8x8 codes).

Checked: both train, resume bitwise and sample from prompts through --mode=sample with
guidance; the KV-cached sampler equals uncached decoding with a caption prefix and guidance;
guidance scale 0 through the doubled batch samples exactly what the empty caption does alone
(the doubling changes nothing else); the padding of a caption
never changes a model's output; bad settings are one-line errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.errors import ConfigError
from genjax.train import loop
from genjax.train.run import Run
from genjax.train.sweep import apply_overrides
from tests.helpers import assert_resume_is_bitwise, jiggled, make_captioned_folder

PROMPTS = ["a red square on the left", "a blue square on the right"]


def _config(module, dataset, arg="", overrides=None):
  import importlib
  config = importlib.import_module(f"configs.{module}").get_config(f"dataset={dataset},size=smoke{arg}")
  config.eval.fid_samples = 0
  return apply_overrides(config, overrides or {})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{name: (config, workdir, final state)}: a VQ tokenizer, then the two text token models."""
  dataset, _ = make_captioned_folder(tmp_path_factory.mktemp("captioned"))
  out = {}
  workdir = tmp_path_factory.mktemp("vq")
  config = _config("vqvae", dataset, overrides={"model.codebook_size": 16, "eval_every": 0})
  out["vqvae"] = (config, workdir, loop.train_and_evaluate(config, str(workdir)))
  for name, arg in (("token_ar", ",text=prefix"), ("maskgit", ",text=cross_attention")):
    workdir = tmp_path_factory.mktemp(name)
    config = _config(name, dataset, f"{arg},tokenizer={out['vqvae'][1]}")
    out[name] = (config, workdir, loop.train_and_evaluate(config, str(workdir)))
  return out


def _setup(runs, name):
  run = Run.from_workdir(str(runs[name][1]))
  params = jiggled(runs[name][2].ema_params)  # spread-out predictions, not near-constant ones
  return run, run.family, params, run.prompt_conditions(PROMPTS)


def test_text_prefix_cached_sampling_equals_uncached_with_guidance(runs):
  run, family, params, cond = _setup(runs, "token_ar")
  assert family.length == 64  # 8x8 codes of 16x16 images
  conditioning, w = family.guided_conditioning(params, cond, 2, None, run.frozen, 3.0)
  assert w == 3.0 and conditioning["prefix"].shape == (4, 40)  # [captions, empty captions]
  sample = jax.jit(family.sample_codes, static_argnames=("guidance_scale", "cached"))
  cached = np.asarray(sample(params, jax.random.PRNGKey(1), conditioning, guidance_scale=3.0, cached=True))
  uncached = np.asarray(sample(params, jax.random.PRNGKey(1), conditioning, guidance_scale=3.0, cached=False))
  np.testing.assert_array_equal(cached, uncached)
  assert len(np.unique(cached)) > 3


@pytest.mark.parametrize("name", ["token_ar", "maskgit"])
def test_guidance_zero_samples_what_the_empty_caption_does(runs, name):
  run, family, params, cond = _setup(runs, name)
  frozen, rng = run.frozen, jax.random.PRNGKey(3)
  codes = jax.jit(family.sample_codes, static_argnames="guidance_scale")

  def sampled(cond_, w):
    conditioning, w = family.guided_conditioning(params, cond_, 2, None, frozen, w)
    return np.asarray(codes(params, rng, conditioning, guidance_scale=w))

  captioned, empty = sampled(cond, 1.0), sampled(None, 1.0)
  assert (captioned != empty).any()  # the caption matters to the (jiggled) model
  np.testing.assert_array_equal(sampled(cond, 0.0), empty)


def test_caption_padding_never_changes_the_cross_attending_model(runs):
  run, family, params, cond = _setup(runs, "maskgit")
  garbage = dict(cond, tokens=jnp.where(cond["token_mask"], cond["tokens"], 1234))
  tokens = jnp.zeros((2, family.length), jnp.int32)

  def logits(c):
    conditioning = family.conditioning(params, c, 2, None, run.frozen)
    return np.asarray(family.logits(params, jnp.concatenate([conditioning["prefix"], tokens], 1), conditioning))

  np.testing.assert_array_equal(logits(cond), logits(garbage))


@pytest.mark.parametrize("name", ["token_ar", "maskgit"])
def test_text_token_model_resumes_bitwise_and_samples_prompts(runs, name, tmp_path):
  from genjax import entry
  config, workdir, _ = runs[name]
  options = {"steps": 2} if name == "maskgit" else {}
  out = entry.sample(str(workdir), 2, prompts=PROMPTS, guidance=3.0, out_dir=str(tmp_path / "s"), **options)
  assert (out / "grid.png").exists() and len(list(out.glob("0*.png"))) == 4
  resumed = config.copy_and_resolve_references()
  resumed.eval_every = 0
  assert_resume_is_bitwise(resumed, workdir, tmp_path / "resumed", stop_step=3)


def test_text_settings_errors(runs):
  from configs import token_ar
  from genjax.families import DataSpec, build_family
  run = Run.from_workdir(str(runs["token_ar"][1]))
  config = run.config.copy_and_resolve_references()
  config.model.conditional = True
  labelled = DataSpec(run.family.data.image_shape, 3, run.family.data.text)
  with pytest.raises(ConfigError, match="exclusive"):
    build_family(config, labelled, run.family.stages)
  with pytest.raises(ConfigError, match="needs caption tokens"):
    build_family(token_ar.get_config("dataset=mnist5k,size=smoke,text=prefix"), DataSpec((28, 28, 1), 10),
                 run.family.stages)
  with pytest.raises(ConfigError, match="unknown model.text 'prefx'"):
    build_family(apply_overrides(run.config, {"model.text": "prefx"}), run.family.data, run.family.stages)
