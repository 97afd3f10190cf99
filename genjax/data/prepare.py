"""Builds a dataset ahead of training:  python -m genjax.data.prepare mnist5k [--data_dir DIR]"""

import argparse
import sys

from genjax.data.catalog import KNOWN_DATASETS, default_data_dir, prepare
from genjax.errors import UserError


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("name", help=f"one of {', '.join(KNOWN_DATASETS)} or a prepared tfds name")
  parser.add_argument("--data_dir", default=None, help=f"default: {default_data_dir()}")
  args = parser.parse_args(argv)
  try:
    info = prepare(args.name, args.data_dir)
  except UserError as e:
    print(f"genjax: error: {e}", file=sys.stderr)
    return 2
  sizes = ", ".join(f"{k} {v}" for k, v in sorted(info.split_sizes.items()))
  print(f"genjax: {info.name} ready in {args.data_dir or default_data_dir()}: "
        f"images {info.image_shape}, {info.num_classes} classes, {sizes}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
