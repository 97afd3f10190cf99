"""genjax FID vs the torch reference (same TorchScript file, torch CPU, separate venv).

Image counts are small (32 per set) to keep the suite fast. That is enough for parity:
both sides compute features of the *same* images with the same weights, and the FID
checks feed both sides' statistics through float64 formulas, so any preprocessing,
layer, pooling or statistics mismatch shows up at these sizes already (using the
torchvision average pool in mixed_10 instead of the FID graph's max pool, for example,
moves mu by ~1e-2; the bound is 1e-4). Small-N FIDs are large and biased, which does not
matter for agreement between two implementations.
"""

import numpy as np
import pytest

from genjax.metrics import fid as fid_lib
from genjax.metrics import preprocess
from tests.metrics.conftest import gray_to_rgb, photo_crops, reference_json, run_reference

N = 32


@pytest.fixture(scope="module")
def image_sets(fashion_test):
  return {"photos299": photo_crops(N),
          "fashion_a": gray_to_rgb(fashion_test[:N]),
          "fashion_b": gray_to_rgb(fashion_test[1000:1000 + N])}


@pytest.fixture(scope="module")
def reference_features(image_sets, tmp_path_factory):
  """Torch features of every set from ONE reference process (torch starts once)."""
  d = tmp_path_factory.mktemp("torch_ref")
  pairs = []
  for name, images in image_sets.items():
    np.save(d / f"{name}.npy", images)
    pairs += [d / f"{name}.npy", d / f"{name}_feats.npy"]
  run_reference("features", *pairs, "--mode", "default", "--batch-size", 16)
  return {name: np.load(d / f"{name}_feats.npy") for name in image_sets}


def _stats(feats):
  return fid_lib.RunningStats(feats.shape[1]).update(feats).mu_sigma()


def _check_feature_parity(ours, ref):
  assert ours.shape == ref.shape == (N, 2048)
  (mu_o, s_o), (mu_r, s_r) = _stats(ours), _stats(ref)
  dmu = np.abs(mu_o - mu_r).max()
  d_fid = fid_lib.frechet_distance(mu_o, s_o, mu_r, s_r)
  print(f"max|dmu|={dmu:.2e} max|dfeat|={np.abs(ours - ref).max():.2e} "
        f"FID(genjax stats, reference stats)={d_fid:.2e}")
  assert dmu <= 1e-4
  assert abs(d_fid) <= 1e-3


def test_pool3_parity_299(image_sets, reference_features, fid_features):
  _check_feature_parity(fid_features(image_sets["photos299"], "default"),
                        reference_features["photos299"])


def test_pool3_parity_28_and_fid_between_two_real_sets(tmp_path, image_sets, reference_features,
                                                       fid_features, monkeypatch):
  """28x28 grayscale PNG folders end to end through the CLI (folder loading, resize path,
  --save-stats, FID of two .npz) vs torch features and pytorch-fid's statistics and formula."""
  from PIL import Image
  monkeypatch.setattr(fid_lib, "InceptionFeatures", lambda **kw: fid_features)
  for name in ("fashion_a", "fashion_b"):
    (tmp_path / name).mkdir()
    for i, im in enumerate(image_sets[name][..., 0]):
      Image.fromarray(im).save(tmp_path / name / f"{i:03d}.png")
    with pytest.warns(fid_lib.FewSamplesWarning):
      fid_lib.run(["--save-stats", str(tmp_path / name), str(tmp_path / f"{name}.npz"),
                   "--num-workers", "2"])
    ours = fid_lib.load_stats(tmp_path / f"{name}.npz")
    assert ours["count"] == N
    mu_r, s_r = _stats(reference_features[name])
    dmu = np.abs(ours["mu"] - mu_r).max()
    d_fid = fid_lib.frechet_distance(ours["mu"], ours["sigma"], mu_r, s_r)
    print(f"{name}: max|dmu|={dmu:.2e} FID(genjax stats, reference stats)={d_fid:.2e}")
    assert dmu <= 1e-4
    assert abs(d_fid) <= 1e-3
    np.save(tmp_path / f"{name}_ref.npy", reference_features[name])
  ref_fid = reference_json("fid", tmp_path / "fashion_a_ref.npy", tmp_path / "fashion_b_ref.npy")["fid"]
  with pytest.warns(fid_lib.FewSamplesWarning):
    line = fid_lib.run([str(tmp_path / "fashion_a.npz"), str(tmp_path / "fashion_b.npz")])
  ours = float(line.split("FID:")[1])
  print(f"FID genjax={ours:.6f} reference={ref_fid:.6f}")
  assert abs(ours - ref_fid) <= 1e-3


def test_resize_parity_torch_interpolate_and_pil(tmp_path):
  """default vs torch F.interpolate(bilinear, align_corners=False); clean vs clean-fid's PIL bicubic."""
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  inputs = {"28": rng.integers(0, 256, (2, 28, 28, 3), dtype=np.uint8),
            "40x63": rng.integers(0, 256, (2, 40, 63, 3), dtype=np.uint8),
            "512_down": rng.integers(0, 256, (2, 512, 512, 3), dtype=np.uint8),
            "333x300_down": rng.integers(0, 256, (2, 333, 300, 3), dtype=np.uint8),
            "299": rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)}
  np.savez(tmp_path / "x.npz", **inputs)
  run_reference("resize", tmp_path / "x.npz", tmp_path / "y.npz", "--modes", "default", "clean")
  # Network-input units (range 2): float32 rounding order only (weights are bit-identical
  # to torch's; PIL accumulates in float64 and rounds its intermediate, we use float32).
  tolerance = {"default": 1e-6, "clean": 1e-6}
  with np.load(tmp_path / "y.npz") as ref:
    for key in ref.files:
      mode, name = key.split(":")
      for xp in (np, jnp):
        ours = np.asarray(preprocess.to_network_input(inputs[name], mode, xp))
        err = np.abs(ours - ref[key]).max()
        print(f"{mode:8s} {name:13s} {xp.__name__:10s} max|diff|={err:.1e}")
        assert err <= tolerance[mode], f"{mode} {name} ({xp.__name__}): max error {err}"
        if name == "299":  # no resize at all, like the references: only x/255 rounding differs
          assert err <= 2.5e-7
