"""Reading torch weight files without torch, and without running code they name.

    obj = read_torch_file(path)   # tensors become (read-only) numpy arrays

Accepted: `torch.save` zip archives (a state dict, possibly nested in a training checkpoint),
legacy pre-1.6 `torch.save` files, and TorchScript archives (`torch.jit.save`, e.g. OpenAI's CLIP
`.pt` files), whose module objects become inert `ScriptRecord`s holding their attributes.

Unpickling runs code named by the file, so nothing is opened with `pickle.load` or torch:
`_RestrictedUnpickler` resolves only the globals such files need (tensor rebuild, storage
dtypes, OrderedDict, TorchScript classes as records) and refuses everything else. Callers check
the file's sha256 (`file_sha256`) against a known value before unpickling where one exists.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from genjax.errors import WeightsError


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
    "BFloat16Storage": "bfloat16",  # ml_dtypes' (a jax dependency); callers cast to float32
}


class _StorageType:
  def __init__(self, name):
    self.name = name
    dtype = _STORAGE_DTYPES[name]
    if dtype == "bfloat16":
      import ml_dtypes  # pylint: disable=import-outside-toplevel
      dtype = ml_dtypes.bfloat16
    self.dtype = np.dtype(dtype).newbyteorder("<")


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
    if module.startswith("__torch__."):
      # A TorchScript module's class: its code lives in the archive's code/ folder, which is
      # never run; the object becomes a record of its attributes.
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
