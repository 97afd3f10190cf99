"""The sample grid of docs/data.md: the first 16 test scenes of `scenes` with their captions.

  python experiments/scenes_grid.py [--out docs/samples/scenes_grid.png] [--split test]

Scenes come straight from genjax.data.scenes (the same pixels the tfds build stores), each shown
at 3x (nearest neighbour) with its caption wrapped below in PIL's default font.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from genjax.data import scenes  # pylint: disable=wrong-import-position

ZOOM, COLUMNS, PAD, LINE = 3, 4, 8, 12


def wrap(draw, text, font, width):
  lines, line = [], ""
  for word in text.split():
    candidate = f"{line} {word}".strip()
    if line and draw.textlength(candidate, font=font) > width:
      lines.append(line)
      line = word
    else:
      line = candidate
  return lines + [line]


def grid(images, captions):
  font = ImageFont.load_default()
  side = images.shape[1] * ZOOM
  tile_w = side + 2 * PAD
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  wrapped = [wrap(probe, c, font, tile_w - 4) for c in captions]
  tile_h = side + PAD + LINE * max(len(w) for w in wrapped) + PAD
  rows = -(-len(images) // COLUMNS)
  canvas = Image.new("RGB", (COLUMNS * tile_w, rows * tile_h), (40, 40, 40))
  draw = ImageDraw.Draw(canvas)
  for i, (image, lines) in enumerate(zip(images, wrapped)):
    x, y = (i % COLUMNS) * tile_w, (i // COLUMNS) * tile_h
    canvas.paste(Image.fromarray(image).resize((side, side), Image.Resampling.NEAREST),
                 (x + PAD, y + PAD))
    for k, line in enumerate(lines):
      draw.text((x + 2, y + PAD + side + 2 + k * LINE), line, fill=(235, 235, 235), font=font)
  return canvas


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="docs/samples/scenes_grid.png")
  parser.add_argument("--split", default="test")
  parser.add_argument("--count", type=int, default=16)
  args = parser.parse_args()
  layouts = scenes.sample_layouts(args.split, args.count)
  image = grid(scenes.render(layouts, args.split), scenes.captions(layouts))
  image.save(args.out)
  print(f"wrote {args.out} ({image.width}x{image.height}), mean pixel {np.asarray(image).mean():.1f}")


if __name__ == "__main__":
  main()
