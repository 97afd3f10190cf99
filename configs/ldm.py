"""Latent diffusion (stage 2 of the text-to-image stack): the diffusion family on the latents of
a frozen autoencoder run (configs/autoencoder.py), text-conditioned like configs/t2i.py.

    python launch.py --config=configs/autoencoder.py:size=small --workdir=runs/autoencoder
    python launch.py --config=configs/ldm.py:size=small,autoencoder=runs/autoencoder --workdir=runs/ldm
    python launch.py --mode=sample --workdir=runs/ldm --prompt "a red circle on the left" --guidance=2

prompt -> tokens -> text encoder -> U-Net denoising the autoencoder's latents (scaled to unit
variance by the statistics that run stored) -> the frozen decoder -> image. Arguments: those of
configs/t2i.py (dataset, size, encoder, text_size) and `autoencoder`, the stage's workdir
(optionally WORKDIR@STEP); the dataset must be the autoencoder's.
"""

from configs import t2i
from configs.common import COMMON_ARG_DEFAULTS, parse_arg

# U-Net sizes on the latents (16x16x3 for 64x64 images at f=4); the rest as configs/t2i.py.
LATENT_UNETS = {
    "smoke": dict(ch=8, ch_mult=(1, 2), attn_resolutions=(2,), layout_resolutions=(2,)),
    "small": dict(ch=32, ch_mult=(1, 2, 2), attn_resolutions=(8,), layout_resolutions=(8,)),
    "full": dict(ch=128, ch_mult=(1, 2, 2, 4), attn_resolutions=(8, 4), layout_resolutions=(8,)),
}


def get_config(arg=None):
  args = parse_arg(arg, dict(COMMON_ARG_DEFAULTS, dataset="scenes", encoder="trainable",
                             text_size="tiny", autoencoder="runs/autoencoder"))
  c = t2i.get_config(f"dataset={args.dataset},size={args.size},encoder={args.encoder},"
                     f"text_size={args.text_size}")
  m = c.model
  m.latent = True
  m.update(LATENT_UNETS[args.size])
  m.clip_denoised = False  # latents are unbounded (unit variance after scaling)
  m.eval_bpd = False
  c.stages.autoencoder = args.autoencoder
  return c
