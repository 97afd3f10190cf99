"""Names outside KNOWN_DATASETS: any tfds dataset the user prepared as array_record.

A tiny RGB, unlabeled tfds builder stands in for e.g. celeb_a (no TensorFlow needed to build it).
"""

import io
import json
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from genjax import data
from genjax.errors import DatasetError


def _png(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


class TinyRgbForTests(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")
  url_infos = None  # See genjax/data/builders.py.

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 6, 3)), "id": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(30), "test": self._generate_examples(7)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": _png(np.full((8, 6, 3), (i, 2 * i, 255 - i), np.uint8)), "id": str(i)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds_catalogue"))
  TinyRgbForTests(data_dir=path).download_and_prepare(
      file_format="array_record", download_dir=str(tmp_path_factory.mktemp("downloads")))
  return path


def test_user_prepared_dataset(data_dir):
  info = data.prepare("tiny_rgb_for_tests", data_dir)
  assert info == data.DatasetInfo("tiny_rgb_for_tests", (8, 6, 3), 0, {"train": 30, "test": 7})
  assert data.dataset_info("tiny_rgb_for_tests", data_dir) == info
  batch = next(data.train_iterator("tiny_rgb_for_tests", batch_size=4, seed=0, data_dir=data_dir,
                                   process_index=0, process_count=1, cache=False))
  assert batch["image"].shape == (4, 8, 6, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].tolist() == [0, 0, 0, 0]  # unlabeled
  red = batch["image"][:, 0, 0, 0]
  assert np.array_equal(batch["image"][:, 0, 0, 2], 255 - red)
  batches = list(data.eval_batches("tiny_rgb_for_tests", batch_size=4, data_dir=data_dir,
                                   process_index=0, process_count=1))
  assert len(batches) == 2 and sum(b["mask"].sum() for b in batches) == 7


def test_tfrecord_dataset_is_refused(data_dir, tmp_path):
  """A dataset prepared as tfrecord (tfds' default) cannot be read randomly: say how to rebuild."""
  shutil.copytree(data_dir, tmp_path, dirs_exist_ok=True)
  info_path = tmp_path / "tiny_rgb_for_tests" / "1.0.0" / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["fileFormat"] = "tfrecord"
  info_path.write_text(json.dumps(info))
  with pytest.raises(DatasetError, match="stored as tfrecord.*--file_format=array_record"):
    data.prepare("tiny_rgb_for_tests", str(tmp_path))
