"""`captioned_folder:PATH`: images + metadata.jsonl read directly; every bad row is named."""

import json

import numpy as np
import pytest
from PIL import Image

from genjax import data
from genjax.data import captioned_folder
from genjax.data import catalog
from genjax.errors import DatasetError


def make_folder(path, rows, size=(6, 4)):
  """Writes rows [(file_name, text, extra dict)] and an RGB image per file (pixel value = index)."""
  path.mkdir(parents=True, exist_ok=True)
  lines = []
  for i, (file_name, text, extra) in enumerate(rows):
    if not (path / file_name).exists():
      Image.fromarray(np.full((size[1], size[0], 3), (i, 2 * i, 3 * i), np.uint8)).save(path / file_name)
    lines.append(json.dumps({"file_name": file_name, "text": text, **extra}))
  (path / captioned_folder.METADATA).write_text("\n".join(lines) + "\n")
  return f"{captioned_folder.PREFIX}{path}"


def test_reads_with_split_column(tmp_path):
  rows = [(f"im{i}.png", f"caption {i}", {"split": "train" if i < 7 else "test"}) for i in range(10)]
  name = make_folder(tmp_path / "f", rows)
  info = data.prepare(name)
  assert info == data.dataset_info(name)
  assert info == data.DatasetInfo(name, (4, 6, 3), 0, {"train": 7, "test": 3}, has_captions=True)
  batch = catalog.open_split(name, "test", cache=False).read([2, 0])
  assert batch.keys() == {"image", "label", "caption"}
  assert batch["caption"].tolist() == ["caption 9", "caption 7"] and batch["caption"].dtype == object
  assert batch["image"].dtype == np.uint8 and batch["image"].shape == (2, 4, 6, 3)
  assert batch["image"][0, 0, 0].tolist() == [9, 18, 27] and not batch["label"].any()
  with pytest.raises(DatasetError, match="no split 'validation'.*test, train"):
    catalog.open_split(name, "validation")


def test_hash_split_and_pipelines(tmp_path):
  rows = [(f"im{i:03d}.png", f"caption {i}", {}) for i in range(60)]
  rows.append(("im000.png", "a second caption of image 0", {}))  # same image, same split
  name = make_folder(tmp_path / "f", rows)
  info = data.prepare(name)
  assert sum(info.split_sizes.values()) == 61 and 0 < info.split_sizes["test"] < 15
  test = catalog.open_split(name, "test").read(np.arange(info.split_sizes["test"]))
  test_files = {c.split()[-1] for c in test["caption"] if c.startswith("caption")}
  assert test_files == {str(i) for i in range(60) if captioned_folder._hash_split(f"im{i:03d}.png") == "test"}  # pylint: disable=protected-access
  assert data.prepare(name) == info  # deterministic, and served from memory
  batch = next(data.train_iterator(name, batch_size=5, seed=0, process_index=0, process_count=1))
  assert batch["image"].shape == (5, 4, 6, 3) and all(isinstance(c, str) for c in batch["caption"])
  batches = list(data.eval_batches(name, batch_size=8, process_index=0, process_count=1))
  pad = 8 * len(batches) - info.split_sizes["test"]
  assert batches[-1]["caption"][8 - pad:].tolist() == [""] * pad
  assert batches[-1]["mask"].sum() == 8 - pad


def test_grayscale_and_rgb_mix(tmp_path):
  folder = tmp_path / "f"
  name = make_folder(folder, [("a.png", "colour", {"split": "train"}), ("b.png", "gray", {"split": "train"})])
  Image.fromarray(np.full((4, 6), 77, np.uint8)).save(folder / "b.png")
  batch = catalog.open_split(name, "train").read([1])
  assert batch["image"].shape == (1, 4, 6, 3) and (batch["image"] == 77).all()
  gray = make_folder(tmp_path / "g", [("a.png", "x", {"split": "train"})])
  Image.fromarray(np.full((4, 6), 5, np.uint8)).save(tmp_path / "g" / "a.png")
  assert data.dataset_info(gray).image_shape == (4, 6, 1)


def bad_folder(tmp_path, line):
  """A good folder whose third metadata row is replaced by `line`."""
  rows = [(f"im{i}.png", f"caption {i}", {}) for i in range(4)]
  make_folder(tmp_path / "f", rows)
  meta = tmp_path / "f" / captioned_folder.METADATA
  lines = meta.read_text().splitlines()
  lines[2] = line
  meta.write_text("\n".join(lines) + "\n")
  return f"{captioned_folder.PREFIX}{tmp_path / 'f'}"


@pytest.mark.parametrize("line,message", [
    ('{"file_name": "im2.png", "text": "x"', r"row 3: malformed JSON"),
    ('{"file_name": "im2.png", "text": "  "}', r"row 3 \(im2.png\): the caption 'text' is missing or empty"),
    ('{"file_name": "im2.png"}', r"row 3 \(im2.png\): the caption 'text' is missing or empty"),
    ('{"text": "x"}', r"row 3: needs a non-empty string 'file_name'"),
    ('["im2.png", "x"]', r"row 3: expected a JSON object"),
    ('{"file_name": "absent.png", "text": "x"}', r"row 3: image file .*absent.png not found"),
    ('{"file_name": "im2.png", "text": "x", "split": "train"}', r"row 1 \(im0.png\): no 'split'"),
])
def test_bad_rows_are_named(tmp_path, line, message):
  name = bad_folder(tmp_path, line)
  with pytest.raises(DatasetError, match=message) as e:
    data.prepare(name)
  assert "\n" not in str(e.value) and "metadata.jsonl" in str(e.value)


def test_unreadable_and_mismatched_images(tmp_path):
  name = bad_folder(tmp_path, '{"file_name": "broken.png", "text": "x"}')
  (tmp_path / "f" / "broken.png").write_bytes(b"not a png")
  with pytest.raises(DatasetError, match=r"row 3: cannot read image .*broken.png"):
    data.prepare(name)
  name = bad_folder(tmp_path, '{"file_name": "big.png", "text": "x"}')
  Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "f" / "big.png")
  with pytest.raises(DatasetError, match=r"row 3: big.png is 6x5 .* im0.png is 6x4.*same size"):
    data.prepare(name)


def test_missing_folder_or_metadata(tmp_path):
  with pytest.raises(DatasetError, match="is not a folder"):
    data.prepare(f"{captioned_folder.PREFIX}{tmp_path / 'nowhere'}")
  with pytest.raises(DatasetError, match="metadata.jsonl not found"):
    data.dataset_info(f"{captioned_folder.PREFIX}{tmp_path}")
  (tmp_path / captioned_folder.METADATA).write_text("\n")
  with pytest.raises(DatasetError, match="has no rows"):
    catalog.open_split(f"{captioned_folder.PREFIX}{tmp_path}", "train")
