"""Caption conditioning shared by the text-conditioned families (diffusion's U-Net, the token
models): which text encoder encodes the batch's caption tokens, and the empty caption that is
classifier-free guidance's null condition.

`model.text_encoder`: "trainable" (a transformer of preset `model.text_encoder_size`, trained
with the model, genjax/nn/text_encoder.py) or "frozen" (pretrained all-MiniLM-L6-v2, the frozen
stage `stages.text_encoder = "pretrained:minilm"`, passed by the loop in `frozen`).
"""

from __future__ import annotations

import jax.numpy as jnp

from genjax.errors import ConfigError

TEXT_ENCODERS = ("trainable", "frozen")
MINILM_SOURCE = "pretrained:minilm"  # the frozen text encoder stage genjax ships


def build_text_encoder(mode: str, model_config, data, stages):
  """The flax text encoder for `mode` (see the module docstring)."""
  if mode not in TEXT_ENCODERS:
    raise ConfigError(f"unknown model.text_encoder {mode!r}; choose one of: {', '.join(TEXT_ENCODERS)}")
  if data.text is None:
    raise ConfigError(f"model.text_encoder={mode!r} needs caption tokens: set text.tokenizer (e.g. "
                      f"'minilm') and use a captioned dataset (e.g. scenes32)")
  if mode == "trainable":
    from genjax.nn.text_encoder import text_encoder_from_preset  # pylint: disable=import-outside-toplevel
    return text_encoder_from_preset(model_config.text_encoder_size, data.text.vocab_size, data.text.max_length)
  from genjax.nn.minilm import MiniLM  # pylint: disable=import-outside-toplevel
  source = stages["text_encoder"].source if "text_encoder" in stages else ""
  if source != MINILM_SOURCE:
    raise ConfigError(f"model.text_encoder='frozen' needs stages.text_encoder={MINILM_SOURCE!r}, got {source!r}")
  return MiniLM()


def null_tokens(text_spec, n: int):
  """(ids int32[n, L], mask bool[n, L]) of the empty caption."""
  return (jnp.tile(jnp.asarray(text_spec.null_ids, jnp.int32)[None], (n, 1)),
          jnp.tile(jnp.asarray(text_spec.null_mask, bool)[None], (n, 1)))


def caption_tokens(text_spec, cond, drop=None):
  """(ids, mask) of the batch's captions `cond`; `drop` bool[B] replaces those examples' captions
  by the empty caption (condition dropout, or all True for the guidance null)."""
  ids, mask = cond["tokens"].astype(jnp.int32), cond["token_mask"].astype(bool)
  if drop is not None:
    null_ids, null_mask = null_tokens(text_spec, ids.shape[0])
    ids = jnp.where(drop[:, None], null_ids, ids)
    mask = jnp.where(drop[:, None], null_mask, mask)
  return ids, mask
