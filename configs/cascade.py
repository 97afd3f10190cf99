"""The cascade's super-resolution stage (the "intermediate is a small image" form of the
text-to-image stack): a text-conditional diffusion model from 32x32 to 64x64 scenes that sees
the upsampled, noise-augmented low-res image (genjax/families/super_resolution.py). Its base is
the pixel text-to-image model (configs/t2i.py on scenes32), a frozen stage used at sampling.

    python launch.py --config=configs/t2i.py:dataset=scenes32,size=small --workdir=runs/t2i
    python launch.py --config=configs/cascade.py:size=small,base=runs/t2i --workdir=runs/cascade_sr
    python launch.py --mode=sample --workdir=runs/cascade_sr --prompt "a red circle on the left" --guidance=2

Arguments: those of configs/t2i.py (dataset: the high-res images, default scenes), `base` (the
base run's workdir[@step]), low_res (its resolution, default 32), noise_aug (False trains and
samples without noise-conditioning augmentation: the ablation).
"""

from configs import t2i
from configs.common import COMMON_ARG_DEFAULTS, parse_arg

# U-Nets at the high resolution; cheaper per pixel than the base (no self-attention above 8x8).
SR_UNETS = {
    "smoke": dict(ch=8, ch_mult=(1, 2), attn_resolutions=(8,), layout_resolutions=(8,)),
    "small": dict(ch=16, ch_mult=(1, 2, 2, 2), attn_resolutions=(8,), layout_resolutions=(8,)),
    "full": dict(ch=128, ch_mult=(1, 2, 2, 4), attn_resolutions=(8,), layout_resolutions=(8,)),
}


def get_config(arg=None):
  args = parse_arg(arg, dict(COMMON_ARG_DEFAULTS, dataset="scenes", encoder="trainable",
                             text_size="tiny", base="runs/t2i", low_res=32, noise_aug=True))
  c = t2i.get_config(f"dataset={args.dataset},size={args.size},encoder={args.encoder},"
                     f"text_size={args.text_size}")
  c.family = "super_resolution"
  m = c.model
  m.update(SR_UNETS[args.size])
  m.low_res = args.low_res
  # Training levels s ~ U{0..0.5 T}; sampling at 0.2 T (not chosen on test prompts: a default).
  m.noise_aug_max = 0.5 if args.noise_aug else 0.0
  m.noise_aug_sample = 0.2 if args.noise_aug else 0.0
  m.base_guidance_scale = 2.0  # the base's guidance, chosen on validation prompts (configs/t2i.py)
  c.stages.base = args.base
  return c
