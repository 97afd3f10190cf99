"""Preprocessing modes that need no torch: TF's legacy bilinear, quantization, channels."""

import numpy as np
import pytest

from genjax.errors import InputError
from genjax.metrics import preprocess


def _tf_legacy_resize_bilinear(image, out_h, out_w):
  """Direct transcription of TF1's ResizeBilinear (align_corners=False, half_pixel_centers=False),
  tensorflow/core/kernels/image/resize_bilinear_op.cc, float32 throughout."""
  f32 = np.float32
  in_h, in_w = image.shape[:2]

  def weights(in_size, out_size):
    scale = f32(in_size) / f32(out_size)
    out = []
    for i in range(out_size):
      src = f32(i) * scale
      lo = int(np.floor(src))
      out.append((max(lo, 0), min(int(np.ceil(src)), in_size - 1), f32(src - f32(np.floor(src)))))
    return out

  ys, xs = weights(in_h, out_h), weights(in_w, out_w)
  img = image.astype(f32)
  result = np.zeros((out_h, out_w, image.shape[2]), f32)
  for y, (y0, y1, ly) in enumerate(ys):
    for x, (x0, x1, lx) in enumerate(xs):
      top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * lx
      bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * lx
      result[y, x] = top + (bottom - top) * ly
  return result


@pytest.mark.parametrize("shape", [(28, 28), (13, 40), (400, 333)])
def test_tf1_resize_matches_tf_kernel(shape):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
  expected = (_tf_legacy_resize_bilinear(image, 299, 299) - 128) / 128
  ours = preprocess.to_network_input(image[None], "tf1", np)[0]
  np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6)


def test_same_size_is_identity_in_every_mode():
  image = np.random.default_rng(1).integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
  x = image.astype(np.float32)
  np.testing.assert_array_equal(preprocess.to_network_input(image, "tf1"), (x - 128) / 128)
  np.testing.assert_array_equal(preprocess.to_network_input(image, "clean"), (x - 128) / 128)
  np.testing.assert_array_equal(preprocess.to_network_input(image, "default"), x / 255 * 2 - 1)


def test_resize_rows_sum_to_one():
  for mode in preprocess.MODES:
    for n in (7, 28, 300, 1024):
      np.testing.assert_allclose(preprocess.resize_matrix(n, 299, mode).sum(1), 1.0, atol=1e-6)


def test_as_uint8_rgb_channels_and_quantization():
  gray = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
  rgb = preprocess.as_uint8_rgb(gray)
  assert rgb.shape == (1, 2, 3, 3) and (rgb[..., 0] == rgb[..., 2]).all()
  rgba = np.zeros((1, 2, 2, 4), np.uint8)
  rgba[..., 3] = 7
  assert preprocess.as_uint8_rgb(rgba).shape == (1, 2, 2, 3)
  # Floats are quantized like torchvision's save_image: floor(255 x + 0.5), clipped.
  floats = np.array([-0.1, 0.0, 0.5 / 255, 0.49 / 255, 0.5, 1.0, 1.2], np.float32).reshape(1, 1, 7)
  np.testing.assert_array_equal(preprocess.as_uint8_rgb(floats)[0, 0, :, 0],
                                [0, 0, 1, 0, 128, 255, 255])
  sym = preprocess.as_uint8_rgb(np.array([[[-1.0, 0.0, 1.0]]], np.float32), value_range=(-1, 1))
  np.testing.assert_array_equal(sym[0, 0, :, 0], [0, 128, 255])
  with pytest.raises(InputError, match="shape"):
    preprocess.as_uint8_rgb(np.zeros((2, 3, 3, 2)))
  with pytest.raises(InputError, match="unknown FID preprocessing mode"):
    preprocess.check_mode("bicubic")
