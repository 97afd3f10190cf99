"""PyTorch twins of genjax's diffusion U-Net train step, for benchmarks/vs_pytorch.py.

Runs in the reference venv (`make reference-venv`: torch, CPU build), never imported by genjax.

    .venv-ref/bin/python benchmarks/torch_reference.py --json='{"ch": 32, ...}'

builds the same network as `genjax.nn.unet.UNet` (same layers, widths, GroupNorm groups, zero-
initialised residual outputs, attention at the same sides), the same objective (eps-prediction MSE
at uniform integer t under the cosine schedule), the same optimizer (global-norm clip 1.0, Adam)
and the same EMA update, and times one train step in eager mode and under `torch.compile`, on
synthetic uint8 batches, plus an fp32 matmul measured in the same process. Prints one JSON line.
"""

import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def group_norm(channels, max_groups):
  return nn.GroupNorm(math.gcd(channels, max_groups), channels, eps=1e-5)


def zero(module):
  nn.init.zeros_(module.weight)
  nn.init.zeros_(module.bias)
  return module


def timestep_embedding(t, dim, max_period=10_000.0):
  half = dim // 2
  freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
  args = t.float()[:, None] * freqs[None]
  return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
  def __init__(self, in_ch, out_ch, emb_dim, max_groups):
    super().__init__()
    self.norm1 = group_norm(in_ch, max_groups)
    self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
    self.emb = nn.Linear(emb_dim, 2 * out_ch)
    self.norm2 = group_norm(out_ch, max_groups)
    self.conv2 = zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
    self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

  def forward(self, x, emb):
    h = self.conv1(F.silu(self.norm1(x)))
    scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
    h = self.norm2(h) * (1 + scale) + shift
    return self.skip(x) + self.conv2(F.silu(h))


class Attention(nn.Module):
  def __init__(self, ch, num_heads, max_groups):
    super().__init__()
    self.num_heads = num_heads
    self.norm = group_norm(ch, max_groups)
    self.qkv = nn.Linear(ch, 3 * ch)
    self.proj = zero(nn.Linear(ch, ch))

  def forward(self, x):
    b, c, h, w = x.shape
    tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
    q, k, v = self.qkv(tokens).chunk(3, dim=-1)
    split = lambda a: a.reshape(b, h * w, self.num_heads, c // self.num_heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
    return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
  def __init__(self, ch):
    super().__init__()
    self.conv = nn.Conv2d(ch, ch, 3, stride=2)

  def forward(self, x):  # XLA's SAME padding for stride 2 on an even side: 0 before, 1 after
    return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
  def __init__(self, ch):
    super().__init__()
    self.conv = nn.Conv2d(ch, ch, 3, padding=1)

  def forward(self, x):
    return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
  """genjax.nn.unet.UNet without labels/text (the unconditional benchmark config)."""

  def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, num_heads, max_groups,
               image_side, channels):
    super().__init__()
    self.ch = ch
    emb_dim = 4 * ch
    self.time = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
    self.conv_in = nn.Conv2d(channels, ch, 3, padding=1)
    attend = lambda c, side: (Attention(c, num_heads, max_groups) if side in attn_resolutions
                              else nn.Identity())
    self.down, skip_channels, side, cur = nn.ModuleList(), [ch], image_side, ch
    for level, mult in enumerate(ch_mult):
      for _ in range(num_res_blocks):
        self.down.append(nn.ModuleList([ResBlock(cur, ch * mult, emb_dim, max_groups),
                                        attend(ch * mult, side)]))
        cur = ch * mult
        skip_channels.append(cur)
      if level != len(ch_mult) - 1:
        self.down.append(Downsample(cur))
        skip_channels.append(cur)
        side //= 2
    self.mid1 = ResBlock(cur, cur, emb_dim, max_groups)
    self.mid_attn = attend(cur, side)
    self.mid2 = ResBlock(cur, cur, emb_dim, max_groups)
    self.up = nn.ModuleList()
    for level, mult in reversed(list(enumerate(ch_mult))):
      for _ in range(num_res_blocks + 1):
        self.up.append(nn.ModuleList([ResBlock(cur + skip_channels.pop(), ch * mult, emb_dim,
                                               max_groups), attend(ch * mult, side)]))
        cur = ch * mult
      if level != 0:
        self.up.append(Upsample(cur))
        side *= 2
    self.norm_out = group_norm(cur, max_groups)
    self.conv_out = zero(nn.Conv2d(cur, channels, 3, padding=1))

  def forward(self, x, t):
    emb = self.time(timestep_embedding(t, self.ch))
    h = self.conv_in(x)
    skips = [h]
    for block in self.down:
      if isinstance(block, Downsample):
        h = block(h)
      else:
        h = block[1](block[0](h, emb))
      skips.append(h)
    h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
    for block in self.up:
      if isinstance(block, Upsample):
        h = block(h)
      else:
        h = block[1](block[0](torch.cat([h, skips.pop()], dim=1), emb))
    return self.conv_out(F.silu(self.norm_out(h)))


def cosine_alpha_bar(timesteps, s=0.008):
  """Improved DDPM's cosine schedule (betas clipped at 0.999), as genjax's `cosine`."""
  f = lambda i: math.cos((i / timesteps + s) / (1 + s) * math.pi / 2) ** 2
  betas = np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(timesteps)])
  return torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)


def make_step(model, ema, alpha_bar, lr, ema_decay, pad):
  optimizer = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
  params = list(model.parameters())
  ema_params = list(ema.parameters())

  def loss_fn(images_uint8, t, noise):
    x0 = images_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    x0 = F.pad(x0, pad, value=-1.0)
    a = alpha_bar[t].sqrt()[:, None, None, None]
    s = (1 - alpha_bar[t]).sqrt()[:, None, None, None]
    return F.mse_loss(model(a * x0 + s * noise, t), noise)

  def step(images_uint8, compiled_loss):
    t = torch.randint(0, len(alpha_bar), (images_uint8.shape[0],))
    noise = torch.randn((images_uint8.shape[0], model.conv_out.out_channels,
                         images_uint8.shape[1] + pad[2] + pad[3],
                         images_uint8.shape[2] + pad[0] + pad[1]))
    optimizer.zero_grad(set_to_none=True)
    loss = compiled_loss(images_uint8, t, noise)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
    optimizer.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay)
    return loss

  return step, loss_fn


def time_steps(step, batch, num_steps, warmup):
  for _ in range(warmup):
    step(batch)
  start = time.perf_counter()
  for _ in range(num_steps):
    loss = step(batch)
  loss.item()
  return (time.perf_counter() - start) / num_steps


def matmul_peak_gflops(n=2048, repeats=10):
  a, b = torch.randn(n, n), torch.randn(n, n)
  a @ b
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
  return 2 * n ** 3 / float(np.median(times)) / 1e9


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--json", required=True, help="the model and step settings (see vs_pytorch.py)")
  p.add_argument("--variants", default="eager,compile")
  args = p.parse_args()
  cfg = json.loads(args.json)
  torch.manual_seed(0)
  h, w, c = cfg["image_shape"]
  factor = 2 ** (len(cfg["ch_mult"]) - 1)
  ph, pw = -h % factor, -w % factor
  pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
  make_model = lambda: UNet(cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"],
                            cfg["attn_resolutions"], cfg["num_heads"], cfg["norm_groups"],
                            h + ph, c)
  model = make_model()
  ema = make_model()
  ema.load_state_dict(model.state_dict())
  batch = torch.from_numpy(np.random.default_rng(0).integers(
      0, 256, (cfg["batch_size"], h, w, c), dtype=np.uint8))
  alpha_bar = cosine_alpha_bar(cfg["timesteps"])
  step, loss_fn = make_step(model, ema, alpha_bar, cfg["learning_rate"], cfg["ema_decay"], pad)
  result = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "params": sum(q.numel() for q in model.parameters())}
  for variant in args.variants.split(","):
    fn = loss_fn if variant == "eager" else torch.compile(loss_fn)
    start = time.perf_counter()
    step(batch, fn)  # compiles on the first call
    result[f"{variant}_first_step_s"] = time.perf_counter() - start
    result[f"{variant}_step_s"] = time_steps(lambda b: step(b, fn), batch, cfg["steps"], warmup=2)
  result["matmul_peak_gflops"] = matmul_peak_gflops(cfg.get("matmul_size", 2048))
  print(json.dumps(result))


if __name__ == "__main__":
  main()
