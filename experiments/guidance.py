"""Table 4: the classifier-free guidance scale of a text-to-image model against FID, CLIP score
and compositional accuracy; the FID-vs-CLIP-score trade-off curve (Imagen's Pareto figure).

    python experiments/guidance.py                         # the frozen-MiniLM, U-Net-24 cell of table 5
    python experiments/guidance.py --scales=1,2,4 --num=500
    python experiments/guidance.py --smoke                 # seconds (tests)

The model is one cell of experiments/t2i_grid.py (trained here if it is not finished; shared
with tables 5 and 6). Every scale draws one image per prompt (--num single-object test prompts,
the same noise at every scale; scale 1 = the conditional model alone, no guidance; 0 = the
unconditional model) and is scored by the 32x32 scene reader (compositional accuracy, 95%
bootstrap interval over prompts), the in-domain CLIP (CLIP score, R-precision; the run `clip` of
table 5 unless --clip) and FID/KID against the prompts' real scenes; the first row is those real
scenes themselves (FID: against the next --num real scenes, the floor). The table reports every
scale it is given: nothing is chosen on these test prompts.

Writes table.md/.csv, fid_vs_clip.png and provenance.md under --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import encoder_vs_unet, t2i_grid  # noqa: E402
from genjax import experiment  # noqa: E402


def real_scenes(workdir: str, num: int, clip: str) -> dict:
  """The real scenes of the prompts read and scored as the samples are (cached in the run)."""
  def compute():
    from experiments.t2i_compositional import fid_kid, prompts_of_scenes
    from genjax.metrics import scene_reader
    from genjax.metrics.clip_score import score_pairs
    from genjax.train.run import Run
    run = Run.from_workdir(workdir)
    captions, attributes, real, floor = prompts_of_scenes(run, "test", num, 1)
    acc = scene_reader.compositional_accuracy(t2i_grid.reader_of(run), real, attributes)
    out = {k: acc[k] for k in t2i_grid.ACCURACIES}
    pairs = score_pairs(t2i_grid.clip_scorer(clip), list(real), captions, r=min(100, num // 2))
    out.update({k: pairs[k] for k in ("clip_score", "clip_r_precision")})
    if floor is not None:
      out.update(fid_kid(t2i_grid.inception(), floor, real))
    return out
  return experiment.measured(workdir, f"t2i_real_test_{num}", {"num": num, "clip": clip}, compute)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--encoder", default="minilm")
  parser.add_argument("--unet", type=int, default=24)
  parser.add_argument("--scales", default="0,1,2,3,5")
  parser.add_argument("--clip", default="", help="a CLIP run or checkpoint (default: table 5's run `clip`)")
  t2i_grid.add_arguments(parser, REPO, "guidance")
  args = t2i_grid.parse(parser, argv, "guidance")
  started = time.perf_counter()

  specs = t2i_grid.train([(args.encoder, args.unet)], args.runs, args.steps, args.smoke)
  clip, clip_runs = encoder_vs_unet.clip_source(args)
  workdir = os.path.join(args.runs, specs[0].name)
  real = real_scenes(workdir, args.num, clip)
  rows = [{"guidance": "real scenes", "overall": real["overall"], "colour": real["colour"],
           "class": real["class"], "cell": real["cell"], "CLIP score": real["clip_score"],
           "R-precision": real["clip_r_precision"], "FID": real.get("fid"), "KID": real.get("kid")}]
  for scale in [float(s) for s in args.scales.split(",") if s]:
    scores = t2i_grid.score(workdir, "test", args.num, scale, fid=True, clip=clip, batch=args.batch)
    rows.append({"guidance": scale, "overall": scores["overall"],
                 "overall 95%": encoder_vs_unet.interval(scores["per_prompt"]["overall"]),
                 "colour": scores["colour"], "class": scores["class"], "cell": scores["cell"],
                 "CLIP score": scores["clip_score"], "R-precision": scores["clip_r_precision"],
                 "FID": scores["fid"], "KID": scores["kid"], "ms/image": scores["ms/image"]})

  header = experiment.write_provenance(
      args.out, [s.command(args.runs) for s in specs + clip_runs], started,
      [f"Model {specs[0].name} ({args.steps} steps at batch 32 on scenes32); {args.num} single-object "
       f"test prompts, DDIM-25, the same noise at every scale; CLIP score with "
       f"{experiment.shown_path(clip)}; FID/KID against the prompts' real scenes (the real row: "
       f"against the next {args.num} real scenes); "
       f"ms/image: the median sampling call of {args.batch} images after the first, per image."
       + (" Smoke run: not a result." if args.smoke else "")])
  print(experiment.write_table(args.out, rows, header))
  experiment.plot(os.path.join(args.out, "fid_vs_clip.png"), rows[1:], "CLIP score", "FID", label="guidance",
                  title=f"{specs[0].name}: FID vs CLIP score over guidance scales")


if __name__ == "__main__":
  main()
