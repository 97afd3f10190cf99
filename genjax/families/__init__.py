"""Model families, looked up by the name in `config.family`.

Each entry is "module:Class" and is imported lazily, so a family's
dependencies are only paid for when it is used.
"""

import importlib

from genjax.errors import ConfigError
from genjax.families.base import DataSpec, Family, StageInfo, TextSpec

FAMILIES = {
    "vae": "genjax.families.vae:VAE",
    "ddpm": "genjax.families.diffusion:Diffusion",
    "gan": "genjax.families.gan:GAN",
    "flow": "genjax.families.flow:Flow",
    "pixelcnn": "genjax.families.pixelcnn:PixelCNN",
    "token_ar": "genjax.families.token_ar:TokenAR",
    "maskgit": "genjax.families.maskgit:MaskGIT",
    "autoencoder": "genjax.families.autoencoder:Autoencoder",
    "vqvae": "genjax.families.vqvae:VQAutoencoder",
    "super_resolution": "genjax.families.super_resolution:SuperResolution",
    "clip": "genjax.families.contrastive:Contrastive",
}


def get_family_class(name: str) -> type[Family]:
  if name not in FAMILIES:
    raise ConfigError(f"unknown family {name!r}; known families: {', '.join(sorted(FAMILIES))}")
  module, cls = FAMILIES[name].split(":")
  return getattr(importlib.import_module(module), cls)


def build_family(config, data: DataSpec, stages=None) -> Family:
  return get_family_class(config.family)(config, data, stages)
