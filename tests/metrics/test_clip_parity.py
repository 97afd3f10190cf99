"""genjax's CLIP (tokenizer, preprocessing, both towers, three checkpoint formats) against
open_clip itself, run by torch in the reference venv on a ViT-B/32 with random weights.

tests/metrics/clip_reference.py builds the reference model, writes it as OpenAI's fp16
TorchScript `.pt`, open_clip's `.bin` and `.safetensors`, and embeds images and captions written
here. `pytest -s` prints the measured max |delta|.
"""

import json
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from genjax.data.clip_tokenizer import ClipTokenizer
from genjax.errors import WeightsError
from genjax.metrics import clip_score
from tests.conftest import REPO, ref_python

REFERENCE_SCRIPT = os.path.join(REPO, "tests", "metrics", "clip_reference.py")
EMBED_TOLERANCE = 1e-4
SCORE_TOLERANCE = 1e-3

_COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
_THINGS = ["sneaker", "t-shirt", "bag", "ankle boot", "dress", "coat", "sandal", "pullover"]
_PLACES = ["top left", "top right", "bottom left", "bottom right", "centre", "middle row"]
CAPTIONS = [
    "a photo of a cat",
    "A RED sneaker, on the LEFT!!",
    "Café naïve: crème brûlée à la mode",
    "一只猫 sitting on a 日本 sofa 😀🐶",
    "it's 42 o'clock & I'm late &amp; you&#39;re early",
    "Ã©tÃ© (mojibake that ftfy repairs)",
    "tab\tseparated\nand new-line separated words",
    "don't stop-believing: 3.14159 > 2.71828",
    "Ελληνικά γράμματα και кириллица",
    "emoji only 🎉🎉🎉",
    "a " + "very " * 80 + "long caption that must be cut and still end with its end token",
    " ".join(f"word{i}" for i in range(100)),
    "x",
    "<end_of_text> inside a caption",
]
CAPTIONS += [f"{n} {c} {t}{'s' if n != 'one' else ''} in the {p}"
             for n, c, t, p in zip(["one", "two", "three"] * 16, _COLOURS * 6, _THINGS * 6,
                                   _PLACES * 8)][:46]


def write_images(folder):
  """Six images that exercise the preprocessing: odd non-square sizes (crop rounding), an
  image smaller than 224 (upsampling), grayscale and RGBA."""
  rng = np.random.default_rng(0)
  sizes = [(224, 224), (300, 227), (131, 97), (640, 481), (250, 260), (400, 300)]
  modes = ["RGB", "RGB", "RGB", "RGB", "L", "RGBA"]
  for i, ((w, h), mode) in enumerate(zip(sizes, modes)):
    coarse = rng.uniform(0, 255, (h // 16 + 1, w // 16 + 1, 4)).astype(np.uint8)
    img = Image.fromarray(coarse, "RGBA").resize((w, h), Image.BILINEAR)
    noise = rng.integers(-20, 20, (h, w, 4))
    arr = np.clip(np.asarray(img, np.int32) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(arr, "RGBA").convert(mode).save(folder / f"img_{i}.png")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  out = tmp_path_factory.mktemp("clip_reference")
  images = out / "images"
  images.mkdir()
  write_images(images)
  (out / "captions.json").write_text(json.dumps(CAPTIONS))
  env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
  proc = subprocess.run([ref_python(), REFERENCE_SCRIPT, str(out), str(images),
                         str(out / "captions.json")], cwd=REPO, capture_output=True, text=True,
                        timeout=900, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(out / "reference.npz") as z:
    ref = {k: z[k] for k in z.files}
  ref["dir"], ref["images"] = out, sorted(str(p) for p in images.iterdir())
  return ref


def test_token_ids_match_open_clip(reference):
  assert len(CAPTIONS) >= 50
  ours = ClipTokenizer()(CAPTIONS)
  np.testing.assert_array_equal(ours, reference["ids"])
  # The over-long captions were cut at 77 with the end token kept last.
  long_rows = ours[[10, 11]]
  assert (long_rows[:, -1] == 49407).all() and (long_rows != 0).all()


def test_embeddings_and_scores_match_open_clip(reference):
  scorer = clip_score.openai_scorer(reference["dir"] / "clip.bin", activation="quick_gelu",
                                    batch_size=4)
  img = scorer.embed_images(reference["images"])
  txt = scorer.embed_texts(CAPTIONS)
  d_img = np.abs(img - reference["image_emb"]).max()
  d_txt = np.abs(txt - reference["text_emb"]).max()
  print(f"\nCLIP ViT-B/32 parity: image max|d| {d_img:.2e}, text max|d| {d_txt:.2e}")
  assert d_img <= EMBED_TOLERANCE and d_txt <= EMBED_TOLERANCE
  # Scores of every image with every caption (cosines of random towers are small: use all
  # pairs and w=100, so the clamp at 0 is exercised too).
  ours = 100 * np.maximum(img @ txt.T, 0)
  theirs = 100 * np.maximum(reference["image_emb"] @ reference["text_emb"].T, 0)
  assert np.abs(ours - theirs).max() <= SCORE_TOLERANCE
  n = len(img)
  np.testing.assert_allclose(clip_score.clip_scores(img, txt[:n]), np.diag(ours)[:n], atol=1e-5)


def test_three_checkpoint_formats_give_the_same_weights(reference):
  from genjax.nn.clip import ClipSpec, state_dict_to_params
  import jax
  trees = {}
  for name in ("clip.bin", "clip.safetensors", "clip.pt"):
    state, activation, digest = clip_score.read_clip_checkpoint(
        reference["dir"] / name, activation=None if name.endswith(".pt") else "quick_gelu")
    assert activation == "quick_gelu" and len(digest) == 64
    spec = ClipSpec.from_state_dict(state, activation)
    assert (spec.image_size, spec.patch_size, spec.vision_width, spec.vision_layers,
            spec.text_width, spec.text_layers, spec.embed_dim) == (224, 32, 768, 12, 512, 12, 512)
    trees[name] = state_dict_to_params(state, spec)
  leaves = {k: jax.tree_util.tree_leaves(v) for k, v in trees.items()}
  assert sum(x.size for x in leaves["clip.bin"]) == 151_277_313
  for name in ("clip.safetensors", "clip.pt"):
    for a, b in zip(leaves["clip.bin"], leaves[name]):
      np.testing.assert_array_equal(a, b)


def test_activation_is_read_from_torchscript_and_matters(reference):
  tiny = clip_score.openai_scorer(reference["dir"] / "tiny_gelu.pt", batch_size=8)
  assert tiny.source["activation"] == "gelu"
  np.testing.assert_allclose(tiny.embed_texts(CAPTIONS), reference["tiny_text_emb"], atol=1e-4)
  np.testing.assert_allclose(tiny.embed_images(reference["images"]), reference["tiny_image_emb"],
                             atol=1e-4)
  with pytest.raises(WeightsError, match="contradicts"):
    clip_score.read_clip_checkpoint(reference["dir"] / "tiny_gelu.pt", activation="quick_gelu")
  with pytest.raises(WeightsError, match="--activation"):
    clip_score.read_clip_checkpoint(reference["dir"] / "clip.bin")
  # The wrong activation on the ViT-B/32 weights moves the embeddings well past the tolerance
  # (measured 2.6e-3; random weights keep pre-activations small, where GELU and QuickGELU are
  # closest: real checkpoints differ more).
  wrong = clip_score.openai_scorer(reference["dir"] / "clip.safetensors", activation="gelu",
                                   batch_size=16)
  d = np.abs(wrong.embed_texts(CAPTIONS[:16]) - reference["text_emb"][:16]).max()
  print(f"\nwrong activation: text max|d| {d:.2e}")
  assert d > 10 * EMBED_TOLERANCE, d
