"""OpenAI CLIP's tokenizer (byte-level BPE, 49,408 ids, 77 tokens), built on `tokenizers`.

    tok = ClipTokenizer()                     # merges from the open_clip_torch wheel
    ids = tok(["a photo of a cat", "ein Hund"])  # int32[2, 77]

The vocabulary is defined by OpenAI's merges file `bpe_simple_vocab_16e6.txt.gz`, shipped in
the wheel of `pip install --no-deps open_clip_torch==3.3.0` (genjax only reads the file, hash
checked). The ids are those of OpenAI's `clip.tokenize(..., truncate=True)` and open_clip's
`tokenize` (tests/metrics/test_clip_parity.py compares them on 60 captions), because every step
is theirs:

1. clean: `ftfy.fix_text`, HTML entities unescaped twice, whitespace runs collapsed to one space,
   stripped, lower-cased;
2. split into words by CLIP's pattern (contractions 's 't 're 've 'm 'll 'd, letter runs, single
   digits, runs of other non-space characters), each word's UTF-8 bytes mapped to printable
   characters (GPT-2's byte table);
3. byte-pair merges in the file's order of the first 48,894 merges, the last symbol of a word
   marked with `</w>`; ids: the 256 byte symbols (in the table's order, not byte order), the
   same 256 with `</w>`, one per merge, then
   <start_of_text> = 49406 and <end_of_text> = 49407;
4. row = [sot] + ids + [eot], cut to `context_length` with the LAST kept id replaced by eot (so an
   over-long caption still ends in the token the text tower pools at), zero-padded.

Steps 2-3 run in the Rust `tokenizers` library (Split + ByteLevel pre-tokenizers and a BPE model
with `end_of_word_suffix`), step 1 in Python because ftfy has no Rust counterpart.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
import tokenizers

from genjax.data.tokenizer import read_checked
from genjax.errors import DatasetError, InputError

OPEN_CLIP_INSTALL = "pip install --no-deps open_clip_torch==3.3.0"
MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
CONTEXT_LENGTH = 77
NUM_MERGES = 49152 - 256 - 2  # OpenAI's vocabulary: 49,408 = 2 * 256 + merges + 2 specials
SOT, EOT = "<start_of_text>", "<end_of_text>"
# CLIP's word pattern (after lower-casing, so case-insensitivity only matters for the specials).
WORD_PATTERN = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"""


def merges_path() -> Path:
  """`open_clip/bpe_simple_vocab_16e6.txt.gz` of the installed wheel (found without importing
  open_clip, which imports torch); DatasetError with the install command if absent."""
  try:
    spec = importlib.util.find_spec("open_clip")
  except (ImportError, ValueError):
    spec = None
  for folder in (spec.submodule_search_locations or []) if spec else []:
    path = Path(folder) / MERGES_FILE
    if path.is_file():
      return path
  raise DatasetError(f"CLIP's BPE merges file open_clip/{MERGES_FILE} not found; install it with: "
                     f"{OPEN_CLIP_INSTALL}")


def byte_symbols() -> list[str]:
  """GPT-2/CLIP's byte table as an ordered list (its order fixes the first 256 ids): printable
  Latin-1 bytes stand for themselves and come first, in byte order; the other 68 bytes
  (controls, space, soft hyphen ...) follow as chr(256), chr(257), ... in byte order."""
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
  rest = [b for b in range(256) if b not in keep]
  return [chr(b) for b in keep] + [chr(256 + k) for k in range(len(rest))]


def clean(text: str) -> str:
  import ftfy  # pylint: disable=import-outside-toplevel  (only CLIP text needs it)
  text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
  return " ".join(text.split()).lower()


@functools.lru_cache(maxsize=2)
def _backend(path: str, sha256: str | None) -> tokenizers.Tokenizer:
  raw = read_checked(path, sha256, f"reinstall it with: {OPEN_CLIP_INSTALL}",
                     what="CLIP merges file")
  try:
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
  except (OSError, UnicodeDecodeError) as e:
    raise DatasetError(f"CLIP merges file {path} is not a gzipped text file: {e}") from None
  merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]  # line 0 is a version tag
  if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
    raise DatasetError(f"CLIP merges file {path} does not hold {NUM_MERGES} merges")
  symbols = byte_symbols()
  vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
  model = tokenizers.models.BPE(vocab={s: i for i, s in enumerate(vocab)}, merges=merges,
                                end_of_word_suffix="</w>")
  tok = tokenizers.Tokenizer(model)
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
      tokenizers.pre_tokenizers.Split(tokenizers.Regex(WORD_PATTERN), behavior="removed",
                                      invert=True),
      tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ])
  # A caption that literally contains "<end_of_text>" gets that id, as in OpenAI's code.
  tok.add_special_tokens([SOT, EOT])
  return tok


class ClipTokenizer:
  """texts -> int32[B, context_length] ids of OpenAI CLIP (see the module docstring)."""

  def __init__(self, path=None, context_length: int = CONTEXT_LENGTH, check_hash: bool = True):
    path = Path(path) if path is not None else merges_path()
    if not path.is_file():
      raise DatasetError(f"CLIP merges file {path} does not exist; install the default one with: "
                         f"{OPEN_CLIP_INSTALL}")
    self._backend = _backend(str(path), MERGES_SHA256 if check_hash else None)
    self.context_length = int(context_length)
    self.sot_id = self._backend.token_to_id(SOT)
    self.eot_id = self._backend.token_to_id(EOT)

  @property
  def vocab_size(self) -> int:
    return self._backend.get_vocab_size(with_added_tokens=True)

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    if isinstance(texts, (str, bytes)) or not all(isinstance(t, str) for t in texts):
      raise InputError("ClipTokenizer expects a sequence of str (a batch of captions)")
    texts = list(texts)
    out = np.zeros((len(texts), self.context_length), np.int32)
    cleaned = [clean(t) for t in texts]
    for row, enc in enumerate(self._backend.encode_batch(cleaned, add_special_tokens=False)):
      ids = [self.sot_id, *enc.ids, self.eot_id][:self.context_length]
      ids[-1] = self.eot_id  # truncate=True: the end token survives the cut
      out[row, :len(ids)] = ids
    return out
