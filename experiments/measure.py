"""Measurements of trained runs shared by the experiments: sampling time per image, samples
drawn under the test split's conditions, and FID/KID of samples against test images."""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np

from benchmarks.sampling_speed import SampleScorer  # noqa: F401  (re-exported for experiments)
from genjax.train.run import Run


def time_per_image(run: Run, state, batch: int, repeats: int, options: dict) -> float:
  """Median ms/image of `repeats` sampling calls of `batch` images (the first call compiles)."""
  rng, cond = jax.random.PRNGKey(0), run.conditions(batch)
  jax.block_until_ready(run.sample(state, batch, cond, rng, **options))
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(run.sample(state, batch, cond, jax.random.fold_in(rng, i), **options))
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times) / batch


def draw(run: Run, state, count: int, batch: int, options: dict):
  """(`count` uint8 samples under the test split's first conditions, drawn in calls of `batch`;
  the median ms/image of those calls after the first, which compiles)."""
  out, times, rng = [], [], jax.random.PRNGKey(1)
  conditions = run.conditions(((count + batch - 1) // batch) * batch)
  if count <= batch:  # one call: compile on a separate one first
    jax.block_until_ready(run.sample(state, batch, run.conditions(batch), rng, **options))
  for i in range(0, count, batch):
    cond = jax.tree.map(lambda x, i=i: x[i:i + batch], conditions) if conditions is not None else None
    start = time.perf_counter()
    images = jax.block_until_ready(run.sample(state, batch, cond, jax.random.fold_in(rng, i), **options))
    times.append(time.perf_counter() - start)
    out.append(np.round(np.asarray(images) * 255).astype(np.uint8))
  return np.concatenate(out)[:count], 1000 * statistics.median(times[1:] if count > batch else times) / batch


def fid_kid(scorer: SampleScorer, samples: np.ndarray) -> dict:
  """FID and KID (with its standard deviation over subsets) of uint8 samples (default mode)."""
  from genjax.metrics.fid import frechet_distance
  from genjax.metrics.kid import kernel_inception_distance
  feats = scorer.features(samples, "default")
  kid, kid_std = kernel_inception_distance(feats, scorer.reference,
                                           subset_size=min(1000, len(feats) // 2, len(scorer.reference) // 2))
  return {"FID": float(frechet_distance(*scorer._moments(feats), *scorer.reference_moments)),
          "KID": float(kid), "KID std": float(kid_std), "samples": int(len(samples))}


def train_step_flops(run: Run) -> float:
  """XLA's FLOP count of the run's training step as the loop builds it (frozen stages' forward
  passes included), from the step lowered on the state's shapes: nothing is initialised, run or
  compiled (XLA's count of the HLO before its optimisations)."""
  from benchmarks.train_step import xla_flops
  from genjax.train import sharding, steps
  state = run.abstract_state()
  batch = run.first_train_batch()
  collection = steps.averages(steps.train_metric_names(run.family, state, batch, run.frozen))
  step = steps.make_train_step(run.family, run.config.ema_decay, collection, run.mesh,
                               state_sharding=sharding.shardings_of(state))
  return xla_flops(step.lower(state, steps.empty_accumulator(collection, run.mesh), batch, run.frozen))
