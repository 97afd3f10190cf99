"""Workdirs and other run paths: local folders or object-store URIs (gs://BUCKET/..., as TPU VM
users keep their runs), through `etils.epath`, which reads and writes both."""

from __future__ import annotations

import os

from etils import epath


def resolve(path) -> epath.Path:
  """A local path made absolute (with ~ expanded), or a URI such as gs://b/run unchanged
  (os.path.abspath would turn it into ./gs:/b/run)."""
  text = os.fspath(path)
  if "://" in text:
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))
