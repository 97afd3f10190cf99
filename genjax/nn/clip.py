"""CLIP (OpenAI / open_clip ViT models) in Flax linen, and its weights from a torch state dict.

    spec = ClipSpec.from_state_dict(state, activation="quick_gelu")
    params = state_dict_to_params(state, spec)
    model = Clip(spec)
    img = model.apply({"params": params}, pixels, method=Clip.embed_images)  # [B, D], unit norm
    txt = model.apply({"params": params}, ids, method=Clip.embed_texts)      # [B, D], unit norm

Architecture (OpenAI's `clip/model.py`, which open_clip's `CLIP` class keeps name for name):
* image tower: patches by a bias-free conv (stride = patch), a class token, learned positions,
  `ln_pre`, pre-LN residual blocks (x += attn(ln_1 x); x += mlp(ln_2 x), mlp = c_fc, activation,
  c_proj), `ln_post` on the class token, then `proj` (no bias);
* text tower: token + learned position embeddings, the same blocks under a causal mask,
  `ln_final`, the features at the end-of-text token (the row's largest id, as OpenAI pools), then
  `text_projection`.
Heads are width / 64 in both towers (at least 1), layer norms have eps 1e-5 and run in float32.
The MLP's activation is QuickGELU (x * sigmoid(1.702 x)) for OpenAI-trained weights and exact GELU for most
open_clip ones; it is NOT stored in a state dict, so `ClipSpec` takes it explicitly (a wrong one
changes the embeddings: tests/metrics/test_clip_parity.py).

Only ViT image towers: ResNet ones (OpenAI's RN50 ...) are refused with a clear error.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax.errors import WeightsError

ACTIVATIONS = ("quick_gelu", "gelu")
# OpenAI's pixel normalisation (x in [0, 1]), kept by open_clip's CLIP models.
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
LN_EPS = 1e-5
HEAD_WIDTH = 64


def num_heads(width: int) -> int:
  """OpenAI's width / 64 heads (at least one, for the small in-domain models)."""
  return max(1, width // HEAD_WIDTH)


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """Shapes of a CLIP model, read off its state dict the way OpenAI's `build_model` does."""

  embed_dim: int
  image_size: int
  patch_size: int
  vision_width: int
  vision_layers: int
  context_length: int
  vocab_size: int
  text_width: int
  text_layers: int
  activation: str = "quick_gelu"

  def __post_init__(self):
    if self.activation not in ACTIVATIONS:
      raise WeightsError(f"CLIP activation must be one of {ACTIVATIONS}, got {self.activation!r}")

  @classmethod
  def from_state_dict(cls, state: Mapping[str, np.ndarray], activation: str) -> "ClipSpec":
    if "visual.conv1.weight" not in state:
      if any(k.startswith("visual.layer1.") for k in state):
        raise WeightsError("this CLIP checkpoint has a ResNet image tower (e.g. RN50); genjax "
                           "supports ViT CLIP models only")
      raise WeightsError("not a CLIP state dict: no visual.conv1.weight (expected OpenAI / "
                         "open_clip names such as visual.transformer.resblocks.0.attn.in_proj_weight)")
    conv = state["visual.conv1.weight"]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return cls(
        embed_dim=int(state["text_projection"].shape[1]),
        image_size=int(conv.shape[-1] * grid),
        patch_size=int(conv.shape[-1]),
        vision_width=int(conv.shape[0]),
        vision_layers=_count_blocks(state, "visual.transformer."),
        context_length=int(state["positional_embedding"].shape[0]),
        vocab_size=int(state["token_embedding.weight"].shape[0]),
        text_width=int(state["ln_final.weight"].shape[0]),
        text_layers=_count_blocks(state, "transformer."),
        activation=activation)


  @classmethod
  def from_params(cls, params: Mapping, activation: str) -> "ClipSpec":
    """The spec of a Flax `Clip` parameter tree (a genjax run's checkpoint)."""
    patch, _, _, width = params["conv1"]["kernel"].shape
    grid = round((params["visual_positional_embedding"].shape[0] - 1) ** 0.5)
    vocab, text_width = params["token_embedding"]["embedding"].shape
    return cls(embed_dim=int(params["proj"].shape[1]), image_size=int(patch * grid),
               patch_size=int(patch), vision_width=int(width),
               vision_layers=sum(k.startswith("visual_block_") for k in params),
               context_length=int(params["positional_embedding"].shape[0]),
               vocab_size=int(vocab), text_width=int(text_width),
               text_layers=sum(k.startswith("text_block_") for k in params),
               activation=activation)


def _count_blocks(state, prefix):
  pattern = re.compile(re.escape(prefix) + r"resblocks\.(\d+)\.")
  found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
  return max(found) + 1 if found else 0


def quick_gelu(x):
  return x * jax.nn.sigmoid(1.702 * x)


def _layer_norm(name):
  return nn.LayerNorm(epsilon=LN_EPS, dtype=jnp.float32, name=name)


class ResidualBlock(nn.Module):
  """x += attn(ln_1 x, mask); x += c_proj(act(c_fc(ln_2 x)))."""

  width: int
  activation: str

  @nn.compact
  def __call__(self, x, mask=None):
    h = _layer_norm("ln_1")(x)
    x = x + nn.MultiHeadDotProductAttention(
        num_heads=num_heads(self.width), qkv_features=self.width, out_features=self.width,
        name="attn")(h, h, mask=mask)
    h = nn.Dense(4 * self.width, name="c_fc")(_layer_norm("ln_2")(x))
    h = quick_gelu(h) if self.activation == "quick_gelu" else nn.gelu(h, approximate=False)
    return x + nn.Dense(self.width, name="c_proj")(h)


class Clip(nn.Module):
  spec: ClipSpec

  def setup(self):
    s = self.spec
    self.conv1 = nn.Conv(s.vision_width, (s.patch_size,) * 2, strides=(s.patch_size,) * 2,
                         padding="VALID", use_bias=False)
    grid = s.image_size // s.patch_size
    init = nn.initializers.normal(s.vision_width ** -0.5)
    self.class_embedding = self.param("class_embedding", init, (s.vision_width,))
    self.visual_positions = self.param("visual_positional_embedding", init,
                                       (grid * grid + 1, s.vision_width))
    self.ln_pre, self.ln_post = _layer_norm("ln_pre"), _layer_norm("ln_post")
    self.visual_blocks = [ResidualBlock(s.vision_width, s.activation, name=f"visual_block_{i}")
                          for i in range(s.vision_layers)]
    self.proj = self.param("proj", init, (s.vision_width, s.embed_dim))

    self.token_embedding = nn.Embed(s.vocab_size, s.text_width)
    self.text_positions = self.param("positional_embedding", nn.initializers.normal(0.01),
                                     (s.context_length, s.text_width))
    self.text_blocks = [ResidualBlock(s.text_width, s.activation, name=f"text_block_{i}")
                        for i in range(s.text_layers)]
    self.ln_final = _layer_norm("ln_final")
    self.text_projection = self.param("text_projection", nn.initializers.normal(
        s.text_width ** -0.5), (s.text_width, s.embed_dim))
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)), ())

  def image_features(self, pixels):
    """pixels float32[B, S, S, 3], already normalised (genjax.metrics.clip_score) -> [B, D]."""
    x = self.conv1(pixels)
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    cls = jnp.broadcast_to(self.class_embedding, (b, 1, c))
    x = jnp.concatenate([cls, x], axis=1) + self.visual_positions
    x = self.ln_pre(x)
    for block in self.visual_blocks:
      x = block(x)
    return self.ln_post(x[:, 0]) @ self.proj

  def text_features(self, ids, mask=None):
    """ids int32[B, L] -> [B, D]. Pooled at the end-of-text token: OpenAI's ids put it at the
    row's largest id; with `mask` (True on real tokens, a genjax tokenizer's [CLS] ... [SEP]
    rows) at the last real token. The causal mask keeps padding after it out of its features."""
    length = ids.shape[1]
    x = self.token_embedding(ids) + self.text_positions[:length]
    causal = nn.make_causal_mask(ids, dtype=bool)
    for block in self.text_blocks:
      x = block(x, causal)
    x = self.ln_final(x)
    eot = jnp.argmax(ids, axis=-1) if mask is None else jnp.sum(mask, axis=-1) - 1
    return x[jnp.arange(x.shape[0]), eot] @ self.text_projection

  def embed_images(self, pixels):
    return _unit(self.image_features(pixels))

  def embed_texts(self, ids, mask=None):
    return _unit(self.text_features(ids, mask))

  def __call__(self, pixels, ids, mask=None):
    """Logits [B_images, B_texts] = exp(logit_scale) * cosine similarities (used in training)."""
    return jnp.exp(self.logit_scale) * self.embed_images(pixels) @ self.embed_texts(ids, mask).T


def _unit(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- torch weights

def _block_params(take, prefix, width):
  """One OpenAI residual block -> Flax ResidualBlock params (torch Linear weights are [out, in])."""
  heads = num_heads(width)
  head_width = width // heads
  w_in, b_in = take(prefix + "attn.in_proj_weight"), take(prefix + "attn.in_proj_bias")
  attn = {}
  for i, name in enumerate(("query", "key", "value")):
    w = w_in[i * width:(i + 1) * width]  # [out, in]
    attn[name] = {"kernel": w.T.reshape(width, heads, head_width),
                  "bias": b_in[i * width:(i + 1) * width].reshape(heads, head_width)}
  attn["out"] = {"kernel": take(prefix + "attn.out_proj.weight").T.reshape(heads, head_width, width),
                 "bias": take(prefix + "attn.out_proj.bias")}
  return {
      "ln_1": _ln(take, prefix + "ln_1"), "ln_2": _ln(take, prefix + "ln_2"), "attn": attn,
      "c_fc": _dense(take, prefix + "mlp.c_fc"), "c_proj": _dense(take, prefix + "mlp.c_proj"),
  }


def _ln(take, prefix):
  return {"scale": take(prefix + ".weight"), "bias": take(prefix + ".bias")}


def _dense(take, prefix):
  return {"kernel": take(prefix + ".weight").T, "bias": take(prefix + ".bias")}


# Entries of OpenAI/open_clip state dicts that hold no weights genjax needs.
_IGNORED = {"input_resolution", "context_length", "vocab_size", "attn_mask"}


def state_dict_to_params(state: Mapping[str, np.ndarray], spec: ClipSpec) -> dict:
  """OpenAI / open_clip names -> the Flax tree of `Clip(spec)`, float32. Every tensor of the
  state dict must be used (an unexpected one means a different architecture)."""
  state = {k: np.asarray(v, np.float32) for k, v in state.items()
           if k.rsplit(".", 1)[-1] not in _IGNORED}
  used = set()

  def take(key):
    if key not in state:
      raise WeightsError(f"CLIP state dict lacks {key}")
    used.add(key)
    return state[key]

  conv = take("visual.conv1.weight")  # [out, in, kh, kw] -> HWIO
  params = {
      "conv1": {"kernel": conv.transpose(2, 3, 1, 0)},
      "class_embedding": take("visual.class_embedding"),
      "visual_positional_embedding": take("visual.positional_embedding"),
      "ln_pre": _ln(take, "visual.ln_pre"), "ln_post": _ln(take, "visual.ln_post"),
      "proj": take("visual.proj"),
      "token_embedding": {"embedding": take("token_embedding.weight")},
      "positional_embedding": take("positional_embedding"),
      "ln_final": _ln(take, "ln_final"),
      "text_projection": take("text_projection"),
      "logit_scale": take("logit_scale").reshape(()),
  }
  for i in range(spec.vision_layers):
    params[f"visual_block_{i}"] = _block_params(take, f"visual.transformer.resblocks.{i}.",
                                                spec.vision_width)
  for i in range(spec.text_layers):
    params[f"text_block_{i}"] = _block_params(take, f"transformer.resblocks.{i}.",
                                              spec.text_width)
  unused = sorted(set(state) - used)
  if unused:
    raise WeightsError(f"CLIP state dict has tensors genjax does not know: {unused[:4]} "
                       f"({len(unused)} in all); is it a ViT CLIP with OpenAI / open_clip names?")
  expected = jax.eval_shape(lambda: Clip(spec).init(
      jax.random.PRNGKey(0), jnp.zeros((1, spec.image_size, spec.image_size, 3)),
      jnp.zeros((1, spec.context_length), jnp.int32))["params"])
  got = jax.tree_util.tree_map(lambda x: x.shape, params)
  want = jax.tree_util.tree_map(lambda x: x.shape, expected)
  if got != want:
    raise WeightsError("CLIP state dict shapes do not match the architecture read from it")
  return params
