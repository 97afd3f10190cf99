r"""Contrastive image-text model (CLIP) trained by the one loop: an in-domain CLIP for scoring.

    python launch.py --config=configs/clip.py:dataset=scenes,size=small --workdir=runs/clip_scenes
    python -m genjax.metrics.clip_score IMAGES CAPTIONS --checkpoint=runs/clip_scenes

The model is genjax.nn.clip.Clip (OpenAI's ViT/text-transformer architecture) at a size set by
`config.model`, reading the images of the dataset (normalised with CLIP's mean/std) and the
caption tokens of the run's tokenizer (pooled at the last real token). Loss, for a batch of B
pairs with logits s_ij = exp(t) cos(img_i, txt_j):
    L = 1/2 [CE(s, diag) over rows + CE(s^T, diag) over rows]     (symmetric InfoNCE)
with the temperature t learned and clipped at log 100, as in CLIP. Over several devices the
logits span the global batch (jit's sharding gathers the embeddings).

It makes no images (`generates_images = False`): the loop evaluates it by `eval_metrics`, the
in-batch retrieval accuracy of each image and caption among the eval batch's real pairs.
genjax.metrics.clip_score loads a run of this family as a scorer (`run_scorer`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax.errors import ConfigError
from genjax.families.base import Family
from genjax.nn.clip import CLIP_MEAN, CLIP_STD, Clip, ClipSpec
from genjax.optim import make_optimizer

MAX_LOGIT_SCALE = float(np.log(100.0))


def normalize_images(images_uint8: jax.Array) -> jax.Array:
  x = images_uint8.astype(jnp.float32) / 255.0
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)  # grayscale datasets: CLIP's towers take RGB
  return (x - CLIP_MEAN) / CLIP_STD


class Contrastive(Family):
  """params = Clip's parameter tree; one Adam(W) optimizer."""

  generates_images = False

  def __init__(self, config, data, stages=None):
    super().__init__(config, data, stages)
    if data.text is None:
      raise ConfigError("the clip family needs captions: a captioned dataset and text.tokenizer")
    h, w, _ = data.image_shape
    m = config.model
    if h != w or h % m.patch_size:
      raise ConfigError(f"the clip family needs square images whose side divides by "
                        f"model.patch_size={m.patch_size}; got {h}x{w}")
    self.spec = ClipSpec(embed_dim=m.embed_dim, image_size=h, patch_size=m.patch_size,
                         vision_width=m.vision_width, vision_layers=m.vision_layers,
                         context_length=data.text.max_length, vocab_size=data.text.vocab_size,
                         text_width=m.text_width, text_layers=m.text_layers,
                         activation=m.activation)
    self.model = Clip(self.spec)
    self.optimizer = make_optimizer(config.optim, config.total_steps)

  def init(self, rng, batch, frozen=None):
    c = batch["cond"]
    params = self.model.init(rng, normalize_images(batch["image"]), c["tokens"],
                             c["token_mask"])["params"]
    return params, self.optimizer.init(params)

  def _logits(self, params, batch):
    c = batch["cond"]
    return self.model.apply({"params": params}, normalize_images(batch["image"]), c["tokens"],
                            c["token_mask"])

  def train_step(self, params, opt_state, batch, rng, step, frozen=None):
    labels = jnp.arange(batch["image"].shape[0])

    def loss_fn(p):
      logits = self._logits(p, batch)
      loss = 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                    + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean())
      return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    params["logit_scale"] = jnp.clip(params["logit_scale"], 0.0, MAX_LOGIT_SCALE)
    return params, opt_state, {
        "loss": loss,
        "image_to_text_top1": jnp.mean(jnp.argmax(logits, axis=1) == labels),
        "temperature": jnp.exp(-params["logit_scale"]),
        "grad_norm": optax.global_norm(grads),
    }

  def eval_metrics(self, ema_params, batch, rng, frozen=None):
    """Per pair: is its caption the best of the batch's captions for its image, and the reverse
    (padding rows of the last batch are never candidates)."""
    logits = self._logits(ema_params, batch)
    real = batch.get("mask", jnp.ones(logits.shape[0])) > 0
    labels = jnp.arange(logits.shape[0])
    masked = jnp.where(real[None, :], logits, -jnp.inf)
    masked_t = jnp.where(real[None, :], logits.T, -jnp.inf)
    return {"image_to_text_top1": (jnp.argmax(masked, axis=1) == labels).astype(jnp.float32),
            "text_to_image_top1": (jnp.argmax(masked_t, axis=1) == labels).astype(jnp.float32)}

  def sample(self, ema_params, rng, num, cond, frozen=None):
    raise ConfigError("the clip family scores images and captions; it does not generate images")


def run_scorer(workdir, batch_size: int = 32):
  """A ClipScorer (genjax.metrics.clip_score) from a trained run of this family (WORKDIR or
  WORKDIR@STEP): its EMA parameters, its tokenizer, its image size."""
  from genjax.metrics.clip_score import make_scorer  # pylint: disable=import-outside-toplevel
  from genjax.train import stages  # pylint: disable=import-outside-toplevel
  from genjax.train.run import tokenizer_for  # pylint: disable=import-outside-toplevel
  stage = stages.load_stage("clip", str(workdir))
  config = stage.info.config
  if config.family != "clip":
    raise ConfigError(f"{workdir} is a {config.family!r} run, not a clip run (configs/clip.py)")
  spec = ClipSpec.from_params(stage.params, config.model.activation)
  return make_scorer(spec, stage.params, tokenizer_for(config),
                     {"checkpoint": stage.record["source"],
                      "params_sha256": stage.record["params_sha256"]}, batch_size)
