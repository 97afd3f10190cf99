"""The FID/KID evaluator the loop runs when `config.eval.fid_samples > 0`.

Samples `fid_samples` images from the EMA model and compares them with the
first `fid_reference_count` images of the eval split (-1: all of it):
  * FID against reference statistics computed once per (dataset, split, count,
    mode, weights) and cached under `<data_dir>/genjax_fid_stats/`;
  * KID (unbiased) when both sets are at most `KID_MAX_IMAGES`, since it needs
    the features themselves rather than running sums.
Sampling is resumable: the running sums are saved under
`workdir/eval_state/` while an evaluation is in progress, and the loop resumes
an unfinished evaluation before training on (see `pending`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genjax import data, multihost, paths
from genjax.metrics.features import InceptionFeatures
from genjax.metrics.fid_eval import FIDEvaluator, features_in_order, reference_stats
from genjax.metrics.kid import kernel_inception_distance

KID_MAX_IMAGES = 10_000  # beyond this, holding both feature sets in memory is not worth it
KID_SUBSET_SIZE = 1000


class TrainingFID:

  def __init__(self, run, features: InceptionFeatures | None = None, checkpoint_every: int = 10):
    self.run = run
    cfg = run.config.eval
    self.num_samples = cfg.fid_samples
    self.mode = cfg.fid_mode
    self.reference_count = cfg.get("fid_reference_count", -1)
    self.state_dir = paths.resolve(run.workdir) / "eval_state"
    self.checkpoint_every = checkpoint_every  # sampler calls between saves of the running sums
    self._features = features
    self._reference = None
    self._reference_features = None

  @property
  def features(self) -> InceptionFeatures:
    if self._features is None:  # loaded on first use: the weights are 87 MB
      self._features = InceptionFeatures()
    return self._features

  def _reference_images(self):
    cfg = self.run.config
    remaining = self.reference_count if self.reference_count > 0 else None
    with data.eval_batches(cfg.dataset, batch_size=cfg.eval.batch_size, split=cfg.eval.split,
                           data_dir=self.run.data_dir, process_index=0, process_count=1) as batches:
      for batch in batches:
        images = batch["image"][batch["mask"] > 0]
        if remaining is not None:
          images, remaining = images[:remaining], remaining - min(remaining, len(images))
        if len(images):
          yield images
        if remaining == 0:
          return

  def reference(self) -> dict:
    if self._reference is None:
      cfg = self.run.config
      count = "all" if self.reference_count <= 0 else str(self.reference_count)
      name = f"{cfg.dataset}:{cfg.eval.split}:{count}"
      cache = Path(self.run.data_dir) / "genjax_fid_stats" / f"{name.replace(':', '-')}-{self.mode}.npz"
      self._reference = reference_stats(name, self._reference_images, cache, self.features, mode=self.mode)
    return self._reference

  def _state_path(self, step: int) -> Path:
    return self.state_dir / f"fid_step_{step}.npz"

  def pending(self, step: int) -> bool:
    """True (on every process) if an evaluation at `step` was interrupted and should be
    finished. Process 0 decides from its disk; the state files of evaluations at other steps
    (interrupted, then overtaken by a resume from an earlier checkpoint) are removed, since
    nothing can finish them."""
    found = False
    if multihost.is_main() and self.state_dir.is_dir():
      for path in self.state_dir.iterdir():
        if path == self._state_path(step):
          found = True
        elif path.name.startswith("fid_step_"):
          path.unlink()
    return bool(multihost.broadcast(np.int32(found)))

  def _conditions(self):
    """Host conditions of the reference images, in order: sample j is drawn under the
    condition of reference image j (cycled), so a conditional or text-to-image model is
    scored on the captions/labels of the very images it is compared with."""
    if not self.run.conditioned:
      return None
    count = self.reference_count if self.reference_count > 0 else self.num_samples
    return self.run.host_conditions(min(count, self.num_samples))

  def __call__(self, state, rng, step: int) -> dict:
    """FID (and KID) of `num_samples` EMA samples of `state` against the reference."""
    host_cond = self._conditions()
    batch_size = self.run.config.eval.batch_size

    def draw(key, n, index):  # batch `index` of the evaluation
      cond = None if host_cond is None else self.run.conditions(n, index * batch_size, host_cond)
      return self.run.sample(state, n, cond, key, sharded=True)

    use_kid = self.num_samples <= KID_MAX_IMAGES and 0 < self.reference_count <= KID_MAX_IMAGES
    evaluator = FIDEvaluator(self.reference(), self.features, num_samples=self.num_samples,
                             batch_size=self.run.config.eval.batch_size, mode=self.mode,
                             checkpoint_every=self.checkpoint_every)
    results = evaluator.evaluate(draw, rng, state_path=self._state_path(step), indexed=True,
                                 keep_features=use_kid)
    self.features_computed = results["features_computed_here"]
    out = {"fid": results["fid"], "fid_num_samples": results["fid_num_samples"]}
    if use_kid:
      out.update(self._kid(results["features"]))
    return out

  def _kid(self, sample_feats) -> dict:
    if self._reference_features is None:
      self._reference_features = features_in_order(self.features, self._reference_images(), self.mode)
    # At most half of each set per subset, so the 100 subsets differ and kid_std is meaningful.
    subset = min(KID_SUBSET_SIZE, len(sample_feats) // 2, len(self._reference_features) // 2)
    mean, std = kernel_inception_distance(sample_feats, self._reference_features,
                                          num_subsets=100, subset_size=subset)
    return {"kid": float(mean), "kid_std": float(std)}
