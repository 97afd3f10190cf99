"""In-domain CLIP: the contrastive family (symmetric InfoNCE, learned temperature) on captions.

    python launch.py --config=configs/clip.py:dataset=scenes,size=small --workdir=runs/clip_scenes
    python -m genjax.metrics.clip_score IMAGES CAPTIONS --checkpoint=runs/clip_scenes

Arguments: dataset (a captioned dataset: scenes, scenes32, captioned_folder:PATH), size
(smoke | small | full). The towers are OpenAI CLIP's (ViT image tower, causal text transformer;
genjax.nn.clip), small enough to train on CPU; captions use MiniLM's WordPiece tokenizer (as
the text-to-image configs), so the in-domain CLIP reads the same tokens they do. The run is
evaluated by in-batch retrieval on the test split; CLIP score and R-precision of images come
from genjax.metrics.clip_score / experiments/clip_scores.py.
"""

from configs.common import (COMMON_ARG_DEFAULTS, base_config, parse_arg, pick_size, set_cadence,
                            shrink_eval_for_smoke)

SIZES = {
    # Trains in seconds: used by the tests.
    "smoke": dict(batch_size=8, total_steps=4, log_every=2, eval_every=4, checkpoint_every=2,
                  patch_size=8, vision_width=32, vision_layers=1, text_width=32, text_layers=1,
                  embed_dim=16, learning_rate=1e-3, warmup_steps=0, max_length=16),
    # 2 CPU cores, 64x64 scenes: 8x8 patches (64 tokens), two 4-layer towers of width 128.
    # README gives the measured steps/s and wall time.
    "small": dict(batch_size=128, total_steps=3000, log_every=50, eval_every=1000,
                  checkpoint_every=500, patch_size=8, vision_width=128, vision_layers=4,
                  text_width=128, text_layers=4, embed_dim=128, learning_rate=5e-4,
                  warmup_steps=200, max_length=32),
    # Accelerator: ViT-B/16-like image tower at 64x64 (patch 8), CLIP's text tower width.
    "full": dict(batch_size=1024, total_steps=50_000, log_every=100, eval_every=5000,
                 checkpoint_every=5000, patch_size=8, vision_width=768, vision_layers=12,
                 text_width=512, text_layers=12, embed_dim=512, learning_rate=5e-4,
                 warmup_steps=2000, max_length=32),
}


def get_config(arg=None):
  a = parse_arg(arg, dict(COMMON_ARG_DEFAULTS, dataset="scenes"))
  s = pick_size(a.size, SIZES)
  c = base_config("clip", a.dataset)
  set_cadence(c, s)
  c.ema_decay = 0.9 if a.size == "smoke" else 0.999
  m = c.model
  for key in ("patch_size", "vision_width", "vision_layers", "text_width", "text_layers",
              "embed_dim"):
    m[key] = s[key]
  m.activation = "gelu"
  c.text.tokenizer = "minilm"
  c.text.max_length = s["max_length"]
  # Adam without weight decay: genjax's optimizer has no decay mask, and decaying the learned
  # temperature (or the layer-norm gains) would fight the loss.
  c.optim.name = "adam"
  c.optim.learning_rate = s["learning_rate"]
  c.optim.warmup_steps = s["warmup_steps"]
  c.optim.schedule = "cosine"
  c.optim.b2 = 0.98  # CLIP's
  c.eval.batch_size = 100  # retrieval among 100 pairs, as R-precision's R
  c.eval.num_batches = 10
  if a.size == "smoke":
    shrink_eval_for_smoke(c)
    c.eval.batch_size = 16
  return c
