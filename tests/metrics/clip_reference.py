"""The open_clip reference for genjax's CLIP parity test (runs ONLY in the reference venv).

    .venv-ref/bin/python tests/metrics/clip_reference.py OUT_DIR IMAGES_DIR CAPTIONS.json

open_clip's own `CLIP` class (open_clip_torch==3.3.0, model config ViT-B-32, QuickGELU) with
random weights, seeded and then perturbed so that no tensor keeps its default value (layer-norm
scales of exactly 1 would hide a mapping error), every value rounded through float16 so that
OpenAI's fp16 TorchScript format holds the same numbers as the fp32 ones. Written to OUT_DIR:
  clip.pt           TorchScript, fp16 (the format of OpenAI's ViT-B-32.pt)
  clip.bin          torch.save state dict, fp32 (open_clip_pytorch_model.bin)
  clip.safetensors  the same state dict (open_clip_model.safetensors)
  tiny_gelu.pt      a 2-layer GELU model, TorchScript (the activation must be read from the code)
  reference.npz     ids (open_clip.tokenize of the captions), image_emb, text_emb (normalised,
                    open_clip's encode_image / encode_text), tiny_image_emb, tiny_text_emb
Images are preprocessed as open_clip's `image_transform` does (torchvision's Resize(224,
bicubic) + CenterCrop(224) + Normalize on PIL images), written out here with PIL because
PyPI's torchvision does not load beside the CPU torch wheel: the resize is PIL's bicubic to
(new_w, new_h) with the short side 224 and the long side int(224 * long / short), the crop
offsets int(round((h - 224) / 2)), as in torchvision's functional resize / center_crop.

open_clip's package __init__ imports torchvision, so its modules are loaded from its folder with
two inert stand-ins: `torchvision.ops.misc.FrozenBatchNorm2d` (only used to freeze ResNet batch
norms) and `open_clip.hf_model` (HF text towers, unused by ViT-B-32).
"""

import copy
import importlib
import json
import os
import sys
import types

import numpy as np
import torch
from PIL import Image

SEED = 0
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def import_open_clip():
  site = next(p for p in sys.path if p.endswith("site-packages")
              and os.path.isdir(os.path.join(p, "open_clip")))
  misc = types.ModuleType("torchvision.ops.misc")
  misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (), {})
  ops = types.ModuleType("torchvision.ops")
  ops.misc = misc
  vision = types.ModuleType("torchvision")
  vision.ops = ops
  hf_model = types.ModuleType("open_clip.hf_model")
  hf_model.HFTextEncoder = None
  package = types.ModuleType("open_clip")
  package.__path__ = [os.path.join(site, "open_clip")]
  sys.modules.update({"torchvision": vision, "torchvision.ops": ops, "torchvision.ops.misc": misc,
                      "open_clip.hf_model": hf_model, "open_clip": package})
  model = importlib.import_module("open_clip.model")
  tokenizer = importlib.import_module("open_clip.tokenizer")
  configs = os.path.join(site, "open_clip", "model_configs")
  return model, tokenizer, configs


def random_model(model_module, cfg, quick_gelu, seed):
  torch.manual_seed(seed)
  model = model_module.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"],
                            quick_gelu=quick_gelu).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.02 * torch.randn_like(p))
      p.copy_(p.half().float())  # exactly representable in the fp16 TorchScript file
  return model


def preprocess(path, size):
  image = Image.open(path).convert("RGB")
  w, h = image.size
  short, long = min(w, h), max(w, h)
  new_short, new_long = size, int(size * long / short)
  new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
  image = image.resize((new_w, new_h), Image.BICUBIC)
  top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
  image = image.crop((left, top, left + size, top + size))
  x = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)
  return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def embed(model, pixels, ids):
  with torch.no_grad():
    return (model.encode_image(pixels, normalize=True).numpy(),
            model.encode_text(ids, normalize=True).numpy())


def main(out_dir, images_dir, captions_json):
  from safetensors.torch import save_file
  model_module, tokenizer, configs = import_open_clip()
  cfg = json.load(open(os.path.join(configs, "ViT-B-32.json")))
  captions = json.load(open(captions_json))
  ids = tokenizer.tokenize(captions)
  names = sorted(os.listdir(images_dir))
  pixels = torch.stack([preprocess(os.path.join(images_dir, n), 224) for n in names])

  model = random_model(model_module, cfg, quick_gelu=True, seed=SEED)
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  torch.save(state, os.path.join(out_dir, "clip.bin"))
  save_file(state, os.path.join(out_dir, "clip.safetensors"))
  torch.jit.save(torch.jit.script(copy.deepcopy(model).half()),
                 os.path.join(out_dir, "clip.pt"))
  image_emb, text_emb = embed(model, pixels, ids)

  tiny_cfg = {"embed_dim": 64, "vision_cfg": {"image_size": 224, "layers": 2, "width": 128,
                                              "patch_size": 32},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2,
                           "layers": 2}}
  tiny = random_model(model_module, tiny_cfg, quick_gelu=False, seed=SEED + 1)
  torch.jit.save(torch.jit.script(tiny), os.path.join(out_dir, "tiny_gelu.pt"))
  tiny_image_emb, tiny_text_emb = embed(tiny, pixels, ids)

  np.savez(os.path.join(out_dir, "reference.npz"), ids=ids.numpy(), names=np.array(names),
           image_emb=image_emb, text_emb=text_emb, tiny_image_emb=tiny_image_emb,
           tiny_text_emb=tiny_text_emb)


if __name__ == "__main__":
  torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
  main(*sys.argv[1:4])
