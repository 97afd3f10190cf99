"""Table 1: every image generator family on Fashion-MNIST, trained by the one loop and measured
the same way.

    python experiments/families.py                       # trains what is not finished, ~3 h on 2 cores
    python experiments/families.py --families=vae,flow   # trains a subset (the table keeps every finished run)
    python experiments/families.py --smoke               # every family in seconds (tests)

Runs (each its `size=small` preset, in --runs/<family>; finished runs are not trained again,
interrupted ones resume): VAE, normalizing flow, GAN, diffusion (DDPM loss, DDIM sampling at
the preset's steps), PixelCNN++, and MaskGIT on a VQ tokenizer (its own run, a frozen stage).
Then, from each run's EMA weights, cached in the run folder (a re-run measures nothing again):
FID and KID of --fid_samples samples against the first --fid_samples test images (the default
pytorch-fid mode; the same count for every family, stated in the table) and ms/image at batch
--batch (the median of the sampling calls that draw them). Parameters and training time come
from the run's finished.json (training time excludes evaluation; compilation included),
bits/dim from its own test-split evaluation: exact for the flow and PixelCNN++, an upper bound
(the negative ELBO / variational bound) for the VAE and diffusion.

Writes table.md, table.csv, fid_vs_time.png and provenance.md under --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from genjax import experiment  # noqa: E402

# name -> (config, bits/dim metric and whether it is exact)
FAMILIES = {
    "vae": ("configs/vae.py:dataset={dataset},size={size}", "eval/bits_per_dim", "bound"),
    "flow": ("configs/flow.py:dataset={dataset},size={size}", "eval/bits_per_dim", "exact"),
    "gan": ("configs/gan.py:dataset={dataset},size={size}", None, None),
    "ddpm": ("configs/ddpm.py:dataset={dataset},size={size}", "eval/eval_bpd", "bound"),
    "pixelcnn": ("configs/pixelcnn.py:dataset={dataset},size={size}", "eval/bits_per_dim", "exact"),
    "vqvae": ("configs/vqvae.py:dataset={dataset},size={size}", None, None),  # MaskGIT's tokenizer
    "maskgit": ("configs/maskgit.py:dataset={dataset},size={size},tokenizer={runs}/vqvae", None, None),
}
GENERATORS = ("vae", "flow", "gan", "ddpm", "pixelcnn", "maskgit")
SMOKE = {"eval.fid_samples": 0}  # the runs' own FID evaluator is off; the table measures FID itself


def specs(families, runs_dir: str, smoke: bool) -> list[experiment.RunSpec]:
  dataset, size = ("mnist5k", "smoke") if smoke else ("fashion_mnist", "small")
  wanted = set(families) | ({"vqvae"} if "maskgit" in families else set())
  return [experiment.RunSpec(name, config.format(dataset=dataset, size=size, runs=runs_dir))
          for name, (config, _, _) in FAMILIES.items() if name in wanted]


def measure(workdir: str, fid_samples: int, batch: int, scorer_of) -> dict:
  """FID/KID of `fid_samples` samples and ms/image at `batch`, from the run's EMA weights."""
  def compute():
    from experiments.measure import draw, fid_kid
    from genjax.train.run import Run
    run = Run.from_workdir(workdir)
    state, _ = run.restore_latest()
    samples, ms = draw(run, state, fid_samples, batch, {})
    return {**fid_kid(scorer_of(run.config), samples), "ms/image": ms, "batch": batch}
  return experiment.measured(workdir, "families_fid", {"fid_samples": fid_samples, "batch": batch}, compute)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--families", default=",".join(GENERATORS))
  parser.add_argument("--runs", default=os.path.join(REPO, "runs", "families"))
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results", "families"))
  parser.add_argument("--fid_samples", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=100)
  parser.add_argument("--smoke", action="store_true", help="size=smoke on mnist5k, 16 samples: seconds")
  args = parser.parse_args(argv)
  started = time.perf_counter()
  families = [f for f in args.families.split(",") if f]
  unknown = set(families) - set(GENERATORS)
  if unknown:
    raise SystemExit(f"unknown --families {sorted(unknown)}; choose from {', '.join(GENERATORS)}")
  if args.smoke:
    args.fid_samples, args.batch = 16, 8
    if args.out == parser.get_default("out"):  # never overwrite the committed table
      args.out = os.path.join(args.runs, "results")

  runs = specs(families, args.runs, args.smoke)
  experiment.train_runs(runs, args.runs, SMOKE if args.smoke else None)

  scorers = {}
  def scorer_of(config):
    from experiments.measure import SampleScorer
    if config.dataset not in scorers:
      scorers[config.dataset] = SampleScorer(config, args.fid_samples)
    return scorers[config.dataset]

  # The table: the families trained now and every other family already finished in --runs, so
  # adding rows (`--families=pixelcnn,maskgit`) keeps the ones measured before.
  from genjax.train.loop import read_finished
  shown = [f for f in GENERATORS if f in families or read_finished(os.path.join(args.runs, f))]
  runs = specs(shown, args.runs, args.smoke)
  rows = []
  for spec in runs:
    if spec.name not in shown:
      continue
    workdir = os.path.join(args.runs, spec.name)
    run = experiment.read_run(workdir)
    _, bpd_key, bpd_kind = FAMILIES[spec.name]
    scores = measure(workdir, args.fid_samples, args.batch, scorer_of)
    finished = run["finished"]
    frozen = f" (+{finished['frozen_params']:,} frozen)" if finished["frozen_params"] else ""
    rows.append({
        "family": spec.name, "FID": scores["FID"], "KID": scores["KID"], "KID std": scores["KID std"],
        "bits/dim": experiment.run_value(run, bpd_key) if bpd_key else None,
        "bits/dim is": bpd_kind, "params": f"{finished['params']:,}{frozen}",
        "steps": finished["step"], "train min": finished["train_seconds"] / 60,
        "steps/s": finished["step"] / max(finished["train_seconds"], 1e-9),
        f"ms/image (batch {args.batch})": scores["ms/image"]})

  measured_at = experiment.commit()
  for row in rows:
    row["measured at"] = measured_at
  rows, kept = with_earlier_rows(rows, args.out)
  header = experiment.write_provenance(
      args.out, [s.command(args.runs) for s in runs], started,
      [f"FID/KID: {args.fid_samples} samples vs the first {args.fid_samples} test images "
       f"(pytorch-fid mode); training time excludes evaluation and includes compilation."
       + (" Smoke run: not a result." if args.smoke else "")]
      + ([f"Rows of {', '.join(kept)}: kept from this table as written before (their runs are not in "
          f"{args.runs}); measured at the commit in their 'measured at' column."] if kept else []))
  print(experiment.write_table(args.out, rows, header))
  experiment.plot(os.path.join(args.out, "fid_vs_time.png"), rows, "train min", "FID", label="family",
                  title=f"{'mnist5k (smoke)' if args.smoke else 'Fashion-MNIST'}: FID ({args.fid_samples} samples) vs training minutes")


def with_earlier_rows(rows: list[dict], out_dir: str) -> tuple[list[dict], list[str]]:
  """`rows` plus the rows of the table already in out_dir for families measured now by no run
  (their runs were on another machine: `runs/` is not in the repository), in GENERATORS order;
  and the names of the families kept that way."""
  measured_now = {r["family"] for r in rows}
  earlier_commit = experiment.provenance_commit(out_dir)
  kept = [r for r in experiment.read_table(out_dir) if r.get("family") not in measured_now]
  for row in kept:
    row["measured at"] = row.get("measured at") or earlier_commit
  order = {f: i for i, f in enumerate(GENERATORS)}
  merged = sorted(rows + kept, key=lambda r: order.get(r["family"], len(order)))
  return merged, [r["family"] for r in kept]


if __name__ == "__main__":
  main()
