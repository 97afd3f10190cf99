"""How much does a text-to-image diffusion run use its captions? Denoising error under the true
caption, another scene's caption and the empty caption, at fixed noise levels.

  python experiments/t2i_caption_reliance.py --workdir=runs/t2i_small [--step=300] [--num=128]

For the first --num scenes of the validation split, each timestep t of --timesteps noises the
scenes once (the same noise for every caption) and reports the EMA denoiser's x0 mean squared
error with (a) each scene's own caption, (b) the caption of the previous scene (shuffled) and (c) the
empty caption (the guidance null), plus gain = 1 - true / null. A model that draws what its
prompts say must have a clear gain at the high-noise steps, where the layout is decided; a gain
near 0 there means guidance has nothing to amplify, whatever the sample quality. Cheap (a few
network calls per t), so it can be run on every checkpoint of a run while choosing settings.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from genjax import compilation_cache  # noqa: E402
from genjax.data import catalog  # noqa: E402
from genjax.families.diffusion import prediction_to_x0_eps, q_sample  # noqa: E402
from genjax.train.run import Run  # noqa: E402


def reliance(run: Run, ema_params, images, captions, timesteps, seed=0) -> list[dict]:
  family = run.family
  n = len(captions)
  ids, mask = run.tokenizer(captions)
  labels = np.zeros(n, np.int32)
  shifted = np.roll(np.arange(n), 1)
  conditions = {
      "true": family.conditioning(ema_params, {"tokens": ids, "token_mask": mask, "label": labels},
                                  run.frozen),
      "shuffled": family.conditioning(
          ema_params, {"tokens": ids[shifted], "token_mask": mask[shifted], "label": labels},
          run.frozen),
      "null": family.null_conditioning(ema_params, run.frozen, n),
  }
  denoise = jax.jit(lambda x_t, t, c: family.denoise(ema_params, x_t, t, c))
  x0 = family.to_model_space(jnp.asarray(images))
  rows = []
  for t_value in timesteps:
    t = jnp.full((n,), t_value, jnp.int32)
    eps = jax.random.normal(jax.random.fold_in(jax.random.key(seed), t_value), x0.shape)
    x_t = q_sample(family.schedule, x0, t, eps)
    a, s = family.schedule.alpha_sigma(t)
    row = {"t": int(t_value)}
    for name, c in conditions.items():
      x0_hat, _ = prediction_to_x0_eps(family.config.model.parameterization, denoise(x_t, t, c),
                                       x_t, a, s)
      row[name] = float(jnp.mean((x0_hat - x0) ** 2))
    row["gain"] = 1.0 - row["true"] / row["null"]
    rows.append(row)
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True)
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
  p.add_argument("--num", type=int, default=128, help="validation scenes")
  p.add_argument("--timesteps", default="100,400,700,900,980")
  args = p.parse_args()
  compilation_cache.enable()
  run = Run.from_workdir(args.workdir)
  if run.tokenizer is None:
    raise SystemExit(f"{args.workdir} is not a caption-conditioned run")
  state, step = run.restore_latest(args.step)
  reader = catalog.open_split(run.config.dataset, "validation", run.data_dir)
  rows = reader.read(np.arange(min(args.num, len(reader))))
  captions = [str(c) for c in rows["caption"]]
  result = reliance(run, state.ema_params, rows["image"], captions,
                    [int(t) for t in args.timesteps.split(",")])
  print(f"{args.workdir} step {step}: x0 MSE on {len(captions)} validation scenes")
  print(f"{'t':>5} {'true':>9} {'shuffled':>9} {'null':>9} {'gain':>7}")
  for r in result:
    print(f"{r['t']:>5} {r['true']:>9.5f} {r['shuffled']:>9.5f} {r['null']:>9.5f} {r['gain']:>7.3f}")
  out = os.path.join(args.workdir, f"caption_reliance_{step}.json")
  with open(out, "w") as f:
    json.dump({"step": step, "num": len(captions), "rows": result}, f, indent=2)
  print(f"results -> {out}")


if __name__ == "__main__":
  main()
