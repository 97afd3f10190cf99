"""`captioned_folder:PATH`: a folder of images with captions, read directly (no tfds build).

PATH holds images and a `metadata.jsonl` with one JSON object per line, `{"file_name": ...,
"text": ...}` (Hugging Face's image-folder convention); file_name is relative to PATH. An optional
`split` column assigns rows to splits; without it a row goes to "test" when the sha256 of its
file_name falls in a fixed 10% (so several captions of one image stay in one split) and to
"train" otherwise. Other columns are ignored.

The whole folder is decoded into memory once per process (kept for the 4 most recent folders,
refreshed when metadata.jsonl changes): it is meant for small caption sets. Every image must have
the same size; if any image is colour, grayscale ones are repeated into RGB. A bad row raises a
DatasetError naming its line number and file.
"""

import collections
import dataclasses
import hashlib
import json
import os
import threading

import numpy as np
from PIL import Image

from genjax.errors import DatasetError

PREFIX = "captioned_folder:"
METADATA = "metadata.jsonl"
TEST_PERCENT = 10
_GRAY_MODES = ("1", "L", "LA")
_COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


def is_captioned_folder(name: str) -> bool:
  return name.startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class CaptionedFolder:
  path: str
  image_shape: tuple[int, int, int]
  splits: dict  # split -> {"image": uint8[n,H,W,C], "label": int32[n] zeros, "caption": object[n]}

  @property
  def split_sizes(self) -> dict[str, int]:
    return {s: len(a["image"]) for s, a in self.splits.items()}

  def split_arrays(self, split: str) -> dict:
    if split not in self.splits:
      raise DatasetError(f"{PREFIX}{self.path} has no split {split!r} (it has "
                         f"{', '.join(sorted(self.splits))})")
    if not len(self.splits[split]["image"]):
      raise DatasetError(f"split {split!r} of {PREFIX}{self.path} is empty")
    return self.splits[split]


_loaded = collections.OrderedDict()  # (path, metadata mtime, size) -> CaptionedFolder
_loaded_lock = threading.Lock()


def load(name: str) -> CaptionedFolder:
  """The folder named by `captioned_folder:PATH`, decoded (once) into memory."""
  path = os.path.abspath(os.path.expanduser(name[len(PREFIX):]))
  if not name[len(PREFIX):]:
    raise DatasetError(f"{name!r}: give the folder after the colon, e.g. {PREFIX}/data/my_captions")
  if not os.path.isdir(path):
    raise DatasetError(f"{name!r}: {path} is not a folder")
  metadata = os.path.join(path, METADATA)
  if not os.path.isfile(metadata):
    raise DatasetError(f"{name!r}: {metadata} not found; it needs one JSON object per line: "
                       f'{{"file_name": "a.png", "text": "a caption"}}')
  stat = os.stat(metadata)
  key = (path, stat.st_mtime_ns, stat.st_size)
  with _loaded_lock:  # Held while decoding so that threads do not decode twice.
    if key not in _loaded:
      _loaded[key] = _decode(path, metadata)
      while len(_loaded) > 4:
        _loaded.popitem(last=False)
    _loaded.move_to_end(key)
    return _loaded[key]


def read_metadata(metadata):
  """[(line number, file_name, text, split or None)], checked."""
  rows = []
  with open(metadata, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{metadata} row {line_no}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
      if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
      file_name = row.get("file_name")
      if not isinstance(file_name, str) or not file_name:
        raise DatasetError(f"{where}: needs a non-empty string 'file_name'")
      text = row.get("text")
      if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{where} ({file_name}): the caption 'text' is missing or empty")
      split = row.get("split")
      if split is not None and (not isinstance(split, str) or not split.isidentifier()):
        raise DatasetError(f"{where} ({file_name}): 'split' must be a name like train or test, "
                           f"got {split!r}")
      rows.append((line_no, file_name, text, split))
  if not rows:
    raise DatasetError(f"{metadata} has no rows")
  with_split = [r[3] is not None for r in rows]
  if any(with_split) and not all(with_split):
    line_no, file_name, _, _ = rows[with_split.index(False)]
    raise DatasetError(f"{metadata} row {line_no} ({file_name}): no 'split', but other rows have "
                       f"one; give every row a split or none")
  return rows


def _hash_split(file_name):
  digest = hashlib.sha256(file_name.encode("utf-8")).digest()
  return "test" if int.from_bytes(digest[:8], "big") % 100 < TEST_PERCENT else "train"


def _read_image(path, where):
  if not os.path.isfile(path):
    raise DatasetError(f"{where}: image file {path} not found")
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode in _GRAY_MODES:
        return np.asarray(im.convert("L"))[..., None]
      if im.mode in _COLOUR_MODES:
        return np.asarray(im.convert("RGB"))
      raise DatasetError(f"{where}: {path} has pixel mode {im.mode}; genjax reads 8-bit "
                         f"grayscale or colour images")
  except DatasetError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many kinds on bad files.
    raise DatasetError(f"{where}: cannot read image {path}: {type(e).__name__}: {e}") from None


def _decode(path, metadata):
  rows = read_metadata(metadata)
  images = {}  # file_name -> array; several captions may share an image
  first = None  # (file, H, W) every image must match
  for line_no, file_name, _, _ in rows:
    if file_name in images:
      continue
    where = f"{metadata} row {line_no}"
    image = _read_image(os.path.join(path, file_name), where)
    if first is None:
      first = (file_name, image.shape[:2])
    elif image.shape[:2] != first[1]:
      raise DatasetError(f"{where}: {file_name} is {image.shape[1]}x{image.shape[0]} (WxH) but "
                         f"{first[0]} is {first[1][1]}x{first[1][0]}; every image of a captioned "
                         f"folder must have the same size, so resize them first")
    images[file_name] = image
  channels = max(im.shape[-1] for im in images.values())
  by_split = collections.defaultdict(list)
  for _, file_name, text, split in rows:
    by_split[split or _hash_split(file_name)].append((file_name, text))
  if all(r[3] is None for r in rows):
    by_split.setdefault("train", [])
    by_split.setdefault("test", [])
  splits = {}
  for split, items in by_split.items():
    stacked = np.empty((len(items),) + first[1] + (channels,), np.uint8)
    for i, (file_name, _) in enumerate(items):
      stacked[i] = images[file_name]  # broadcasts grayscale into RGB when channels == 3
    splits[split] = {"image": stacked, "label": np.zeros(len(items), np.int32),
                     "caption": np.array([text for _, text in items], object)}
  return CaptionedFolder(path=path, image_shape=first[1] + (channels,), splits=splits)
