"""Where metrics go: `metrics.jsonl` (one object per logged step, always with
"step"), TensorBoard event files (tensorboardX; no TensorFlow needed), and PNG
sample grids under `samples/`. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
from typing import Mapping

import numpy as np

from genjax import paths
from genjax.train.image_grid import make_grid, save_png


def _json_value(v):
  v = float(v)
  return v if math.isfinite(v) else str(v)  # JSON has no NaN; keep it visible as a string


class MetricWriter:

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    workdir = paths.resolve(workdir)
    self.jsonl_path = workdir / "metrics.jsonl"
    self.samples_dir = workdir / "samples"
    self._tb = None
    if enabled:
      self.samples_dir.mkdir(parents=True, exist_ok=True)
      from tensorboardX import SummaryWriter  # imported lazily: only process 0 writes
      self._tb = SummaryWriter(str(workdir / "tensorboard"))

  def truncate_after(self, step: int) -> None:
    """On resume, drops lines logged after the restored checkpoint, so the
    metrics of the replayed steps are not recorded twice."""
    if not self.enabled or not self.jsonl_path.exists():
      return
    lines = [l + "\n" for l in self.jsonl_path.read_text().splitlines() if l.strip()]
    keep = []
    for line in lines:
      try:
        if json.loads(line)["step"] <= step:
          keep.append(line)
      except (ValueError, KeyError):
        continue  # a line cut short by a crash
    self.jsonl_path.write_text("".join(keep))

  def last_value(self, key: str, default: float = 0.0) -> float:
    """The last value logged for `key` (after `truncate_after`: at or before the restored step)."""
    value = default
    if self.enabled and self.jsonl_path.exists():
      for line in self.jsonl_path.read_text().splitlines():
        try:
          value = float(json.loads(line).get(key, value))
        except (ValueError, TypeError):
          continue
    return value

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: _json_value(v) for k, v in scalars.items()}}
    with self.jsonl_path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in scalars.items():
      self._tb.add_scalar(k, float(v), int(step))
    self._tb.flush()

  def write_images(self, step: int, name: str, images):
    """Saves a grid as samples/<name>_<step>.png and to TensorBoard; returns the path."""
    if not self.enabled:
      return None
    grid = make_grid(np.asarray(images))
    path = self.samples_dir / f"{name}_{int(step):07d}.png"
    save_png(path, grid)
    self._tb.add_image(name, grid, int(step), dataformats="HWC")
    self._tb.flush()
    return path

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
