"""fashion_mnist from Debian's dataset-fashion-mnist: the full 60k/10k build (about 30 s)."""

import os

import numpy as np
import pytest

from genjax import data
from genjax.data import catalog
from genjax.data import offline_sources
from genjax.errors import DatasetError

# Where genjax reads it from: $GENJAX_FASHION_MNIST_DIR, else Debian's path. Missing data FAILS
# these tests (never skips them): `make test` installs the package, so CI always has it.
FASHION_DIR = os.environ.get("GENJAX_FASHION_MNIST_DIR") or offline_sources.FASHION_MNIST_DIR


@pytest.fixture(autouse=True)
def _installed():
  if not os.path.isdir(FASHION_DIR):
    pytest.fail(f"Fashion-MNIST is missing at {FASHION_DIR}: `sudo apt-get install "
                f"dataset-fashion-mnist` (make test does it), or set GENJAX_FASHION_MNIST_DIR",
                pytrace=False)


def test_the_data_directory_comes_from_the_environment(tmp_path, monkeypatch):
  for name in os.listdir(FASHION_DIR):
    (tmp_path / name).symlink_to(os.path.join(FASHION_DIR, name))
  monkeypatch.setenv("GENJAX_FASHION_MNIST_DIR", str(tmp_path))
  images, _ = offline_sources.load_fashion_mnist("test")
  assert images.shape == (10000, 28, 28, 1)
  monkeypatch.setenv("GENJAX_FASHION_MNIST_DIR", str(tmp_path / "elsewhere"))
  with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
    offline_sources.load_fashion_mnist("test")


def test_idx_parsing_matches_pinned_files():
  images, labels = offline_sources.load_fashion_mnist("test")
  assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
  assert labels.tolist()[:10] == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]  # the published t10k head


def test_build_and_read(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds_fashion"))
  info = data.prepare("fashion_mnist", data_dir)
  assert info == data.DatasetInfo("fashion_mnist", (28, 28, 1), 10, {"train": 60000, "test": 10000})
  # The local builder, never tfds' catalogue one (which would download).
  assert sorted(os.listdir(data_dir)) == [".genjax_fashion_mnist.genjax-lock", "genjax_fashion_mnist"]
  test = catalog.open_split("fashion_mnist", "test", data_dir, cache=True)
  batch = test.read(np.arange(len(test)))
  images, labels = batch["image"], batch["label"]
  want_images, want_labels = offline_sources.load_fashion_mnist("test")
  got = sorted(zip((im.tobytes() for im in images), labels.tolist()))
  want = sorted(zip((im.tobytes() for im in want_images), want_labels.tolist()))
  assert got == want
  assert np.bincount(labels, minlength=10).tolist() == [1000] * 10
  batch = next(data.train_iterator("fashion_mnist", batch_size=32, seed=0, data_dir=data_dir,
                                   process_index=0, process_count=1, cache=False))
  assert batch["image"].shape == (32, 28, 28, 1) and batch["image"].dtype == np.uint8
  assert batch["label"].dtype == np.int32 and batch["label"].max() < 10
