"""Streaming statistics, the Fréchet distance and KID (no network, no torch)."""

import numpy as np
import pytest
from scipy import linalg

from genjax.errors import InputError
from genjax.metrics import fid, kid


def _sqrtm_fid(mu1, s1, mu2, s2):
  # pytorch-fid's formula (scipy sqrtm), for well-conditioned inputs.
  covmean = linalg.sqrtm(s1 @ s2).real
  d = mu1 - mu2
  return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def _gaussian_features(rng, n, d, scale=1.0, shift=0.0):
  a = rng.normal(size=(d, d)) / np.sqrt(d)
  return rng.normal(size=(n, d)) @ a * scale + shift


def test_running_stats_equal_mean_and_cov_with_uneven_batches_and_mask():
  rng = np.random.default_rng(0)
  feats = _gaussian_features(rng, 203, 16, shift=5.0).astype(np.float32)
  stats = fid.RunningStats(16)
  start = 0
  for size in (7, 64, 1, 100, 31):  # the last batch is short: every sample must count
    batch = feats[start:start + size]
    padded = np.concatenate([batch, np.full((64 - len(batch) % 64 if len(batch) < 64 else 0, 16),
                                            1e6, np.float32)])
    mask = np.arange(len(padded)) < len(batch)
    stats.update(padded, mask=mask)
    start += size
  assert stats.count == 203
  mu, sigma = stats.mu_sigma()
  np.testing.assert_allclose(mu, feats.astype(np.float64).mean(0), rtol=0, atol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64), rowvar=False), rtol=1e-12,
                             atol=1e-12)


def test_running_stats_state_dict_resume_and_merge():
  rng = np.random.default_rng(1)
  a, b = _gaussian_features(rng, 50, 8), _gaussian_features(rng, 70, 8, shift=3.0)
  whole = fid.RunningStats(8).update(np.concatenate([a, b]))
  resumed = fid.RunningStats.from_state_dict(fid.RunningStats(8).update(a).state_dict())
  resumed.update(b)
  merged = fid.RunningStats(8).update(a).merge(fid.RunningStats(8).update(b))
  for other in (resumed, merged):
    assert other.count == 120
    for x, y in zip(other.mu_sigma(), whole.mu_sigma()):
      np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
  state = fid.RunningStats(8).state_dict()
  assert all(isinstance(v, np.ndarray) for v in state.values())
  assert fid.RunningStats.from_state_dict(state).count == 0


def test_frechet_distance_matches_sqrtm_formula():
  rng = np.random.default_rng(2)
  f1, f2 = _gaussian_features(rng, 500, 32), _gaussian_features(rng, 400, 32, 1.3, 0.2)
  mu1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
  mu2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
  ours = fid.frechet_distance(mu1, s1, mu2, s2)
  np.testing.assert_allclose(ours, _sqrtm_fid(mu1, s1, mu2, s2), rtol=1e-9)
  assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-9
  assert fid.fid_from_stats({"mu": mu1, "sigma": s1}, (mu2, s2)) == ours


def test_frechet_distance_stable_for_singular_covariances():
  """Fewer samples than dimensions: rank-deficient covariances, still a real, accurate number."""
  rng = np.random.default_rng(3)
  d = 64
  f1, f2 = _gaussian_features(rng, 10, d), _gaussian_features(rng, 12, d, 1.0, 0.5)
  mu1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
  mu2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
  value = fid.frechet_distance(mu1, s1, mu2, s2)
  # Exact answer from the nonzero spectrum, computed in extended precision via the
  # thin factors: S1 = A A^T, S2 = B B^T, tr sqrt(S1 S2) = nuclear norm of A^T B.
  a = (f1 - mu1).T / np.sqrt(len(f1) - 1)
  b = (f2 - mu2).T / np.sqrt(len(f2) - 1)
  exact = ((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2)
           - 2 * np.linalg.svd(a.T @ b, compute_uv=False).sum())
  assert np.isfinite(value)
  np.testing.assert_allclose(value, exact, rtol=1e-9, atol=1e-9)
  assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-6


def test_frechet_distance_rejects_mismatched_or_nonfinite_stats():
  with pytest.raises(InputError, match="do not match"):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(InputError, match="NaN"):
    fid.frechet_distance(np.full(2, np.nan), np.eye(2), np.zeros(2), np.eye(2))


def test_few_samples_warning():
  with pytest.warns(fid.FewSamplesWarning, match="fewer than the 2048"):
    fid.warn_if_few_samples(100, 2048)


def _clean_fid_kid(feats1, feats2, m):
  # clean-fid 0.1.35 kernel_distance for one subset (all of both sets, equal sizes).
  n = feats1.shape[1]
  x, y = feats2, feats1
  a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
  b = (x @ y.T / n + 1) ** 3
  return ((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m


def test_kid_matches_reference_formula_and_is_unbiased():
  rng = np.random.default_rng(4)
  f1, f2 = rng.normal(size=(30, 16)), rng.normal(size=(30, 16)) + 0.3
  np.testing.assert_allclose(kid.mmd2_unbiased(f1, f2), _clean_fid_kid(f1, f2, 30), rtol=1e-12)
  mean, std = kid.kernel_inception_distance(f1, f2, num_subsets=5, subset_size=30)
  np.testing.assert_allclose(mean, _clean_fid_kid(f1, f2, 30), rtol=1e-12)  # full sets: std 0
  assert std < 1e-12
  # Same distribution, tiny sets: the unbiased estimate averages to ~0 (a biased one would
  # be clearly positive), and a real shift gives a clearly positive value.
  same = [kid.mmd2_unbiased(rng.normal(size=(5, 8)), rng.normal(size=(5, 8))) for _ in range(3000)]
  assert abs(np.mean(same)) < 4 * np.std(same) / np.sqrt(len(same))
  shifted, _ = kid.kernel_inception_distance(rng.normal(size=(200, 8)),
                                             rng.normal(size=(200, 8)) + 1.0, 10, 50)
  assert shifted > 10 * np.std(same) / np.sqrt(50)
  with pytest.raises(InputError):
    kid.kernel_inception_distance(np.zeros((1, 4)), np.zeros((5, 4)))


def test_stats_file_round_trip_and_wrong_npz(tmp_path):
  mu, sigma = np.arange(3.0), np.eye(3)
  fid.save_stats(tmp_path / "s.npz", mu, sigma, count=7, mode="clean", weights_sha256="abc", name="x")
  loaded = fid.load_stats(tmp_path / "s.npz")
  assert loaded["count"] == 7 and loaded["mode"] == "clean" and loaded["name"] == "x"
  np.testing.assert_array_equal(loaded["mu"], mu)
  np.savez(tmp_path / "wrong.npz", features=np.zeros((3, 3)))
  with pytest.raises(InputError, match="needs arrays 'mu' and 'sigma', found \\['features'\\]"):
    fid.load_stats(tmp_path / "wrong.npz")
  np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.zeros(3))
  with pytest.raises(InputError, match="expected \\[D\\] and \\[D, D\\]"):
    fid.load_stats(tmp_path / "shape.npz")
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(InputError, match="not a readable .npz"):
    fid.load_stats(tmp_path / "junk.npz")
