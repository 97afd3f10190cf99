"""PyTorch twins of genjax's diffusion, VAE and GAN train steps, for benchmarks/vs_pytorch.py.

Runs in the reference venv (`make reference-venv`: torch, CPU build), never imported by genjax.

    .venv-ref/bin/python benchmarks/torch_reference.py --json='{"family": "ddpm", "ch": 32, ...}'

Each twin is the same network as genjax's (same layers, widths, GroupNorm groups, paddings),
the same objective and optimizer, and the same EMA update:
- ddpm: `genjax.nn.unet.UNet`, eps-prediction MSE at uniform integer t under the cosine
  schedule, global-norm clip 1.0 + Adam, EMA of all parameters;
- vae: `genjax.nn.conv` encoder/decoder, discretized-logistic likelihood + KL per dimension,
  Adam, EMA of all parameters;
- gan: `genjax.nn.dcgan` generator (GroupNorm, sub-pixel upsampling) and discriminator, one
  non-saturating D step on fresh fakes then one G step (gradients of G's parameters only, as
  genjax takes them), Adam(b1 0.5) each, EMA of the generator.
Each step is timed in eager mode and with its loss functions under `torch.compile`, on synthetic
uint8 batches, beside an fp32 matmul measured in the same process. Prints one JSON line.
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


def update(loss, optimizer, params, ema_params, ema_decay, clip=0.0):
  """Backward, optional global-norm clip, optimizer step, EMA (genjax's loop step); -> loss."""
  optimizer.zero_grad(set_to_none=True)
  loss.backward()
  if clip:
    torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
  optimizer.step()
  with torch.no_grad():
    torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay)
  return loss


def cosine_alpha_bar(timesteps, s=0.008):
  """Improved DDPM's cosine schedule (betas clipped at 0.999), as genjax's `cosine`."""
  f = lambda i: math.cos((i / timesteps + s) / (1 + s) * math.pi / 2) ** 2
  betas = np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(timesteps)])
  return torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)


def make_ddpm(cfg, batch):
  h, w, c = cfg["image_shape"]
  factor = 2 ** (len(cfg["ch_mult"]) - 1)
  ph, pw = -h % factor, -w % factor
  pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
  make_model = lambda: UNet(cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"],
                            cfg["attn_resolutions"], cfg["num_heads"], cfg["norm_groups"],
                            h + ph, c)
  model, ema = make_model(), make_model()
  ema.load_state_dict(model.state_dict())
  alpha_bar = cosine_alpha_bar(cfg["timesteps"])
  optimizer = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"], foreach=True)
  params, ema_params = list(model.parameters()), list(ema.parameters())

  def loss_fn(images_uint8, t, noise):
    x0 = images_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    x0 = F.pad(x0, pad, value=-1.0)
    a = alpha_bar[t].sqrt()[:, None, None, None]
    s = (1 - alpha_bar[t]).sqrt()[:, None, None, None]
    return F.mse_loss(model(a * x0 + s * noise, t), noise)

  def make(loss):
    def step(images_uint8):
      t = torch.randint(0, len(alpha_bar), (images_uint8.shape[0],))
      noise = torch.randn((images_uint8.shape[0], c, h + ph, w + pw))
      return update(loss(images_uint8, t, noise), optimizer, params, ema_params,
                    cfg["ema_decay"], clip=1.0)
    return step

  return model, loss_fn, make


def ddim_sampler(model, cfg):
  """genjax.families.diffusion.ddim_sample (eta 0, x0 clipped to [-1, 1] and eps recomputed)
  with `model` as the eps network: num -> images [num, C, H, W] in [-1, 1]."""
  h, w, c = cfg["image_shape"]
  factor = 2 ** (len(cfg["ch_mult"]) - 1)
  ph, pw = -h % factor, -w % factor
  abar = cosine_alpha_bar(cfg["timesteps"])
  taus = np.unique(np.round(np.linspace(0, cfg["timesteps"] - 1, cfg["sample_steps"])).astype(int))
  taus = taus[::-1].copy()
  abar_next = torch.cat([abar[taus[1:]], torch.ones(1)])

  @torch.no_grad()
  def sample(num, net):
    x = torch.randn(num, c, h + ph, w + pw)
    for i, tau in enumerate(taus):
      ab, ab_next = abar[tau], abar_next[i]
      a, s = ab.sqrt(), (1 - ab).sqrt()
      eps = net(x, torch.full((num,), int(tau)))
      x0 = ((x - s * eps) / a).clamp(-1.0, 1.0)
      eps = (x - a * x0) / s
      x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    return x[:, :, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]

  return sample


# ---- VAE (genjax.nn.conv, genjax.families.vae) ----------------------------------------------
def conv_groups(channels):  # genjax.nn.conv._groups
  return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= 2) \
      if channels >= 2 else 1


def same_pad_stride2(x, kernel):
  """XLA's SAME padding for a stride-2 convolution (the extra row/column goes after)."""
  size = x.shape[-1]
  total = max((-(-size // 2) - 1) * 2 + kernel - size, 0)
  return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))


class ConvResBlock(nn.Module):
  def __init__(self, in_ch, ch):
    super().__init__()
    self.norm1 = nn.GroupNorm(conv_groups(in_ch), in_ch, eps=1e-6)
    self.conv1 = nn.Conv2d(in_ch, ch, 3, padding=1)
    self.norm2 = nn.GroupNorm(conv_groups(ch), ch, eps=1e-6)
    self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
    self.skip = nn.Conv2d(in_ch, ch, 1) if in_ch != ch else nn.Identity()

  def forward(self, x):
    h = self.conv1(F.silu(self.norm1(x)))
    return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


def conv_stages(channels, first, resize_conv):
  """`first` layers, then per stage: (a resizing conv from the previous width, beyond the first
  stage) and a residual block: genjax.nn.conv's encoder/decoder stage loop."""
  layers = list(first)
  for prev, ch in zip([channels[0]] + list(channels), channels):
    if len(layers) > len(first):
      layers.append(resize_conv(prev, ch))
    layers.append(ConvResBlock(ch, ch))
  return nn.ModuleList(layers)


class VAENet(nn.Module):
  def __init__(self, channels, latent_dim, image_shape):
    super().__init__()
    h, w, c = image_shape
    self.low = (h // 2 ** (len(channels) - 1), w // 2 ** (len(channels) - 1))
    cur = channels[-1]
    self.enc = conv_stages(channels, [nn.Conv2d(c, channels[0], 3, padding=1)],
                           lambda a, b: nn.Conv2d(a, b, 3, stride=2))  # downsampling
    self.enc_norm = nn.GroupNorm(conv_groups(cur), cur, eps=1e-6)
    self.enc_dense = nn.Sequential(nn.Linear(cur * self.low[0] * self.low[1], 8 * latent_dim),
                                   nn.SiLU(), nn.Linear(8 * latent_dim, 2 * latent_dim))
    rev = list(reversed(channels))
    self.dec_dense = nn.Sequential(nn.Linear(latent_dim, 4 * latent_dim), nn.SiLU(),
                                   nn.Linear(4 * latent_dim, self.low[0] * self.low[1] * rev[0]))
    cur = rev[-1]
    self.dec = conv_stages(rev, [], lambda a, b: nn.Conv2d(a, b, 3, padding=1))  # after upsampling
    self.dec_norm = nn.GroupNorm(conv_groups(cur), cur, eps=1e-6)
    self.dec_out = nn.Conv2d(cur, 2 * c, 3, padding=1)
    self.channels = rev

  def forward(self, x, eps):
    h = x
    for layer in self.enc:
      h = layer(same_pad_stride2(h, 3)) if isinstance(layer, nn.Conv2d) and layer.stride == (2, 2) \
          else layer(h)
    stats = self.enc_dense(F.silu(self.enc_norm(h)).flatten(1))
    mean, log_var = stats.chunk(2, dim=-1)
    log_var = log_var.clamp(-30.0, 20.0)
    z = mean + torch.exp(0.5 * log_var) * eps
    h = self.dec_dense(z).reshape(x.shape[0], self.channels[0], *self.low)
    for layer in self.dec:
      h = layer(F.interpolate(h, scale_factor=2, mode="nearest")) \
          if isinstance(layer, nn.Conv2d) else layer(h)
    out = self.dec_out(F.silu(self.dec_norm(h)))
    px_mean, px_log_scale = out.chunk(2, dim=1)
    return mean, log_var, torch.tanh(px_mean), px_log_scale


def discretized_logistic_logprob(x, mean, log_scale):  # genjax.nn.likelihoods
  log_scale = log_scale.clamp(min=-7.0)
  centered, inv_scale = x - mean, torch.exp(-log_scale)
  upper, lower = inv_scale * (centered + 1 / 255), inv_scale * (centered - 1 / 255)
  log_cdf_upper = upper - F.softplus(upper)
  log_one_minus_cdf_lower = -F.softplus(lower)
  bin_mass = torch.sigmoid(upper) - torch.sigmoid(lower)
  mid = inv_scale * centered
  log_density = mid - log_scale - 2.0 * F.softplus(mid) + math.log(2.0 / 255.0)
  log_mass = torch.where(bin_mass > 1e-5, torch.log(bin_mass.clamp(min=1e-12)), log_density)
  return torch.where(x < -0.999, log_cdf_upper,
                     torch.where(x > 0.999, log_one_minus_cdf_lower, log_mass))


def make_vae(cfg, batch):
  model = VAENet(cfg["channels"], cfg["latent_dim"], cfg["image_shape"])
  ema = VAENet(cfg["channels"], cfg["latent_dim"], cfg["image_shape"])
  ema.load_state_dict(model.state_dict())
  optimizer = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"], foreach=True)
  params, ema_params = list(model.parameters()), list(ema.parameters())
  dims = math.prod(cfg["image_shape"])

  def loss_fn(images_uint8, eps):
    x = images_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    mean, log_var, px_mean, px_log_scale = model(x, eps)
    log_px = discretized_logistic_logprob(x, px_mean, px_log_scale).sum(dim=(1, 2, 3))
    kl = 0.5 * (log_var.exp() + mean ** 2 - 1.0 - log_var).sum(-1)
    return (-log_px + cfg["beta"] * kl).mean() / dims

  def make(loss):
    def step(images_uint8):
      eps = torch.randn(images_uint8.shape[0], cfg["latent_dim"])
      return update(loss(images_uint8, eps), optimizer, params, ema_params, cfg["ema_decay"])
    return step

  return model, loss_fn, make


# ---- GAN (genjax.nn.dcgan, genjax.families.gan) ---------------------------------------------
class SubPixelUpsample(nn.Module):
  def __init__(self, in_ch, features):
    super().__init__()
    self.conv = nn.Conv2d(in_ch, 4 * features, 3, padding=1)

  def forward(self, x):
    return F.pixel_shuffle(self.conv(x), 2)


class Generator(nn.Module):
  def __init__(self, latent_dim, channels, image_shape):
    super().__init__()
    h, w, c = image_shape
    scale = 2 ** len(channels)
    self.image_shape, self.h0, self.w0 = image_shape, -(-h // scale), -(-w // scale)
    self.project = nn.Linear(latent_dim, self.h0 * self.w0 * channels[0])
    self.norms = nn.ModuleList([nn.GroupNorm(math.gcd(ch, 32), ch, eps=1e-6) for ch in channels])
    self.ups = nn.ModuleList([SubPixelUpsample(a, b) for a, b in zip(channels, channels[1:])])
    self.to_image = SubPixelUpsample(channels[-1], c)
    self.channels = channels

  def forward(self, z):
    x = self.project(z).reshape(z.shape[0], self.channels[0], self.h0, self.w0)
    x = F.relu(self.norms[0](x))
    for up, norm in zip(self.ups, self.norms[1:]):
      x = F.relu(norm(up(x)))
    x = torch.tanh(self.to_image(x))
    h, w, _ = self.image_shape
    top, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
    return x[:, :, top:top + h, left:left + w]


class Discriminator(nn.Module):
  def __init__(self, channels, image_shape):
    super().__init__()
    h, w, c = image_shape
    self.convs = nn.ModuleList([nn.Conv2d(a, b, 4, stride=2) for a, b in
                                zip([c] + list(channels[:-1]), channels)])
    for _ in channels:
      h, w = -(-h // 2), -(-w // 2)
    self.logit = nn.Linear(channels[-1] * h * w, 1)

  def forward(self, x):
    for conv in self.convs:
      x = F.leaky_relu(conv(same_pad_stride2(x, 4)), 0.2)
    return self.logit(x.flatten(1))[:, 0]


def make_gan(cfg, batch):
  gen = Generator(cfg["latent_dim"], cfg["g_channels"], cfg["image_shape"])
  ema = Generator(cfg["latent_dim"], cfg["g_channels"], cfg["image_shape"])
  ema.load_state_dict(gen.state_dict())
  disc = Discriminator(cfg["d_channels"], cfg["image_shape"])
  adam = lambda ps: torch.optim.Adam(ps, lr=cfg["learning_rate"], betas=(0.5, 0.999), foreach=True)
  g_opt, d_opt = adam(gen.parameters()), adam(disc.parameters())
  g_params, d_params, ema_params = list(gen.parameters()), list(disc.parameters()), list(ema.parameters())

  def d_loss_fn(images_uint8, z):
    x_real = images_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
      x_fake = gen(z)
    return (F.softplus(-disc(x_real)) + F.softplus(disc(x_fake))).mean()

  def g_loss_fn(z):
    return F.softplus(-disc(gen(z))).mean()

  def make(losses):
    d_loss, g_loss = losses

    def step(images_uint8):
      n = images_uint8.shape[0]
      value = d_loss(images_uint8, torch.randn(n, cfg["latent_dim"]))
      grads = torch.autograd.grad(value, d_params)
      for p, g in zip(d_params, grads):
        p.grad = g
      d_opt.step()
      g_value = g_loss(torch.randn(n, cfg["latent_dim"]))
      grads = torch.autograd.grad(g_value, g_params)  # G's parameters only
      for p, g in zip(g_params, grads):
        p.grad = g
      g_opt.step()
      with torch.no_grad():
        torch._foreach_lerp_(ema_params, g_params, 1.0 - cfg["ema_decay"])
      return value + g_value
    return step

  return nn.ModuleList([gen, disc]), (d_loss_fn, g_loss_fn), make


def time_steps(step, batch, num_steps, warmup):
  """Median seconds per step (each step ends with its loss on the host)."""
  for _ in range(warmup):
    step(batch).item()
  times = []
  for _ in range(num_steps):
    start = time.perf_counter()
    step(batch).item()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def matmul_peak_gflops(n=2048, repeats=10):
  a, b = torch.randn(n, n), torch.randn(n, n)
  a @ b
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
  return 2 * n ** 3 / float(np.median(times)) / 1e9


BUILDERS = {"ddpm": make_ddpm, "vae": make_vae, "gan": make_gan}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--json", required=True, help="the model and step settings (see vs_pytorch.py)")
  p.add_argument("--variants", default="eager,compile")
  args = p.parse_args()
  cfg = json.loads(args.json)
  torch.manual_seed(0)
  h, w, c = cfg["image_shape"]
  batch = torch.from_numpy(np.random.default_rng(0).integers(
      0, 256, (cfg["batch_size"], h, w, c), dtype=np.uint8))
  model, losses, make = BUILDERS[cfg["family"]](cfg, batch)
  result = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "params": sum(q.numel() for q in model.parameters())}
  for variant in args.variants.split(","):
    if variant == "eager":
      step = make(losses)
    else:
      step = make(tuple(map(torch.compile, losses)) if isinstance(losses, tuple)
                  else torch.compile(losses))
    start = time.perf_counter()
    step(batch).item()  # compiles on the first call
    result[f"{variant}_first_step_s"] = time.perf_counter() - start
    result[f"{variant}_step_s"] = time_steps(step, batch, cfg["steps"], warmup=2)
  if cfg.get("sample_num"):  # DDIM sampling with the (EMA-shaped) trained network, no grad
    model.eval()
    sample = ddim_sampler(model, cfg)
    for variant in args.variants.split(","):
      net = model if variant == "eager" else torch.compile(model)
      sample(cfg["sample_num"], net)  # compiles on the first call
      start = time.perf_counter()
      sample(cfg["sample_num"], net)
      result[f"{variant}_ddim_s_per_image"] = (time.perf_counter() - start) / cfg["sample_num"]
  result["matmul_peak_gflops"] = matmul_peak_gflops(cfg.get("matmul_size", 2048))
  print(json.dumps(result))


if __name__ == "__main__":
  main()
