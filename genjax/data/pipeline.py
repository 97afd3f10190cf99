"""grain pipelines: an infinite, checkpointable training stream and finite eval batches.

Training order. All processes share one stream of example indices: epoch e is
a permutation of the split drawn from (seed, e). Process p of n takes stream
positions p, p + n, p + 2n, ... and groups them into batches. Hence within an
epoch processes read disjoint examples that together cover the split, each
epoch is shuffled afresh, and every process is always at the same batch
number, so one saved iterator state serves every process.

The permutation is computed with numpy for a whole epoch at once (a few ms for
100k examples) instead of grain's per-element `shuffle`, which costs ~20 us
per example. grain supplies the pipeline: batch k -> indices -> decoded batch,
optional prefetch threads (order-preserving), and checkpointable position.
"""

import os
import sys
import threading

import numpy as np

from genjax.data import catalog
from genjax.errors import CheckpointError, ConfigError


def _process_defaults(process_index, process_count):
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ConfigError(f"process_index={process_index} must be in [0, process_count={process_count})")
  return int(process_index), int(process_count)


def _grain():
  import grain  # pylint: disable=import-outside-toplevel  # ~1 s; only when a pipeline is built.
  return grain


def _read_options(num_threads, reader):
  if num_threads is None:  # Threads only pay off when batches are decoded on the fly.
    num_threads = 0 if isinstance(reader, catalog._ArrayReader) else min(4, os.cpu_count() or 1)  # pylint: disable=protected-access
  return _grain().ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)


class _ShuffledBatchIndices:
  """Sequence of index batches (length sys.maxsize): item k is process p's batch k.

  Process p takes the p-th contiguous slice of global batch k, so the global batch the
  processes assemble (process 0's rows first, as `make_array_from_process_local_data`
  places them) is row for row the batch one process would read: a run trains on the same
  data in the same order on 1 or N hosts.
  """

  def __init__(self, num_examples, batch_size, seed, process_index, process_count):
    self._n, self._batch = num_examples, batch_size
    self._seed = int(seed) % (1 << 64)
    self._p, self._count = process_index, process_count
    self._perms = {}  # epoch -> permutation; the two most recent epochs
    self._lock = threading.Lock()

  def __len__(self):
    return sys.maxsize

  def _permutation(self, epoch):
    with self._lock:
      if epoch not in self._perms:
        self._perms[epoch] = np.random.default_rng([self._seed, epoch]).permutation(self._n)
        while len(self._perms) > 2:
          del self._perms[min(self._perms)]
      return self._perms[epoch]

  def __getitem__(self, k):
    positions = (k * self._count + self._p) * self._batch + np.arange(self._batch, dtype=np.int64)
    epochs, offsets = np.divmod(positions, self._n)
    indices = np.empty_like(positions)
    for epoch in np.unique(epochs):
      sel = epochs == epoch
      indices[sel] = self._permutation(int(epoch))[offsets[sel]]
    return indices


class _GrainIterator:
  """An iterator over a grain dataset iterator `self._it`, closable (`with` or `close()`)
  so its prefetch threads end with the run."""

  def __iter__(self):
    return self

  def __next__(self):
    return next(self._it)

  def close(self):
    self._it.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class TrainIterator(_GrainIterator):
  """Infinite iterator of {"image": uint8[B,H,W,C], "label": int32[B], ...} batches (the dict
  `reader.read` returns: captioned datasets add "caption" and their integer features).

  `get_state()` is a JSON-serialisable dict, identical on every process at the
  same step; `set_state(state)` on a fresh iterator with the same arguments
  continues with exactly the batches the saved one would have produced next.
  """

  def __init__(self, reader, *, batch_size, seed, process_index, process_count, num_threads):
    self.reader = reader
    self._config = {
        "dataset": reader.name, "split": reader.split, "num_examples": reader.num_examples,
        "batch_size": int(batch_size), "seed": int(seed), "process_count": process_count,
    }
    indices = _ShuffledBatchIndices(reader.num_examples, batch_size, seed, process_index, process_count)
    ds = _grain().MapDataset.source(indices).map(self._read)
    self._it = iter(ds.to_iter_dataset(_read_options(num_threads, reader)))

  def _read(self, indices):
    return self.reader.read(indices)

  def get_state(self) -> dict:
    return {"grain": self._it.get_state(), **self._config}

  def set_state(self, state: dict) -> None:
    if not isinstance(state, dict) or "grain" not in state:
      raise CheckpointError(f"not a genjax data-iterator state: {str(state)[:100]}")
    saved = {k: state.get(k) for k in self._config}
    if saved != self._config:
      diff = ", ".join(f"{k}: saved {saved[k]!r} vs now {v!r}" for k, v in self._config.items()
                       if saved[k] != v)
      raise CheckpointError(f"the checkpoint's data-iterator position belongs to a different data "
                            f"pipeline ({diff}); restore with the same data settings, or restore "
                            f"without the iterator state to restart the data order")
    self._it.set_state(state["grain"])


def train_iterator(name: str, *, batch_size: int, seed: int, data_dir: str | None = None,
                   split: str = "train", process_index: int | None = None,
                   process_count: int | None = None, cache: bool | None = None,
                   num_threads: int | None = None) -> TrainIterator:
  """Infinite, deterministic, epoch-reshuffled, per-process training batches.

  batch_size is per process. Builds a known dataset on first use. `cache` and
  the decoded-split cache: see `catalog.open_split`. `num_threads` prefetch
  threads (default: 0 for in-memory splits, else up to 4) keep the order.
  """
  if batch_size <= 0:
    raise ConfigError(f"batch_size must be positive, got {batch_size}")
  process_index, process_count = _process_defaults(process_index, process_count)
  reader = catalog.open_split(name, split, data_dir, cache)
  return TrainIterator(reader, batch_size=batch_size, seed=seed, process_index=process_index,
                       process_count=process_count, num_threads=num_threads)


class EvalBatches(_GrainIterator):
  """Finite iterator of {"image", "label", ..., "mask": float32[B]} batches; len() = batches.

  Global batch k is examples [k * B * N, (k + 1) * B * N) of the split (B per process, N
  processes), and process p reads the p-th slice of it, as for training: the first k batches
  are the same examples on 1 or N hosts. Past the end, rows are zeros with mask 0. Every
  process yields the same number of batches, so collective ops over processes stay in step.
  """

  def __init__(self, reader, *, batch_size, num_batches, process_index, process_count, num_threads):
    n = reader.num_examples
    self._start = process_index * batch_size  # within each global batch
    self._stride = process_count * batch_size
    self._stop = n
    self._reader, self._batch = reader, batch_size
    total = -(-n // self._stride)
    self._len = total if num_batches < 0 else min(num_batches, total)
    ds = _grain().MapDataset.range(self._len).map(self._make_batch)
    self._it = iter(ds.to_iter_dataset(_read_options(num_threads, reader)))

  def _make_batch(self, k):
    lo = min(k * self._stride + self._start, self._stop)
    hi = min(lo + self._batch, self._stop)
    batch = self._reader.read(np.arange(lo, hi))
    pad = self._batch - (hi - lo)
    mask = np.concatenate([np.ones(hi - lo, np.float32), np.zeros(pad, np.float32)])
    if pad:  # Zeros, and "" for captions (object arrays).
      batch = {k: np.concatenate([v, np.full((pad,) + v.shape[1:], "" if v.dtype == object else 0,
                                              v.dtype)]) for k, v in batch.items()}
    return {**batch, "mask": mask}

  def __len__(self):
    return self._len


def eval_batches(name: str, *, batch_size: int, split: str = "test", data_dir: str | None = None,
                 num_batches: int = -1, process_index: int | None = None,
                 process_count: int | None = None, cache: bool | None = None,
                 num_threads: int | None = None) -> EvalBatches:
  """Unshuffled batches of `split` (whole split when num_batches=-1), padded and masked
  so that summing over mask counts every example exactly once across processes."""
  if batch_size <= 0:
    raise ConfigError(f"batch_size must be positive, got {batch_size}")
  process_index, process_count = _process_defaults(process_index, process_count)
  reader = catalog.open_split(name, split, data_dir, cache)
  return EvalBatches(reader, batch_size=batch_size, num_batches=num_batches,
                     process_index=process_index, process_count=process_count,
                     num_threads=num_threads)
