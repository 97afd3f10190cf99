"""MaskGIT on a frozen VQ tokenizer (genjax/families/maskgit.py); the transformer presets are
configs/token_ar.py's, so the two decoders compare at equal size.

  python launch.py --config=configs/maskgit.py:dataset=fashion_mnist,size=small,tokenizer=runs/vqvae \
      --workdir=runs/maskgit
Arguments: those of configs/token_ar.py, and steps (T, the parallel decoding steps; any T can
also be given at sampling time: --steps / sample_with(steps=T)).
"""

from configs.token_ar import token_config


def get_config(arg=None):
  c, a = token_config("maskgit", arg, {"steps": 8})
  c.model.sample_steps = a.steps
  c.model.min_mask_rate = 0.1  # every training sequence has at least this share masked
  c.model.choice_temperature = 4.5  # Gumbel noise on confidences at step 1, annealed to 0
  return c
