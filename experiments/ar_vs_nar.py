"""Autoregressive vs parallel decoding on the same data, measured the same way: one table.

    python experiments/ar_vs_nar.py --pixelcnn=runs/pixelcnn_small --token_ar=runs/token_ar \
        --maskgit=runs/maskgit --maskgit_steps=1,2,4,8,16 --fid_samples=1000 \
        --text_token_ar=runs/token_ar_scenes --text_maskgit=runs/maskgit_scenes --text_prompts=1000 \
        --text_guidance=2,3

For every model (PixelCNN++ on pixels; the autoregressive transformer and MaskGIT with each T on
the same VQ tokenizer's codes), from its run's EMA weights: sequential network evaluations per
image (PixelCNN++: H x W; token AR: N codes, each one cached single-token pass; MaskGIT: T),
ms/image at batch 1 (compiled ahead, median of --repeats timed calls) and at --batch (the median
of the calls that draw the FID samples, after the first), FID and KID of --fid_samples samples against the first --fid_reference test images (default
pytorch-fid mode), and test bits/dim where the model's likelihood is exact (PixelCNN++; the
token models' NLL is per code, not per pixel). Writes table.md, table.csv and fid_vs_speed.svg
under --out with the command, commit and machine. Settings (temperatures, T) are the runs'
own: nothing here is tuned on the test images it scores.

The text-conditioned decoders (DALL-E's structure: --text_token_ar, a caption-prefixed token AR
model; Muse's: --text_maskgit, MaskGIT cross-attending to a text encoder; both on a tokenizer of
the 64x64 captioned scenes) get a second table: sequential evaluations, ms/image at batch 1 and
--batch, and compositional accuracy on the first --text_prompts single-object test prompts
(experiments/t2i_compositional.py, read back by the scene reader) at the guidance scales
--text_guidance (token AR, MaskGIT), chosen on the validation prompts with that script, never
on these.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import t2i_compositional  # noqa: E402
from experiments.measure import SampleScorer, draw, fid_kid, time_per_image  # noqa: E402
from genjax.experiment import read_run, run_value, write_table  # noqa: E402
from genjax.metrics import scene_reader  # noqa: E402
from genjax.train.run import Run  # noqa: E402


def write_scatter(path: str, rows, samples: int) -> None:
  """FID against ms/image at batch 1 (log axis), one labelled point per model, as an SVG."""
  xs = np.log10([r["ms/image batch 1"] for r in rows])
  ys = np.array([r["FID"] for r in rows])
  spread = lambda v: (v.min() - 0.1 * (np.ptp(v) + 1e-9), v.max() + 0.1 * (np.ptp(v) + 1e-9))
  (x0, x1), (y0, y1) = spread(xs), spread(ys)
  px = lambda x: 60 + 480 * (x - x0) / (x1 - x0)
  py = lambda y: 320 - 280 * (y - y0) / (y1 - y0)
  parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="600" height="380" font-family="sans-serif" font-size="11">',
           '<rect width="600" height="380" fill="white"/>',
           '<line x1="60" y1="320" x2="560" y2="320" stroke="black"/><line x1="60" y1="20" x2="60" y2="320" stroke="black"/>',
           '<text x="310" y="360" text-anchor="middle">ms/image at batch 1 (log scale)</text>',
           f'<text x="15" y="170" transform="rotate(-90 15 170)" text-anchor="middle">FID ({samples} samples)</text>']
  for tick in range(int(np.floor(x0)), int(np.ceil(x1)) + 1):
    if x0 <= tick <= x1:
      parts.append(f'<text x="{px(tick):.0f}" y="335" text-anchor="middle">{10.0 ** tick:g}</text>')
  for y in np.linspace(y0, y1, 5):
    parts.append(f'<text x="55" y="{py(y) + 4:.0f}" text-anchor="end">{y:.0f}</text>')
  for r, x, y in zip(rows, xs, ys):
    parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="steelblue"/>')
    parts.append(f'<text x="{px(x) + 6:.1f}" y="{py(y) - 6:.1f}">{r["model"]}</text>')
  with open(path, "w") as f:
    f.write("\n".join(parts + ["</svg>"]) + "\n")


def speed_row(name, workdir, options, evaluations, args, time_batch: bool = True):
  """(run, state, row) with the model's sequential evaluations and ms/image at batch 1 and
  (`time_batch`) at --batch."""
  run = Run.from_workdir(workdir)
  state, step = run.restore_latest()
  if evaluations is None:
    h, w, _ = run.family.data.image_shape
    evaluations = h * w if run.config.family == "pixelcnn" else run.family.length
  row = {"model": name, "workdir": workdir, "step": step, "sequential evaluations": evaluations,
         "ms/image batch 1": time_per_image(run, state, 1, args.repeats, options)}
  if time_batch:
    row[f"ms/image batch {args.batch}"] = time_per_image(run, state, args.batch, args.repeats, options)
  return run, state, row


def compositional_row(run, state, row, args, options):
  """Adds compositional accuracy on the first --text_prompts single-object test prompts."""
  captions, attributes, _, _ = t2i_compositional.prompts_of_scenes(run, "test", args.text_prompts, 1)
  options = dict(options)
  guidance = options.pop("guidance_scale")
  images = t2i_compositional.to_uint8(t2i_compositional.draw(run, state, captions, guidance,
                                                             args.batch, seed=0, **options))
  reader = scene_reader.load_reader(run.info.image_shape[0], run.data_dir)
  accuracy = scene_reader.compositional_accuracy(reader, images, attributes)
  row["guidance"] = guidance
  row["prompts"] = len(captions)
  row.update({f"accuracy {k}": float(accuracy[k]) for k in t2i_compositional.SCORES})


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--pixelcnn", default="")
  parser.add_argument("--token_ar", default="")
  parser.add_argument("--maskgit", default="")
  parser.add_argument("--maskgit_steps", default="1,2,4,8,16")
  parser.add_argument("--fid_samples", type=int, default=1000)
  parser.add_argument("--fid_reference", type=int, default=1000)
  parser.add_argument("--text_token_ar", default="", help="a caption-prefixed token_ar run (DALL-E)")
  parser.add_argument("--text_maskgit", default="", help="a cross-attention maskgit run (Muse)")
  parser.add_argument("--text_maskgit_steps", default="8")
  parser.add_argument("--text_prompts", type=int, default=1000)
  parser.add_argument("--text_guidance", default="1,1",
                      help="guidance scales of the text token AR and MaskGIT rows (choose them on "
                           "validation prompts)")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results", "ar_vs_nar"))
  args = parser.parse_args(argv)

  steps_of = lambda text: [int(s) for s in text.split(",") if s]
  models = []  # (name, workdir, sampling options, sequential evaluations per image)
  if args.pixelcnn:
    models.append(("PixelCNN++ (pixels)", args.pixelcnn, {}, None))
  if args.token_ar:
    models.append(("token AR, KV cache", args.token_ar, {}, None))
  models += [(f"MaskGIT T={t}", args.maskgit, {"steps": t}, t) for t in steps_of(args.maskgit_steps)
             if args.maskgit]
  ar_guidance, maskgit_guidance = (float(g) for g in args.text_guidance.split(","))
  text_models = ([("text-prefix token AR (DALL-E)", args.text_token_ar, {"guidance_scale": ar_guidance}, None)]
                 if args.text_token_ar else [])
  text_models += [(f"text MaskGIT T={t} (Muse)", args.text_maskgit, {"steps": t, "guidance_scale": maskgit_guidance}, t)
                  for t in steps_of(args.text_maskgit_steps) if args.text_maskgit]
  if not models and not text_models:
    raise SystemExit("give at least one of --pixelcnn, --token_ar, --maskgit, --text_token_ar, --text_maskgit")

  scorer, rows = None, []
  for name, workdir, options, evaluations in models:
    # With FID, the --batch timing is that of the sampling calls drawing the FID samples.
    run, state, row = speed_row(name, workdir, options, evaluations, args, time_batch=not args.fid_samples)
    if args.fid_samples:
      scorer = scorer or SampleScorer(run.config, args.fid_reference)
      samples, row[f"ms/image batch {args.batch}"] = draw(run, state, args.fid_samples, args.batch, options)
      scores = fid_kid(scorer, samples)
      row.update(FID=scores["FID"], KID=scores["KID"], samples=scores["samples"])
    row["test bits/dim"] = run_value(read_run(workdir), "eval/bits_per_dim") if run.config.family == "pixelcnn" else None
    print(row, flush=True)
    rows.append(row)
  text_rows = []
  for name, workdir, options, evaluations in text_models:
    run, state, row = speed_row(name, workdir, options, evaluations, args)
    compositional_row(run, state, row, args, options)
    print(row, flush=True)
    text_rows.append(row)

  os.makedirs(args.out, exist_ok=True)
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
  header = [f"Command: `python experiments/ar_vs_nar.py {' '.join(argv or sys.argv[1:])}`",
            f"Commit {commit}; {platform.node()}, {os.cpu_count()} CPU cores, jax {jax.__version__}, "
            f"{jax.devices()[0].platform}."]
  if rows:
    print(write_table(args.out, rows, header))
    if args.fid_samples:
      write_scatter(os.path.join(args.out, "fid_vs_speed.svg"), rows, args.fid_samples)
  if text_rows:
    print(write_table(args.out, text_rows,
                      header + ["Text-conditioned decoders on the 64x64 captioned scenes; compositional accuracy "
                                "of single-object test prompts at each row's guidance scale (chosen on validation)."],
                      stem="text_table"))


if __name__ == "__main__":
  main()
