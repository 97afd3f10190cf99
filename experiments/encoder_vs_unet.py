"""Table 5, Imagen's claim on genjax's own models: is growing the text encoder worth more than
growing the U-Net?

    python experiments/encoder_vs_unet.py                 # 12 runs + CLIP on 2 cores: README for the time
    python experiments/encoder_vs_unet.py --unets=16,24   # a subset of the grid
    python experiments/encoder_vs_unet.py --smoke         # seconds (tests)

The grid of experiments/t2i_grid.py: text encoder (trainable tiny / mini / minilm_size, frozen
pretrained MiniLM) x U-Net width (12 / 16 / 24), every run with the same data (scenes32), batch,
steps, schedule and seed. Every cell is scored the same way: --num single-object test prompts at
guidance --guidance (one scale for every cell, chosen on validation prompts for the `small`
preset, README; never on these test prompts), each prompt with the same noise in every cell:
compositional accuracy read by the 32x32 scene reader, CLIP score (the in-domain CLIP, trained
here as the run `clip` unless --clip names one), FID/KID against the prompts' real scenes.
Intervals: 95% percentile bootstrap over prompts; the differences in summary.md are paired (the
same prompts and noise in both cells).

Writes table.md/.csv, summary.md (the encoder-vs-U-Net differences), accuracy_vs_unet.png,
clip_vs_flops.png and provenance.md under --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import t2i_grid  # noqa: E402
from genjax import experiment  # noqa: E402

CLIP_RUN = experiment.RunSpec("clip", "configs/clip.py:dataset=scenes,size=small",
                              {"total_steps": 1200, "eval_every": 1200, "checkpoint_every": 300})
SMOKE_CLIP_RUN = experiment.RunSpec("clip", "configs/clip.py:dataset=scenes32,size=smoke")
METRICS = ("overall", "colour", "cell", "class", "clip_score")  # per prompt; the summary's comparisons


def mean(values) -> float:
  return sum(values) / len(values)


def interval(values) -> str:
  low, high = experiment.bootstrap_interval(values)
  return f"{low:.3f}-{high:.3f}"


def clip_source(args) -> tuple[str, list[experiment.RunSpec]]:
  """The CLIP scoring every cell: --clip, or the experiment's own `clip` run (trained if needed)."""
  if args.clip:
    return args.clip, []
  run = SMOKE_CLIP_RUN if args.smoke else CLIP_RUN
  experiment.train_runs([run], args.runs)
  return os.path.join(args.runs, run.name), [run]


def cell_row(args, encoder: str, unet: int, clip: str) -> tuple[dict, dict]:
  workdir = os.path.join(args.runs, t2i_grid.run_name(encoder, unet))
  scores = t2i_grid.score(workdir, "test", args.num, args.guidance, fid=True, clip=clip, batch=args.batch)
  counts = t2i_grid.parameter_counts(workdir)
  finished = experiment.read_run(workdir)["finished"]
  gflop = t2i_grid.train_step_gflop(workdir)
  per_prompt = scores["per_prompt"]
  row = {"text encoder": encoder, "encoder params": counts["text encoder"],
         "encoder is": "frozen" if encoder == "minilm" else "trained", "U-Net width": unet,
         "U-Net params": counts["unet"], "train PFLOP": gflop * finished["step"] / 1e6,
         "train min": finished["train_seconds"] / 60,
         "overall": scores["overall"], "overall 95%": interval(per_prompt["overall"]),
         "colour": scores["colour"], "colour 95%": interval(per_prompt["colour"]),
         "cell": scores["cell"], "cell 95%": interval(per_prompt["cell"]),
         "class": scores["class"], "count": mean(per_prompt["count"]),
         "size": scores["size"],
         "CLIP score": scores["clip_score"], "CLIP 95%": interval(per_prompt["clip_score"]),
         "FID": scores["fid"], "KID": scores["kid"]}
  return row, per_prompt


def headline(cells: dict, rows: list[dict], encoders, unets, metric: str) -> list[str]:
  """Growing the trainable encoder from the smallest to the largest listed, and swapping the
  smallest for the frozen pretrained MiniLM (each averaged over U-Net widths), against growing the
  U-Net from the narrowest to the widest (averaged over encoders), per prompt: each gain and its
  difference from the U-Net's, with paired bootstrap intervals."""
  import numpy as np
  trained = [e for e in encoders if e != "minilm"]
  if len(trained) < 2 or len(unets) < 2:
    return []
  small, narrow, wide = trained[0], unets[0], unets[-1]
  value = lambda e, u: np.asarray(cells[e, u][metric], np.float64)
  params = {(r["text encoder"], r["U-Net width"]): r for r in rows}
  unet_gain = np.mean([value(e, wide) - value(e, narrow) for e in encoders], axis=0)
  ratio_u = params[encoders[0], wide]["U-Net params"] / params[encoders[0], narrow]["U-Net params"]
  show = lambda d: f"{d['difference']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f})"
  zero = np.zeros_like(unet_gain)
  lines = [f"- {metric}: U-Net {narrow} -> {wide} ({ratio_u:.1f}x its parameters), averaged over "
           f"encoders: {show(experiment.bootstrap_difference(unet_gain, zero))}"]
  for other, what in ((trained[-1], "trained"), ("minilm", "frozen pretrained")):
    if other not in encoders or other == small:
      continue
    gain = np.mean([value(other, u) - value(small, u) for u in unets], axis=0)
    ratio = params[other, narrow]["encoder params"] / params[small, narrow]["encoder params"]
    lines.append(f"  - text encoder {small} -> {other} ({what}, {ratio:.1f}x its parameters), averaged "
                 f"over U-Net widths: {show(experiment.bootstrap_difference(gain, zero))}; minus the U-Net's "
                 f"gain: {show(experiment.bootstrap_difference(gain, unet_gain))}")
  return lines


def summary(cells: dict, rows: list[dict], encoders, unets) -> list[str]:
  """The headline comparison, then every paired difference behind it, per metric: growing the
  encoder from the smallest to each larger one at every U-Net width, and the U-Net from the
  narrowest to each wider one at every encoder."""
  lines = ["# Growing the text encoder vs growing the U-Net", "",
           "Paired differences (same prompts and noise), mean and 95% bootstrap interval over prompts.", "",
           "## Headline", ""]
  for metric in METRICS:
    lines += headline(cells, rows, encoders, unets, metric)
  lines.append("")
  for metric in METRICS:
    lines += [f"## {metric}", "", "| change | at | difference | 95% interval |", "|---|---|---|---|"]
    for unet in unets:
      for bigger in encoders[1:]:
        d = experiment.bootstrap_difference(cells[bigger, unet][metric], cells[encoders[0], unet][metric])
        lines.append(f"| encoder {encoders[0]} -> {bigger} | U-Net {unet} | {d['difference']:+.3f} | "
                     f"{d['low']:+.3f} to {d['high']:+.3f} |")
    for encoder in encoders:
      for wider in unets[1:]:
        d = experiment.bootstrap_difference(cells[encoder, wider][metric], cells[encoder, unets[0]][metric])
        lines.append(f"| U-Net {unets[0]} -> {wider} | encoder {encoder} | {d['difference']:+.3f} | "
                     f"{d['low']:+.3f} to {d['high']:+.3f} |")
    lines.append("")
  return lines


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--encoders", default=",".join(t2i_grid.ENCODERS))
  parser.add_argument("--unets", default=",".join(map(str, t2i_grid.UNET_WIDTHS)))
  parser.add_argument("--guidance", type=float, default=2.0)
  parser.add_argument("--clip", default="", help="a CLIP run or checkpoint (default: train the run `clip`)")
  t2i_grid.add_arguments(parser, REPO, "encoder_vs_unet")
  args = t2i_grid.parse(parser, argv, "encoder_vs_unet")
  started = time.perf_counter()
  encoders = [e for e in args.encoders.split(",") if e]
  unets = [int(u) for u in args.unets.split(",") if u]

  cells = [(e, u) for u in unets for e in encoders]
  specs = t2i_grid.train(cells, args.runs, args.steps, args.smoke)
  clip, clip_runs = clip_source(args)
  rows, per_prompt = [], {}
  for encoder, unet in cells:
    row, per_prompt[encoder, unet] = cell_row(args, encoder, unet, clip)
    rows.append(row)

  header = experiment.write_provenance(
      args.out, [s.command(args.runs) for s in specs + clip_runs], started,
      [f"Every cell: {args.steps} steps at batch 32 on scenes32; {args.num} single-object test "
       f"prompts at guidance {args.guidance:g} (chosen on validation prompts), DDIM-25; CLIP score "
       f"with {experiment.shown_path(clip)}; FID/KID against the prompts' real scenes ({args.num}); "
       f"95% bootstrap intervals over prompts; train PFLOP = XLA's count of one step x steps (a frozen encoder's forward "
       f"pass included)." + (" Smoke run: not a result." if args.smoke else "")])
  print(experiment.write_table(args.out, rows, header))
  with open(os.path.join(args.out, "summary.md"), "w") as f:
    f.write("\n".join(summary(per_prompt, rows, encoders, unets)) + "\n")
  experiment.plot(os.path.join(args.out, "accuracy_vs_unet.png"), rows, "U-Net params", "overall",
                  series="text encoder", logx=True, title="Compositional accuracy (single object) vs U-Net size")
  experiment.plot(os.path.join(args.out, "clip_vs_flops.png"), rows, "train PFLOP", "CLIP score",
                  series="text encoder", logx=True, title="CLIP score vs training compute")


if __name__ == "__main__":
  main()
