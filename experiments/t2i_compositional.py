"""Does a text-to-image run draw what its prompts say? Compositional accuracy, FID and a grid.

  python experiments/t2i_compositional.py --workdir=runs/t2i_small --split=validation \
      --guidance=1,2,3,5 --num=500                      # choose the guidance scale here ...
  python experiments/t2i_compositional.py --workdir=runs/t2i_small --split=test \
      --guidance=1,3 --num=1000 --fid                   # ... and report it on the test prompts
  python experiments/t2i_compositional.py --workdir=runs/t2i_small --split=heldout_combos --guidance=3
  python experiments/t2i_compositional.py --workdir=runs/ldm --split=test --objects=1,2 --fid
  python experiments/t2i_compositional.py --workdir=runs/ldm --split=test --clip=runs/clip_scenes

The prompts are the captions of the first --num scenes of --split with --objects objects (of the
run's own captioned dataset, `scenes32` or `scenes`; any kind of run: pixel, latent or cascade);
every image is drawn under its prompt with the same
noise for every guidance scale, read back by the scene reader of that resolution
(genjax.metrics.scene_reader) and scored on every attribute the prompt states. With --fid, FID
and KID of the samples against the real scenes of those prompts, beside the real-vs-real floor:
the same real scenes against the next --num such scenes of the split. With --clip (a CLIP
checkpoint or genjax clip run), CLIP score and CLIP R-precision (R = 100) of the same images under
their prompts (genjax.metrics.clip_score), and of the real scenes as the ceiling. Results go to
WORKDIR/compositional_<split>.json (single-object prompts) or compositional_<split>_<n>objects.json;
a grid of prompts -> images to --grid (first 8 prompts of the first --objects count).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from genjax import compilation_cache  # noqa: E402
from genjax.data import catalog, scenes  # noqa: E402
from genjax.metrics import scene_reader  # noqa: E402
from genjax.train.image_grid import make_grid, save_png  # noqa: E402
from genjax.train.run import PROMPT_STREAM, Run  # noqa: E402

SCORES = ("overall", "count") + scene_reader.ATTRIBUTES


def prompts_of_scenes(run: Run, split: str, count: int, num_objects: int = 1):
  """(captions, stated attributes, real images) of the first `count` scenes of `num_objects`
  objects, plus the next `count` such real images (the real-vs-real floor's second set, or None)."""
  reader = catalog.open_split(run.config.dataset, split, run.data_dir)
  rows = reader.read(np.arange(len(reader)))
  picked = np.flatnonzero(rows["num_objects"] == num_objects)
  first, second = picked[:count], picked[count:2 * count]
  if len(first) < count:
    raise SystemExit(f"{split} has only {len(first)} scenes of {num_objects} object(s); "
                     f"ask for --num={len(first)} or fewer")
  captions = [str(rows["caption"][i]) for i in first]
  attributes = [scenes.stated_attributes(scenes.scene(rows, int(i))) for i in first]
  floor = rows["image"][second] if len(second) == count else None
  return captions, attributes, rows["image"][first], floor


def draw(run: Run, state, captions, guidance: float, batch: int, seed: int, call_seconds=None,
         **options) -> np.ndarray:
  """Images in [0, 1] of `captions` at guidance scale `guidance` (`options`: other sampler
  settings, e.g. a token model's steps); each sampling call's seconds are appended to
  `call_seconds` when given (the first includes compilation)."""
  out = []
  base = jax.random.fold_in(jax.random.fold_in(run.base_rng, PROMPT_STREAM), seed)
  for start in range(0, len(captions), batch):
    chunk = captions[start:start + batch]
    chunk = chunk + [chunk[-1]] * (batch - len(chunk))  # one compiled shape
    began = time.perf_counter()
    images = np.asarray(run.sample(state, batch, run.prompt_conditions(chunk),
                                   jax.random.fold_in(base, start), guidance_scale=guidance, **options))
    if call_seconds is not None:
      call_seconds.append(time.perf_counter() - began)
    out.append(images[:min(batch, len(captions) - start)])
  return np.concatenate(out)


def to_uint8(images) -> np.ndarray:
  return np.round(np.clip(np.asarray(images), 0, 1) * 255).astype(np.uint8)


def fid_kid(features, a, b) -> dict:
  from genjax.metrics.fid import RunningStats, fid_from_stats
  from genjax.metrics.kid import kernel_inception_distance
  fa, fb = features(a), features(b)
  stats = [RunningStats(fa.shape[1]).update(f) for f in (fa, fb)]
  kid, kid_std = kernel_inception_distance(fa, fb, subset_size=min(1000, len(fa) // 2, len(fb) // 2))
  return {"fid": fid_from_stats(*stats), "kid": float(kid), "kid_std": float(kid_std), "samples": len(fa)}


def clip_metrics(scorer, images, captions) -> dict:
  from genjax.metrics.clip_score import score_pairs
  scores = score_pairs(scorer, list(images), captions)
  return {k: scores[k] for k in ("clip_score", "clip_r_precision")}


def evaluate(run, state, step, reader, features, args, num_objects, scorer=None):
  """Scores every guidance scale on one set of prompts; returns (results, grid rows)."""
  captions, attributes, real, floor = prompts_of_scenes(run, args.split, args.num, num_objects)
  results = {"workdir": args.workdir, "step": step, "split": args.split, "num_objects": num_objects,
             "num_prompts": len(captions), "sample_steps": run.config.model.get("sample_steps"),
             "eta": run.config.model.get("eta"), "scales": {}}
  reads_real = scene_reader.compositional_accuracy(reader, real, attributes)
  results["real_images"] = {k: reads_real[k] for k in SCORES}
  print(f"{args.split}: {len(captions)} prompts of {num_objects} object(s), step {step}; the reader "
        f"on the real scenes of these prompts: " + " ".join(f"{k}={reads_real[k]:.3f}" for k in SCORES))
  if features is not None and floor is not None:
    results["real_vs_real"] = fid_kid(features, real, floor)
    print(f"  real-vs-real floor ({args.num} vs {args.num}): FID {results['real_vs_real']['fid']:.2f} "
          f"KID {results['real_vs_real']['kid']:.4f}")
  if scorer is not None:
    results["clip"] = scorer.source
    results["real_images"].update(clip_metrics(scorer, real, captions))
    print(f"  real scenes: CLIP score {results['real_images']['clip_score']:.2f} "
          f"R-precision {results['real_images']['clip_r_precision']:.3f}")
  grid_rows = [real[:8]]
  for g in [float(s) for s in args.guidance.split(",")]:
    t = time.time()
    images = to_uint8(draw(run, state, captions, g, args.batch, args.seed))
    seconds = time.time() - t
    acc = scene_reader.compositional_accuracy(reader, images, attributes)
    entry = {k: acc[k] for k in SCORES}
    entry["num_scored"] = acc["num_scored"]
    entry["sampling_seconds"] = round(seconds, 1)
    entry["ms_per_image"] = round(1000 * seconds / len(captions), 1)
    line = " ".join(f"{k}={acc[k]:.3f}" for k in SCORES)
    if features is not None:
      entry.update({k: v for k, v in fid_kid(features, images, real).items() if k != "samples"})
      line += f" FID={entry['fid']:.2f} KID={entry['kid']:.4f}"
    if scorer is not None:
      entry.update(clip_metrics(scorer, images, captions))
      line += f" CLIP={entry['clip_score']:.2f} R-prec={entry['clip_r_precision']:.3f}"
    results["scales"][str(g)] = entry
    print(f"  guidance {g:g}: {line} ({seconds:.0f}s sampling)", flush=True)
    grid_rows.append(images[:8])
  return results, grid_rows, captions[:8]


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True)
  p.add_argument("--split", default="validation",
                 help="validation (choose settings) | test | heldout_combos | heldout_words")
  p.add_argument("--num", type=int, default=1000, help="prompts per object count")
  p.add_argument("--objects", default="1", help="comma-separated object counts of the prompts' scenes")
  p.add_argument("--guidance", default="1,3", help="comma-separated guidance scales")
  p.add_argument("--batch", type=int, default=100)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--fid", action="store_true", help="also FID/KID vs the prompts' real scenes")
  p.add_argument("--clip", default="", help="also CLIP score / R-precision with this CLIP")
  p.add_argument("--grid", default="", help="save prompts -> images for 8 prompts to this PNG")
  args = p.parse_args()
  compilation_cache.enable()

  run = Run.from_workdir(args.workdir)
  state, step = run.restore_latest()
  reader = scene_reader.load_reader(run.info.image_shape[0], run.data_dir)
  features = None
  if args.fid:
    from genjax.metrics.features import InceptionFeatures
    features = InceptionFeatures()
  scorer = None
  if args.clip:
    from genjax.metrics.clip_score import load_scorer
    scorer = load_scorer(args.clip)
  grids = []
  for n in [int(s) for s in args.objects.split(",")]:
    results, grid_rows, captions = evaluate(run, state, step, reader, features, args, n, scorer)
    name = (f"compositional_{args.split}" + ("" if n == 1 else f"_{n}objects")
            + ("_clip" if scorer is not None else "") + ".json")
    with open(os.path.join(args.workdir, name), "w") as f:
      json.dump(results, f, indent=2)
    print(f"results -> {os.path.join(args.workdir, name)}")
    grids.append((grid_rows, captions))
  if args.grid:
    # Rows: the real scene, then one row per guidance scale; columns: the first 8 prompts.
    grid_rows, captions = grids[0]
    save_png(args.grid, make_grid(np.concatenate(grid_rows) / 255.0, columns=8))
    with open(os.path.splitext(args.grid)[0] + ".txt", "w") as f:
      f.write(f"rows: real scene, then guidance {args.guidance}; columns: prompts\n")
      f.write("\n".join(f"{i}: {c}" for i, c in enumerate(captions)) + "\n")
    print(f"grid -> {args.grid}")


if __name__ == "__main__":
  main()
