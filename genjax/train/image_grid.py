"""Sample grids: float [0,1] images -> one uint8 PNG."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from genjax import paths


def make_grid(images, columns: int | None = None, pad: int = 2) -> np.ndarray:
  """images: [N, H, W, C] float in [0, 1] -> uint8 [rows*(H+pad)+pad, ..., 3 or 1]."""
  images = np.asarray(images, dtype=np.float32)
  n, h, w, c = images.shape
  columns = columns or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / columns))
  grid = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.float32)
  for i, img in enumerate(images):
    r, col = divmod(i, columns)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y:y + h, x:x + w] = img
  return np.round(np.clip(grid, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_png(path, grid: np.ndarray) -> None:
  """Writes a uint8 grid as a PNG to a local path or a gs:// URI."""
  with paths.resolve(path).open("wb") as f:
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(f, format="PNG")
