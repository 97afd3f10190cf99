"""Shared fixtures: one prepared offline dataset directory for the whole session
(helpers live in tests/helpers.py)."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tests compile the same smoke models many times (in-process and in launch.py
# subprocesses); XLA's persistent cache turns every repeat into a disk read.
os.environ.setdefault("GENJAX_COMPILATION_CACHE", os.path.join(REPO, ".cache", "xla"))
from genjax import compilation_cache  # noqa: E402

compilation_cache.enable()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """mnist5k built once into a temporary tfds directory (never the user's ~/tensorflow_datasets)."""
  from genjax import data
  path = str(tmp_path_factory.mktemp("tfds"))
  data.prepare("mnist5k", path)
  return path
