"""CLIP score and CLIP R-precision of a text-to-image run's samples, logged at every evaluation.

    --config.eval.clip_score=runs/clip_scenes        # a genjax clip run (configs/clip.py), or
    --config.eval.clip_score=/path/ViT-B-32.pt       # an OpenAI / open_clip checkpoint file
    --config.eval.clip_activation=quick_gelu         # needed for open_clip state dicts only

Draws `eval.clip_samples` images under the captions of the first eval examples (the same
conditions the sample grid and FID use), in batches of `eval.batch_size`, and scores each
image against its caption (genjax.metrics.clip_score): `eval/clip_score` (w = 100) and
`eval/clip_r_precision` with R = `eval.clip_r` candidates. The scorer is a frozen stage: loaded
once, never trained; every process scores the same replicated samples, so all agree.
"""

from __future__ import annotations

import jax
import numpy as np

from genjax.errors import ConfigError
from genjax.metrics import clip_score


class TrainingCLIP:

  def __init__(self, run):
    cfg = run.config.eval
    if run.tokenizer is None:
      raise ConfigError("eval.clip_score needs a text-conditioned run (text.tokenizer set)")
    self.run = run
    self.source = cfg.clip_score
    self.activation = cfg.get("clip_activation", "") or None
    self.num = int(cfg.get("clip_samples", 500))
    self.r = int(cfg.get("clip_r", clip_score.DEFAULT_R))
    self._scorer = None

  @property
  def scorer(self):
    if self._scorer is None:  # loaded at the first evaluation, not when the run starts
      self._scorer = clip_score.load_scorer(self.source, self.activation)
    return self._scorer

  def __call__(self, state, rng, step) -> dict:
    del step
    run, batch = self.run, self.run.config.eval.batch_size
    captions = [str(c) for c in run.host_captions(self.num)]
    host = run.host_conditions(self.num)
    images = []
    for start in range(0, self.num, batch):
      n = min(batch, self.num - start)
      cond = run.conditions(batch, offset=start, host=host)
      drawn = run.sample(state, batch, cond, jax.random.fold_in(rng, start))
      images.append(np.round(np.clip(np.asarray(drawn)[:n], 0, 1) * 255).astype(np.uint8))
    scores = clip_score.score_pairs(self.scorer, list(np.concatenate(images)), captions, self.r)
    return {k: scores[k] for k in ("clip_score", "clip_r_precision")}
