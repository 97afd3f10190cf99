"""Table 2: DDIM steps. One diffusion model (experiments/families.py's `ddpm` run, trained here
if it is not finished), sampled by DDIM with several step counts, stochastic DDIM (eta = 1) and
ancestral DDPM over the whole schedule: FID/KID of --fid_samples samples against the first
--fid_samples test images, and ms/image at batch --batch.

    python experiments/ddim_steps.py                                  # ~20 min of training + sampling
    python experiments/ddim_steps.py --samplers=ddim-10,ddim-50,ddpm  # any subset
    python experiments/ddim_steps.py --smoke                          # seconds

Every sampler draws from the same keys under the same test-split conditions; each result is
cached in the run's measurements/ (a re-run samples nothing again). Nothing is chosen here on
test images: the table reports every sampler it is given. Writes table.md, table.csv,
fid_vs_ms.png and provenance.md under --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import families  # noqa: E402
from genjax import experiment  # noqa: E402


def parse_sampler(spec: str) -> dict:
  """'ddpm' -> ancestral over every step; 'ddim-50' -> 50 DDIM steps; 'ddim-100@1' -> eta 1."""
  name, _, eta = spec.strip().partition("@")
  kind, _, steps = name.partition("-")
  if kind == "ddpm" and not steps and not eta:
    return {"sampler": "ddpm"}
  if kind == "ddim" and steps.isdigit():
    return {"sampler": "ddim", "steps": int(steps), "eta": float(eta or 0.0)}
  raise SystemExit(f"bad sampler {spec!r}: use ddpm, ddim-STEPS or ddim-STEPS@ETA")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--samplers", default="ddim-10,ddim-20,ddim-50,ddim-100,ddim-100@1,ddpm")
  parser.add_argument("--runs", default=os.path.join(REPO, "runs", "families"))
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results", "ddim_steps"))
  parser.add_argument("--fid_samples", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=100)
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args(argv)
  started = time.perf_counter()
  samplers = [(s, parse_sampler(s)) for s in args.samplers.split(",") if s]
  if args.smoke:
    args.fid_samples, args.batch = 16, 8
    if args.out == parser.get_default("out"):
      args.out = os.path.join(args.runs, "results_ddim_steps")

  spec = families.specs(["ddpm"], args.runs, args.smoke)[0]
  experiment.train_runs([spec], args.runs, families.SMOKE if args.smoke else None)
  workdir = os.path.join(args.runs, spec.name)

  from experiments.measure import SampleScorer, draw, fid_kid
  from genjax.train.run import Run
  loaded, scorer = {}, {}

  def compute(options):
    if not loaded:  # restored once, only if some sampler is not cached yet
      loaded["run"] = Run.from_workdir(workdir)
      loaded["state"], _ = loaded["run"].restore_latest()
      scorer["s"] = SampleScorer(loaded["run"].config, args.fid_samples)
    samples, ms = draw(loaded["run"], loaded["state"], args.fid_samples, args.batch, options)
    return {**fid_kid(scorer["s"], samples), "ms/image": ms}

  rows = []
  run = experiment.read_run(workdir)
  timesteps = run["config"]["model.timesteps"]
  for name, options in samplers:
    result = experiment.measured(workdir, f"ddim_steps_{name}",
                                 {**options, "fid_samples": args.fid_samples, "batch": args.batch},
                                 lambda options=options: compute(options))
    rows.append({"sampler": name, "network evaluations": options.get("steps", timesteps),
                 "eta": options.get("eta", 1.0 if options["sampler"] == "ddpm" else 0.0),
                 "FID": result["FID"], "KID": result["KID"], "KID std": result["KID std"],
                 f"ms/image (batch {args.batch})": result["ms/image"]})

  header = experiment.write_provenance(args.out, [spec.command(args.runs)], started, [
      f"Model: {os.path.relpath(workdir, REPO) if workdir.startswith(REPO) else workdir} (step {run['finished']['step']}, {run['finished']['params']:,} params, "
      f"{timesteps}-step schedule). FID/KID: {args.fid_samples} samples vs the first "
      f"{args.fid_samples} test images (pytorch-fid mode), the same keys for every sampler."
      + (" Smoke run: not a result." if args.smoke else "")])
  print(experiment.write_table(args.out, rows, header))
  experiment.plot(os.path.join(args.out, "fid_vs_ms.png"), rows, f"ms/image (batch {args.batch})", "FID",
                  label="sampler", logx=True, title=f"DDIM steps: FID ({args.fid_samples} samples) vs sampling time")


if __name__ == "__main__":
  main()
