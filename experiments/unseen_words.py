"""Table 6: does a pretrained text encoder let the generator follow words its image-text pairs
never contained?

    python experiments/unseen_words.py            # the 4 encoders at U-Net width 24 (shared with table 5)
    python experiments/unseen_words.py --smoke    # seconds (tests)

The `heldout_words` prompts word every colour, class and size with synonyms that no training
caption contains ("crimson", "parka", "huge", ...; genjax.data.scenes); their scenes are drawn
like the test split's. The models are cells of experiments/t2i_grid.py at one U-Net width: the
frozen pretrained MiniLM against `minilm_size`, a transformer of MiniLM's shape and parameter
count trained from scratch with the U-Net (and the smaller trainable encoders beside them). Each
is scored on --num single-object heldout_words prompts and on --num ordinary test prompts, at
one guidance scale (chosen on validation prompts, never here), by the 32x32 scene reader; the
last columns are heldout_words minus test, paired by prompt position (the same noise), with a
95% bootstrap interval over prompts, and each model's colour accuracy on the unseen words minus
that of `minilm_size` (the pretrained encoder's from-scratch twin), paired by prompt. CLIP score
is not used: the in-domain CLIP never saw these words either.

Writes table.md/.csv, unseen_words.png and provenance.md under --out.
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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--encoders", default=",".join(t2i_grid.ENCODERS))
  parser.add_argument("--unet", type=int, default=24)
  parser.add_argument("--guidance", type=float, default=2.0)
  t2i_grid.add_arguments(parser, REPO, "unseen_words")
  args = t2i_grid.parse(parser, argv, "unseen_words")
  started = time.perf_counter()
  encoders = [e for e in args.encoders.split(",") if e]

  specs = t2i_grid.train([(e, args.unet) for e in encoders], args.runs, args.steps, args.smoke)
  rows, unseen_colour = [], {}
  for encoder in encoders:
    workdir = os.path.join(args.runs, t2i_grid.run_name(encoder, args.unet))
    seen = t2i_grid.score(workdir, "test", args.num, args.guidance, batch=args.batch)
    unseen = t2i_grid.score(workdir, "heldout_words", args.num, args.guidance, batch=args.batch)
    row = {"text encoder": encoder, "pretrained": encoder == "minilm",
           "encoder params": t2i_grid.parameter_counts(workdir)["text encoder"]}
    for metric in ("overall", "colour", "class", "cell"):
      row[f"test {metric}"] = seen[metric]
      row[f"unseen-words {metric}"] = unseen[metric]
    row["unseen-words size"] = unseen["size"]
    for metric in ("overall", "colour"):
      d = experiment.bootstrap_difference(unseen["per_prompt"][metric], seen["per_prompt"][metric])
      row[f"{metric}: unseen - test"] = d["difference"]
      row[f"{metric}: 95%"] = f"{d['low']:+.3f} to {d['high']:+.3f}"
    unseen_colour[encoder] = unseen["per_prompt"]["colour"]
    rows.append(row)
  if "minilm_size" in unseen_colour:  # each encoder against MiniLM's from-scratch twin, same prompts
    for row in rows:
      d = experiment.bootstrap_difference(unseen_colour[row["text encoder"]], unseen_colour["minilm_size"])
      row["unseen-words colour minus minilm_size's"] = f"{d['difference']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f})"

  header = experiment.write_provenance(
      args.out, [s.command(args.runs) for s in specs], started,
      [f"U-Net width {args.unet}, {args.steps} steps at batch 32 on scenes32 per model; {args.num} "
       f"single-object prompts of each split at guidance {args.guidance:g} (chosen on validation "
       f"prompts), DDIM-25, read by the 32x32 scene reader; 95% bootstrap intervals over prompts."
       + (" Smoke run: not a result." if args.smoke else "")])
  print(experiment.write_table(args.out, rows, header))
  plot_rows = [{"split": split, "text encoder": r["text encoder"], "colour accuracy": r[f"{split} colour"],
                "prompt words": 0 if split == "test" else 1} for r in rows for split in ("test", "unseen-words")]
  experiment.plot(os.path.join(args.out, "unseen_words.png"), plot_rows, "prompt words", "colour accuracy",
                  series="text encoder", title="Colour accuracy: training words (0) vs unseen synonyms (1)")


if __name__ == "__main__":
  main()
