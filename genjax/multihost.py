"""What several processes (hosts) must agree on, and how host-side data moves between them.

genjax runs one process per host (JAX's multi-controller runtime): every process executes
the same program, so any host-side decision that changes how many collective calls follow
(evaluate now? stop now? is the cache valid?) must be the same on all of them, or they hang.
The rules used throughout:
  * files are written by the main process (process 0) only, unless named per process;
  * a decision read from the file system is taken by process 0 and broadcast (`broadcast`),
    because hosts need not share a disk;
  * host arrays travel bit for bit: 64-bit values are sent as pairs of uint32, since JAX
    (without x64) would silently round float64 to float32.
With one process every function here returns its input unchanged, at no cost.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import jax
import numpy as np

T = TypeVar("T")


def is_main() -> bool:
  return jax.process_index() == 0


def say(message: str) -> None:
  """Prints on the main process only (one line per run, not one per host)."""
  if is_main():
    print(message, flush=True)


def main_first(fn: Callable[[], T], name: str) -> T:
  """fn() on process 0, then on the others: for work that fills a cache several processes may
  share (building a dataset in a shared data_dir), so they do not race to write it. On hosts
  with their own disks the others then build their own copy."""
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  out = fn() if is_main() else None
  multihost_utils.sync_global_devices(f"genjax:{name}")
  return out if is_main() else fn()


def _as_words(x: np.ndarray) -> tuple[np.ndarray, np.dtype, tuple]:
  """A host array as uint32 words (exact for any dtype whose size is a multiple of 4 bytes)."""
  x = np.ascontiguousarray(x)
  if x.dtype == bool or x.dtype.itemsize < 4:
    x = x.astype(np.int32)
  return x.reshape(-1).view(np.uint32), x.dtype, x.shape


def broadcast(tree):
  """Process 0's value of a pytree of host arrays / numbers, on every process, bit for bit."""
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  leaves, treedef = jax.tree.flatten(tree)
  out = []
  for leaf in leaves:
    words, dtype, shape = _as_words(np.asarray(leaf))
    got = np.asarray(multihost_utils.broadcast_one_to_all(words)).view(dtype).reshape(shape)
    out.append(got if isinstance(leaf, np.ndarray) else got.item())
  return jax.tree.unflatten(treedef, out)


def gather_rows(x: np.ndarray) -> np.ndarray:
  """The concatenation, in process order, of every process's host array `x` (rows may
  differ in number between processes; the other dimensions must match)."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  counts = np.asarray(multihost_utils.process_allgather(np.asarray([len(x)], np.int32))).reshape(-1)
  padded = np.zeros((int(counts.max()),) + x.shape[1:], x.dtype)
  padded[:len(x)] = x
  words, dtype, shape = _as_words(padded)
  gathered = np.asarray(multihost_utils.process_allgather(words)).reshape(len(counts), -1)
  parts = [g.view(dtype).reshape(shape)[:n] for g, n in zip(gathered, counts)]
  return np.concatenate(parts)


def gather_in_order(rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
  """Every process's `rows`, one array on every process, ordered by their int64 `keys`
  (e.g. global sample indices): the order one process would have produced them in."""
  order = np.argsort(gather_rows(np.asarray(keys, np.int64)), kind="stable")
  return gather_rows(rows)[order]


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any of them."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(gather_rows(np.asarray([int(bool(flag))], np.int32)).max())


def local_rows(images: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  """(rows, global row indices) of a global array that this process is responsible for.

  A batch-sharded array: the rows on this process's devices (each row on exactly one
  process). A fully replicated array: a contiguous 1/N share per process, so that work
  done per row (e.g. FID features) is still done exactly once across hosts.
  """
  n = images.shape[0]
  if images.is_fully_replicated:
    p, count = jax.process_index(), jax.process_count()
    lo, hi = p * n // count, (p + 1) * n // count
    data = images.addressable_data(0)
    return np.asarray(data[lo:hi]), np.arange(lo, hi)
  starts = {}
  for shard in images.addressable_shards:
    index = shard.index[0]
    start = 0 if index.start is None else index.start
    starts.setdefault(start, shard)  # replicas of a row on several local devices: once
  rows = [np.asarray(starts[s].data) for s in sorted(starts)]
  indices = [np.arange(s, s + len(r)) for s, r in zip(sorted(starts), rows)]
  return np.concatenate(rows), np.concatenate(indices)
