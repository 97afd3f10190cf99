"""FID as a training evaluator: cached reference statistics and a resumable sampling loop.

The training loop builds one `InceptionFeatures` (weights + compiled network) and one
`FIDEvaluator` per configured evaluation, then calls `evaluate(sample_fn, rng, state_path)`
at its eval steps. Nothing here imports the loop: it works on arrays and callables, so
it runs standalone too.

  features = InceptionFeatures(batch_size=64)
  ref = reference_stats("fashion_mnist:test", lambda: test_batches(), cache_path, features)
  evaluator = FIDEvaluator(ref, features, num_samples=10_000, batch_size=64)
  metrics = evaluator.evaluate(lambda key, n: family.sample(ema_params, key, n), key,
                               state_path=workdir / f"fid_state_{step}.npz")
  # -> {"fid": ..., "fid_num_samples": 10000}
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable

import jax
import numpy as np

from genjax import multihost, paths
from genjax.errors import InputError
from genjax.metrics import preprocess
from genjax.metrics.features import InceptionFeatures
from genjax.metrics.fid import (RunningStats, frechet_distance, load_stats, save_stats,
                                warn_if_few_samples)


def reference_stats(name: str, images: Iterable | Callable[[], Iterable], cache_path,
                    features: InceptionFeatures, mode: str = "default",
                    value_range=(0.0, 1.0)) -> dict:
  """Statistics of a dataset split, computed once and stored at `cache_path` (.npz).

  images: an iterable of image batches ([B,H,W(,C)] uint8, or float in value_range),
    or a zero-argument callable returning one, so that nothing is read on a cache hit.
  The cache is reused only if its name, mode and weight hash match; otherwise it is
  recomputed and overwritten. Returns {'mu', 'sigma', 'count', 'mode', 'weights_sha256', 'name'}.

  On several processes every one reads the same batches and computes the features of its
  share (batch k on process k mod N); process 0 checks and writes the cache and sends the
  statistics to the others, so hosts need not share a disk.
  """
  preprocess.check_mode(mode)
  cache_path = Path(cache_path)
  cached = None
  if multihost.is_main() and cache_path.is_file():
    cached = load_stats(cache_path)
    if not (cached.get("name") == name and cached.get("mode") == mode
            and cached.get("weights_sha256") == features.weights_sha256):
      warnings.warn(f"reference statistics {cache_path} are for {cached.get('name')!r}/"
                    f"{cached.get('mode')!r}/{str(cached.get('weights_sha256'))[:8]}; recomputing")
      cached = None
  if multihost.broadcast(np.int32(cached is not None)):
    dim = int(multihost.broadcast(np.int32(len(cached["mu"]) if cached is not None else 0)))
    numbers = ({"mu": cached["mu"], "sigma": cached["sigma"],
                "count": np.asarray(cached.get("count", -1), np.int64)} if cached is not None else
               {"mu": np.zeros(dim), "sigma": np.zeros((dim, dim)), "count": np.zeros((), np.int64)})
    numbers = multihost.broadcast(numbers)
    return {**numbers, "mode": mode, "weights_sha256": features.weights_sha256, "name": name}
  stats = None
  for _, batch in process_share(images() if callable(images) else images):
    feats = features(batch, mode, value_range)
    stats = stats or RunningStats(feats.shape[1])
    stats.update(feats)
  stats = merge_across_processes(stats)
  if stats is None or stats.count < 2:
    raise InputError(f"reference dataset {name!r} yielded fewer than 2 images")
  warn_if_few_samples(stats.count, stats.dim, f"reference set {name!r}")
  mu, sigma = stats.mu_sigma()
  if multihost.is_main():
    save_stats(cache_path, mu, sigma, count=stats.count, mode=mode,
               weights_sha256=features.weights_sha256, name=name)
  return {"mu": mu, "sigma": sigma, "count": np.asarray(stats.count, np.int64), "mode": mode,
          "weights_sha256": features.weights_sha256, "name": name}


def process_share(batches: Iterable) -> Iterable:
  """(k, batch) for the batches of `batches` this process handles: k mod N == process index.
  Every process iterates over the same batches, so each batch is handled exactly once."""
  p, n = jax.process_index(), jax.process_count()
  for k, batch in enumerate(batches):
    if k % n == p:
      yield k, batch


def merge_across_processes(stats: RunningStats | None) -> RunningStats | None:
  """Every process's running sums merged into one (on every process); the identity on one
  process. A process that saw no samples (stats None or empty) contributes nothing."""
  if jax.process_count() == 1:
    return stats
  count = 0 if stats is None else stats.count
  dims = multihost.gather_rows(np.asarray([[count, 0 if stats is None else stats.dim]], np.int64))
  seen = dims[dims[:, 0] > 0]
  if not len(seen):
    return stats
  dim = int(seen[0, 1])
  mine = stats if count else RunningStats(dim)
  state = mine.state_dict()
  gathered = {k: multihost.gather_rows(np.asarray(v)[None]) for k, v in state.items()}
  total = RunningStats(dim)
  for i in range(len(dims)):
    total.merge(RunningStats.from_state_dict({k: g[i] for k, g in gathered.items()}))
  return total


def features_in_order(features: InceptionFeatures, batches: Iterable, mode: str = "default",
                      value_range=(0.0, 1.0)) -> np.ndarray:
  """Features of every image of `batches`, in order, each computed on one process only."""
  keys, feats = [np.zeros(0, np.int64)], []
  for k, batch in process_share(batches):
    out = features(batch, mode, value_range)
    feats.append(out)
    keys.append((np.int64(k) << 32) + np.arange(len(out), dtype=np.int64))
  local = np.concatenate(feats) if feats else None
  dim = multihost.gather_rows(np.asarray([[0 if local is None else local.shape[1]]])).max()
  local = local if local is not None else np.zeros((0, dim), np.float32)
  return multihost.gather_in_order(local, np.concatenate(keys))


def _key_fingerprint(rng) -> str:
  data = np.asarray(jax.random.key_data(rng)) if jax.dtypes.issubdtype(
      getattr(rng, "dtype", None), jax.dtypes.prng_key) else np.asarray(rng)
  return hashlib.sha256(data.tobytes()).hexdigest()[:16]


class FIDEvaluator:
  """FID of `num_samples` model samples against reference statistics; resumable.

  Args:
    reference: dict/npz path with mu and sigma (e.g. from `reference_stats`).
    features: the shared InceptionFeatures.
    num_samples: samples drawn per evaluation; all of them are counted (the last
      sampler call draws a full batch and the surplus is masked out).
    batch_size: samples per `sample_fn` call (default: features.batch_size).
    mode: preprocessing mode; must match the reference's.
    value_range: range of float samples (quantized to uint8 as if saved to PNG).
    checkpoint_every: sampler calls between writes of the resume state.
  """

  def __init__(self, reference, features: InceptionFeatures, *, num_samples: int = 10_000,
               batch_size: int | None = None, mode: str = "default", value_range=(0.0, 1.0),
               checkpoint_every: int = 10):
    if isinstance(reference, (str, os.PathLike)):
      reference = load_stats(reference)
    self.reference = reference
    self.features = features
    self.num_samples = int(num_samples)
    self.batch_size = int(batch_size or features.batch_size)
    self.mode = preprocess.check_mode(mode)
    self.value_range = tuple(value_range)
    self.checkpoint_every = max(int(checkpoint_every), 1)
    if self.num_samples < 2:
      raise InputError("FIDEvaluator needs num_samples >= 2")
    ref_mode = reference.get("mode") if hasattr(reference, "get") else None
    if ref_mode is not None and str(ref_mode) != mode:
      raise InputError(f"reference statistics were computed in mode {ref_mode!r}, "
                       f"the evaluator uses {mode!r}")

  def _fingerprint(self, rng):
    return (f"n={self.num_samples},b={self.batch_size},mode={self.mode},"
            f"w={self.features.weights_sha256[:16]},key={_key_fingerprint(rng)}")

  def evaluate(self, sample_fn: Callable, rng, state_path=None, progress=False,
               indexed: bool = False, keep_features: bool = False) -> dict:
    """sample_fn(key, n) -> n images ([n,H,W(,C)] float in value_range, or uint8); with
    `indexed`, sample_fn(key, n, i) also gets the batch index i (e.g. to draw batch i under
    the conditions of reference images i*n ... i*n + n - 1).

    Batch i uses key fold_in(rng, i), so a resumed run draws the same samples. With
    `state_path`, the running sums and the next batch index are saved there every
    `checkpoint_every` batches and on completion the file is removed; a later call
    with the same arguments continues from it. `keep_features` adds "features": every
    sample's features in order (for KID; a resumed evaluation redraws the batches it skipped).

    On several processes sample_fn returns a global jax.Array that every process calls for;
    each process computes the features of its own rows (`multihost.local_rows`), the running
    sums are merged across processes, and process 0 alone reads and writes `state_path`.
    The result also says how many samples this process computed features of.
    """
    fingerprint = self._fingerprint(rng)
    num_batches = -(-self.num_samples // self.batch_size)
    stats, start = None, 0
    state_path = paths.resolve(state_path) if state_path is not None else None
    if multihost.is_main() and state_path is not None and state_path.is_file():
      with np.load(io.BytesIO(state_path.read_bytes()), allow_pickle=False) as z:
        if str(z["fingerprint"]) == fingerprint:
          stats = RunningStats.from_state_dict({k: z[k] for k in
                                                ("count", "shift", "sum", "sum_outer")})
          start = int(z["next_batch"])
    start = int(multihost.broadcast(np.int64(start)))
    kept_keys, kept = [np.zeros(0, np.int64)], []
    computed = 0
    t0 = time.time()
    for i in range(0 if keep_features else start, num_batches):
      key = jax.random.fold_in(rng, i)
      images = sample_fn(key, self.batch_size, i) if indexed else sample_fn(key, self.batch_size)
      if len(images) < self.batch_size:
        raise InputError(f"sample_fn returned {len(images)} images, asked for {self.batch_size}")
      rows, index = self._rows(images)
      keep = index < min(self.batch_size, self.num_samples - i * self.batch_size)
      rows, index = rows[keep], index[keep]
      if len(rows):
        feats = self.features(rows, self.mode, self.value_range)
        computed += len(feats)
        if i >= start:
          stats = stats or RunningStats(feats.shape[1])
          stats.update(feats)
        if keep_features:
          kept.append(feats)
          kept_keys.append(i * self.batch_size + index)
      done = i + 1
      if (state_path is not None and i >= start and done < num_batches
          and (done - start) % self.checkpoint_every == 0):
        merged = merge_across_processes(stats)
        if multihost.is_main():
          self._save_state(state_path, merged, done, fingerprint)
      if progress and multihost.is_main():
        print(f"fid: batch {done}/{num_batches}, {time.time() - t0:.0f}s", flush=True)
    stats = merge_across_processes(stats)
    warn_if_few_samples(stats.count, stats.dim, "FID evaluation")
    mu, sigma = stats.mu_sigma()
    fid = frechet_distance(mu, sigma, self.reference["mu"], self.reference["sigma"])
    if multihost.is_main() and state_path is not None and state_path.is_file():
      state_path.unlink()
    out = {"fid": fid, "fid_num_samples": stats.count, "features_computed_here": computed}
    if keep_features:
      local = np.concatenate(kept) if kept else np.zeros((0, stats.dim), np.float32)
      out["features"] = multihost.gather_in_order(local.astype(np.float32), np.concatenate(kept_keys))
    return out

  @staticmethod
  def _rows(images) -> tuple[np.ndarray, np.ndarray]:
    """(rows, row indices) of a sampled batch whose features this process computes."""
    if isinstance(images, jax.Array):
      return multihost.local_rows(images)
    images = np.asarray(images)
    return images, np.arange(len(images))

  @staticmethod
  def _save_state(path, stats, next_batch, fingerprint):
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, next_batch=np.asarray(next_batch), fingerprint=np.asarray(fingerprint),
             **stats.state_dict())
    tmp = path.parent / (path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)  # a crash mid-write leaves the previous state, never half a file
