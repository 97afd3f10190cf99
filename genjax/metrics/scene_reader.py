"""Scene readers: small classifiers that read back what a `scenes` image shows, and the
compositional accuracy of generated images against their prompts.

A text-to-image model trained on `scenes` / `scenes32` is judged on whether each object its prompt
states is in the image with the stated class, colour, cell and size. Items sit inside the cells of
the 3x3 grid, so a reader crops the 9 cells (each CELL_SIZE box plus a margin that reaches into the
gutters, halved at 32x32) and applies ONE small CNN to every crop, with four heads: occupied,
class (20), colour (8) and size (2). The object count is the number of occupied cells and an
object's cell is the cell it was read in. One reader per resolution is trained on the train split
of the scenes (rendered in-process by `genjax.data.scenes`: the same pixels the tfds builders
store, with every colour-class pair allowed) and mild augmentation (position jitter, colour gains,
blur, pixel noise), so that it does not depend on exact pixel values a generated image lacks.

  python -m genjax.metrics.scene_reader train --resolution 64     # (re)trains, prints test accuracy
  python -m genjax.metrics.scene_reader evaluate --resolution 32  # test accuracy of the cached one

Trained readers are cached like the FID weights: `<data_dir>/genjax_scene_readers/reader_64.npz`
(plain arrays, no pickle) with `reader_64.json` beside it holding the file's sha256, the scenes
dataset version and the training settings; `load_reader` checks the hash and trains only when the
file is missing. See docs/scene_readers.md for the measured accuracies.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax.data import offline_sources, scenes
from genjax.errors import InputError, UserError, WeightsError

__all__ = ["SceneReader", "ReaderNet", "CellReads", "CellReader", "crop_cells", "crop_size",
           "read_scenes", "compositional_accuracy", "score_reads", "train_reader",
           "evaluate_reader", "load_reader", "save_reader", "reader_path", "default_settings",
           "main"]

RESOLUTIONS = (64, 32)
NUM_CELLS = 9
ATTRIBUTES = ("class", "colour", "cell", "size")
CACHE_FOLDER = "genjax_scene_readers"
# Bump when the saved layout or the network changes, so that stale caches are refused.
READER_FORMAT = 1

# Per resolution: the crop margin (pixels beyond the cell on each side; at 64x64 the 2-px gutters,
# so a crop of a real scene never holds a neighbour's pixels), how far training re-cuts an object's
# crop off its cell (jitter) and an empty cell's (empty_jitter: far enough to show the edge of a
# neighbour's item, which must still read as empty), the network and the training settings.
# Widths and steps were chosen on the heldout_words images (items from the test sources, unseen
# in training, but not the test scenes; see docs/scene_readers.md); batch 64 is the fastest per
# example on CPU.
_COMMON = dict(hidden=256, steps=8000, batch_size=64, learning_rate=2e-3, warmup_steps=200,
               weight_decay=1e-4, num_scenes=60000, empty_fraction=0.2, gain_jitter=0.1,
               brightness_jitter=0.15, noise_std=0.08, seed=0)
_SETTINGS = {
    64: dict(margin=2, jitter=2, empty_jitter=4, widths=(16, 32, 128), **_COMMON),
    32: dict(margin=1, jitter=1, empty_jitter=2, widths=(64, 128), **_COMMON),
}


def default_settings(resolution: int) -> dict:
  """A copy of the reader settings used for `resolution` (64 or 32)."""
  _check_resolution(resolution)
  return dict(_SETTINGS[resolution])


def _check_resolution(resolution):
  if resolution not in RESOLUTIONS:
    raise InputError(f"scene readers exist for resolutions {RESOLUTIONS}, not {resolution!r}")


# ----------------------------------------------------------------------------- geometry

def _scale(resolution):
  return scenes.RESOLUTION // resolution


def crop_size(resolution: int, margin: int) -> int:
  """Side of a cell crop: the cell (halved at 32x32) plus `margin` on each side."""
  return scenes.CELL_SIZE // _scale(resolution) + 2 * margin


def crop_cells(images, resolution: int, margin: int):
  """[N, 9, S, S, C] crops of the 3x3 cells, row-major (cell = 3 * row + column), each the cell's
  box at CELL_ORIGINS (halved at 32x32) grown by `margin` on every side; outside the image is 0.
  Works on numpy arrays and, inside jit, on jax arrays."""
  xp = np if isinstance(images, np.ndarray) else jnp
  if images.shape[1:3] != (resolution, resolution):
    raise InputError(f"expected {resolution}x{resolution} images, got shape {tuple(images.shape)}")
  padded = xp.pad(images, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
  size = crop_size(resolution, margin)
  # Padding by `margin` shifts every box by +margin, so each crop starts at the cell's origin.
  origins = [o // _scale(resolution) for o in scenes.CELL_ORIGINS]
  crops = [padded[:, top:top + size, left:left + size] for top in origins for left in origins]
  return xp.stack(crops, axis=1)


# ----------------------------------------------------------------------------- network

class ReaderNet(nn.Module):
  """One cell crop (float [0, 1], RGB) -> logits {occupied [], class [20], colour [8], size [2]}.

  Stages of 3x3 conv + relu + 2x2 max pool (24-px crops at 64x64: 3 stages to 3x3 maps; 12-px
  crops at 32x32: 2 stages), then one hidden dense layer and the four heads.
  """

  widths: Sequence[int]
  hidden: int

  @nn.compact
  def __call__(self, crops):
    # The largest channel, g * max(RGB) / 255 for an item of gray level g, is close to the item's
    # gray image whatever its colour: it gives the class head a colour-free view to start from.
    x = jnp.concatenate([crops, crops.max(axis=-1, keepdims=True)], axis=-1)
    for width in self.widths:
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    return {"occupied": nn.Dense(1, name="occupied")(x)[:, 0],
            "class": nn.Dense(scenes.NUM_CLASSES, name="class")(x),
            "colour": nn.Dense(len(scenes.PALETTE), name="colour")(x),
            "size": nn.Dense(len(scenes.SIZE_NAMES), name="size")(x)}


def _network(settings):
  return ReaderNet(tuple(settings["widths"]), settings["hidden"])


@dataclasses.dataclass(frozen=True)
class CellReads:
  """What a reader sees in each of the 9 cells of N images (cell = 3 * row + column):
  occupied bool[N,9], occupied_prob float[N,9], class/colour/size int[N,9] (meaningful where
  occupied)."""

  occupied: np.ndarray
  occupied_prob: np.ndarray
  object_class: np.ndarray
  object_colour: np.ndarray
  object_size: np.ndarray


class CellReader(Protocol):
  """Anything `read_scenes` / `compositional_accuracy` can use: a trained `SceneReader`, or in
  tests an oracle built from ground truth."""

  def read_cells(self, images) -> CellReads:
    ...


def _to_unit(images):
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return jnp.clip(images.astype(jnp.float32), 0.0, 1.0)


@functools.lru_cache(maxsize=8)
def _read_fn(resolution, margin, widths, hidden):
  net = ReaderNet(widths, hidden)

  @jax.jit
  def read(params, images):
    crops = crop_cells(_to_unit(images), resolution, margin)
    n = crops.shape[0]
    out = net.apply({"params": params}, crops.reshape((n * NUM_CELLS,) + crops.shape[2:]))
    prob = jax.nn.sigmoid(out["occupied"]).reshape(n, NUM_CELLS)
    pick = lambda k: jnp.argmax(out[k], axis=-1).reshape(n, NUM_CELLS).astype(jnp.int32)
    return prob, pick("class"), pick("colour"), pick("size")

  return read


@dataclasses.dataclass(frozen=True, eq=False)
class SceneReader:
  """A trained reader for one resolution: `read_cells(images)` on uint8 [N,R,R,3] images or float
  images in [0, 1] (what `Family.sample` returns), R = `resolution`."""

  resolution: int
  params: dict
  settings: dict
  batch_size: int = 256  # images per network call; the last batch is padded, never dropped

  def read_cells(self, images) -> CellReads:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (self.resolution, self.resolution, 3):
      raise InputError(f"the {self.resolution}x{self.resolution} scene reader needs images of "
                       f"shape [N, {self.resolution}, {self.resolution}, 3], got {images.shape}")
    s = self.settings
    read = _read_fn(self.resolution, s["margin"], tuple(s["widths"]), s["hidden"])
    outs = []
    for start in range(0, len(images), self.batch_size):
      batch = images[start:start + self.batch_size]
      pad = self.batch_size - len(batch) if len(images) > self.batch_size else 0  # one shape
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
      outs.append([np.asarray(o)[:len(batch) - pad] for o in read(self.params, batch)])
    empty = np.zeros((0, NUM_CELLS))
    parts = [np.concatenate(p) for p in zip(*outs)] if outs else [empty] * 4
    prob, cls, colour, size = parts
    return CellReads(occupied=prob > 0.5, occupied_prob=prob, object_class=cls.astype(np.int64),
                     object_colour=colour.astype(np.int64), object_size=size.astype(np.int64))


# ----------------------------------------------------------------------------- reading and scoring

def read_scenes(reader: CellReader, images) -> list[list[dict]]:
  """Per image, the objects the reader finds, in cell order: [{"class", "colour", "row", "column",
  "size": int, "confidence": float (the occupied probability)}] — the keys of
  `scenes.stated_attributes`, so `scenes.describe` prints them."""
  return _objects(reader.read_cells(images))


def _objects(reads: CellReads):
  out = []
  for i in range(len(reads.occupied)):
    out.append([{"class": int(reads.object_class[i, c]), "colour": int(reads.object_colour[i, c]),
                 "row": c // 3, "column": c % 3, "size": int(reads.object_size[i, c]),
                 "confidence": float(reads.occupied_prob[i, c])}
                for c in np.flatnonzero(reads.occupied[i])])
  return out


def _holds(attribute, stated, read):
  """Whether `read` shows the stated `attribute` of `stated` (True when the prompt leaves it out)."""
  if attribute == "cell":
    return all(stated.get(k) is None or stated[k] == read[k] for k in ("row", "column"))
  return stated.get(attribute) is None or stated[attribute] == read[attribute]


def _states(attribute, stated):
  keys = ("row", "column") if attribute == "cell" else (attribute,)
  return any(stated.get(k) is not None for k in keys)


def _can_match(stated_objects, read_objects, fits):
  """Whether every stated object can be given its own read object with fits(stated, read) (a
  bipartite matching by augmenting paths; at most 9 objects a side)."""
  owner = [None] * len(read_objects)  # read index -> stated index

  def place(s, seen):
    for r, obj in enumerate(read_objects):
      if r not in seen and fits(stated_objects[s], obj):
        seen.add(r)
        if owner[r] is None or place(owner[r], seen):
          owner[r] = s
          return True
    return False

  return all(place(s, set()) for s in range(len(stated_objects)))


def score_reads(read_objects: Sequence[Sequence[dict]],
                attributes_list: Sequence[Sequence[dict]]) -> dict:
  """`compositional_accuracy` of images already read (`read_scenes`); see there."""
  if len(read_objects) != len(attributes_list):
    raise InputError(f"{len(read_objects)} images but {len(attributes_list)} attribute lists")
  per_image = {k: [] for k in ("overall", "count") + ATTRIBUTES}
  scored = {k: [] for k in per_image}
  for read, stated in zip(read_objects, attributes_list):
    stated = list(stated)
    count_ok = len(read) == len(stated)
    every = lambda s, r: all(_holds(a, s, r) for a in ATTRIBUTES)
    per_image["overall"].append(count_ok and _can_match(stated, read, every))
    per_image["count"].append(count_ok)
    scored["overall"].append(True)
    scored["count"].append(True)
    # Per attribute, only the len(stated) objects the reader is surest of may be matched: a noise
    # image read as nine objects must not pass "cell" or "colour" by offering every option.
    surest = sorted(read, key=lambda r: -r.get("confidence", 1.0))[:len(stated)]
    for attribute in ATTRIBUTES:
      fits = functools.partial(_holds, attribute)
      per_image[attribute].append(_can_match(stated, surest, fits))
      scored[attribute].append(any(_states(attribute, s) for s in stated))
  result = {"num_images": len(attributes_list), "num_scored": {}, "num_correct": {},
            "per_image": {}}
  for key, values in per_image.items():
    values, mask = np.array(values, bool), np.array(scored[key], bool)
    result["num_scored"][key] = int(mask.sum())
    result["num_correct"][key] = int((values & mask).sum())
    result[key] = float(values[mask].mean()) if mask.any() else float("nan")
    result["per_image"][key] = np.where(mask, values, False)
  return result


def compositional_accuracy(reader: CellReader, images, attributes_list) -> dict:
  """How often images show what their prompts state, as read by `reader`.

  attributes_list[i] is the list of objects the prompt of images[i] states, each a dict of the
  attributes it states (`scenes.stated_attributes(record)`, or `scenes.parse_caption(text)` for a
  free prompt): "class", "colour", "row", "column", "size"; an attribute that is absent or None
  is not stated and always holds.

  * overall: an image scores 1 when the reader finds exactly as many objects as the prompt states
    AND every stated object can be matched to its own read object (distinct objects) for which
    EVERY stated attribute holds. This checks binding: "a red bag and a blue shoe" is wrong when
    the image shows a blue bag and a red shoe.
  * per attribute (class, colour, size, cell): an image scores 1 when every stated object can be
    matched to its own read object on THAT attribute alone, among the k read objects of highest
    occupied probability (k = the number of stated objects; so extra objects never help):
    e.g. colour is right when each stated colour appears on a distinct object, wherever and
    whatever it is. Cell holds when the object's cell (row and column) is as stated. Each
    attribute is averaged over the images whose prompt states it for at least one object (size
    is stated in only some captions; an image stating none is not scored on size).
  * count: the reader finds exactly as many objects as the prompt states (every image).

  Returns {"overall", "count", "class", "colour", "cell", "size": mean (nan when no image is
  scored), "num_images", "num_scored": {key: images scored}, "num_correct": {key: images right},
  "per_image": {key: bool[N], False where not scored}}.
  """
  images = np.asarray(images)
  if len(images) != len(attributes_list):
    raise InputError(f"{len(images)} images but {len(attributes_list)} attribute lists")
  return score_reads(read_scenes(reader, images), attributes_list)


# ----------------------------------------------------------------------------- training

def _training_crops(resolution, settings, split="train", log=print):
  """The crops the reader learns from, cut wider than a reading crop so that each can be re-cut
  off its cell: (object crops uint8[K,S+2*jitter,S+2*jitter,3], their labels {class, colour,
  size}: int32[K], empty-cell crops uint8[E,S+2*empty_jitter,S+2*empty_jitter,3]). Every object
  of the first `num_scenes` scenes, and as many empty cells as make `empty_fraction` of the crops.

  Every object's colour is redrawn uniformly over the whole palette before rendering (held-out
  colour-class pairs included): in the scenes each class lacks one colour, and a reader trained on
  them learns that colour as evidence against the class, misreading the heldout_combos items
  (68% class accuracy instead of 92%, measured). The reader is the instrument, not the model under
  test, so it must read every pair; no generative model ever sees these crops.
  """
  num_scenes, chunk = settings["num_scenes"], 5000
  rng = np.random.default_rng([settings["seed"], resolution])
  layouts = scenes.sample_layouts(split, num_scenes)
  present = layouts["object_class"] >= 0
  layouts["object_colour"] = np.where(
      present, rng.integers(0, len(scenes.PALETTE), present.shape), -1).astype(np.int32)
  objects, empties, labels = [], [], {k: [] for k in ("class", "colour", "size")}
  start_time = time.perf_counter()
  for start in range(0, num_scenes, chunk):  # bounded memory: a chunk of full images at a time
    part = {k: v[start:start + chunk] for k, v in layouts.items()}
    images = scenes.render(part, split)
    if resolution != scenes.RESOLUTION:
      images = scenes.downsample(images)
    scene_ids, slots = np.nonzero(part["object_class"] >= 0)
    cell_ids = part["object_row"][scene_ids, slots] * 3 + part["object_column"][scene_ids, slots]
    cells = crop_cells(images, resolution, settings["margin"] + settings["jitter"])
    objects.append(cells[scene_ids, cell_ids])
    for key in labels:
      labels[key].append(part[f"object_{key}"][scene_ids, slots])
    occupied = np.zeros((len(images), NUM_CELLS), bool)
    occupied[scene_ids, cell_ids] = True
    empty_scene, empty_cell = np.nonzero(~occupied)
    fraction = settings["empty_fraction"]
    num_empty = min(round(len(scene_ids) * fraction / (1 - fraction)), len(empty_scene))
    pick = rng.choice(len(empty_scene), size=num_empty, replace=False)
    cells = crop_cells(images, resolution, settings["margin"] + settings["empty_jitter"])
    empties.append(cells[empty_scene[pick], empty_cell[pick]])
  objects, empties = np.concatenate(objects), np.concatenate(empties)
  labels = {k: np.concatenate(v).astype(np.int32) for k, v in labels.items()}
  log(f"genjax: scene reader {resolution}: {len(objects)} object and {len(empties)} empty-cell "
      f"training crops from {num_scenes} {split} scenes in {time.perf_counter() - start_time:.1f}s")
  return objects, labels, empties


def _blur(x):
  """[1, 2, 1] / 4 along height and width, edges repeated: a Gaussian blur of about 0.7 px."""
  for axis in (1, 2):
    padded = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis), x,
                              jax.lax.slice_in_dim(x, -1, None, axis=axis)], axis=axis)
    n = x.shape[axis]
    x = (0.25 * jax.lax.slice_in_dim(padded, 0, n, axis=axis) + 0.5 * x
         + 0.25 * jax.lax.slice_in_dim(padded, 2, n + 2, axis=axis))
  return x


def _augment(rng, crops, jitter, resolution, settings):
  """Mild, label-preserving changes of what a generated image may differ in: the crop re-cut up to
  `jitter` pixels off its cell, a gain per colour channel and a brightness gain, some blur (half
  of the crops, random strength), and Gaussian pixel noise of random strength."""
  n, size = crops.shape[0], crop_size(resolution, settings["margin"])
  k_shift, k_gain, k_bright, k_blur, k_amount, k_std, k_noise = jax.random.split(rng, 7)
  shifts = jax.random.randint(k_shift, (n, 2), 0, 2 * jitter + 1)
  cut = jax.vmap(lambda c, s: jax.lax.dynamic_slice(c, (s[0], s[1], 0), (size, size, 3)))
  x = cut(crops, shifts).astype(jnp.float32) / 255.0
  uniform = lambda key, shape, width: 1 + width * jax.random.uniform(key, shape, minval=-1, maxval=1)
  x = x * uniform(k_gain, (n, 1, 1, 3), settings["gain_jitter"])
  x = x * uniform(k_bright, (n, 1, 1, 1), settings["brightness_jitter"])
  amount = (jax.random.uniform(k_amount, (n, 1, 1, 1))
            * jax.random.bernoulli(k_blur, 0.5, (n, 1, 1, 1)))
  x = x + amount * (_blur(x) - x)
  std = settings["noise_std"] * jax.random.uniform(k_std, (n, 1, 1, 1))
  return jnp.clip(x + std * jax.random.normal(k_noise, x.shape), 0.0, 1.0)


def _loss(logits, labels):
  occupied = labels["occupied"].astype(jnp.float32)
  loss = optax.sigmoid_binary_cross_entropy(logits["occupied"], occupied).mean()
  metrics = {"occupied_acc": jnp.mean((logits["occupied"] > 0) == (occupied > 0))}
  weight = occupied / jnp.maximum(occupied.sum(), 1.0)  # attributes only where there is an item
  for key in ("class", "colour", "size"):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[key], labels[key])
    loss += jnp.sum(weight * ce)
    metrics[f"{key}_acc"] = jnp.sum(weight * (jnp.argmax(logits[key], -1) == labels[key]))
  return loss, metrics


def train_reader(resolution: int, settings: dict | None = None,
                 log: Callable[[str], None] = print) -> tuple[SceneReader, dict]:
  """Trains the reader for `resolution` from scratch on the train split of the scenes (settings:
  `default_settings(resolution)` with any overrides). Returns (reader, training record with
  seconds, steps_per_second and the last losses)."""
  _check_resolution(resolution)
  settings = {**default_settings(resolution), **(settings or {})}
  if settings["steps"] < 1 or settings["num_scenes"] < 1:
    raise InputError(f"scene reader training needs at least 1 step and 1 scene, got "
                     f"{settings['steps']} steps and {settings['num_scenes']} scenes")
  start_time = time.perf_counter()
  objects, labels, empties = _training_crops(resolution, settings, log=log)
  net = _network(settings)
  size = crop_size(resolution, settings["margin"])
  rng = jax.random.key(settings["seed"])
  params = net.init(rng, jnp.zeros((1, size, size, 3)))["params"]
  steps = settings["steps"]
  warmup = min(settings["warmup_steps"], steps // 5)  # short runs (tests) still decay
  schedule = optax.warmup_cosine_decay_schedule(0.0, settings["learning_rate"], warmup,
                                                max(steps, warmup + 1))
  optimizer = optax.adamw(schedule, weight_decay=settings["weight_decay"])
  opt_state = optimizer.init(params)
  batch_size = settings["batch_size"]
  num_empty = max(1, round(batch_size * settings["empty_fraction"]))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, object_crops, object_labels, empty_crops, key):
    k_objects, k_empties = jax.random.split(key)
    x = jnp.concatenate([
        _augment(k_objects, object_crops, settings["jitter"], resolution, settings),
        _augment(k_empties, empty_crops, settings["empty_jitter"], resolution, settings)])
    pad = lambda v: jnp.concatenate([v, jnp.zeros((num_empty,), v.dtype)])
    batch_labels = {k: pad(v) for k, v in object_labels.items()}
    batch_labels["occupied"] = pad(jnp.ones((len(object_crops),), jnp.int32))

    def loss_fn(p):
      return _loss(net.apply({"params": p}, x), batch_labels)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, {"loss": loss, **metrics}

  order = np.random.default_rng([settings["seed"], resolution, 1])
  log_every = max(steps // 10, 1)
  history, loop_start = {}, None
  for i in range(steps):
    idx = order.integers(0, len(objects), batch_size - num_empty)
    params, opt_state, metrics = step(params, opt_state, objects[idx],
                                      {k: v[idx] for k, v in labels.items()},
                                      empties[order.integers(0, len(empties), num_empty)],
                                      jax.random.fold_in(rng, i))
    if loop_start is None:  # steps/s leaves out the first step, which compiles
      jax.block_until_ready(metrics)
      loop_start = time.perf_counter()
    if (i + 1) % log_every == 0 or i + 1 == steps:
      history = {k: float(v) for k, v in metrics.items()}
      if not math.isfinite(history["loss"]):
        raise UserError(f"scene reader training diverged at step {i + 1} (loss {history['loss']})")
      log(f"genjax: scene reader {resolution}: step {i + 1}/{steps} "
          + " ".join(f"{k} {v:.4f}" for k, v in history.items()))
  loop_seconds = time.perf_counter() - loop_start
  seconds = time.perf_counter() - start_time
  record = {"seconds": round(seconds, 1), "steps": steps,
            "steps_per_second": round((steps - 1) / loop_seconds, 2) if steps > 1 else None,
            "last_batch": history}
  params = jax.tree_util.tree_map(np.asarray, params)
  return SceneReader(resolution, params, settings), record


# ----------------------------------------------------------------------------- evaluation

def _ground_truth_reads(layouts) -> CellReads:
  """The CellReads a perfect reader would give for `layouts`."""
  n = len(layouts["num_objects"])
  reads = {k: np.zeros((n, NUM_CELLS), np.int64) for k in ("class", "colour", "size")}
  occupied = np.zeros((n, NUM_CELLS), bool)
  scene_ids, slots = np.nonzero(layouts["object_class"] >= 0)
  cells = layouts["object_row"][scene_ids, slots] * 3 + layouts["object_column"][scene_ids, slots]
  occupied[scene_ids, cells] = True
  for key in reads:
    reads[key][scene_ids, cells] = layouts[f"object_{key}"][scene_ids, slots]
  return CellReads(occupied, occupied.astype(np.float32), reads["class"], reads["colour"],
                   reads["size"])


def evaluate_reader(reader: SceneReader, split: str = "test", num_scenes: int | None = None,
                    images=None, layouts=None) -> dict:
  """Accuracy of `reader` on scenes with known ground truth: the whole `split` (or its first
  `num_scenes`) rendered by `genjax.data.scenes`, or given `images` with their `layouts` (a dict
  with the RECORD_FEATURES, e.g. a batch `catalog.open_split("scenes", "test").read(...)`).

  Per object (over the ground-truth objects): class, colour, size = the attribute read in the
  object's cell (an empty read there counts as wrong); cell = its cell is read as occupied.
  Per scene: count = as many objects read as there are; cells = exactly the occupied cells read;
  caption = `compositional_accuracy` against the scene's own caption ("overall").
  """
  if layouts is None:
    layouts = scenes.sample_layouts(split, num_scenes)
  if images is None:
    images = scenes.render(layouts, split)
    if reader.resolution != scenes.RESOLUTION:
      images = scenes.downsample(images)
  reads = reader.read_cells(images)
  truth = _ground_truth_reads(layouts)
  is_object = truth.occupied
  out = {"num_scenes": len(images), "num_objects": int(is_object.sum())}
  found = reads.occupied & is_object
  out["object_cell"] = float(found.sum() / is_object.sum())
  for key in ("class", "colour", "size"):
    right = found & (getattr(reads, f"object_{key}") == getattr(truth, f"object_{key}"))
    out[f"object_{key}"] = float(right.sum() / is_object.sum())
  fashion = is_object & (truth.object_class < 10)
  right = found & (reads.object_class == truth.object_class)
  out["object_class_fashion"] = float((right & fashion).sum() / fashion.sum())
  digit = is_object & ~fashion
  out["object_class_digit"] = float((right & digit).sum() / digit.sum())
  out["scene_count"] = float(np.mean(reads.occupied.sum(1) == is_object.sum(1)))
  out["scene_cells"] = float(np.mean(np.all(reads.occupied == is_object, axis=1)))
  stated = [scenes.stated_attributes(scenes.scene(layouts, i)) for i in range(len(images))]
  caption = score_reads(_objects(reads), stated)
  out.update({f"caption_{k}": caption[k] for k in ("overall",) + ATTRIBUTES})
  return out


# ----------------------------------------------------------------------------- cache

def _cache_root(data_dir):
  if data_dir is None:
    data_dir = os.environ.get("GENJAX_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
  return Path(os.path.expanduser(os.fspath(data_dir))) / CACHE_FOLDER


def reader_path(resolution: int, data_dir=None) -> Path:
  """`<data_dir>/genjax_scene_readers/reader_<resolution>.npz`; data_dir defaults to
  $GENJAX_DATA_DIR, else ~/tensorflow_datasets (where the scenes datasets live)."""
  _check_resolution(resolution)
  return _cache_root(data_dir) / f"reader_{resolution}.npz"


def _sidecar(path):
  return Path(path).with_suffix(".json")


def _scenes_version():
  from genjax.data import builders  # local: tfds is only needed to name the dataset version
  return str(builders.GenjaxScenes.VERSION)


def _rebuild_hint(resolution):
  return f"rebuild it with `python -m genjax.metrics.scene_reader train --resolution {resolution}`"


@contextlib.contextmanager
def _lock(folder, resolution):
  """Serialises training and writing of one reader across processes."""
  import fcntl  # pylint: disable=import-outside-toplevel
  folder.mkdir(parents=True, exist_ok=True)
  with open(folder / f".reader_{resolution}.lock", "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def save_reader(reader: SceneReader, path, record: dict | None = None) -> str:
  """Writes the parameters to `path` (.npz, plain arrays) and the sidecar `path`.json (sha256,
  scenes version, settings, `record`); returns the sha256. Both files appear atomically."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  flat = {"/".join(k.key for k in keys): np.asarray(v)
          for keys, v in jax.tree_util.tree_flatten_with_path(reader.params)[0]}
  tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
  np.savez(tmp, **flat)
  digest = offline_sources.sha256_of(tmp)
  meta = {"format": READER_FORMAT, "resolution": reader.resolution, "sha256": digest,
          "scenes_version": _scenes_version(), "settings": reader.settings, **(record or {})}
  tmp_meta = path.with_name(f"{path.stem}.tmp{os.getpid()}.json")
  tmp_meta.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
  os.replace(tmp, path)
  os.replace(tmp_meta, _sidecar(path))
  return digest


def _read_saved(path, resolution):
  """The SceneReader stored at `path`; WeightsError (how to rebuild) when anything is off."""
  path, sidecar = Path(path), _sidecar(path)
  hint = f"{_rebuild_hint(resolution)} (or delete {path} and {sidecar}, and it is retrained)"
  try:
    meta = json.loads(sidecar.read_text())
  except FileNotFoundError:
    raise WeightsError(f"scene reader {path} has no sidecar {sidecar.name} recording its sha256; "
                       f"{hint}") from None
  except (OSError, ValueError) as e:
    raise WeightsError(f"cannot read the scene reader sidecar {sidecar}: {e}; {hint}") from None
  if not isinstance(meta, dict) or "sha256" not in meta or "settings" not in meta:
    raise WeightsError(f"scene reader sidecar {sidecar} lacks sha256/settings; {hint}")
  digest = offline_sources.sha256_of(path)
  if digest != meta["sha256"]:
    raise WeightsError(f"scene reader {path} has sha256 {digest[:16]}..., but {sidecar.name} "
                       f"records {str(meta['sha256'])[:16]}...: the file is corrupt or was "
                       f"replaced; {hint}")
  if meta.get("format") != READER_FORMAT or meta.get("resolution") != resolution:
    raise WeightsError(f"scene reader {path} is format {meta.get('format')} for resolution "
                       f"{meta.get('resolution')}; this genjax needs format {READER_FORMAT} for "
                       f"{resolution}; {hint}")
  if meta.get("scenes_version") != _scenes_version():
    raise WeightsError(f"scene reader {path} was trained on scenes {meta.get('scenes_version')}, "
                       f"but the scenes dataset is now {_scenes_version()}; {hint}")
  settings = meta["settings"]
  settings["widths"] = tuple(settings["widths"])
  try:
    with np.load(path, allow_pickle=False) as z:
      flat = {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise WeightsError(f"cannot read scene reader {path}: {e}; {hint}") from None
  params = {}
  for name, value in flat.items():
    node = params
    *parents, leaf = name.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  net = _network(settings)
  size = crop_size(resolution, settings["margin"])
  expected = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  shapes = lambda tree: jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)
  if shapes(expected["params"]) != shapes(params):
    raise WeightsError(f"scene reader {path} does not hold the network its settings describe; "
                       f"{hint}")
  return SceneReader(resolution, params, settings), meta


def load_reader(resolution: int, data_dir=None, log: Callable[[str], None] = print) -> SceneReader:
  """The cached reader for `resolution` (64 or 32), checked against its recorded sha256; trained
  (a few minutes on CPU, with a notice) and cached when missing. WeightsError when the cached file
  is corrupt, replaced or stale, saying how to rebuild it."""
  path = reader_path(resolution, data_dir)
  if path.is_file():
    return _read_saved(path, resolution)[0]
  try:
    lock = _lock(path.parent, resolution)
    lock.__enter__()
  except OSError as e:  # a read-only data_dir: train, use, and keep nothing
    log(f"genjax: cannot write {path.parent} ({e}); training a scene reader for this run only")
    return train_reader(resolution, log=log)[0]
  try:
    if path.is_file():  # another process trained it meanwhile
      return _read_saved(path, resolution)[0]
    log(f"genjax: no scene reader at {path}; training one now (a few minutes on CPU)")
    reader, record = _train_and_save(resolution, path, log)
    log(f"genjax: trained the {resolution}x{resolution} scene reader in {record['seconds']}s; "
        f"saved to {path}")
    return reader
  finally:
    lock.__exit__(None, None, None)


def _train_and_save(resolution, path, log, settings=None):
  """Trains, measures test accuracy (kept in the sidecar, so a cached reader says how good it
  is), and saves."""
  reader, record = train_reader(resolution, settings, log=log)
  record["test_accuracy"] = evaluate_reader(reader)
  save_reader(reader, path, record)
  return reader, record


# ----------------------------------------------------------------------------- CLI

def _format_accuracy(resolution, split, acc):
  lines = [f"scene reader {resolution}x{resolution}, {split} split ({acc['num_scenes']} scenes, "
           f"{acc['num_objects']} objects):"]
  for key, value in acc.items():
    if not key.startswith("num_"):
      lines.append(f"  {key:22s} {100 * value:6.2f}%")
  return "\n".join(lines)


def _parser():
  p = argparse.ArgumentParser(prog="python -m genjax.metrics.scene_reader",
                              description="Train or evaluate the scenes readers used by "
                                          "compositional accuracy.")
  p.add_argument("command", choices=("train", "evaluate"))
  p.add_argument("--resolution", type=int, choices=RESOLUTIONS, required=True)
  p.add_argument("--data-dir", default=None,
                 help="root of the cache (default $GENJAX_DATA_DIR, else ~/tensorflow_datasets)")
  p.add_argument("--steps", type=int, default=None, help="training steps (default: the settings)")
  p.add_argument("--num-scenes", type=int, default=None,
                 help="train scenes to learn from (default: the settings)")
  p.add_argument("--split", default="test",
                 help="split to report accuracy on (default test; use validation when tuning)")
  return p


def run(argv=None) -> str:
  args = _parser().parse_args(argv)
  path = reader_path(args.resolution, args.data_dir)
  if args.command == "train":
    overrides = {k: v for k, v in (("steps", args.steps), ("num_scenes", args.num_scenes))
                 if v is not None}
    with _lock(path.parent, args.resolution):
      reader, record = _train_and_save(args.resolution, path, print, overrides)
    acc = record["test_accuracy"] if args.split == "test" else evaluate_reader(reader, args.split)
    return (f"{_format_accuracy(args.resolution, args.split, acc)}\ntrained in "
            f"{record['seconds']}s ({record['steps']} steps, {record['steps_per_second']} steps/s); "
            f"saved to {path}")
  reader = load_reader(args.resolution, args.data_dir)
  return _format_accuracy(args.resolution, args.split, evaluate_reader(reader, args.split))


def main(argv=None) -> int:
  try:
    print(run(argv))
  except UserError as e:
    print(f"genjax: error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
