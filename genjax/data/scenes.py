"""`scenes`: captioned RGB scenes of real Fashion-MNIST items and MNIST digits, made offline.

No image+caption dataset installs without internet, and a text-to-image model is best judged on
captions whose every word can be checked in the generated image. So each scene places 1-3 real
grayscale items (10 Fashion-MNIST classes + 10 mnist5k digit classes), each tinted with a named
colour, in distinct cells of a 3x3 grid on black, and its caption states every item's class,
colour and cell (and, half of the time, its size). See docs/data.md for the full specification.

Generation has two steps, so that facts about a whole split are cheap to check:
  1. `sample_layouts(split)`: every random choice (items, colours, cells, sizes, caption wording)
     as integer arrays, no pixels; the 60,000 train scenes take well under a second.
  2. `render(layouts, split)` and `captions(layouts)`: pure functions of those arrays.
Scenes are drawn in fixed chunks, each from its own seed, so the first n scenes of a split are
the same whatever its size (tests build small prefixes of the real splits) and a split always
regenerates bit-identically (numpy and Pillow are pinned in requirements.txt).

A caption's stated attributes come from the stored record (`stated_attributes`), never from
parsing; `parse_caption` exists to prove the grammar is unambiguous and to score free prompts.
"""

import functools
import math
import re

import numpy as np
from PIL import Image

from genjax.data import offline_sources

RESOLUTION = 64
MAX_OBJECTS = 3

# A 3x3 grid of 20-px cells with 2-px gutters. Every cell edge and every item offset and size is
# even, so halving the resolution (scenes32) maps each item onto whole pixels: items that do not
# overlap at 64x64 do not share a pixel at 32x32 either.
CELL_SIZE = 20
CELL_ORIGINS = (0, 22, 44)
ROW_NAMES = ("top", "middle", "bottom")
COLUMN_NAMES = ("left", "centre", "right")
SIZE_NAMES = ("small", "large")
SIZE_PIXELS = (14, 20)  # the item's longer side; a large item fills its cell

FASHION_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                 "bag", "ankle boot")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CLASS_NAMES = FASHION_NAMES + tuple(f"digit {w}" for w in DIGIT_WORDS)  # classes 10-19: digits 0-9
NUM_CLASSES = len(CLASS_NAMES)

# Colour name -> RGB. An item's gray level g becomes round(g * RGB / 255).
PALETTE = {
    "red": (235, 40, 40),
    "orange": (255, 145, 20),
    "yellow": (245, 225, 30),
    "green": (40, 200, 60),
    "cyan": (30, 215, 230),
    "blue": (50, 90, 255),
    "purple": (165, 70, 245),
    "white": (255, 255, 255),
}
COLOUR_NAMES = tuple(PALETTE)
_PALETTE_RGB = np.array(list(PALETTE.values()), np.uint32)

# The words of captions. Every phrase names exactly one value, so a caption parses back.
# Training vocabulary (all splits except heldout_words); the first entry is the class name.
CLASS_WORDS = (
    ("t-shirt",), ("trouser",), ("pullover", "sweater"), ("dress",), ("coat", "jacket"),
    ("sandal",), ("shirt",), ("sneaker", "trainer"), ("bag", "handbag"), ("ankle boot", "boot"),
) + tuple((f"digit {w}", f"number {w}", f"digit {d}") for d, w in enumerate(DIGIT_WORDS))
SIZE_WORDS = (("small", "little"), ("large", "big"))
# Synonyms that appear only in the heldout_words split: there every colour, every class and every
# stated size is worded with these, so each caption holds words no training caption contains.
HELDOUT_COLOUR_WORDS = ("crimson", "tangerine", "golden", "emerald", "turquoise", "azure", "violet",
                        "ivory")
HELDOUT_CLASS_WORDS = ("tee", "legging", "jumper", "gown", "parka", "flip-flop", "blouse",
                       "running shoe", "purse", "bootie") + tuple(f"numeral {w}" for w in DIGIT_WORDS)
HELDOUT_SIZE_WORDS = ("tiny", "huge")

# (row, column) -> (phrase after the object, label before a colon).
POSITION_PHRASES = {
    (0, 0): ("in the top left", "top left"), (0, 1): ("at the top", "top"),
    (0, 2): ("in the top right", "top right"), (1, 0): ("on the left", "left"),
    (1, 1): ("in the centre", "centre"), (1, 2): ("on the right", "right"),
    (2, 0): ("in the bottom left", "bottom left"), (2, 1): ("at the bottom", "bottom"),
    (2, 2): ("in the bottom right", "bottom right"),
}

# Colour-class pairs seen only in the heldout_combos split (never in any other split's images or
# captions): one colour per class, 20 of the 160 pairs, each colour held out for 2-3 classes.
HELDOUT_COMBOS = (
    ("t-shirt", "orange"), ("trouser", "cyan"), ("pullover", "white"), ("dress", "yellow"),
    ("coat", "blue"), ("sandal", "red"), ("shirt", "green"), ("sneaker", "purple"),
    ("bag", "orange"), ("ankle boot", "cyan"), ("digit zero", "white"), ("digit one", "yellow"),
    ("digit two", "blue"), ("digit three", "red"), ("digit four", "green"),
    ("digit five", "purple"), ("digit six", "orange"), ("digit seven", "cyan"),
    ("digit eight", "white"), ("digit nine", "yellow"),
)
_HELDOUT_COLOUR = np.array([COLOUR_NAMES.index(c) for _, c in HELDOUT_COMBOS])
assert tuple(k for k, _ in HELDOUT_COMBOS) == CLASS_NAMES

# Splits. Tests shrink them with monkeypatch.setitem; the builders read this same dict.
SPLIT_SIZES = {"train": 60000, "validation": 2000, "test": 10000, "heldout_combos": 2000,
               "heldout_words": 2000}
# split -> (seed, split of Fashion-MNIST / mnist5k the items come from)
_SPLIT_SEEDS = {"train": (0, "train"), "validation": (1, "train"), "test": (2, "test"),
                "heldout_combos": (3, "test"), "heldout_words": (4, "test")}
_SEED = 20261129
_CHUNK = 1000
NUM_OBJECTS_PROBS = (0.4, 0.3, 0.3)  # 1, 2, 3 objects: the test split has ~4,000 single-object scenes
SINGLE_OBJECT_EVAL_COUNT = 1000

# Per-scene arrays stored in the datasets next to image and caption; slots past num_objects hold -1.
# stated_size is the size as the caption states it: -1 where the caption leaves it out.
RECORD_FEATURES = {
    "num_objects": (), "object_class": (MAX_OBJECTS,), "object_colour": (MAX_OBJECTS,),
    "object_row": (MAX_OBJECTS,), "object_column": (MAX_OBJECTS,), "object_size": (MAX_OBJECTS,),
    "stated_size": (MAX_OBJECTS,),
}
_NUM_TEMPLATES = 4


# --- sources -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _sources(source_split):
  """(fashion images uint8[N,28,28], fashion labels, mnist5k images uint8[5000,28,28], rows of the
  split, their digit labels). Digits are addressed by mnist5k file row, fashion items by index."""
  fashion, fashion_labels = offline_sources.load_fashion_mnist(source_split)
  digits, digit_labels = _mnist5k()
  rows = offline_sources.mnist5k_split_indices()[source_split]
  return fashion[..., 0], fashion_labels, digits, rows, digit_labels[rows]


@functools.lru_cache(maxsize=1)
def _mnist5k():
  images, labels = offline_sources.load_mnist5k()
  return images[..., 0], labels


def check_sources():
  offline_sources.check_fashion_mnist_files()
  offline_sources.check_mnist5k_file()


@functools.lru_cache(maxsize=2)
def _candidates(source_split):
  """(table int64[20, max], counts[20]): the source indices of each class, padded with -1."""
  _, fashion_labels, _, rows, digit_labels = _sources(source_split)
  per_class = [np.flatnonzero(fashion_labels == c) for c in range(10)]
  per_class += [rows[digit_labels == d] for d in range(10)]
  counts = np.array([len(p) for p in per_class])
  table = np.full((NUM_CLASSES, counts.max()), -1, np.int64)
  for c, p in enumerate(per_class):
    table[c, :len(p)] = p
  return table, counts


# --- step 1: layouts -------------------------------------------------------------------------------

def sample_layouts(split: str, num_scenes: int | None = None) -> dict[str, np.ndarray]:
  """Every random choice of the first `num_scenes` scenes of `split` (default: all), as arrays.

  Keys: RECORD_FEATURES, plus source_index (fashion index or mnist5k file row), offset_y/offset_x
  (item position inside its cell), template, class_word, size_word ([N,3]), joiner and
  heldout_words ([N]). Slots past num_objects hold -1.
  """
  if split not in _SPLIT_SEEDS:
    raise ValueError(f"unknown scenes split {split!r}; splits: {', '.join(_SPLIT_SEEDS)}")
  num_scenes = SPLIT_SIZES[split] if num_scenes is None else int(num_scenes)
  chunks = [_sample_chunk(split, c) for c in range(max(1, math.ceil(num_scenes / _CHUNK)))]
  return {k: np.concatenate([c[k] for c in chunks])[:num_scenes] for k in chunks[0]}


def _sample_chunk(split, chunk):
  seed, source_split = _SPLIT_SEEDS[split]
  rng = np.random.default_rng([_SEED, seed, chunk])
  n, shape = _CHUNK, (_CHUNK, MAX_OBJECTS)
  # Draw every slot whatever num_objects is, so each draw's position in the stream is fixed.
  num_objects = rng.choice(np.arange(1, MAX_OBJECTS + 1), size=n, p=NUM_OBJECTS_PROBS)
  classes = rng.integers(0, NUM_CLASSES, shape)
  table, counts = _candidates(source_split)
  source_index = table[classes, rng.integers(0, counts[classes])]
  shift = rng.integers(0, len(PALETTE) - 1, shape)
  if split == "heldout_combos":  # only the held-out colour of each class
    colours = _HELDOUT_COLOUR[classes]
  else:  # uniform over the class's 7 other colours
    colours = (_HELDOUT_COLOUR[classes] + 1 + shift) % len(PALETTE)
  cells = np.argsort(rng.random((n, 9)), axis=1)[:, :MAX_OBJECTS]  # distinct cells: no overlaps
  sizes = rng.integers(0, 2, shape)
  slack = (CELL_SIZE - np.array(SIZE_PIXELS)[sizes]) // 2  # even offsets, see CELL_ORIGINS
  offset_y = 2 * np.floor(rng.random(shape) * (slack + 1)).astype(np.int64)
  offset_x = 2 * np.floor(rng.random(shape) * (slack + 1)).astype(np.int64)
  stated = rng.random(shape) < 0.5
  template = rng.integers(0, _NUM_TEMPLATES, shape)
  num_words = np.array([len(w) for w in CLASS_WORDS])[classes]
  class_word = np.floor(rng.random(shape) * num_words).astype(np.int64)
  size_word = rng.integers(0, 2, shape)
  joiner = rng.integers(0, 2, n)

  per_slot = {
      "object_class": classes, "object_colour": colours, "object_row": cells // 3,
      "object_column": cells % 3, "object_size": sizes, "stated_size": np.where(stated, sizes, -1),
      "source_index": source_index, "offset_y": offset_y, "offset_x": offset_x,
      "template": template, "class_word": class_word, "size_word": size_word,
  }
  empty = np.arange(MAX_OBJECTS)[None, :] >= num_objects[:, None]
  return {
      "num_objects": num_objects.astype(np.int32),
      **{k: np.where(empty, -1, v).astype(np.int32) for k, v in per_slot.items()},
      "joiner": joiner.astype(np.int32),
      "heldout_words": np.full(n, split == "heldout_words"),
  }


def scene(layouts: dict, i: int) -> dict:
  """Scene i's entries of a dict of per-scene arrays (layouts, or a batch read from the dataset)."""
  return {k: v[i] for k, v in layouts.items()}


# --- step 2: pixels ----------------------------------------------------------------------------------

def _sprite(gray, size):
  """The item cropped to its ink, centred in a square and resized so its longer side is `size`."""
  ys, xs = np.nonzero(gray >= 16)  # Fashion-MNIST has faint speckle round the items
  if len(ys):
    gray = gray[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
  h, w = gray.shape
  side = max(h, w)
  square = np.zeros((side, side), np.uint8)
  square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = gray
  return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS))


def item_sprite(cls: int, source_index: int, size: int, split: str) -> np.ndarray:
  """uint8[S,S] grayscale item as rendered (before tinting); `split` picks the item source."""
  fashion, _, digits, _, _ = _sources(_SPLIT_SEEDS[split][1])
  return _sprite(fashion[source_index] if cls < 10 else digits[source_index], SIZE_PIXELS[size])


def render(layouts: dict, split: str) -> np.ndarray:
  """uint8[N,64,64,3] images of `layouts` (drawn from `split`, which names the item source)."""
  n = len(layouts["num_objects"])
  images = np.zeros((n, RESOLUTION, RESOLUTION, 3), np.uint8)
  scene_ids, slots = np.nonzero(layouts["object_class"] >= 0)
  field = {k: layouts[k][scene_ids, slots].astype(np.int64) for k in (
      "object_class", "object_colour", "object_row", "object_column", "object_size", "source_index",
      "offset_y", "offset_x")}
  origins = np.array(CELL_ORIGINS)
  for size, pixels in enumerate(SIZE_PIXELS):  # one vectorised paste per item size
    sel = np.flatnonzero(field["object_size"] == size)
    if not len(sel):
      continue
    sprites = np.stack([item_sprite(field["object_class"][j], field["source_index"][j], size, split)
                        for j in sel]).astype(np.uint32)
    rgb = _PALETTE_RGB[field["object_colour"][sel]]
    tinted = ((sprites[..., None] * rgb[:, None, None, :] + 127) // 255).astype(np.uint8)
    top = origins[field["object_row"][sel]] + field["offset_y"][sel]
    left = origins[field["object_column"][sel]] + field["offset_x"][sel]
    ys = top[:, None, None] + np.arange(pixels)[None, :, None]
    xs = left[:, None, None] + np.arange(pixels)[None, None, :]
    images[scene_ids[sel][:, None, None], ys, xs] = tinted  # cells are distinct: no overlap
  return images


def downsample(images: np.ndarray) -> np.ndarray:
  """uint8[N,H/2,W/2,C]: the mean of each 2x2 block, rounded (a box filter)."""
  n, h, w, c = images.shape
  blocks = images.reshape(n, h // 2, 2, w // 2, 2, c).astype(np.uint16).sum(axis=(2, 4))
  return ((blocks + 2) // 4).astype(np.uint8)


# --- captions ------------------------------------------------------------------------------------

def _article(phrase):
  return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _clause(record, slot):
  """The words for one object, in one of four templates."""
  heldout = bool(record["heldout_words"])
  cls, colour = record["object_class"][slot], record["object_colour"][slot]
  kind = HELDOUT_CLASS_WORDS[cls] if heldout else CLASS_WORDS[cls][record["class_word"][slot]]
  colour = HELDOUT_COLOUR_WORDS[colour] if heldout else COLOUR_NAMES[colour]
  size = record["stated_size"][slot]
  size = "" if size < 0 else (HELDOUT_SIZE_WORDS[size] if heldout
                              else SIZE_WORDS[size][record["size_word"][slot]]) + " "
  after, before = POSITION_PHRASES[(record["object_row"][slot], record["object_column"][slot])]
  template = record["template"][slot]
  if template == 0:
    return f"{_article(size + colour)} {kind} {after}"  # a small blue digit three in the top right
  if template == 1:
    return f"{before}: {_article(size + colour)} {kind}"  # left: a red sneaker
  if template == 2:
    return f"{_article(size + kind)} in {colour} {after}"  # a big bag in green at the top
  return f"{after} there is {_article(size + colour)} {kind}"  # in the centre there is a white coat


def caption(record: dict) -> str:
  """The caption of one scene (a `scene(layouts, i)` record)."""
  clauses = [_clause(record, s) for s in range(record["num_objects"])]
  if record["joiner"] == 1:
    return "; ".join(clauses)
  return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]


def captions(layouts: dict) -> list[str]:
  return [caption(scene(layouts, i)) for i in range(len(layouts["num_objects"]))]


def stated_attributes(record: dict) -> list[dict]:
  """What the caption of a scene states, object by object in caption order:
  [{"class", "colour", "row", "column": int, "size": int or None (unstated)}]. `record` is a
  `scene(...)` of layouts or of a batch read from the dataset (needs the RECORD_FEATURES)."""
  return [{"class": int(record["object_class"][s]), "colour": int(record["object_colour"][s]),
           "row": int(record["object_row"][s]), "column": int(record["object_column"][s]),
           "size": None if record["stated_size"][s] < 0 else int(record["stated_size"][s])}
          for s in range(int(record["num_objects"]))]


def describe(attributes: dict) -> str:
  """'small red sneaker, top left' for one entry of `stated_attributes` / `parse_caption`."""
  size = "" if attributes["size"] is None else SIZE_NAMES[attributes["size"]] + " "
  return (f"{size}{COLOUR_NAMES[attributes['colour']]} {CLASS_NAMES[attributes['class']]}, "
          f"{ROW_NAMES[attributes['row']]} {COLUMN_NAMES[attributes['column']]}")


def _matcher(phrase_to_value):
  # Longest phrase first, and no letter or hyphen on either side: "shirt" never matches inside
  # "t-shirt", "boot" never inside "ankle boot" or "bootie", "red" never inside "coloured".
  phrases = sorted(phrase_to_value, key=len, reverse=True)
  return re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, phrases)) + r")(?![\w-])")


_CLASS_OF = {w: c for c, words in enumerate(CLASS_WORDS) for w in words}
_CLASS_OF.update({w: c for c, w in enumerate(HELDOUT_CLASS_WORDS)})
_COLOUR_OF = {w: c for words in (COLOUR_NAMES, HELDOUT_COLOUR_WORDS) for c, w in enumerate(words)}
_SIZE_OF = {w: s for s, words in enumerate(SIZE_WORDS) for w in words}
_SIZE_OF.update({w: s for s, w in enumerate(HELDOUT_SIZE_WORDS)})
_CELL_AFTER = {after: cell for cell, (after, _) in POSITION_PHRASES.items()}
_CELL_BEFORE = {before: cell for cell, (_, before) in POSITION_PHRASES.items()}
_MATCHERS = {"class": (_matcher(_CLASS_OF), _CLASS_OF), "colour": (_matcher(_COLOUR_OF), _COLOUR_OF),
             "size": (_matcher(_SIZE_OF), _SIZE_OF), "cell": (_matcher(_CELL_AFTER), _CELL_AFTER)}
_BEFORE = re.compile(r"^(" + "|".join(sorted(_CELL_BEFORE, key=len, reverse=True)) + r"): ")


def parse_caption(text: str) -> list[dict]:
  """The attributes a caption of this grammar states (either vocabulary), as `stated_attributes`
  gives them; ValueError when it is not such a caption."""
  objects = []
  for clause in re.split(r"; |, | and ", text.strip()):
    found = {}
    before = _BEFORE.match(clause)
    if before:
      found["cell"] = [_CELL_BEFORE[before.group(1)]]
      clause = clause[before.end():]
    for key, (pattern, values) in _MATCHERS.items():
      if key not in found:
        found[key] = [values[m] for m in pattern.findall(clause)]
    if any(len(v) != 1 for k, v in found.items() if k != "size") or len(found["size"]) > 1:
      raise ValueError(f"not a scenes caption: cannot read one object from {clause!r} in {text!r}")
    (row, column), = found["cell"]
    objects.append({"class": found["class"][0], "colour": found["colour"][0], "row": row,
                    "column": column, "size": found["size"][0] if found["size"] else None})
  return objects


def single_object_indices(num_objects: np.ndarray, count: int = SINGLE_OBJECT_EVAL_COUNT) -> np.ndarray:
  """The first `count` scenes holding one object: the single-object prompts models are scored on
  (by convention the test split's first 1,000)."""
  indices = np.flatnonzero(np.asarray(num_objects) == 1)
  if len(indices) < count:
    raise ValueError(f"only {len(indices)} single-object scenes, {count} asked for")
  return indices[:count]
