"""CLIP score and CLIP R-precision, in JAX, with CLIP weights the user supplies.

    python -m genjax.metrics.clip_score IMAGES CAPTIONS --checkpoint=ViT-B-32.pt
    python -m genjax.metrics.clip_score IMAGES CAPTIONS --checkpoint=open_clip_model.safetensors \
        --activation=gelu
    python -m genjax.metrics.clip_score IMAGES CAPTIONS --checkpoint=runs/clip_scenes  # genjax run

IMAGES is a folder of images; CAPTIONS a `metadata.jsonl` ({"file_name", "text"} per line, the
image-folder convention), the `captions.txt` that `launch.py --mode=sample` writes beside its
images ("ID<TAB>caption" lines), or a text file with one caption per line for the images in
file-name order. Prints the mean score and writes per-pair scores with `--out=FILE.json`.

Definitions (the conventions researchers compare against):
* CLIP score = mean over image-caption pairs of w * max(cos(E_img, E_txt), 0) with w = 100 (the
  torchmetrics convention); `--w=2.5` gives Hessel et al.'s CLIP-S. Per-pair scores are
  returned, and they do not depend on the batch size or the padding of the last batch (each row
  is computed alone: no statistic crosses the batch; tests/metrics/test_clip_score.py).
* CLIP R-precision (the rule is genjax's, as the original code was never released): for each
  image, its caption and R - 1 = 99 "negative" captions drawn without replacement, by a seeded
  generator, from the captions of OTHER images whose text differs from the true one; the image
  counts as a hit when its own caption has the highest cosine among the R. R-precision = hits /
  images (with one relevant caption among R this equals top-1 retrieval among R).

Checkpoints (hash recorded in every result, never unpickled without restriction, see
genjax.torch_files):
* OpenAI's TorchScript `.pt` (`ViT-B-32.pt`, ...): fp16 weights, cast to float32; the activation
  (QuickGELU) is read from the archive's own code;
* open_clip `.safetensors` / `.bin` state dicts (a training checkpoint's "state_dict" with
  "module." prefixes also works): the activation is not in the file, so `--activation` is
  required (quick_gelu for OpenAI-trained weights, i.e. open_clip's `*-quickgelu` models and the
  `openai` tag; gelu for most others);
* a genjax run directory of the `clip` family (configs/clip.py), e.g. the in-domain CLIP trained
  on `scenes`: its own tokenizer and image size come from the run's config.
Preprocessing as OpenAI's / open_clip's `transform`: convert to RGB, bicubic resize of the
shorter side to the model's size (PIL, antialiased, the long side int(size * long / short)),
centre crop (offsets int(round((h - size) / 2))), then (x / 255 - mean) / std.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from genjax.errors import InputError, UserError, WeightsError
from genjax.nn.clip import CLIP_MEAN, CLIP_STD, Clip, ClipSpec, state_dict_to_params
DEFAULT_W = 100.0
DEFAULT_R = 100
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


# ----------------------------------------------------------------------------- preprocessing

def preprocess(image, size: int) -> np.ndarray:
  """A PIL image or uint8 [H, W, C] array -> float32 [size, size, 3], normalised."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  if isinstance(image, np.ndarray):
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
      raise InputError(f"images must be uint8 [H, W, 1|3|4], got {image.dtype} {image.shape}")
    image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  image = image.convert("RGB")
  w, h = image.size
  short, long = (w, h) if w <= h else (h, w)
  new_short, new_long = size, int(size * long / short)
  new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
  if (new_w, new_h) != (w, h):
    image = image.resize((new_w, new_h), Image.BICUBIC)
  top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
  image = image.crop((left, top, left + size, top + size))
  x = np.asarray(image, np.float32) / 255.0
  return (x - CLIP_MEAN) / CLIP_STD


# ----------------------------------------------------------------------------- checkpoints

def _state_dict_of_script(record, prefix=""):
  """A TorchScript module tree (ScriptRecords) -> {"visual.conv1.weight": array, ...}."""
  from genjax.torch_files import ScriptRecord  # pylint: disable=import-outside-toplevel
  out = {}
  for name, value in vars(record).items():
    if isinstance(value, ScriptRecord):
      out.update(_state_dict_of_script(value, f"{prefix}{name}."))
    elif isinstance(value, np.ndarray):
      out[f"{prefix}{name}"] = value
  return out


def _script_activation(path) -> str:
  """OpenAI's archives carry their Python-free code: QuickGELU shows as its 1.702 constant."""
  with zipfile.ZipFile(path) as zf:
    code = b"".join(zf.read(n) for n in zf.namelist() if "/code/" in n and n.endswith(".py"))
  return "quick_gelu" if (b"QuickGELU" in code or b"1.702" in code) else "gelu"


def read_clip_checkpoint(path, activation: Optional[str] = None):
  """(state dict of float32 arrays, activation, sha256) of a CLIP checkpoint file."""
  from genjax.torch_files import ScriptRecord, file_sha256, read_torch_file  # pylint: disable=import-outside-toplevel
  path = Path(path)
  if not path.is_file():
    raise WeightsError(
        f"CLIP checkpoint {path} does not exist. genjax cannot download CLIP weights; pass an "
        f"OpenAI TorchScript file (e.g. ViT-B-32.pt), an open_clip state dict (.safetensors or "
        f".bin, with --activation), or a genjax run of configs/clip.py")
  digest = file_sha256(path)
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    try:
      state = load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError on bad files
      raise WeightsError(f"cannot read {path} as safetensors: {e}") from None
    scripted = False
  else:
    obj = read_torch_file(path)
    scripted = isinstance(obj, ScriptRecord)
    if scripted:
      state = _state_dict_of_script(obj)
    else:
      if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # an open_clip training checkpoint
      if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a CLIP state dict")
      state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
  if scripted:
    found = _script_activation(path)
    if activation is not None and activation != found:
      raise WeightsError(f"{path} is a TorchScript CLIP using {found}; --activation={activation} "
                         f"contradicts it")
    activation = found
  elif activation is None:
    raise WeightsError(
        f"{path} is a state dict, which does not record the MLP activation: pass "
        f"--activation=quick_gelu for OpenAI-trained weights (open_clip's '*-quickgelu' models, "
        f"tag 'openai') or --activation=gelu for most open_clip-trained ones; a wrong one "
        f"silently changes every score")
  state = {k: np.asarray(v, np.float32) for k, v in state.items() if isinstance(v, np.ndarray)}
  return state, activation, digest


# ----------------------------------------------------------------------------- the scorer

@dataclasses.dataclass
class ClipScorer:
  """Embeds images and captions with one CLIP; every output row is computed on its own.

  `image_fn(pixels) -> [B, D]` and `text_fn(texts: list[str]) -> [B, D]` return unit vectors;
  `preprocess_fn(image) -> float32 [S, S, 3]`; `source` names the weights and their hash.
  """

  image_fn: Callable
  text_fn: Callable
  preprocess_fn: Callable
  source: dict
  batch_size: int = 32

  def embed_images(self, images: Sequence, progress: bool = False) -> np.ndarray:
    """Images (paths, PIL images or uint8 arrays) -> float32 [N, D] unit rows."""
    def load(item):
      if isinstance(item, (str, os.PathLike)):
        from PIL import Image  # pylint: disable=import-outside-toplevel
        try:
          with Image.open(item) as im:
            im.load()
            return self.preprocess_fn(im)
        except OSError as e:
          raise InputError(f"cannot read image {item}: {e}") from None
      return self.preprocess_fn(item)
    return self._batched(list(images), lambda chunk: np.stack([load(i) for i in chunk]),
                         self.image_fn, progress, "images")

  def embed_texts(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
      raise InputError("captions must be strings")
    return self._batched(texts, list, self.text_fn, progress, "captions")

  def _batched(self, items, prepare, fn, progress, what):
    """Fixed-size batches (one compiled shape); the last one padded by repeating its first row,
    and the padding rows dropped."""
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    out = []
    bs = self.batch_size
    for start in tqdm(range(0, len(items), bs), desc=f"CLIP {what}", disable=not progress,
                      unit="batch"):
      chunk = items[start:start + bs]
      n = len(chunk)
      chunk = chunk + [chunk[0]] * (bs - n)
      out.append(np.asarray(fn(prepare(chunk)))[:n])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def make_scorer(spec: ClipSpec, params, tokenize: Callable, source: dict,
                batch_size: int = 32) -> ClipScorer:
  """A scorer for `Clip(spec)` with `params`; `tokenize(texts) -> (ids, mask or None)` (None:
  OpenAI's ids, pooled at their largest id; a mask: pooled at the last real token)."""
  import jax  # pylint: disable=import-outside-toplevel
  model = Clip(spec)
  params = jax.device_put(params)  # once, not per batch
  image_fn = jax.jit(lambda p, x: model.apply({"params": p}, x, method=Clip.embed_images))
  text_fn = jax.jit(lambda p, ids, mask: model.apply({"params": p}, ids, mask,
                                                     method=Clip.embed_texts))

  def embed_texts(texts):
    ids, mask = tokenize(texts)
    return text_fn(params, ids, mask)

  return ClipScorer(
      image_fn=lambda x: image_fn(params, x), text_fn=embed_texts,
      preprocess_fn=lambda image: preprocess(image, spec.image_size),
      source={**source, "activation": spec.activation, "image_size": spec.image_size,
              "embed_dim": spec.embed_dim},
      batch_size=batch_size)


def openai_scorer(path, activation: Optional[str] = None, batch_size: int = 32) -> ClipScorer:
  """A scorer with weights from an OpenAI / open_clip checkpoint file and CLIP's tokenizer."""
  from genjax.data.clip_tokenizer import ClipTokenizer  # pylint: disable=import-outside-toplevel
  state, activation, digest = read_clip_checkpoint(path, activation)
  spec = ClipSpec.from_state_dict(state, activation)
  tokenizer = ClipTokenizer(context_length=spec.context_length)
  return make_scorer(spec, state_dict_to_params(state, spec), lambda t: (tokenizer(t), None),
                     {"checkpoint": str(path), "sha256": digest}, batch_size)


def load_scorer(checkpoint, activation: Optional[str] = None, batch_size: int = 32) -> ClipScorer:
  """A CLIP checkpoint file, or a genjax `clip` run directory (its latest checkpoint)."""
  if os.path.isdir(checkpoint) or "://" in str(checkpoint) or "@" in os.path.basename(str(checkpoint)):
    from genjax.families.contrastive import run_scorer  # pylint: disable=import-outside-toplevel
    return run_scorer(checkpoint, batch_size=batch_size)
  return openai_scorer(checkpoint, activation, batch_size)


# ----------------------------------------------------------------------------- the metrics

def clip_scores(image_emb: np.ndarray, text_emb: np.ndarray, w: float = DEFAULT_W) -> np.ndarray:
  """Per-pair w * max(cos, 0) of row i of both (unit rows)."""
  if image_emb.shape != text_emb.shape:
    raise InputError(f"{len(image_emb)} images but {len(text_emb)} captions")
  cos = np.sum(image_emb.astype(np.float64) * text_emb.astype(np.float64), axis=-1)
  return w * np.maximum(cos, 0.0)


def r_precision(image_emb: np.ndarray, texts: Sequence[str], text_emb: np.ndarray,
                r: int = DEFAULT_R, seed: int = 0) -> tuple[float, np.ndarray]:
  """(R-precision, per-image hit) with the rule of the module docstring. `texts[i]` is image i's
  caption and `text_emb[i]` its embedding."""
  texts = list(texts)
  n = len(texts)
  rng = np.random.default_rng(seed)
  hits = np.zeros(n, bool)
  for i in range(n):
    others = np.array([j for j in range(n) if texts[j] != texts[i]])
    if len(others) < r - 1:
      raise InputError(f"R-precision with R={r} needs >= {r - 1} captions that differ from each "
                       f"image's own; image {i} has {len(others)}")
    negatives = rng.choice(others, size=r - 1, replace=False)
    sims = text_emb[negatives] @ image_emb[i]
    hits[i] = float(text_emb[i] @ image_emb[i]) > float(np.max(sims))
  return float(hits.mean()), hits


def score_pairs(scorer: ClipScorer, images: Sequence, captions: Sequence[str], r: int = DEFAULT_R,
                seed: int = 0, w: float = DEFAULT_W, progress: bool = False) -> dict:
  """Image i against caption i: {"clip_score": mean, "clip_r_precision", "per_pair"} (r = 0:
  no R-precision), the numbers the CLI, the training evaluator and the experiments report."""
  captions = list(captions)
  img = scorer.embed_images(images, progress=progress)
  txt = scorer.embed_texts(captions, progress=progress)
  per_pair = clip_scores(img, txt, w)
  out = {"clip_score": float(per_pair.mean()), "per_pair": per_pair}
  if r:
    out["clip_r_precision"], _ = r_precision(img, captions, txt, r, seed)
  return out


# ----------------------------------------------------------------------------- command line

def read_pairs(images: str, captions: str) -> tuple[list[str], list[str]]:
  """(image paths, captions) from a folder and a metadata.jsonl or one-caption-per-line file."""
  folder = Path(images)
  if not folder.is_dir():
    raise InputError(f"{folder} is not a folder of images")
  if captions.endswith(".jsonl"):
    from genjax.data.captioned_folder import read_metadata  # pylint: disable=import-outside-toplevel
    rows = read_metadata(captions)
    paths = [str(folder / name) for _, name, _, _ in rows]
    texts = [text for _, _, text, _ in rows]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
      raise InputError(f"{len(missing)} images of {captions} are not in {folder}, e.g. {missing[0]}")
    return paths, texts
  images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
  try:
    lines = [l for l in Path(captions).read_text(encoding="utf-8").splitlines() if l.strip()]
  except (OSError, UnicodeDecodeError) as e:
    raise InputError(f"cannot read captions {captions}: {e}") from None
  if lines and all("\t" in l for l in lines):
    # `launch.py --mode=sample`'s captions.txt: "ID<TAB>caption", images named ID.png or ID_*.png
    # (the folder's grid.png has no ID and is not scored).
    by_id = {}
    for image in images:
      by_id.setdefault(image.stem.split("_", 1)[0], []).append(image)
    paths, texts = [], []
    for line in lines:
      key, text = line.split("\t", 1)
      if len(by_id.get(key, [])) != 1:
        raise InputError(f"{captions}: caption id {key!r} matches {len(by_id.get(key, []))} images "
                         f"in {folder}, expected exactly one ({key}.png or {key}_*.png)")
      paths.append(str(by_id[key][0]))
      texts.append(text)
    return paths, texts
  if len(lines) != len(images):
    raise InputError(f"{captions} has {len(lines)} captions but {folder} has {len(images)} images "
                     f"(one caption per line, in file-name order)")
  return [str(p) for p in images], lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m genjax.metrics.clip_score",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("images", help="folder of images")
  parser.add_argument("captions", help="metadata.jsonl, or a text file: one caption per image")
  parser.add_argument("--checkpoint", required=True,
                      help="OpenAI .pt, open_clip .safetensors/.bin, or a genjax clip run")
  parser.add_argument("--activation", choices=("quick_gelu", "gelu"), default=None)
  parser.add_argument("--w", type=float, default=DEFAULT_W, help="100 (torchmetrics) or 2.5 (CLIP-S)")
  parser.add_argument("--r", type=int, default=0, help="also CLIP R-precision with R candidates")
  parser.add_argument("--seed", type=int, default=0, help="R-precision's negative captions")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--out", default=None, help="JSON file for the per-pair scores")
  args = parser.parse_args(argv)
  try:
    paths, texts = read_pairs(args.images, args.captions)
    scorer = load_scorer(args.checkpoint, args.activation, args.batch_size)
    scores = score_pairs(scorer, paths, texts, args.r, args.seed, args.w, progress=True)
    per_pair = scores.pop("per_pair")
    result = {**scores, "w": args.w, "pairs": len(paths), **scorer.source}
    if args.r:
      result.update(r=args.r, seed=args.seed)
  except UserError as e:
    print(f"genjax: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result, indent=2))
  if args.out:
    Path(args.out).write_text(json.dumps(dict(result, per_pair={
        os.path.basename(p): float(s) for p, s in zip(paths, per_pair)}), indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
