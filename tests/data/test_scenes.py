"""`scenes` / `scenes32`: generation, tfds builds, ground truth against pixels, held-out splits.

tfds builds use small prefixes of the real splits (SPLIT_SIZES shrunk; scenes are drawn in fixed
chunks, so they are the first scenes of the full splits). Facts about whole splits (held-out
pairs and words, caption grammar, single-object count) are checked on the full-size layouts,
which cost no rendering.
"""

import glob
import hashlib
import os
import re
import sys

import numpy as np
import pytest

from genjax import data
from genjax.data import catalog
from genjax.data import offline_sources
from genjax.data import scenes

FULL_SIZES = dict(scenes.SPLIT_SIZES)  # before any test shrinks them
SMALL_SIZES = {"train": 160, "validation": 40, "test": 160, "heldout_combos": 60, "heldout_words": 60}
SPLITS = tuple(FULL_SIZES)


@pytest.fixture(scope="module")
def small_splits():
  with pytest.MonkeyPatch.context() as mp:
    for split, n in SMALL_SIZES.items():
      mp.setitem(scenes.SPLIT_SIZES, split, n)
    yield


@pytest.fixture(scope="module")
def data_dir(small_splits, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds_scenes"))
  data.prepare("scenes", path)
  data.prepare("scenes32", path)
  return path


@pytest.fixture(scope="module")
def generated(small_splits):
  """{split: (layouts, uint8[N,64,64,3], captions)} of the small splits, straight from scenes.py."""
  out = {}
  for split in SPLITS:
    layouts = scenes.sample_layouts(split)
    out[split] = layouts, scenes.render(layouts, split), scenes.captions(layouts)
  return out


@pytest.fixture(scope="module")
def full_layouts():
  """{split: (layouts, captions)} of the full-size splits: no pixels, a few seconds."""
  out = {}
  for split in SPLITS:
    layouts = scenes.sample_layouts(split, FULL_SIZES[split])
    out[split] = layouts, scenes.captions(layouts)
  return out


def read_all(name, split, data_dir):
  reader = catalog.open_split(name, split, data_dir)
  return reader.read(np.arange(len(reader)))


# --- generation ----------------------------------------------------------------------------------

def test_split_sizes():
  assert FULL_SIZES == {"train": 60000, "validation": 2000, "test": 10000, "heldout_combos": 2000,
                        "heldout_words": 2000}


def test_generation_is_deterministic_and_sizes_are_prefixes():
  a = scenes.sample_layouts("test", 1500)
  b = scenes.sample_layouts("test", 1500)
  small = scenes.sample_layouts("test", 200)
  for k in a:
    assert np.array_equal(a[k], b[k]) and np.array_equal(a[k][:200], small[k]), k
  assert np.array_equal(scenes.render(small, "test"), scenes.render(scenes.sample_layouts("test", 200), "test"))
  assert scenes.captions(small) == scenes.captions(b)[:200]
  # Different splits are different scenes, even where they share item sources.
  assert not np.array_equal(scenes.sample_layouts("validation", 200)["object_class"],
                            scenes.sample_layouts("train", 200)["object_class"])


def test_generation_is_pinned():
  """A change of numpy's sampling or Pillow's resize would silently change the dataset; this
  digest of the first 100 test scenes was recorded when the dataset was made."""
  layouts = scenes.sample_layouts("test", 100)
  h = hashlib.sha256(scenes.render(layouts, "test").tobytes())
  h.update("\n".join(scenes.captions(layouts)).encode())
  assert h.hexdigest() == "d66db64195bfca2fea2766ec726ead5c65b7ff23e3d9005f21777527c6f84466"


def test_layout_fields(full_layouts):
  for split, (layouts, _) in full_layouts.items():
    n = layouts["num_objects"]
    assert set(np.unique(n)) == {1, 2, 3}
    filled = np.arange(scenes.MAX_OBJECTS)[None, :] < n[:, None]
    for key in scenes.RECORD_FEATURES:
      if key != "num_objects":
        assert (layouts[key][~filled] == -1).all(), (split, key)
    assert (layouts["object_class"][filled] < scenes.NUM_CLASSES).all()
    cells = layouts["object_row"] * 3 + layouts["object_column"]
    for k in range(len(n)):  # distinct cells: items never overlap
      assert len(set(cells[k, :n[k]])) == n[k]
    stated = layouts["stated_size"][filled]
    assert ((stated == -1) | (stated == layouts["object_size"][filled])).all()


def test_single_object_subset(full_layouts):
  num_objects = full_layouts["test"][0]["num_objects"]
  assert (num_objects == 1).sum() >= 1000
  first = scenes.single_object_indices(num_objects)
  assert len(first) == scenes.SINGLE_OBJECT_EVAL_COUNT == 1000 and (num_objects[first] == 1).all()
  with pytest.raises(ValueError, match="single-object"):
    scenes.single_object_indices(num_objects[:100])


# --- held-out splits and the caption grammar -----------------------------------------------------

def class_colour_pairs(layouts):
  filled = layouts["object_class"] >= 0
  return set(zip(layouts["object_class"][filled].tolist(), layouts["object_colour"][filled].tolist()))


def test_heldout_combos_never_occur_elsewhere(full_layouts):
  heldout = {(scenes.CLASS_NAMES.index(k), scenes.COLOUR_NAMES.index(c)) for k, c in scenes.HELDOUT_COMBOS}
  assert len(heldout) == 20 and len({k for k, _ in heldout}) == 20
  for split, (layouts, _) in full_layouts.items():
    pairs = class_colour_pairs(layouts)
    if split == "heldout_combos":
      assert pairs == heldout  # every object is a held-out pair, and all 20 occur
    else:
      assert not pairs & heldout, split
  # Every class still meets its 7 other colours in training.
  train = class_colour_pairs(full_layouts["train"][0])
  assert len(train) == scenes.NUM_CLASSES * (len(scenes.PALETTE) - 1)


def words_of(captions):
  return set(re.findall(r"[\w-]+", " ".join(captions)))


def test_heldout_words_never_occur_in_training_captions(full_layouts):
  heldout_phrases = (scenes.HELDOUT_COLOUR_WORDS + scenes.HELDOUT_CLASS_WORDS
                     + scenes.HELDOUT_SIZE_WORDS)
  any_phrase = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, heldout_phrases)) + r")(?![\w-])")
  for split in ("train", "validation", "test", "heldout_combos"):
    assert not any_phrase.findall("\n".join(full_layouts[split][1])), split
  assert len(any_phrase.findall("\n".join(full_layouts["heldout_words"][1]))) > 4000
  training_vocabulary = words_of(full_layouts["train"][1])
  new_words = words_of(full_layouts["heldout_words"][1]) - training_vocabulary
  for phrase in heldout_phrases:  # each synonym brings a word no training caption has
    assert set(re.findall(r"[\w-]+", phrase)) & new_words, phrase
  for caption in full_layouts["heldout_words"][1]:
    assert set(re.findall(r"[\w-]+", caption)) & new_words, caption
  # The training grammar uses all of its own vocabulary, synonyms included.
  for words in scenes.CLASS_WORDS:
    for phrase in words:
      assert set(phrase.split()) <= training_vocabulary, phrase


def test_captions_state_exactly_the_recorded_attributes(full_layouts):
  """The grammar is unambiguous: parsing each caption gives back the record it was made from."""
  for split, (layouts, captions) in full_layouts.items():
    for i, caption in enumerate(captions):
      stated = scenes.stated_attributes(scenes.scene(layouts, i))
      assert scenes.parse_caption(caption) == stated, (split, caption)
  layouts, captions = full_layouts["train"]
  stated_sizes = layouts["stated_size"][layouts["object_class"] >= 0]
  assert 0.45 < (stated_sizes >= 0).mean() < 0.55  # size is stated half of the time


def test_caption_examples():
  record = {"num_objects": 1, "object_class": [13, -1, -1], "object_colour": [5, -1, -1],
            "object_row": [0, -1, -1], "object_column": [2, -1, -1], "object_size": [0, -1, -1],
            "stated_size": [0, -1, -1], "template": [0, -1, -1], "class_word": [0, -1, -1],
            "size_word": [0, -1, -1], "joiner": 0, "heldout_words": False}
  assert scenes.caption(record) == "a small blue digit three in the top right"
  assert scenes.caption({**record, "heldout_words": True}) == "a tiny azure numeral three in the top right"
  assert scenes.caption({**record, "template": [1, -1, -1], "stated_size": [-1, -1, -1],
                         "object_class": [7, -1, -1], "object_colour": [0, -1, -1],
                         "object_row": [1, -1, -1], "object_column": [0, -1, -1]}) == "left: a red sneaker"
  assert scenes.describe(scenes.stated_attributes(record)[0]) == "small blue digit three, top right"
  assert scenes.parse_caption("an orange ankle boot at the top and a big handbag in white on the right") == [
      {"class": 9, "colour": 1, "row": 0, "column": 1, "size": None},
      {"class": 8, "colour": 7, "row": 1, "column": 2, "size": 1}]
  for bad in ("a red sneaker", "a red blue sneaker on the left", "a cat on the left", ""):
    with pytest.raises(ValueError, match="not a scenes caption"):
      scenes.parse_caption(bad)


# --- pixels against the ground truth -------------------------------------------------------------

def check_ground_truth(image, record, scale):
  """Ink only inside the stated cells; in each cell, the item's extent matches its size and every
  bright pixel has the hue of its stated colour."""
  cell = scenes.CELL_SIZE // scale
  image = image.astype(np.int64)
  ink = image.max(-1) > 0
  covered = np.zeros_like(ink)
  for s in range(record["num_objects"]):
    y0 = scenes.CELL_ORIGINS[record["object_row"][s]] // scale
    x0 = scenes.CELL_ORIGINS[record["object_column"][s]] // scale
    covered[y0:y0 + cell, x0:x0 + cell] = True
    patch, patch_ink = image[y0:y0 + cell, x0:x0 + cell], ink[y0:y0 + cell, x0:x0 + cell]
    assert patch_ink.any()
    ys, xs = np.nonzero(patch_ink)
    extent = max(np.ptp(ys), np.ptp(xs)) + 1
    pixels = scenes.SIZE_PIXELS[record["object_size"][s]] // scale
    assert pixels - 4 // scale <= extent <= pixels, (extent, pixels)
    rgb = np.array(scenes.PALETTE[scenes.COLOUR_NAMES[record["object_colour"][s]]])
    bright = patch[patch.max(-1) >= 64]
    assert len(bright)
    # p = g * rgb / 255 rounded (and averaged at 32x32), so p_i * c_j - p_j * c_i is only rounding.
    cross = np.abs(bright[:, :, None] * rgb[None, None, :] - bright[:, None, :] * rgb[None, :, None])
    assert (cross <= scale * (rgb[:, None] + rgb[None, :]) / 2 + 1e-9).all()
  assert not (ink & ~covered).any()


def test_pixels_match_ground_truth(generated):
  for split, (layouts, images, _) in generated.items():
    small32 = scenes.downsample(images)
    for i, image in enumerate(images):
      check_ground_truth(image, scenes.scene(layouts, i), scale=1)
      check_ground_truth(small32[i], scenes.scene(layouts, i), scale=2)


def test_items_are_the_named_source_images(generated):
  """Each item is its source image (tinted, placed as recorded), and test-side splits only use
  items of the Fashion-MNIST / mnist5k test splits."""
  fashion = {s: offline_sources.load_fashion_mnist(s)[0][..., 0] for s in ("train", "test")}
  digits, digit_labels = offline_sources.load_mnist5k()
  rows = offline_sources.mnist5k_split_indices()
  train_items = {im.tobytes() for im in fashion["train"]} | {digits[r].tobytes() for r in rows["train"]}
  for split, (layouts, images, _) in generated.items():
    source = "train" if split in ("train", "validation") else "test"
    used = set()
    for i in range(len(images)):
      for s in range(layouts["num_objects"][i]):
        cls, src, size = (int(layouts[k][i, s]) for k in ("object_class", "source_index", "object_size"))
        if cls < 10:
          assert src < len(fashion[source])
          used.add(fashion[source][src].tobytes())
        else:
          assert src in rows[source] and digit_labels[src] == cls - 10
          used.add(digits[src].tobytes())
        sprite = scenes.item_sprite(cls, src, size, split).astype(np.int64)
        rgb = np.array(list(scenes.PALETTE.values())[layouts["object_colour"][i, s]])
        y = scenes.CELL_ORIGINS[layouts["object_row"][i, s]] + layouts["offset_y"][i, s]
        x = scenes.CELL_ORIGINS[layouts["object_column"][i, s]] + layouts["offset_x"][i, s]
        n = scenes.SIZE_PIXELS[size]
        assert np.array_equal(images[i, y:y + n, x:x + n], (sprite[..., None] * rgb + 127) // 255)
    assert bool(used & train_items) == (source == "train"), split


# --- tfds builds ---------------------------------------------------------------------------------

def test_build_and_read(data_dir, generated):
  for name, shape in (("scenes", (64, 64, 3)), ("scenes32", (32, 32, 3))):
    info = data.prepare(name, data_dir)
    assert info == data.dataset_info(name, data_dir)  # built info == info without building
    assert info.image_shape == shape and info.num_classes == 0 and info.has_captions
    assert info.split_sizes == SMALL_SIZES
    assert info.extra_features == {k: (shape, "int32") for k, shape in scenes.RECORD_FEATURES.items()}
    for split, (layouts, images, captions) in generated.items():
      batch = read_all(name, split, data_dir)
      assert set(batch) == {"image", "label", "caption", *scenes.RECORD_FEATURES}
      assert batch["image"].dtype == np.uint8 and batch["caption"].dtype == object
      want = images if name == "scenes" else scenes.downsample(images)
      assert np.array_equal(batch["image"], want)  # stored in scene order
      assert batch["caption"].tolist() == captions
      for k in scenes.RECORD_FEATURES:
        assert batch[k].dtype == np.int32 and np.array_equal(batch[k], layouts[k]), k
      assert not batch["label"].any()
  uncached = catalog.open_split("scenes", "test", data_dir, cache=False).read([3, 0])
  cached = catalog.open_split("scenes", "test", data_dir).read([3, 0])
  assert uncached.keys() == cached.keys()
  assert all(np.array_equal(uncached[k], cached[k]) for k in cached)


def test_rebuild_is_bit_identical(data_dir, tmp_path):
  data.prepare("scenes", str(tmp_path))
  files = sorted(glob.glob(os.path.join(data_dir, "genjax_scenes", "1.0.0", "*.array_record-*")))
  assert len(files) >= len(SPLITS)
  for path in files:
    with open(path, "rb") as a, open(tmp_path / "genjax_scenes" / "1.0.0" / os.path.basename(path), "rb") as b:
      assert a.read() == b.read(), path


def test_pipelines_carry_captions_and_ground_truth(data_dir):
  batch = next(data.train_iterator("scenes32", batch_size=8, seed=0, data_dir=data_dir,
                                   process_index=0, process_count=1))
  assert batch["image"].shape == (8, 32, 32, 3) and batch["object_class"].shape == (8, 3)
  assert all(isinstance(c, str) and c for c in batch["caption"])
  batches = list(data.eval_batches("scenes", split="heldout_words", batch_size=25, data_dir=data_dir,
                                   process_index=0, process_count=1))
  last = batches[-1]
  assert len(batches) == 3 and last["mask"].sum() == 10
  assert last["caption"][10:].tolist() == [""] * 15 and not last["object_class"][10:].any()
  for b in batches:
    for i in np.flatnonzero(b["mask"]):
      assert scenes.parse_caption(b["caption"][i]) == scenes.stated_attributes(scenes.scene(b, i))


def test_no_tensorflow_imported():
  assert "tensorflow" not in sys.modules
