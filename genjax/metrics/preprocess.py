"""Images -> the FID Inception's 299x299 input, exactly as each reference implementation does it.

Every resize used by the references is separable and linear, so it is a pair of
matrices: out = A_h @ image @ A_w.T per channel. The matrices are built here in
float64 following each reference's own index/weight arithmetic, and applied in
float32 (numpy on the host for folders of mixed sizes, jax on the device for batches).

Modes (all start from uint8 RGB, as the references do):

* "default" -- pytorch-fid: x/255, `F.interpolate(size=299, mode="bilinear",
  align_corners=False)` (half-pixel centres, no antialias: downscaling skips pixels),
  then 2x - 1.
* "tf1" -- the original TTUR code, i.e. the TF graph's own `ResizeBilinear` (legacy:
  source = dest * in/out, no half-pixel centres) on 0..255 floats, then (x - 128) / 128.
* "clean" -- clean-fid: PIL `Image.resize(BICUBIC)` of each channel as a float
  ("F") image (antialiased: the kernel widens when downscaling), clipped to [0, 255],
  then (x - 128) / 128.
"""

from __future__ import annotations

import functools

import numpy as np

from genjax.errors import InputError

MODES = ("default", "tf1", "clean")
SIZE = 299


def check_mode(mode):
  if mode not in MODES:
    raise InputError(f"unknown FID preprocessing mode {mode!r}; choose one of {', '.join(MODES)}")
  return mode


# ----------------------------------------------------------------------------- resize matrices

def _torch_bilinear(in_size, out_size):
  # torch's CPU kernel works in float32: scale = in/out; src = scale*(dst+0.5)-0.5, clamped
  # at 0, where the compiler fuses the multiply-add (one rounding): emulating that matches
  # torch's weights to the last bit (separate roundings are off by up to 2e-6).
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  m = np.zeros((out_size, in_size))
  for dst in range(out_size):
    src = max(f32(float(scale) * (dst + 0.5) - 0.5), f32(0.0))
    i0 = int(src)
    i1 = i0 + 1 if i0 < in_size - 1 else i0
    l1 = f32(src - f32(i0))
    m[dst, i0] += f32(1.0) - l1
    m[dst, i1] += l1
  return m


def _tf_legacy_bilinear(in_size, out_size):
  # tensorflow/core/kernels/image/resize_bilinear_op.cc, LegacyScaler, align_corners=False.
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  m = np.zeros((out_size, in_size))
  for dst in range(out_size):
    src = f32(dst) * scale
    lo = int(np.floor(src))
    hi = min(lo + 1, in_size - 1)
    lerp = f32(src - f32(lo))
    m[dst, lo] += 1.0 - lerp
    m[dst, hi] += lerp
  return m


def _pil_bicubic(in_size, out_size):
  # Pillow libImaging/Resample.c precompute_coeffs with the bicubic filter (a = -0.5).
  def cubic(x):
    a = -0.5
    x = abs(x)
    if x < 1.0:
      return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
      return (((x - 5) * x + 8) * x - 4) * a
    return 0.0

  scale = in_size / out_size
  filterscale = max(scale, 1.0)
  support = 2.0 * filterscale
  m = np.zeros((out_size, in_size))
  for xx in range(out_size):
    center = (xx + 0.5) * scale
    xmin = max(int(center - support + 0.5), 0)
    xmax = min(int(center + support + 0.5), in_size)
    w = np.array([cubic((x - center + 0.5) / filterscale) for x in range(xmin, xmax)])
    total = w.sum()
    if total != 0.0:
      w = w / total
    m[xx, xmin:xmax] = w
  return m


@functools.lru_cache(maxsize=64)
def resize_matrix(in_size: int, out_size: int, mode: str) -> np.ndarray:
  """[out_size, in_size] float32 matrix of the mode's 1-D resize (identity when sizes match)."""
  check_mode(mode)
  if in_size == out_size:
    m = np.eye(in_size)
  else:
    m = {"default": _torch_bilinear, "tf1": _tf_legacy_bilinear,
         "clean": _pil_bicubic}[mode](in_size, out_size)
  m = m.astype(np.float32)
  m.flags.writeable = False
  return m


# ----------------------------------------------------------------------------- images

def as_uint8_rgb(images, value_range=(0.0, 1.0)):
  """[N,H,W], [N,H,W,1|3|4] uint8 or float -> [N,H,W,3] uint8 numpy.

  Float images (generated samples) are quantized first, as the references see them
  after saving to PNG: round(255 * (x - lo) / (hi - lo)) clipped to 0..255 (torchvision
  `save_image`'s x*255 + 0.5). Grayscale is repeated to 3 channels; alpha is dropped
  (PIL's convert("RGB")).
  """
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
    raise InputError(f"expected images [N,H,W] or [N,H,W,1|3|4], got shape {x.shape}")
  if x.dtype != np.uint8:
    if np.issubdtype(x.dtype, np.floating):
      lo, hi = value_range
      x = np.floor((x.astype(np.float32) - lo) * (255.0 / (hi - lo)) + 0.5)
      x = np.nan_to_num(x, nan=0.0)
    elif not np.issubdtype(x.dtype, np.integer):
      raise InputError(f"images must be uint8 or float, got {x.dtype}")
    x = np.clip(x, 0, 255).astype(np.uint8)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  elif x.shape[-1] == 4:
    x = x[..., :3]
  return x


def to_network_input(images_uint8, mode, xp=np):
  """uint8 [N,H,W,3] -> float32 [N,299,299,3] network input. `xp` is numpy or jax.numpy."""
  check_mode(mode)
  _, h, w, _ = images_uint8.shape
  x = images_uint8.astype(xp.float32)
  if mode == "default":
    x = x / xp.float32(255.0)
  if (h, w) != (SIZE, SIZE):
    ah, aw = resize_matrix(h, SIZE, mode), resize_matrix(w, SIZE, mode)
    # Width first, then height: Pillow's order (its float intermediate is rounded the same way).
    if xp is np:
      x = np.einsum("pw,nhwc->nhpc", aw, x, optimize=True)
      x = np.einsum("oh,nhpc->nopc", ah, x, optimize=True)
    else:
      import jax
      hi = jax.lax.Precision.HIGHEST
      x = xp.einsum("pw,nhwc->nhpc", aw, x, precision=hi)
      x = xp.einsum("oh,nhpc->nopc", ah, x, precision=hi)
  if mode == "default":
    return x * 2 - 1
  if mode == "clean":
    x = xp.clip(x, 0.0, 255.0)
  return (x - 128) / 128
