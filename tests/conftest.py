"""Shared fixtures: one prepared offline dataset directory for the whole session
(helpers live in tests/helpers.py)."""

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """mnist5k built once into a temporary tfds directory (never the user's ~/tensorflow_datasets)."""
  from genjax import data
  path = str(tmp_path_factory.mktemp("tfds"))
  data.prepare("mnist5k", path)
  return path
