"""Latent vs pixel diffusion at the same output resolution, side by side in one run.

  python benchmarks/latent_vs_pixel.py                      # 64x64x3, configs/ldm.py small U-Net
  python benchmarks/latent_vs_pixel.py --batch=16 --sample_steps=25 --rounds=5

Both models use the SAME U-Net widths (configs/ldm.py's `size` preset) and batch; the pixel one
diffuses 64x64x3 images, the latent one 16x16x3 latents of an f=4 autoencoder (configs/autoencoder.py
`small`, random weights: speed does not depend on them) and decodes its samples. Timed: the
loop's train step (EMA and metric accumulation included) and DDIM sampling per image, in
interleaved rounds (medians), plus XLA's FLOP count of each compiled program. The latent train
step includes encoding the batch; its sampling includes decoding.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from configs import autoencoder as ae_configs, ldm as ldm_configs
from genjax.families import DataSpec, StageInfo, build_family
from genjax.train import sharding, steps
from genjax.train.state import TrainState
from benchmarks.train_step import median_seconds

FLAGS = flags.FLAGS
flags.DEFINE_string("size", "small", "configs/ldm.py size preset (U-Net widths).")
flags.DEFINE_integer("side", 64, "Output resolution (square RGB images).")
flags.DEFINE_integer("batch", 16, "Training batch.")
flags.DEFINE_integer("sample_batch", 8, "Images per sampling call.")
flags.DEFINE_integer("sample_steps", 25, "DDIM steps.")
flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds (medians reported).")


def _models():
  """(name, family, frozen) for the pixel and the latent model."""
  config = ldm_configs.get_config(f"size={FLAGS.size},autoencoder=unused")
  config.text.tokenizer = ""
  config.model.text_encoder = "none"
  config.model.sample_steps = FLAGS.sample_steps
  # No attention or layout map: at equal widths they would sit at other resolutions in the two.
  config.model.attn_resolutions, config.model.layout_resolutions = (), ()
  spec = DataSpec((FLAGS.side, FLAGS.side, 3), 0)
  ae_config = ae_configs.get_config("size=small,f=4")
  ae_family = build_family(ae_config, spec, {})
  rng = jax.random.PRNGKey(0)
  probe = {"image": jnp.zeros((1,) + spec.image_shape, jnp.uint8), "cond": {"label": jnp.zeros((1,), jnp.int32)}}
  ae_params, _ = ae_family.init(rng, probe, {})
  stats = {"latent_mean": 0.0, "latent_sq": 1.0}
  latent = build_family(config, spec, {"autoencoder": StageInfo("autoencoder", "random", ae_config, 0, stats)})
  pixel_config = config.copy_and_resolve_references()
  pixel_config.model.latent = False
  pixel_config.stages = ml_collections.ConfigDict()
  pixel = build_family(pixel_config, spec, {})
  return [("pixel", pixel, {}), ("latent", latent, {"autoencoder": ae_family.ema_view(ae_params)})]


def main(_):
  mesh = sharding.make_mesh()
  rs = np.random.RandomState(0)
  batch = {"image": jnp.asarray(rs.randint(0, 256, (FLAGS.batch, FLAGS.side, FLAGS.side, 3)), jnp.uint8),
           "cond": {"label": jnp.zeros((FLAGS.batch,), jnp.int32)}}
  rows, runners = {}, {}
  for name, family, frozen in _models():
    params, opt_state = jax.jit(family.init)(jax.random.PRNGKey(0), batch, frozen)
    sample_params = jax.tree.map(jnp.copy, params)  # the train step donates (deletes) `params`
    state = TrainState.create(params, opt_state, jax.tree.map(jnp.copy, params), jax.random.PRNGKey(1))
    state = jax.device_put(state, sharding.replicated(mesh))  # committed, as the step returns it
    collection = steps.averages(steps.train_metric_names(family, state, batch, frozen))
    train = steps.make_train_step(family, 0.999, collection, mesh)
    sample = steps.make_sample_fn(family, mesh)
    n = FLAGS.sample_batch
    flops = {
        "train": train.lower(state, steps.empty_accumulator(collection, mesh), batch, frozen).compile(),
        "sample": sample.lower(sample_params, jax.random.PRNGKey(2), None, n, frozen).compile(),
    }
    rows[name] = {"params": sum(x.size for x in jax.tree.leaves(sample_params)),
                  "train_gflop": flops["train"].cost_analysis()["flops"] / 1e9,
                  "sample_gflop_per_image": flops["sample"].cost_analysis()["flops"] / 1e9 / n}
    holder = {"state": state, "acc": steps.empty_accumulator(collection, mesh)}

    def train_once(holder=holder, train=train, frozen=frozen, collection=collection):
      holder["state"], holder["acc"] = train(holder["state"], steps.empty_accumulator(collection, mesh),
                                             batch, frozen)
      return holder["state"].step

    def sample_once(sample=sample, params=sample_params, frozen=frozen, n=n):
      return sample(params, jax.random.PRNGKey(3), None, n, frozen)

    train_once(), train_once(), sample_once()  # compile (and settle the state's placement)
    runners[name] = (train_once, sample_once)
  times = {name: {"train": [], "sample": []} for name in runners}
  for _ in range(FLAGS.rounds):  # interleaved: a slow spell of the machine hits both alike
    for name, (train_once, sample_once) in runners.items():
      times[name]["train"].append(median_seconds(train_once, 1))
      times[name]["sample"].append(median_seconds(sample_once, 1))
  print(f"{FLAGS.side}x{FLAGS.side}x3 output, U-Net '{FLAGS.size}' of configs/ldm.py, train batch "
        f"{FLAGS.batch}, DDIM-{FLAGS.sample_steps} at batch {FLAGS.sample_batch}, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), medians of {FLAGS.rounds} interleaved rounds")
  print(f"{'model':8} {'U-Net params':>12} {'train ms/step':>14} {'train GFLOP':>12} "
        f"{'sample ms/img':>14} {'sample GFLOP/img':>17}")
  for name, row in rows.items():
    row["train_ms"] = 1e3 * float(np.median(times[name]["train"]))
    row["sample_ms"] = 1e3 * float(np.median(times[name]["sample"])) / FLAGS.sample_batch
    print(f"{name:8} {row['params']:>12,} {row['train_ms']:>14.1f} {row['train_gflop']:>12.2f} "
          f"{row['sample_ms']:>14.1f} {row['sample_gflop_per_image']:>17.2f}")
  p, l = rows["pixel"], rows["latent"]
  print(f"latent speed-up: train step {p['train_ms'] / l['train_ms']:.2f}x, sampling "
        f"{p['sample_ms'] / l['sample_ms']:.2f}x; FLOPs {p['train_gflop'] / l['train_gflop']:.2f}x / "
        f"{p['sample_gflop_per_image'] / l['sample_gflop_per_image']:.2f}x")


if __name__ == "__main__":
  app.run(main)
