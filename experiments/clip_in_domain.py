"""How well does the in-domain CLIP (configs/clip.py) match real scenes to their captions?

  python experiments/clip_in_domain.py --clip=runs/clip_scenes --split=test --num=1000
  python experiments/clip_in_domain.py --clip=runs/clip_scenes --dataset=scenes32 --split=test

On the first --num scenes of --split with --objects objects (real images, their captions):
* zero-shot caption retrieval top-1: each image against every DISTINCT caption of the set; a hit
  when its own caption scores highest;
* CLIP R-precision (R = --r, genjax.metrics.clip_score's rule: negatives drawn from captions of
  other scenes with a different text, seeded);
* CLIP score (w = 100) of the matching pairs, and of shuffled pairs (each image with the caption
  of another scene of the set whose text differs, a seeded permutation): the two must separate;
  printed with the fraction of images whose matching score beats their shuffled one.
--dataset=scenes32 scores the 32x32 scenes (upsampled bicubically to the CLIP's size), the
resolution the pixel text-to-image model draws at. Results -> CLIP_WORKDIR/in_domain_<dataset>_<split>.json.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from genjax import compilation_cache  # noqa: E402
from genjax.data import catalog  # noqa: E402
from genjax.metrics import clip_score  # noqa: E402
from genjax.train.stages import read_run_config  # noqa: E402


def real_pairs(dataset, split, num, num_objects, data_dir):
  reader = catalog.open_split(dataset, split, data_dir)
  rows = reader.read(np.arange(len(reader)))
  picked = np.flatnonzero(rows["num_objects"] == num_objects)[:num]
  if len(picked) < num:
    raise SystemExit(f"{split} has only {len(picked)} scenes of {num_objects} object(s)")
  return list(rows["image"][picked]), [str(rows["caption"][i]) for i in picked]


def shuffled_partner(texts, seed):
  """For each i, a j with texts[j] != texts[i] (a seeded permutation, fixed up where equal)."""
  rng = np.random.default_rng(seed)
  partner = rng.permutation(len(texts))
  for i in range(len(texts)):
    while texts[partner[i]] == texts[i]:
      partner[i] = rng.integers(len(texts))
  return partner


def evaluate(scorer, images, texts, r, seed):
  img = scorer.embed_images(images, progress=True)
  txt = scorer.embed_texts(texts)
  distinct = sorted(set(texts))
  distinct_emb = scorer.embed_texts(distinct)
  best = np.argmax(img @ distinct_emb.T, axis=1)
  top1 = float(np.mean([distinct[b] == t for b, t in zip(best, texts)]))
  precision, _ = clip_score.r_precision(img, texts, txt, r, seed)
  matched = clip_score.clip_scores(img, txt)
  shuffled = clip_score.clip_scores(img, txt[shuffled_partner(texts, seed)])
  return {"num": len(texts), "distinct_captions": len(distinct), "retrieval_top1": top1,
          "r": r, "r_precision": precision, "clip_score_matched": float(matched.mean()),
          "clip_score_matched_std": float(matched.std()),
          "clip_score_shuffled": float(shuffled.mean()),
          "clip_score_shuffled_std": float(shuffled.std()),
          "matched_beats_shuffled": float(np.mean(matched > shuffled))}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--clip", required=True, help="a genjax clip run (WORKDIR or WORKDIR@STEP)")
  p.add_argument("--dataset", default="", help="default: the CLIP run's own dataset")
  p.add_argument("--split", default="test")
  p.add_argument("--num", type=int, default=1000)
  p.add_argument("--objects", default="1,2")
  p.add_argument("--r", type=int, default=clip_score.DEFAULT_R)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  compilation_cache.enable()
  workdir = args.clip.rpartition("@")[0] if "@" in os.path.basename(args.clip) else args.clip
  config = read_run_config(workdir)
  dataset = args.dataset or config.dataset
  data_dir = config.data_dir or None  # None: $GENJAX_DATA_DIR or ~/tensorflow_datasets
  scorer = clip_score.load_scorer(args.clip)
  results = {"clip": scorer.source, "dataset": dataset, "split": args.split, "seed": args.seed}
  for n in [int(s) for s in args.objects.split(",")]:
    images, texts = real_pairs(dataset, args.split, args.num, n, data_dir)
    res = evaluate(scorer, images, texts, args.r, args.seed)
    results[f"{n}_objects"] = res
    print(f"{dataset} {args.split}, {n} object(s): " + " ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), flush=True)
  out = os.path.join(workdir, f"in_domain_{dataset}_{args.split}.json")
  with open(out, "w") as f:
    json.dump(results, f, indent=2)
  print(f"results -> {out}")


if __name__ == "__main__":
  main()
