"""Autoregressive token model on a frozen VQ tokenizer (genjax/families/token_ar.py).

  python launch.py --config=configs/token_ar.py:dataset=fashion_mnist,size=small,tokenizer=runs/vqvae \
      --workdir=runs/token_ar
  # DALL-E's structure: the caption's tokens are the prefix (a tokenizer trained on the scenes)
  python launch.py --config=configs/token_ar.py:dataset=scenes,size=small,tokenizer=runs/vqvae_scenes,text=prefix \
      --workdir=runs/token_ar_scenes
  python launch.py --mode=sample --workdir=runs/token_ar_scenes --prompt "a red sneaker on the left" --guidance=3

Arguments: dataset, size (smoke | small | full), tokenizer (a configs/vqvae.py workdir,
optionally @STEP), conditional (class prefix), text (none | prefix | cross_attention, on a
captioned dataset; genjax/families/token_model.py), encoder (cross_attention's text encoder:
trainable | minilm, the frozen pretrained MiniLM), text_size (the trainable encoder's preset).
configs/maskgit.py shares this file's presets.
"""

from configs import common
from genjax.errors import ConfigError

ENCODERS = {"trainable": "trainable", "minilm": "frozen"}

SIZES = {
    #        width depth heads batch steps  lr    warmup log eval  ckpt
    "smoke": (32, 1, 2, 8, 6, 1e-3, 2, 2, 6, 3),
    "small": (128, 4, 4, 32, 3000, 5e-4, 200, 50, 1500, 500),
    "full": (512, 12, 8, 128, 200_000, 3e-4, 2000, 200, 10_000, 5000),
}


def token_config(family: str, arg, extra_defaults: dict):
  """The config both token families share; `extra_defaults` are the family's own arguments."""
  a = common.parse_arg(arg, dict(common.COMMON_ARG_DEFAULTS, dataset="fashion_mnist", conditional=False,
                                 tokenizer="runs/vqvae", text="none", encoder="trainable",
                                 text_size="tiny", **extra_defaults))
  width, depth, heads, batch, steps, lr, warmup, log_every, eval_every, ckpt_every = (
      common.pick_size(a.size, SIZES))
  c = common.base_config(family, a.dataset)
  common.set_cadence(c, dict(batch_size=batch, total_steps=steps, log_every=log_every,
                             eval_every=eval_every, checkpoint_every=ckpt_every, fid_samples=0))
  c.stages.tokenizer = a.tokenizer
  c.optim.name = "adamw"
  c.optim.learning_rate = lr
  c.optim.warmup_steps = warmup
  c.optim.schedule = "cosine"
  c.optim.b2 = 0.95
  c.optim.weight_decay = 0.01
  c.optim.grad_clip = 1.0
  c.ema_decay = 0.995 if a.size == "small" else 0.999
  c.model.conditional = a.conditional
  c.model.width, c.model.depth, c.model.num_heads = width, depth, heads
  c.model.temperature = 1.0  # sampling temperature of the codes' softmax
  c.model.text = a.text
  if a.text != "none":
    c.text.tokenizer = "minilm"
    c.text.max_length = 40  # the scenes' captions take <= 37 MiniLM WordPiece tokens
    c.model.p_uncond = 0.1  # captions replaced by the empty caption (the guidance null)
    c.model.guidance_scale = 1.0  # sampling default; --guidance, chosen on validation prompts
  if a.text == "cross_attention":
    if a.encoder not in ENCODERS:
      raise ConfigError(f"unknown encoder {a.encoder!r}; choose one of: {', '.join(ENCODERS)}")
    c.model.text_encoder = ENCODERS[a.encoder]
    c.model.text_encoder_size = a.text_size
    if a.encoder == "minilm":
      c.stages.text_encoder = "pretrained:minilm"
  if a.size == "smoke":
    common.shrink_eval_for_smoke(c)
    c.eval.grid_size = 4
  return c, a


def get_config(arg=None):
  return token_config("token_ar", arg, {})[0]
