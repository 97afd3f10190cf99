"""The text-to-image runs and measurements that tables 4-6 share (experiments/guidance.py,
experiments/encoder_vs_unet.py, experiments/unseen_words.py).

One grid of pixel-space text-to-image diffusion models on `scenes32` (configs/t2i.py, the
`small` preset's schedule, v-prediction, layout map, caption dropout 0.1), identical but for
  * the text encoder: trainable transformers `tiny` (64 wide, 2 layers), `mini` (256, 4) and
    `minilm_size` (384, 6: all-MiniLM-L6-v2's shape and parameter count, from scratch), or the
    pretrained all-MiniLM-L6-v2 as a frozen stage (`minilm`);
  * the U-Net's base width `model.ch` (channel multipliers 1, 2, 2 of it): 12, 16 or 24 (24 is
    the `small` preset's; GroupNorm has 4 groups at 12, 8 otherwise).
Each run trains --steps steps at batch 32 in RUNS/enc=<encoder>,unet=<ch>; the tables train only
the cells they need, and share them (a cell trained for one table is reused by the others).

A cell's measurement (`score`) draws one image per prompt (the captions of the first N
single-object scenes of a split; the same noise for every cell and guidance scale), reads them
back with the 32x32 scene reader (compositional accuracy, per prompt), and optionally scores
FID/KID against the real scenes of those prompts and CLIP score / R-precision with the in-domain
CLIP. Results are cached in the run's measurements/ (a re-run draws nothing again); the per-prompt
values are kept, so tables can put bootstrap intervals over prompts on every accuracy.
"""

from __future__ import annotations

import os
import statistics

from genjax import experiment

ENCODERS = {
    "tiny": "encoder=trainable,text_size=tiny",
    "mini": "encoder=trainable,text_size=mini",
    "minilm_size": "encoder=trainable,text_size=minilm_size",
    "minilm": "encoder=minilm",
}
UNET_WIDTHS = (12, 16, 24)
ACCURACIES = ("overall", "count", "class", "colour", "cell")  # stated by every single-object prompt
STEPS = 500
SMOKE_STEPS = 2


def run_name(encoder: str, unet: int) -> str:
  return f"enc={encoder},unet={unet}"


def spec(encoder: str, unet: int, steps: int, smoke: bool = False) -> experiment.RunSpec:
  """The run of one cell (smoke: the `smoke` preset's depth and schedule, in seconds)."""
  if encoder not in ENCODERS:
    raise SystemExit(f"unknown encoder {encoder!r}; choose from {', '.join(ENCODERS)}")
  size = "smoke" if smoke else "small"
  # The runs' own end-of-training evaluation is the test loss and a grid (none in smoke runs,
  # whose sampler compilations would dominate the suite); the tables score the runs themselves.
  overrides = {"model.ch": unet, "total_steps": steps, "eval_every": 0 if smoke else steps,
               "checkpoint_every": steps if smoke else max(1, steps // 4), "eval.fid_samples": 0}
  if unet % 8:  # GroupNorm's 8 groups need widths divisible by 8
    overrides["model.norm_groups"] = 4
  return experiment.RunSpec(run_name(encoder, unet),
                            f"configs/t2i.py:dataset=scenes32,size={size},{ENCODERS[encoder]}", overrides)


def train(cells, runs_dir: str, steps: int, smoke: bool) -> list[experiment.RunSpec]:
  """Trains every (encoder, unet) cell that is not finished; returns their specs."""
  specs = [spec(e, u, steps, smoke) for e, u in cells]
  experiment.train_runs(specs, runs_dir)
  return specs


# ---- measurements ---------------------------------------------------------------------------------
_TOOLS: dict = {}  # the scene reader, Inception and CLIP, loaded once per process


def reader_of(run):
  from genjax.metrics import scene_reader
  key = ("reader", run.info.image_shape[0], str(run.data_dir))
  if key not in _TOOLS:
    _TOOLS[key] = scene_reader.load_reader(run.info.image_shape[0], run.data_dir)
  return _TOOLS[key]


def inception():
  if "features" not in _TOOLS:
    from genjax.metrics.features import InceptionFeatures
    _TOOLS["features"] = InceptionFeatures()
  return _TOOLS["features"]


def clip_scorer(source: str):
  if ("clip", source) not in _TOOLS:
    from genjax.metrics.clip_score import load_scorer
    _TOOLS[("clip", source)] = load_scorer(source)
  return _TOOLS[("clip", source)]


def restored(workdir: str):
  """(Run, its latest state) of `workdir`; the last one is kept, so that the several
  measurements of one cell (splits, guidance scales) restore and trace its sampler once."""
  from genjax.train.loop import read_finished
  key = (os.path.abspath(workdir), (read_finished(workdir) or {}).get("step"))
  if _TOOLS.get("restored", (None,))[0] != key:
    from genjax.train.run import Run
    _TOOLS.pop("restored", None)  # free the previous cell first
    run = Run.from_workdir(workdir)
    _TOOLS["restored"] = (key, run, run.restore_latest()[0])
  return _TOOLS["restored"][1:]


def score(workdir: str, split: str, num: int, guidance: float, fid: bool = False, clip: str = "",
          seed: int = 0, batch: int = 100) -> dict:
  """Compositional accuracy (means and per prompt) of `num` single-object prompts of `split` at
  `guidance`, ms/image, and with `fid` FID/KID against the prompts' real scenes, with `clip`
  CLIP score (mean and per prompt) and R-precision. Cached per run, settings and step."""
  settings = {"split": split, "num": num, "guidance": guidance, "fid": fid, "clip": clip,
              "seed": seed, "batch": batch}

  def compute():
    from experiments.t2i_compositional import draw, fid_kid, prompts_of_scenes, to_uint8
    from genjax.metrics import scene_reader
    from genjax.metrics.clip_score import score_pairs
    run, state = restored(workdir)
    captions, attributes, real, _ = prompts_of_scenes(run, split, num, 1)
    call_seconds = []
    images = to_uint8(draw(run, state, captions, guidance, batch, seed, call_seconds))
    acc = scene_reader.compositional_accuracy(reader_of(run), images, attributes)
    out = {k: acc[k] for k in ACCURACIES + ("size",)}
    out["per_prompt"] = {k: acc["per_image"][k].astype(int).tolist() for k in ACCURACIES}
    # The median sampling call after the first (which compiles), per image of the batch.
    out["ms/image"] = 1000 * statistics.median(call_seconds[1:] or call_seconds) / batch
    if fid:
      out.update(fid_kid(inception(), images, real))
    if clip:
      # R-precision ranks each image's caption among R - 1 others: R = 100 (the usual) needs
      # at least 100 prompts; smaller sets (smoke runs) use half their size.
      pairs = score_pairs(clip_scorer(clip), list(images), captions, r=min(100, len(captions) // 2))
      out.update({k: pairs[k] for k in ("clip_score", "clip_r_precision")})
      out["per_prompt"]["clip_score"] = [float(v) for v in pairs["per_pair"]]
    return out
  prefix = f"t2i_{split}_{num}_g{guidance:g}"
  if not (fid or clip):
    # Every measurement holds the accuracies: one that also has FID or CLIP score, of the same
    # prompts, noise and batch, answers this without drawing again (table 6 reuses table 5's).
    for name, other in experiment.cached_settings(workdir, prefix).items():
      if {**other, "fid": fid, "clip": clip} == settings:
        richer = experiment.cached(workdir, name, other)
        if richer is not None:
          return richer
  name = prefix + ("_fid" if fid else "") + ("_clip" if clip else "")
  return experiment.measured(workdir, name, settings, compute)


def parameter_counts(workdir: str) -> dict:
  """{"text encoder": trained or frozen parameters of the encoder, "unet": the U-Net's}; cached
  in the run folder (building the run to count them takes seconds)."""
  def compute():
    import jax
    from genjax.train.run import Run
    run = Run.from_workdir(workdir)
    count = lambda tree: int(sum(x.size for x in jax.tree.leaves(tree)))
    params = run.abstract_state().params
    encoder = params["text_encoder"] if "text_encoder" in params else run.frozen["text_encoder"]
    return {"text encoder": count(encoder), "unet": count(params["unet"])}
  return experiment.measured(workdir, "parameter_counts", {}, compute)


def train_step_gflop(workdir: str) -> float:
  """XLA's FLOP count of one compiled training step (the frozen encoder's forward pass
  included), compiled from shapes alone; cached in the run folder."""
  def compute():
    from experiments.measure import train_step_flops
    from genjax.train.run import Run
    return {"gflop": train_step_flops(Run.from_workdir(workdir)) / 1e9}
  return experiment.measured(workdir, "train_step_gflop", {}, compute)["gflop"]


def add_arguments(parser, repo: str, name: str) -> None:
  """The arguments every table of the grid takes."""
  parser.add_argument("--steps", type=int, default=STEPS, help="training steps of every run")
  parser.add_argument("--num", type=int, default=500, help="single-object prompts per split")
  parser.add_argument("--batch", type=int, default=100, help="images per sampling call")
  parser.add_argument("--runs", default=os.path.join(repo, "runs", "t2i_grid"))
  parser.add_argument("--out", default=os.path.join(repo, "experiments", "results", name))
  parser.add_argument("--smoke", action="store_true", help="smoke-sized runs and 8 prompts: seconds")


def parse(parser, argv, name: str):
  """Parsed arguments; --smoke shrinks the runs and prompt counts, and never writes over the
  committed table (its results go beside the runs unless --out says otherwise)."""
  args = parser.parse_args(argv)
  if args.smoke:
    args.steps, args.num, args.batch = SMOKE_STEPS, 8, 8
    if args.out == parser.get_default("out"):
      args.out = os.path.join(args.runs, f"results_{name}")
  return args
