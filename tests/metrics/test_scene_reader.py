"""Scene readers: crop geometry, compositional accuracy on cases with known answers (an oracle
reader built from ground truth), the cache (round trip, hash check, training when missing, CLI),
and that a briefly trained reader reads held-out scenes far above chance.

The accuracy of the real trained readers is measured by
`python -m genjax.metrics.scene_reader train --resolution 64|32` (docs/scene_readers.md), not here.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.data import scenes
from genjax.errors import InputError, WeightsError
from genjax.metrics import scene_reader

NUM_SCENES = 60
# A reader small enough to train in seconds; same settings keys as the real ones.
TINY = dict(widths=(8, 16), hidden=32, steps=3, num_scenes=200, batch_size=32, warmup_steps=0)


@pytest.fixture(scope="module")
def test_scenes():
  """(layouts, uint8[N,64,64,3]) of the first test scenes."""
  layouts = scenes.sample_layouts("test", NUM_SCENES)
  return layouts, scenes.render(layouts, "test")


class OracleReader:
  """Reads the ground truth of `layouts` (the images must be those scenes, in order)."""

  def __init__(self, layouts):
    self.layouts = layouts

  def read_cells(self, images):
    assert len(images) == len(self.layouts["num_objects"])
    return scene_reader._ground_truth_reads(self.layouts)


def stated(layouts):
  return [scenes.stated_attributes(scenes.scene(layouts, i))
          for i in range(len(layouts["num_objects"]))]


def tiny_reader(resolution, seed=0):
  settings = {**scene_reader.default_settings(resolution), **TINY}
  net = scene_reader.ReaderNet(settings["widths"], settings["hidden"])
  size = scene_reader.crop_size(resolution, settings["margin"])
  params = net.init(jax.random.key(seed), jnp.zeros((1, size, size, 3)))["params"]
  return scene_reader.SceneReader(resolution, jax.tree_util.tree_map(np.asarray, params), settings)


# ----------------------------------------------------------------------------- geometry

@pytest.mark.parametrize("resolution", [64, 32])
def test_each_item_lies_inside_its_cell_crop(test_scenes, resolution):
  layouts, images = test_scenes
  margin = scene_reader.default_settings(resolution)["margin"]
  for slot in range(scenes.MAX_OBJECTS):  # each object drawn alone
    alone = {k: v.copy() for k, v in layouts.items()}
    for key, value in alone.items():
      if value.ndim == 2:
        keep = np.arange(scenes.MAX_OBJECTS)[None, :] == slot
        alone[key] = np.where(keep, value, -1)
    has = layouts["object_class"][:, slot] >= 0
    alone["num_objects"] = has.astype(np.int32)
    item = scenes.render(alone, "test")
    if resolution == 32:
      item = scenes.downsample(item)
    crops = scene_reader.crop_cells(item, resolution, margin)
    cell = layouts["object_row"][:, slot] * 3 + layouts["object_column"][:, slot]
    for i in np.flatnonzero(has):
      ink = item[i].astype(np.int64).sum()
      assert ink > 0
      assert crops[i, cell[i]].astype(np.int64).sum() == ink  # every lit pixel is in its crop
      others = np.delete(crops[i], cell[i], axis=0)
      assert not others.any()  # ... and in no other cell's crop, margin included


def test_crop_shapes_and_wrong_resolution(test_scenes):
  _, images = test_scenes
  assert scene_reader.crop_cells(images, 64, 2).shape == (NUM_SCENES, 9, 24, 24, 3)
  small = scenes.downsample(images)
  assert scene_reader.crop_cells(small, 32, 1).shape == (NUM_SCENES, 9, 12, 12, 3)
  with pytest.raises(InputError, match="32x32"):
    scene_reader.crop_cells(images, 32, 1)


# ----------------------------------------------------------------------------- compositional accuracy

def test_oracle_on_its_own_captions_scores_one(test_scenes):
  layouts, images = test_scenes
  result = scene_reader.compositional_accuracy(OracleReader(layouts), images, stated(layouts))
  for key in ("overall", "count", "class", "colour", "cell", "size"):
    assert result[key] == 1.0, key
  assert result["num_images"] == NUM_SCENES
  assert result["num_scored"]["overall"] == NUM_SCENES
  # Size is scored only where the caption states one.
  states_size = [any(o["size"] is not None for o in objs) for objs in stated(layouts)]
  assert result["num_scored"]["size"] == sum(states_size) < NUM_SCENES
  assert result["per_image"]["overall"].all()


def test_wrong_colour_fails_colour_only(test_scenes):
  layouts, images = test_scenes
  prompts = stated(layouts)
  for objects in prompts:  # the first object gets a colour no object of its scene has
    present = {o["colour"] for o in objects}
    objects[0]["colour"] = next(c for c in range(len(scenes.PALETTE)) if c not in present)
  result = scene_reader.compositional_accuracy(OracleReader(layouts), images, prompts)
  assert result["colour"] == 0.0 and result["overall"] == 0.0
  assert result["cell"] == result["class"] == result["count"] == result["size"] == 1.0
  assert result["num_correct"]["colour"] == 0 and result["num_correct"]["cell"] == NUM_SCENES


def test_swapped_colours_fail_binding_only(test_scenes):
  """Both colours are in the image, on the wrong objects: colour holds, overall does not."""
  layouts, images = test_scenes
  prompts = stated(layouts)
  swapped = [i for i, objs in enumerate(prompts) if len(objs) >= 2
             and objs[0]["colour"] != objs[1]["colour"]]
  assert len(swapped) >= 10
  for i in swapped:
    a, b = prompts[i][0], prompts[i][1]
    a["colour"], b["colour"] = b["colour"], a["colour"]
  result = scene_reader.compositional_accuracy(OracleReader(layouts), images, prompts)
  assert result["colour"] == result["cell"] == result["class"] == result["count"] == 1.0
  assert result["overall"] == pytest.approx(1 - len(swapped) / NUM_SCENES)
  assert not result["per_image"]["overall"][swapped].any()


def test_count_mismatch(test_scenes):
  layouts, images = test_scenes
  prompts = stated(layouts)
  multi = [i for i, objs in enumerate(prompts) if len(objs) >= 2]
  for i in multi:  # the prompt states one object fewer than the image holds
    prompts[i] = prompts[i][1:]
  result = scene_reader.compositional_accuracy(OracleReader(layouts), images, prompts)
  assert result["count"] == result["overall"] == pytest.approx(1 - len(multi) / NUM_SCENES)
  # Where the count is right every stated attribute holds; an unstated extra object may take the
  # place of a stated one among the objects matched per attribute (extra objects never help).
  for key in ("colour", "class", "cell"):
    assert np.all(result["per_image"][key][result["per_image"]["count"]])
    assert result["overall"] <= result[key] < 1.0

  prompts = stated(layouts)
  for objects in prompts:  # one object more, in a cell the image leaves empty
    used = {(o["row"], o["column"]) for o in objects}
    row, column = next(c for c in np.ndindex(3, 3) if c not in used)
    objects.append({**objects[0], "row": int(row), "column": int(column)})
  result = scene_reader.compositional_accuracy(OracleReader(layouts), images, prompts)
  assert result["count"] == result["overall"] == result["cell"] == 0.0


def test_unstated_attributes_always_hold():
  read = [[{"class": 3, "colour": 1, "row": 0, "column": 2, "size": 0}]]
  result = scene_reader.score_reads(read, [[{"class": 3, "colour": None, "row": 0, "column": 2}]])
  assert result["overall"] == result["class"] == result["cell"] == 1.0
  assert result["num_scored"]["colour"] == result["num_scored"]["size"] == 0
  assert np.isnan(result["colour"]) and np.isnan(result["size"])
  result = scene_reader.score_reads(read, [[{"class": 3, "colour": 1, "row": 1, "column": 2,
                                             "size": 0}]])
  assert result["cell"] == result["overall"] == 0.0 and result["size"] == 1.0
  with pytest.raises(InputError):
    scene_reader.score_reads(read, [])


def test_matching_needs_distinct_objects():
  """Two stated red items but one red item in the image: colour fails though 'red' is present."""
  red = {"class": 0, "colour": 0, "row": 0, "column": 0, "size": None}
  read = [[{**red, "size": 1}, {**red, "colour": 2, "column": 1, "size": 1}]]
  result = scene_reader.score_reads(read, [[red, {**red, "column": 1}]])
  assert result["colour"] == 0.0 and result["class"] == result["cell"] == result["count"] == 1.0


# ----------------------------------------------------------------------------- reader

def test_reader_batches_pad_and_accept_float_images(test_scenes):
  _, images = test_scenes
  small = scenes.downsample(images[:7])
  reader = tiny_reader(32)
  one = reader.read_cells(small)
  batched = scene_reader.SceneReader(32, reader.params, reader.settings, batch_size=3)
  two = batched.read_cells(small)
  assert one.occupied.shape == one.object_class.shape == (7, 9)
  np.testing.assert_allclose(one.occupied_prob, two.occupied_prob, rtol=1e-5, atol=1e-6)
  three = reader.read_cells(small.astype(np.float32) / 255.0)
  np.testing.assert_allclose(one.occupied_prob, three.occupied_prob, rtol=1e-5, atol=1e-6)
  objects = scene_reader.read_scenes(reader, small)
  assert len(objects) == 7 and all(len(o) == one.occupied[i].sum() for i, o in enumerate(objects))
  with pytest.raises(InputError, match="32x32"):
    reader.read_cells(images[:2])


# ----------------------------------------------------------------------------- cache

def test_save_load_round_trip(tmp_path, test_scenes):
  _, images = test_scenes
  reader = tiny_reader(64, seed=1)
  path = scene_reader.reader_path(64, tmp_path)
  assert path == tmp_path / "genjax_scene_readers" / "reader_64.npz"
  digest = scene_reader.save_reader(reader, path, {"seconds": 1.0})
  meta = json.loads(path.with_suffix(".json").read_text())
  assert meta["sha256"] == digest and meta["resolution"] == 64
  assert meta["scenes_version"] and meta["settings"]["widths"] == list(TINY["widths"])
  with np.load(path, allow_pickle=False):
    pass  # a plain array archive
  loaded = scene_reader.load_reader(64, tmp_path, log=lambda m: pytest.fail(f"trained: {m}"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params, reader.params)
  np.testing.assert_array_equal(loaded.read_cells(images[:4]).occupied_prob,
                                reader.read_cells(images[:4]).occupied_prob)


def test_corrupt_or_replaced_file_is_a_clear_error(tmp_path):
  path = scene_reader.reader_path(64, tmp_path)
  scene_reader.save_reader(tiny_reader(64), path)
  np.savez(path, **{"Dense_0/bias": np.zeros(3)})  # a different file under the same name
  with pytest.raises(WeightsError, match=r"sha256.*python -m genjax.metrics.scene_reader train "
                                         r"--resolution 64"):
    scene_reader.load_reader(64, tmp_path)
  scene_reader.save_reader(tiny_reader(64), path)
  path.with_suffix(".json").unlink()
  with pytest.raises(WeightsError, match="no sidecar"):
    scene_reader.load_reader(64, tmp_path)
  scene_reader.save_reader(tiny_reader(64), path)
  meta = json.loads(path.with_suffix(".json").read_text())
  meta["scenes_version"] = "0.0.1"
  path.with_suffix(".json").write_text(json.dumps(meta))
  with pytest.raises(WeightsError, match="trained on scenes 0.0.1"):
    scene_reader.load_reader(64, tmp_path)


@pytest.fixture
def tiny_defaults(monkeypatch):
  """Default settings shrunk to a few steps, and a 100-scene test split to report on."""
  for resolution in scene_reader.RESOLUTIONS:
    monkeypatch.setitem(scene_reader._SETTINGS, resolution,
                        {**scene_reader._SETTINGS[resolution], **TINY})
  monkeypatch.setitem(scenes.SPLIT_SIZES, "test", 100)


def test_missing_reader_is_trained_and_cached(tmp_path, tiny_defaults):
  messages = []
  reader = scene_reader.load_reader(32, tmp_path, log=messages.append)
  assert any("training one now" in m for m in messages)
  assert any("trained the 32x32 scene reader in" in m for m in messages)
  path = scene_reader.reader_path(32, tmp_path)
  meta = json.loads(path.with_suffix(".json").read_text())
  assert meta["steps"] == TINY["steps"] and meta["test_accuracy"]["num_scenes"] == 100
  again = scene_reader.load_reader(32, tmp_path, log=lambda m: pytest.fail(f"trained: {m}"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, again.params, reader.params)


def test_cli(tmp_path, tiny_defaults, capsys):
  args = ["--resolution", "32", "--data-dir", str(tmp_path)]
  assert scene_reader.main(["train", *args, "--steps", "2"]) == 0
  out = capsys.readouterr().out
  assert "object_colour" in out and "steps/s" in out and "reader_32.npz" in out
  assert scene_reader.main(["evaluate", *args]) == 0
  assert "caption_overall" in capsys.readouterr().out
  path = scene_reader.reader_path(32, tmp_path)
  path.write_bytes(path.read_bytes()[:-10])
  assert scene_reader.main(["evaluate", *args]) == 1
  err = capsys.readouterr().err
  assert err.startswith("genjax: error:") and "--resolution 32" in err


# ----------------------------------------------------------------------------- learning

def test_brief_training_beats_chance_by_far():
  settings = dict(widths=(16, 32), hidden=64, steps=250, num_scenes=3000, batch_size=64)
  reader, record = scene_reader.train_reader(32, settings, log=lambda m: None)
  acc = scene_reader.evaluate_reader(reader, "validation", num_scenes=300)
  assert acc["object_colour"] > 0.9  # chance 1/8
  assert acc["object_size"] > 0.8  # chance 1/2
  assert acc["scene_count"] > 0.9
  assert acc["object_class"] > 0.4  # chance 1/20


def test_extra_objects_never_help_an_attribute():
  """An image read as nine objects (e.g. noise) cannot pass "cell" or "colour" by offering every
  option: only the most confident len(stated) objects are matched per attribute."""
  stated = [[{"class": 7, "colour": 0, "row": 0, "column": 0, "size": None}]]
  everywhere = [[{"class": 7, "colour": c % 8, "row": c // 3, "column": c % 3, "size": 0,
                  "confidence": 0.9 if c == 4 else 0.6} for c in range(9)]]
  out = scene_reader.score_reads(everywhere, stated)
  assert out["count"] == 0 and out["cell"] == 0 and out["colour"] == 0 and out["class"] == 1
  surest_right = [[dict(o, confidence=0.99 if o["row"] == o["column"] == 0 else 0.6)
                   for o in everywhere[0]]]
  out = scene_reader.score_reads(surest_right, stated)
  assert out["cell"] == 1 and out["colour"] == 1 and out["overall"] == 0  # count still wrong
