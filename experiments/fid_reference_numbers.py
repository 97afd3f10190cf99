"""Reference FID numbers for docs/fid.md, measured with genjax's own CLI.

  python experiments/fid_reference_numbers.py --workdir runs/fid_reference

Writes three folders of PNGs under --workdir:
  fm_train10k/  Fashion-MNIST train images 0..9999 (28x28 grayscale)
  fm_test10k/   Fashion-MNIST test images 0..9999
  noise10k/     10,000 28x28 RGB images of Gaussian noise, N(127.5, 64^2) per pixel,
                rounded and clipped to 0..255 (numpy default_rng(0))
then, for each mode (default, tf1, clean), runs
  python -m genjax.metrics.fid --save-stats FOLDER stats/<set>_<mode>.npz --mode MODE
and FID between the stats files. Finished stats files are kept, so an interrupted run
resumes where it stopped. Results go to <workdir>/results.json and are printed.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = os.environ.get("GENJAX_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def read_idx(split):
  name = {"test": "t10k", "train": "train"}[split]
  with gzip.open(os.path.join(FASHION, f"{name}-images-idx3-ubyte.gz")) as f:
    return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)


def write_folder(folder, images):
  from PIL import Image
  if os.path.isdir(folder) and len(os.listdir(folder)) == len(images):
    return
  os.makedirs(folder, exist_ok=True)
  for i, im in enumerate(images):
    Image.fromarray(im).save(os.path.join(folder, f"{i:05d}.png"))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", default=os.path.join(REPO, "runs", "fid_reference"))
  p.add_argument("--modes", nargs="+", default=["default", "tf1", "clean"])
  p.add_argument("--n", type=int, default=10000)
  p.add_argument("--batch-size", type=int, default=16)
  args = p.parse_args()
  n = args.n
  sets = {f"fm_train{n // 1000}k": read_idx("train")[:n], f"fm_test{n // 1000}k": read_idx("test")[:n]}
  noise = np.random.default_rng(0).normal(127.5, 64.0, (n, 28, 28, 3))
  sets[f"noise{n // 1000}k"] = np.clip(np.round(noise), 0, 255).astype(np.uint8)
  for name, images in sets.items():
    write_folder(os.path.join(args.workdir, name), images)
  train, test, noise = sets
  os.makedirs(os.path.join(args.workdir, "stats"), exist_ok=True)
  cli = [sys.executable, "-m", "genjax.metrics.fid"]
  env = dict(os.environ, PYTHONPATH=REPO)
  results = {}
  for mode in args.modes:
    for name in sets:
      out = os.path.join(args.workdir, "stats", f"{name}_{mode}.npz")
      if not os.path.exists(out):
        t0 = time.time()
        subprocess.run(cli + ["--save-stats", os.path.join(args.workdir, name), out, "--mode", mode,
                              "--batch-size", str(args.batch_size)], check=True, env=env)
        print(f"{name} {mode}: {time.time() - t0:.0f}s", flush=True)
    for a, b in ((train, test), (test, noise)):
      line = subprocess.run(cli + [os.path.join(args.workdir, "stats", f"{a}_{mode}.npz"),
                                   os.path.join(args.workdir, "stats", f"{b}_{mode}.npz"),
                                   "--mode", mode],
                            check=True, env=env, capture_output=True, text=True).stdout
      results[f"{a} vs {b} ({mode})"] = float(line.split("FID:")[1])
      print(f"FID {a} vs {b} ({mode}): {results[f'{a} vs {b} ({mode})']:.4f}", flush=True)
  with open(os.path.join(args.workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
