"""Dataset names, metadata, preparation, and random-access readers of a split.

Three kinds of dataset:
  * genjax's own (`KNOWN_DATASETS`), built offline from files that pip/apt
    install, by the tfds builders in `builders.py` (registered as `genjax_*`);
  * any other tfds dataset the user has prepared in array_record format;
  * `captioned_folder:PATH`, images + metadata.jsonl read directly
    (`captioned_folder.py`).

A split is read through a `SplitReader`: `read(indices)` returns a dict of
numpy arrays: "image" uint8[k,H,W,C], "label" int32[k], "caption" (object
array of str; datasets with captions only) and each fixed-shape integer
feature under its own name. Small splits are decoded once into memory (see
`CACHE_MAX_BYTES`), since per-example PNG decoding costs ~100 us.
"""

import collections
import contextlib
import dataclasses
import logging
import math
import os
import tempfile
import threading

import numpy as np

from genjax.data import captioned_folder
from genjax.errors import DatasetError

KNOWN_DATASETS = ("mnist5k", "fashion_mnist", "scenes", "scenes32")
# User-facing name -> builder class name in builders.py.
_LOCAL_BUILDERS = {"mnist5k": "GenjaxMnist5k", "fashion_mnist": "GenjaxFashionMnist",
                   "scenes": "GenjaxScenes", "scenes32": "GenjaxScenes32"}
# Text features read as "caption", in order of preference.
CAPTION_FEATURES = ("caption", "text")

# Splits whose decoded images fit in this many bytes are decoded once, on first
# use, and then served from memory (per process). Larger splits decode per batch.
CACHE_MAX_BYTES = 1 << 30

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  image_shape: tuple[int, int, int]  # (H, W, C), C == 1 for grayscale
  num_classes: int  # 0 when unlabeled
  split_sizes: dict[str, int]
  has_captions: bool = False  # read() then gives "caption": object array of str
  # Fixed-shape integer features read() also gives: name -> (shape, numpy dtype name).
  extra_features: dict[str, tuple[tuple[int, ...], str]] = dataclasses.field(default_factory=dict)


def _folder_info(name):
  folder = captioned_folder.load(name)
  return DatasetInfo(name=name, image_shape=folder.image_shape, num_classes=0,
                     split_sizes=folder.split_sizes, has_captions=True)


def default_data_dir() -> str:
  """`$GENJAX_DATA_DIR` if set, else `~/tensorflow_datasets`."""
  return os.environ.get("GENJAX_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _data_dir(data_dir):
  path = os.path.expanduser(os.fspath(data_dir)) if data_dir else default_data_dir()
  return path if "://" in path else os.path.abspath(path)


def _local_builder_cls(name):
  from genjax.data import builders  # pylint: disable=import-outside-toplevel
  return getattr(builders, _LOCAL_BUILDERS[name])


def _is_prepared(builder):
  # Checking existence first spares a tfds warning about the missing folder.
  return builder.data_path.exists() and builder.is_prepared()


def _catalogue_builder(name, data_dir):
  """A prepared tfds builder for a non-genjax dataset, or a DatasetError."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  unknown = (f"unknown dataset {name!r}: genjax builds {', '.join(KNOWN_DATASETS)} offline and reads "
             f"{captioned_folder.PREFIX}PATH folders; any other name must be a tfds dataset "
             f"prepared in array_record format under data_dir ({data_dir})")
  if name.startswith("genjax_"):  # Internal tfds names of KNOWN_DATASETS.
    raise DatasetError(unknown)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise DatasetError(unknown) from None
  except Exception as e:  # pylint: disable=broad-except
    raise DatasetError(f"tfds could not open dataset {name!r} in {data_dir}: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}") from e
  if not _is_prepared(builder):
    raise DatasetError(
        f"dataset {name!r} is not prepared in {data_dir}; prepare it once with `tfds build {name} "
        f"--file_format=array_record --data_dir={data_dir}` (this needs TensorFlow: pip install "
        f"tensorflow), or pass data_dir / set $GENJAX_DATA_DIR to where it is prepared")
  formats = builder.info.available_file_formats()
  if not formats & tfds.core.FileFormat.with_random_access():
    raise DatasetError(
        f"dataset {name!r} in {data_dir} is stored as {builder.info.file_format.value}, but genjax "
        f"reads array_record; rebuild it with `tfds build {name} --file_format=array_record "
        f"--data_dir={data_dir}` (needs TensorFlow)")
  return builder


def _info_from_builder(name, builder):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  features = builder.info.features
  image = features["image"] if "image" in features else None
  if not isinstance(image, tfds.features.Image):
    raise DatasetError(f"dataset {name!r} has no Image feature named 'image'; genjax needs one")
  if image.np_dtype != np.uint8:
    raise DatasetError(f"dataset {name!r} has {image.np_dtype} images; genjax reads uint8 images")
  shape = tuple(image.shape)
  if len(shape) != 3 or any(d is None for d in shape):
    raise DatasetError(f"dataset {name!r} has images of variable shape {shape}; genjax needs a "
                       f"fixed (H, W, C) shape, so prepare a resized variant of it")
  label = features["label"] if "label" in features else None
  num_classes = label.num_classes if isinstance(label, tfds.features.ClassLabel) else 0
  splits = {s: int(info.num_examples) for s, info in builder.info.splits.items()}
  caption_key = _caption_feature(features)
  extra = {}
  for key, feature in features.items():
    if key in ("image", "label", caption_key) or not isinstance(feature, tfds.features.Tensor):
      continue
    dtype = np.dtype(feature.np_dtype)
    if np.issubdtype(dtype, np.integer) and all(d is not None for d in feature.shape):
      extra[key] = (tuple(feature.shape), dtype.name)
  return DatasetInfo(name=name, image_shape=shape, num_classes=num_classes, split_sizes=splits,
                     has_captions=caption_key is not None, extra_features=extra)


def _caption_feature(features):
  """The name of the Text feature read as "caption", or None."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return next((k for k in CAPTION_FEATURES
               if k in features and isinstance(features[k], tfds.features.Text)), None)


def dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
  """Shape, classes, split sizes and features. Known datasets need not be built yet."""
  if captioned_folder.is_captioned_folder(name):
    return _folder_info(name)
  if name in _LOCAL_BUILDERS:
    cls = _local_builder_cls(name)
    return DatasetInfo(name=name, image_shape=tuple(cls.IMAGE_SHAPE), num_classes=cls.NUM_CLASSES,
                       split_sizes=dict(cls.SPLIT_SIZES), has_captions=cls.HAS_CAPTIONS,
                       extra_features=dict(cls.EXTRA_FEATURES))
  return _info_from_builder(name, _catalogue_builder(name, _data_dir(data_dir)))


@contextlib.contextmanager
def _build_lock(data_dir, builder_name):
  """Serialises builds of one dataset across processes on one filesystem."""
  if "://" in data_dir:  # Cloud paths: no flock; tfds' temp-dir-then-rename still applies.
    yield
    return
  import fcntl  # pylint: disable=import-outside-toplevel
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f".{builder_name}.genjax-lock"), "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _prepared_builder(name, data_dir):
  """The prepared tfds builder for `name`, building a known dataset if needed."""
  if name not in _LOCAL_BUILDERS:
    return _catalogue_builder(name, data_dir)
  cls = _local_builder_cls(name)
  builder = cls(data_dir=data_dir)
  if _is_prepared(builder):
    return builder
  with _build_lock(data_dir, cls.name):
    builder = cls(data_dir=data_dir)  # Another process may have built it meanwhile.
    if not _is_prepared(builder):
      cls.check_sources()  # Clean DatasetError before tfds starts writing.
      _log.info("genjax: building %s into %s", name, data_dir)
      with tempfile.TemporaryDirectory(prefix="genjax-tfds-downloads-") as downloads:
        builder.download_and_prepare(file_format="array_record", download_dir=downloads)
      builder = cls(data_dir=data_dir)
  return builder


def prepare(name: str, data_dir: str | None = None) -> DatasetInfo:
  """Builds a known dataset if not built yet (idempotent, safe to race); for
  other names checks that they are prepared (a captioned folder: reads it
  whole). Returns the dataset's info."""
  if captioned_folder.is_captioned_folder(name):
    return _folder_info(name)
  return _info_from_builder(name, _prepared_builder(name, _data_dir(data_dir)))


class SplitReader:
  """Random access to one split: `read(indices)` -> {"image": uint8[k,H,W,C], "label": int32[k],
  "caption": object[k] of str (captioned datasets only), extra feature: [k, *shape]}."""

  def __init__(self, name, split, num_examples, image_shape):
    self.name, self.split = name, split
    self.num_examples, self.image_shape = num_examples, image_shape

  def __len__(self):
    return self.num_examples

  def read(self, indices):
    raise NotImplementedError


def _text(value):
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class _TfdsReader(SplitReader):
  """Decodes each example's PNG/JPEG through tfds on every read."""

  def __init__(self, name, split, source, info, caption_key):
    super().__init__(name, split, len(source), info.image_shape)
    self._source, self._caption_key = source, caption_key
    self._extra = info.extra_features

  def read(self, indices):
    examples = self._source.__getitems__([int(i) for i in indices])
    k = len(examples)
    out = {"image": np.empty((k,) + self.image_shape, np.uint8), "label": np.zeros((k,), np.int32)}
    if self._caption_key:
      out["caption"] = np.empty((k,), object)
    for name, (shape, dtype) in self._extra.items():
      out[name] = np.empty((k,) + tuple(shape), dtype)
    for j, ex in enumerate(examples):
      out["image"][j] = np.asarray(ex["image"]).reshape(self.image_shape)
      out["label"][j] = ex.get("label", 0)
      if self._caption_key:
        out["caption"][j] = _text(ex[self._caption_key])
      for name in self._extra:
        out[name][j] = ex[name]
    return out


class _ArrayReader(SplitReader):
  """Serves a split held in memory: {name: array[N, ...]} as `read` returns it."""

  def __init__(self, name, split, arrays):
    super().__init__(name, split, len(arrays["image"]), tuple(arrays["image"].shape[1:]))
    self._arrays = arrays

  def read(self, indices):
    indices = np.asarray(indices, np.int64)
    return {k: v[indices] for k, v in self._arrays.items()}


_decoded = collections.OrderedDict()  # (data path, split) -> _ArrayReader; tiny LRU
_decoded_lock = threading.Lock()
_DECODED_MAX_ENTRIES = 4


def _decode_all(reader, chunk=1024):
  n = reader.num_examples
  first = reader.read(np.arange(min(chunk, n)))
  arrays = {k: np.empty((n,) + v.shape[1:], v.dtype) for k, v in first.items()}
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    batch = first if start == 0 else reader.read(np.arange(start, stop))
    for k, v in batch.items():
      arrays[k][start:stop] = v
  return _ArrayReader(reader.name, reader.split, arrays)


def open_split(name, split, data_dir=None, cache=None) -> SplitReader:
  """A reader of `split` of dataset `name`, building a known dataset if needed.

  cache: True decodes the whole split into memory once per process (kept for
  the 4 most recent splits), False decodes per read, None (default) caches when
  the decoded split needs at most CACHE_MAX_BYTES. A captioned folder is
  always held in memory.
  """
  if captioned_folder.is_captioned_folder(name):
    return _ArrayReader(name, split, captioned_folder.load(name).split_arrays(split))
  data_dir = _data_dir(data_dir)
  builder = _prepared_builder(name, data_dir)
  info = _info_from_builder(name, builder)
  key = (os.fspath(builder.data_path), split)
  with _decoded_lock:
    if cache is not False and key in _decoded:
      _decoded.move_to_end(key)
      return _decoded[key]
  try:
    source = builder.as_data_source(split=split)
  except (KeyError, ValueError) as e:
    raise DatasetError(f"dataset {name!r} has no split {split!r} (it has {', '.join(info.split_sizes)}): "
                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
  reader = _TfdsReader(name, split, source, info, _caption_feature(builder.info.features))
  if cache is None:
    cache = reader.num_examples * math.prod(info.image_shape) <= CACHE_MAX_BYTES
  if not cache:
    return reader
  with _decoded_lock:  # Held while decoding so that threads do not decode twice.
    if key not in _decoded:
      _log.info("genjax: decoding %s[%s] into memory (%d examples)", name, split, len(reader))
      _decoded[key] = _decode_all(reader)
      while len(_decoded) > _DECODED_MAX_ENTRIES:
        _decoded.popitem(last=False)
    return _decoded[key]
