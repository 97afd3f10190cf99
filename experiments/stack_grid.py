"""The same prompts through several text-to-image runs (pixel, latent, cascade), one row each.

  python experiments/stack_grid.py --workdirs=runs/t2i_small,runs/ldm,runs/cascade_sr \
      --guidance=2,3,2 --out=docs/samples/stack_grid.png

Columns: the first --per_count test prompts of single-object scenes, then as many of two-object
scenes; rows: the real scene of each prompt, then each run at its --guidance (one scale for all,
or one per run). Every run draws with the same seed; images of a lower resolution are enlarged
(nearest neighbour) to the largest. The prompts go to OUT with .txt in place of .png.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.t2i_compositional import draw, prompts_of_scenes, to_uint8  # noqa: E402
from genjax import compilation_cache  # noqa: E402
from genjax.train.image_grid import make_grid, save_png  # noqa: E402
from genjax.train.run import Run  # noqa: E402


def enlarge(images: np.ndarray, side: int) -> np.ndarray:
  factor = side // images.shape[1]
  return images.repeat(factor, axis=1).repeat(factor, axis=2)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdirs", required=True, help="comma-separated run directories, one row each")
  p.add_argument("--guidance", default="2", help="one scale, or one per run")
  p.add_argument("--split", default="test")
  p.add_argument("--per_count", type=int, default=4, help="prompts of 1 and of 2 objects")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="docs/samples/stack_grid.png")
  args = p.parse_args()
  compilation_cache.enable()

  workdirs = args.workdirs.split(",")
  scales = [float(g) for g in args.guidance.split(",")]
  if len(scales) == 1:
    scales = scales * len(workdirs)
  if len(scales) != len(workdirs):
    raise SystemExit(f"--guidance has {len(scales)} scales for {len(workdirs)} runs")

  runs = [Run.from_workdir(w) for w in workdirs]
  # The prompts (and real scenes) come from the dataset of the highest-resolution run.
  top = max(runs, key=lambda r: r.info.image_shape[0])
  side = top.info.image_shape[0]
  captions, real = [], []
  for n in (1, 2):
    c, _, r, _ = prompts_of_scenes(top, args.split, args.per_count, n)
    captions += c
    real.append(r)
  rows = [np.concatenate(real)]
  for run, scale in zip(runs, scales):
    state, step = run.restore_latest()
    images = to_uint8(draw(run, state, captions, scale, len(captions), args.seed))
    rows.append(enlarge(images, side))
    print(f"{run.workdir}: step {step}, guidance {scale:g}")
  save_png(args.out, make_grid(np.concatenate(rows) / 255.0, columns=len(captions)))
  with open(os.path.splitext(args.out)[0] + ".txt", "w") as f:
    f.write("rows: real scene, then " + ", ".join(
        f"{w} (guidance {g:g})" for w, g in zip(workdirs, scales)) + "; columns: prompts\n")
    f.write("\n".join(f"{i}: {c}" for i, c in enumerate(captions)) + "\n")
  print(f"grid -> {args.out}")


if __name__ == "__main__":
  main()
