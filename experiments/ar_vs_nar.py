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
token models' NLL is per code, not per pixel). Writes table.md, table.csv, fid_vs_speed.png
and provenance.md under --out with the command, commit and machine. Each row is cached in its
run's measurements/ (keyed by the settings and step): a re-run measures nothing again and
rewrites the same table. Settings (temperatures, T) are the runs'
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
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import t2i_compositional  # noqa: E402
from experiments.measure import SampleScorer, draw, fid_kid, time_per_image  # noqa: E402
from genjax import experiment  # noqa: E402
from genjax.metrics import scene_reader  # noqa: E402
from genjax.train.run import Run  # noqa: E402


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

  started = time.perf_counter()
  scorers = {}

  def model_row(name, workdir, options, evaluations):
    def compute():
      # With FID, the --batch timing is that of the sampling calls drawing the FID samples.
      run, state, row = speed_row(name, workdir, options, evaluations, args, time_batch=not args.fid_samples)
      if args.fid_samples:
        if "fid" not in scorers:
          scorers["fid"] = SampleScorer(run.config, args.fid_reference)
        samples, row[f"ms/image batch {args.batch}"] = draw(run, state, args.fid_samples, args.batch, options)
        scores = fid_kid(scorers["fid"], samples)
        row.update(FID=scores["FID"], KID=scores["KID"], samples=scores["samples"])
      row["test bits/dim"] = (experiment.run_value(experiment.read_run(workdir), "eval/bits_per_dim")
                              if run.config.family == "pixelcnn" else None)
      return row
    settings = {"model": name, "options": options, "batch": args.batch, "repeats": args.repeats,
                "fid_samples": args.fid_samples, "fid_reference": args.fid_reference}
    return experiment.measured(workdir, measurement_name("ar_vs_nar", options), settings, compute)

  def text_row(name, workdir, options, evaluations):
    def compute():
      run, state, row = speed_row(name, workdir, options, evaluations, args)
      compositional_row(run, state, row, args, options)
      return row
    settings = {"model": name, "options": options, "batch": args.batch, "repeats": args.repeats,
                "text_prompts": args.text_prompts}
    return experiment.measured(workdir, measurement_name("ar_vs_nar_text", options), settings, compute)

  rows = [model_row(*model) for model in models]
  text_rows = [text_row(*model) for model in text_models]
  header = experiment.write_provenance(
      args.out, [f"{workdir}  ({name}; trained beforehand, README)" for name, workdir, _, _ in models + text_models],
      started,
      [f"FID/KID: {args.fid_samples} samples vs the first {args.fid_reference} test images "
       f"(pytorch-fid mode); ms/image at batch 1: median of {args.repeats} calls after compiling."])
  if rows:
    print(experiment.write_table(args.out, rows, header))
    if args.fid_samples:
      experiment.plot(os.path.join(args.out, "fid_vs_speed.png"), rows, "ms/image batch 1", "FID",
                      label="model", logx=True, title=f"FID ({args.fid_samples} samples) vs ms/image at batch 1")
  if text_rows:
    print(experiment.write_table(args.out, text_rows,
                                 header + ["Text-conditioned decoders on the 64x64 captioned scenes; compositional accuracy "
                                           "of single-object test prompts at each row's guidance scale (chosen on validation)."],
                                 stem="text_table"))


def measurement_name(prefix: str, options: dict) -> str:
  """One cache file per model and sampling options, e.g. ar_vs_nar_steps=8."""
  return prefix + "".join(f"_{k}={v:g}" if isinstance(v, float) else f"_{k}={v}" for k, v in sorted(options.items()))

if __name__ == "__main__":
  main()
