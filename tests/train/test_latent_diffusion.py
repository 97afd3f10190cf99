"""The latent text-to-image stack through the one loop: a smoke autoencoder (stage 1) trained on
a captioned folder, a text-conditioned latent diffusion model (configs/ldm.py) on its frozen
latents (stage 2): trains, resumes bitwise, samples from a prompt through the decoder (also on
8 simulated devices), and refuses mismatched stages with one-line errors."""

import json
import math

import jax
import ml_collections
import numpy as np
import pytest

from configs import autoencoder as ae_configs, ldm as ldm_configs
from genjax import entry
from genjax.errors import ConfigError
from genjax.families import DataSpec, StageInfo, TextSpec, build_family
from genjax.train import loop
from genjax.train.run import Run
from genjax.train.stages import read_run_config
from genjax.train.sweep import apply_overrides
from tests.helpers import assert_resume_is_bitwise, launch, make_captioned_folder


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
  """(dataset, autoencoder workdir, latent model workdir), both trained 4 steps."""
  dataset, _ = make_captioned_folder(tmp_path_factory.mktemp("captioned"))
  ae_dir = tmp_path_factory.mktemp("autoencoder")
  # Trained on L1 + KL alone: the LPIPS network and discriminator in its step (tested in
  # tests/families/test_autoencoder.py) made its train step compile in 14.5 s, and stage 2
  # only reads the encoder, decoder and latent statistics.
  ae = apply_overrides(ae_configs.get_config(f"dataset={dataset},size=smoke"),
                       {"total_steps": 4, "eval_every": 4, "checkpoint_every": 2,
                        "model.lpips_weight": 0.0, "model.disc_weight": 0.0})
  loop.train_and_evaluate(ae, str(ae_dir))
  ldm_dir = tmp_path_factory.mktemp("ldm")
  loop.train_and_evaluate(_ldm_config(dataset, ae_dir), str(ldm_dir))
  return dataset, ae_dir, ldm_dir


def _ldm_config(dataset, ae_dir, **overrides):
  config = ldm_configs.get_config(f"dataset={dataset},size=smoke,autoencoder={ae_dir}")
  return apply_overrides(config, {"total_steps": 4, "eval_every": 4, "checkpoint_every": 2,
                                  "eval.fid_samples": 0, **overrides})


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_latent_model_diffuses_scaled_latents_and_decodes_its_samples(stack):
  _, ae_dir, ldm_dir = stack
  run = Run.from_workdir(str(ldm_dir))
  family = run.family
  stats = json.loads((ae_dir / "statistics" / "step_4.json").read_text())
  assert family.latent and family.model_shape == (4, 4, 3)  # 16x16 images, f=4, 3 channels
  assert family.latent_scale == pytest.approx(1 / math.sqrt(stats["latent_sq"] - stats["latent_mean"] ** 2))
  assert run.stage_records["autoencoder"]["step"] == 4
  batch = next(run.eval_batches())
  z = family.to_model_space(batch["image"], run.frozen)
  assert z.shape == (batch["image"].shape[0], 4, 4, 3)
  assert 0.2 < float(np.std(np.asarray(z))) < 5  # unit-variance latents, up to the smoke AE
  images = family.to_images(z, run.frozen)
  assert images.shape == batch["image"].shape and float(np.abs(images).max()) <= 1.0
  records = [json.loads(l) for l in open(ldm_dir / "metrics.jsonl")]
  assert any("eval/eval_loss" in r for r in records) and (ldm_dir / "samples" / "samples_0000004.png").exists()


def test_latent_model_resume_is_bitwise(stack, tmp_path):
  dataset, ae_dir, ldm_dir = stack
  assert_resume_is_bitwise(_ldm_config(dataset, ae_dir, eval_every=0), ldm_dir, tmp_path / "resumed", 2)


def test_prompt_to_image_through_the_stack(stack, tmp_path):
  _, _, ldm_dir = stack
  out = tmp_path / "samples"
  # 8 images, the config's guidance: the program the eval grid compiled (a cache hit).
  entry.sample(str(ldm_dir), 8, ["a red square on the left"], None, None, out_dir=str(out))
  assert (out / "grid.png").exists() and len(list(out.glob("0*.png"))) == 8
  # The full stack on 8 simulated devices, from the workdir alone.
  proc = launch([f"--workdir={ldm_dir}", "--mode=sample", "--num_samples=8", "--guidance=2",
                 "--prompt=a blue square on the right"], data_dir=str(tmp_path), check=True,
                env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert "1 prompt(s) x 8 samples" in proc.stdout, proc.stdout
  assert len(list((ldm_dir / "samples_4").glob("0*.png"))) == 8


def test_mismatched_stages_are_one_line_errors(stack):
  dataset, ae_dir, ldm_dir = stack
  config = _ldm_config(dataset, ae_dir)
  text = TextSpec(30522, 16, (101, 102) + (0,) * 14, (True, True) + (False,) * 14)
  spec = DataSpec((16, 16, 3), 0, text)
  ae_config = read_run_config(ae_dir)
  stats = json.loads((ae_dir / "statistics" / "step_4.json").read_text())

  def build(info):
    return build_family(config, spec, {"autoencoder": info})

  assert build(StageInfo("autoencoder", str(ae_dir), ae_config, 4, stats)).latent_scale > 0
  with pytest.raises(ConfigError, match=r"is a ddpm run, not an autoencoder"):
    build(StageInfo("autoencoder", str(ldm_dir), read_run_config(ldm_dir), 4, {}))
  other = ae_config.copy_and_resolve_references()
  other.dataset = "mnist5k"
  with pytest.raises(ConfigError, match=r"was trained on mnist5k, this model on captioned_folder"):
    build(StageInfo("autoencoder", "/elsewhere", other, 4, stats))
  with pytest.raises(ConfigError, match=r"no latent statistics for step 2 .*statistics/step_2.json"):
    Run.create(_ldm_config(dataset, f"{ae_dir}@2"), str(ldm_dir) + "_other")
  coarse = ae_config.copy_and_resolve_references()
  coarse.model.channels = [8, 16, 16, 32, 32]  # f = 16: 1x1 latents, which the U-Net cannot halve
  with pytest.raises(ConfigError, match=r"latents are 1x1, not divisible"):
    build(StageInfo("autoencoder", "/f16", coarse, 4, stats))
  no_stage = _ldm_config(dataset, ae_dir)
  no_stage.stages = ml_collections.ConfigDict()
  with pytest.raises(ConfigError, match=r"needs the frozen stage\(s\) autoencoder"):
    Run.create(no_stage, str(ldm_dir) + "_none")
