"""Per-image sampling time of a trained model, and for diffusion the DDIM paper's table: ancestral
DDPM over all steps of the schedule (1000 for a fresh U-Net) vs DDIM with 10/20/50/100 steps on the same parameters, with the
DDPM-1000 / DDIM-50 speed-up (about 1000/50 = 20x, since the network evaluation dominates every
step) and, optionally, FID/KID of each sampler.

    python benchmarks/sampling_speed.py                       # fresh `small` U-Net (no weights)
    python benchmarks/sampling_speed.py --size=smoke --num=4  # quick check
    python benchmarks/sampling_speed.py --workdir=W           # EMA weights of any trained run
    python benchmarks/sampling_speed.py --workdir=W --num=100 --fid_samples=500
    python benchmarks/sampling_speed.py --workdir=W --samplers=ddim-100,ddim-100@1 --num=100 \
        --fid_samples=1000      # skip the slow DDPM-1000; eta=1 adds DDPM-like noise

With --workdir the config is read from W/config.json and the EMA parameters from the latest
orbax checkpoint in W/checkpoints (the layout of genjax.train.loop); any family works (for a
non-diffusion family the one sampler it has is timed). Without --workdir a freshly initialised
`configs/ddpm.py` U-Net is timed: its speed does not depend on its weights.

With --fid_samples=N every sampler draws N images (in calls of --num, with the same keys for
every sampler) and is scored against the first --fid_reference images of the run's test split in
the default (pytorch-fid) mode. FID is biased upwards at small N, so compare samplers at the same
N; KID is unbiased. Compilation is done ahead of time and excluded; per-image times average all
sampling calls (Inception time excluded).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import ddpm as ddpm_config  # noqa: E402
from genjax import compiler_options, data  # noqa: E402
from genjax.families import DataSpec, build_family  # noqa: E402


def restore_ema_params(workdir: str):
  """EMA parameters of the latest checkpoint in `workdir`, as a plain pytree."""
  from genjax.train.checkpoint import Checkpointer
  checkpointer = Checkpointer(os.path.join(os.path.abspath(workdir), "checkpoints"), keep=10**6,
                              create=False)
  step = checkpointer.latest_step()
  if step is None:
    raise SystemExit(f"no checkpoint in {checkpointer.directory}")
  params = checkpointer.restore_ema_params(step)
  checkpointer.close()
  print(f"restored EMA parameters of step {step} from {checkpointer.directory}")
  return params


class SampleScorer:
  """FID and KID of sample features against the first `count` test images of the dataset."""

  def __init__(self, config, count: int):
    from genjax.metrics.features import InceptionFeatures
    self.features = InceptionFeatures()
    images, have = [], 0
    for batch in data.eval_batches(config.dataset, batch_size=250, split="test",
                                   data_dir=config.data_dir or data.default_data_dir(),
                                   process_index=0, process_count=1):
      images.append(batch["image"][batch["mask"] > 0])
      have += len(images[-1])
      if have >= count:
        break
    self.reference = self.features(np.concatenate(images)[:count], "default")
    self.reference_moments = self._moments(self.reference)  # once, not per sampler
    print(f"FID/KID reference: the first {len(self.reference)} {config.dataset} test images")

  @staticmethod
  def _moments(feats):
    from genjax.metrics.fid import RunningStats
    stats = RunningStats(feats.shape[1])
    stats.update(feats)
    return stats.mu_sigma()

  def score(self, feats) -> str:
    from genjax.metrics.fid import frechet_distance
    from genjax.metrics.kid import kernel_inception_distance
    fid = frechet_distance(*self._moments(feats), *self.reference_moments)
    subset = min(1000, len(feats) // 2, len(self.reference) // 2)
    kid, kid_std = kernel_inception_distance(feats, self.reference, subset_size=subset)
    return f"   FID {fid:7.2f}   KID {kid:.4f} +- {kid_std:.4f}   ({len(feats)} samples)"


def benchmark_config(workdir: str, size: str):
  """(config, DataSpec) of the model to time: a trained run exactly as it was trained (its
  noise schedule and guidance scale: its weights only work with those), or, without a
  workdir, a fresh configs/ddpm.py U-Net on the DDIM paper's 1000-step schedule, unguided."""
  if workdir:
    from genjax.train.stages import read_run_config
    config = read_run_config(workdir)
    info = data.dataset_info(config.dataset, config.data_dir or None)
    return config, DataSpec(tuple(info.image_shape), info.num_classes)
  config = ddpm_config.get_config(f"dataset=fashion_mnist,size={size}")
  config.model.timesteps = 1000
  config.model.guidance_scale = 1.0
  return config, DataSpec((28, 28, 1), 10)


def parse_sampler(spec: str):
  """'ddpm' -> ('ddpm', None, None): every step of the model's schedule;
  'ddim-50' -> ('ddim', 50, 0.0); 'ddim-100@1' -> eta 1."""
  spec, _, eta = spec.strip().partition("@")
  name, _, steps = spec.partition("-")
  if name == "ddpm" and not steps and not eta:
    return "ddpm", None, None
  if name == "ddim" and steps.isdigit():
    return "ddim", int(steps), float(eta or 0.0)
  raise SystemExit(f"bad sampler {spec!r}: use ddpm, ddim-STEPS or ddim-STEPS@ETA")


def samplers(family, specs: str):
  """(name, fn(params, rng, num, labels)) for every sampler in `specs` (see --samplers)."""
  if family.config.family != "ddpm":
    return [(f"{family.config.family} sample", family.sample)]
  out = []
  for spec in specs.split(","):
    kind, steps, eta = parse_sampler(spec)
    if kind == "ddpm":
      out.append((f"DDPM-{family.config.model.timesteps}",
                  lambda p, r, n, y: family.sample_with(p, r, n, y, sampler="ddpm")))
    else:
      name = f"DDIM-{steps}" + (f" eta={eta:g}" if eta else "")
      out.append((name, lambda p, r, n, y, s=steps, e=eta: family.sample_with(
          p, r, n, y, sampler="ddim", steps=s, eta=e)))
  return out


def save_grid(directory: str, sampler: str, images) -> None:
  from genjax.train.image_grid import make_grid, save_png
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, sampler.replace(" ", "_").replace("=", "") + ".png")
  save_png(path, make_grid(images))
  print(f"    grid: {path}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="small", help="configs/ddpm.py size (without --workdir)")
  parser.add_argument("--workdir", default="", help="a training workdir to take config + EMA from")
  parser.add_argument("--num", type=int, default=8, help="images per sampling call (one batch)")
  parser.add_argument("--samplers", default="ddpm,ddim-10,ddim-20,ddim-50,ddim-100",
                      help="diffusion samplers: ddpm (ancestral, all 1000 steps), ddim-STEPS, "
                           "ddim-STEPS@ETA (eta > 0 adds DDPM-like noise)")
  parser.add_argument("--repeats", type=int, default=1, help="timed calls per sampler at least")
  parser.add_argument("--fid_samples", type=int, default=0,
                      help="FID/KID of this many samples per sampler (needs --workdir)")
  parser.add_argument("--grid_dir", default="",
                      help="save the first 64 images of each sampler as <grid_dir>/<sampler>.png")
  parser.add_argument("--fid_reference", type=int, default=1000,
                      help="the first N test images are the FID/KID reference")
  args = parser.parse_args()
  if args.fid_samples and not args.workdir:
    parser.error("--fid_samples scores a trained model: pass --workdir too")

  config, spec = benchmark_config(args.workdir, args.size)
  family = build_family(config, spec)
  if args.workdir:
    params = restore_ema_params(args.workdir)
  else:
    batch = {"image": jnp.zeros((1, *spec.image_shape), jnp.uint8),
             "cond": {"label": jnp.zeros((1,), jnp.int32)}}
    params = family.ema_view(jax.jit(family.init)(jax.random.PRNGKey(0), batch)[0])
  labels = ({"label": jnp.arange(args.num, dtype=jnp.int32) % spec.num_classes}
            if family.conditional else None)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  print(f"{config.family}: {n_params / 1e6:.2f}M sampling params, images {spec.image_shape}, "
        f"batch {args.num}, {jax.devices()[0].platform} x{jax.device_count()}")

  scorer = SampleScorer(config, args.fid_reference) if args.fid_samples else None
  calls = max(args.repeats, -(-args.fid_samples // args.num))
  per_image = {}
  for name, sample in samplers(family, args.samplers):
    fn = jax.jit(lambda p, r, sample=sample: sample(p, r, args.num, labels),
                 compiler_options=compiler_options.for_devices(jax.devices()))  # as the loop
    compiled = fn.lower(params, jax.random.PRNGKey(0)).compile()
    seconds, feats, first = 0.0, [], []
    for i in range(calls):
      start = time.perf_counter()
      images = jax.block_until_ready(compiled(params, jax.random.PRNGKey(i)))
      seconds += time.perf_counter() - start
      if args.grid_dir and sum(map(len, first)) < 64:
        first.append(np.asarray(images))
      if scorer:
        feats.append(scorer.features(np.asarray(images), "default"))
    per_image[name] = seconds / (calls * args.num)
    line = f"  {name:>12}: {per_image[name] * 1e3:9.2f} ms/image"
    if scorer:
      line += scorer.score(np.concatenate(feats)[:args.fid_samples])
    print(line, flush=True)
    if args.grid_dir:
      save_grid(args.grid_dir, name, np.concatenate(first)[:64])
  ddpm = next((name for name in per_image if name.startswith("DDPM-")), None)
  if "DDIM-50" in per_image and ddpm:
    print(f"{ddpm} / DDIM-50 time ratio: {per_image[ddpm] / per_image['DDIM-50']:.1f}x")


if __name__ == "__main__":
  main()
