"""Per-image sampling time: ancestral DDPM over all 1000 steps vs DDIM with 10/20/50/100 steps,
on the same parameters, plus the DDPM-1000 / DDIM-50 speed-up (about 1000/50 = 20x, since the
network evaluation dominates every step).

    python benchmarks/sampling_speed.py                       # fresh `small` U-Net
    python benchmarks/sampling_speed.py --size=smoke --num=4  # quick check
    python benchmarks/sampling_speed.py --workdir=W           # EMA weights of a trained run

Nothing pretrained is loaded: without --workdir the U-Net is freshly initialised (its speed does
not depend on its weights). With --workdir, the config is read from W/config.json and the EMA
parameters from the latest orbax checkpoint in W/checkpoints (the layout of genjax.train.loop).
Compilation is done ahead of time and excluded from the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import ddpm as ddpm_config  # noqa: E402
from genjax.families import DataSpec  # noqa: E402
from genjax.families.diffusion import Diffusion  # noqa: E402


def restore_ema_params(workdir: str):
  """EMA parameters of the latest checkpoint in `workdir`, as a plain pytree."""
  import orbax.checkpoint as ocp
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  manager = ocp.CheckpointManager(directory, item_names=("state", "data"))
  step = manager.latest_step()
  if step is None:
    raise SystemExit(f"no checkpoint in {directory}")
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  print(f"restored EMA parameters of step {step} from {directory}")
  return restored["state"]["ema_params"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="small", help="configs/ddpm.py size (without --workdir)")
  parser.add_argument("--workdir", default="", help="a training workdir to take config + EMA from")
  parser.add_argument("--num", type=int, default=8, help="images per sampling call (one batch)")
  parser.add_argument("--ddim_steps", default="10,20,50,100")
  parser.add_argument("--repeats", type=int, default=1, help="timed calls per sampler (best kept)")
  args = parser.parse_args()

  if args.workdir:
    with open(os.path.join(args.workdir, "config.json")) as f:
      config = ml_collections.ConfigDict(json.load(f))
  else:
    config = ddpm_config.get_config(f"dataset=fashion_mnist,size={args.size}")
  config.model.timesteps = 1000  # the comparison is against DDPM-1000 (smoke trains with 100)
  config.model.guidance_scale = 1.0
  family = Diffusion(config, DataSpec((28, 28, 1), 10))
  if args.workdir:
    params = restore_ema_params(args.workdir)
  else:
    batch = {"image": jnp.zeros((1, 28, 28, 1), jnp.uint8), "label": jnp.zeros((1,), jnp.int32)}
    params, _ = jax.jit(family.init)(jax.random.PRNGKey(0), batch)
  labels = jnp.arange(args.num, dtype=jnp.int32) % 10 if family.conditional else None
  n_params = sum(x.size for x in jax.tree.leaves(params))
  print(f"ddpm U-Net {n_params / 1e6:.2f}M params, {family.model_shape}, batch {args.num}, "
        f"{jax.devices()[0].platform} x{jax.device_count()}")

  runs = [("DDPM-1000", "ddpm", None)]
  runs += [(f"DDIM-{s}", "ddim", int(s)) for s in args.ddim_steps.split(",")]
  per_image = {}
  for name, sampler, steps in runs:
    fn = jax.jit(lambda p, r, sampler=sampler, steps=steps: family.sample_with(
        p, r, args.num, labels, sampler=sampler, steps=steps, eta=0.0))
    compiled = fn.lower(params, jax.random.PRNGKey(0)).compile()
    best = np.inf
    for i in range(args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(compiled(params, jax.random.PRNGKey(i)))
      best = min(best, time.perf_counter() - start)
    per_image[name] = best / args.num
    print(f"  {name:>10}: {per_image[name] * 1e3:9.1f} ms/image", flush=True)
  if "DDIM-50" in per_image:
    ratio = per_image["DDPM-1000"] / per_image["DDIM-50"]
    print(f"DDPM-1000 / DDIM-50 time ratio: {ratio:.1f}x")


if __name__ == "__main__":
  main()
