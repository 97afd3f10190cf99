"""The cascade through the one loop: a base text-to-image model at 8x8 (configs/t2i.py smoke) and
a super-resolution model to 16x16 (configs/cascade.py smoke) that sees the noise-augmented,
upsampled low-res image; the SR stage trains, resumes bitwise and samples from a prompt through
the frozen base; noise-conditioning augmentation is checked against its definition."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cascade, t2i
from genjax import entry
from genjax.errors import ConfigError
from genjax.families import DataSpec, StageInfo, TextSpec, build_family
from genjax.families.super_resolution import area_downsample
from genjax.train import loop
from genjax.train.run import Run
from genjax.train.stages import read_run_config
from genjax.train.sweep import apply_overrides
from tests.helpers import assert_resume_is_bitwise, make_captioned_folder


def _sr_config(dataset, base, **overrides):
  config = cascade.get_config(f"dataset={dataset},size=smoke,base={base},low_res=8")
  return apply_overrides(config, {"total_steps": 4, "eval_every": 4, "checkpoint_every": 2,
                                  "eval.fid_samples": 0, **overrides})


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
  """(high-res dataset, base workdir, SR workdir)."""
  low, _ = make_captioned_folder(tmp_path_factory.mktemp("captioned8"), side=8)
  high, _ = make_captioned_folder(tmp_path_factory.mktemp("captioned16"))
  base_dir = tmp_path_factory.mktemp("base")
  base = apply_overrides(t2i.get_config(f"dataset={low},size=smoke"),
                         {"total_steps": 2, "eval_every": 0, "eval.fid_samples": 0})
  loop.train_and_evaluate(base, str(base_dir))
  sr_dir = tmp_path_factory.mktemp("sr")
  loop.train_and_evaluate(_sr_config(high, base_dir), str(sr_dir))
  return high, base_dir, sr_dir


def test_noise_conditioning_augmentation(stack):
  high, base_dir, sr_dir = stack
  family = Run.from_workdir(str(sr_dir)).family
  T = family.schedule.timesteps
  assert (family.aug_max, family.aug_sample) == (round(0.5 * (T - 1)), round(0.2 * (T - 1)))
  x0 = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (64, 16, 16, 3)), jnp.float32)
  train = family.image_conditioning(x0, jax.random.PRNGKey(0), train=True)
  levels = np.asarray(train["low_res_t"])
  assert levels.min() >= 0 and levels.max() <= family.aug_max and len(set(levels)) > 10
  evaluation = family.image_conditioning(x0, jax.random.PRNGKey(0), train=False)
  assert set(np.asarray(evaluation["low_res_t"])) == {family.aug_sample}
  assert evaluation["low_res"].shape == x0.shape
  # Off (noise_aug=False): the input is exactly the bilinear upsampling of the 2x2 block means.
  off = build_family(_sr_config(high, base_dir, **{"model.noise_aug_max": 0.0, "model.noise_aug_sample": 0.0}),
                     family.data, family.stages)
  clean = off.image_conditioning(x0, jax.random.PRNGKey(0), train=True)
  means = x0.reshape(64, 8, 2, 8, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(area_downsample(x0, 2), means, atol=1e-6)
  np.testing.assert_allclose(clean["low_res"], jax.image.resize(means, x0.shape, "bilinear"), atol=1e-6)
  assert not np.asarray(clean["low_res_t"]).any()


def test_super_resolution_resume_is_bitwise(stack, tmp_path):
  high, base_dir, sr_dir = stack
  assert_resume_is_bitwise(_sr_config(high, base_dir, eval_every=0), sr_dir, tmp_path / "resumed", 2)


def test_prompt_through_base_and_super_resolution(stack, tmp_path):
  _, _, sr_dir = stack
  assert (sr_dir / "samples" / "samples_0000004.png").exists()  # the eval grid ran the cascade
  out = tmp_path / "samples"
  # 8 images, the config's guidance: the program the eval grid compiled (a cache hit).
  entry.sample(str(sr_dir), 8, ["a green square on the right"], None, None, out_dir=str(out))
  assert (out / "grid.png").exists() and len(list(out.glob("0*.png"))) == 8


def test_mismatched_base_stages_are_one_line_errors(stack):
  high, base_dir, sr_dir = stack
  config = _sr_config(high, base_dir)
  text = TextSpec(30522, 16, (101, 102) + (0,) * 14, (True, True) + (False,) * 14)
  spec = DataSpec((16, 16, 3), 0, text)
  base_config = read_run_config(base_dir)
  build = lambda cfg, c=config: build_family(c, spec, {"base": StageInfo("base", "/b", cfg, 2, None)})
  assert build(base_config).base is not None
  vae = base_config.copy_and_resolve_references()
  vae.family = "vae"
  with pytest.raises(ConfigError, match="must be a pixel diffusion run"):
    build(vae)
  other = base_config.copy_and_resolve_references()
  other.text.max_length = 8
  with pytest.raises(ConfigError, match="both must read the same tokens"):
    build(other)
  with pytest.raises(ConfigError, match="model.low_res=5 must divide"):
    build(base_config, apply_overrides(config, {"model.low_res": 5}))
