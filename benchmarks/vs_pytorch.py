"""genjax's diffusion, VAE and GAN train steps beside the same steps in PyTorch (eager, compiled).

  python benchmarks/vs_pytorch.py                                 # all three, size=small
  python benchmarks/vs_pytorch.py --families=ddpm --steps=10 --torch_python=.venv-ref/bin/python

For each family, one after the other on the same machine: genjax's jitted loop step (as
`launch.py` compiles it: EMA, NaN guard and metrics included) in this process, then
benchmarks/torch_reference.py in the reference venv (`make reference-venv`) with the same
network, widths, batch, objective, optimizer and EMA, on synthetic uint8 batches of
Fashion-MNIST's shape. Both sides report the median step time over `--steps` steps. Each side
measures an fp32 2048^2 matmul in its own process; the fraction of peak uses the larger of the
two (the machine's best measured matmul) and XLA's FLOP count of genjax's step for both (the
same network and step). Prints, per family, step times, images/s, fractions of peak and ratios.
"""

import importlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks.train_step import matmul_peak_gflops, measure  # noqa: E402
from genjax.families import DataSpec, build_family  # noqa: E402
from genjax.train import sharding, steps  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("families", ["ddpm", "vae", "gan"], "Families to compare (configs/<name>.py).")
flags.DEFINE_string("config_args", "dataset=fashion_mnist,size=small", "Argument of each config.")
flags.DEFINE_string("image_shape", "28,28,1", "H,W,C of the synthetic batches.")
flags.DEFINE_integer("steps", 10, "Timed steps per variant (after warm-up); medians are reported.")
flags.DEFINE_string("torch_python", ".venv-ref/bin/python", "Python of the venv with torch.")
flags.DEFINE_string("torch_variants", "eager,compile", "PyTorch variants to time.")
flags.DEFINE_integer("sample_num", 64, "Diffusion: images per DDIM call (0: no sampling row).")
flags.DEFINE_integer("sample_steps", 50, "Diffusion: DDIM steps.")

HERE = os.path.dirname(os.path.abspath(__file__))


def _refuse(what):
  raise SystemExit(f"the PyTorch twin implements {what}; use the config's defaults")


def torch_settings(config, shape, steps: int) -> dict:
  """The twin's settings from a genjax config; refuses what the twin does not implement."""
  m = config.model
  common = {"family": config.family, "image_shape": list(shape), "batch_size": config.batch_size,
            "learning_rate": config.optim.learning_rate, "ema_decay": config.ema_decay,
            "steps": steps}
  if m.get("conditional", False) or m.get("text_encoder", "none") != "none":
    _refuse("unconditional models only")
  if config.family == "ddpm":
    if m.parameterization != "eps" or m.schedule != "cosine" or m.loss_weighting != "none" \
        or m.get("timestep_power", 1.0) != 1.0 or m.dropout:
      _refuse("eps-prediction, cosine schedule, uniform t, no dropout")
    return dict(common, ch=m.ch, ch_mult=list(m.ch_mult), num_res_blocks=m.num_res_blocks,
                attn_resolutions=list(m.attn_resolutions), num_heads=m.num_heads,
                norm_groups=m.norm_groups, timesteps=m.timesteps, sample_num=FLAGS.sample_num,
                sample_steps=FLAGS.sample_steps)
  if config.family == "vae":
    if config.optim.grad_clip:
      _refuse("no gradient clipping for the VAE")
    return dict(common, channels=list(m.channels), latent_dim=m.latent_dim, beta=m.beta)
  if config.family == "gan":
    if (m.loss, m.g_norm, m.d_norm, m.d_steps, m.r1_gamma) != ("non_saturating", "group", "none",
                                                               1, 0.0):
      _refuse("the non-saturating loss, GroupNorm in G only, one D step, no R1")
    return dict(common, latent_dim=m.latent_dim, g_channels=list(m.g_channels),
                d_channels=list(m.d_channels))
  raise SystemExit(f"no PyTorch twin for family {config.family!r}")


def genjax_ddim_s_per_image(config, shape, num: int, num_steps: int) -> float:
  """Seconds per image of genjax's DDIM (eta 0) with a fresh U-Net, compiled as the loop does."""
  family = build_family(config, DataSpec(shape, 0))
  batch = {"image": jnp.zeros((1, *shape), jnp.uint8), "cond": {}}
  params = family.ema_view(jax.jit(family.init)(jax.random.PRNGKey(0), batch)[0])
  fn = steps.make_sample_fn(family, sharding.make_mesh(), sampler="ddim", steps=num_steps, eta=0.0)
  jax.block_until_ready(fn(params, jax.random.PRNGKey(0), None, num, {}))  # compiles
  start = time.perf_counter()
  jax.block_until_ready(fn(params, jax.random.PRNGKey(1), None, num, {}))
  return (time.perf_counter() - start) / num


def compare(name: str, shape) -> None:
  config = importlib.import_module(f"configs.{name}").get_config(FLAGS.config_args)
  settings = torch_settings(config, shape, FLAGS.steps)
  ours = measure(config, shape, 0, ("genjax",), rounds=FLAGS.steps, steps_per_round=1)["genjax"]
  ours["matmul_peak_gflops"] = matmul_peak_gflops(2048)
  proc = subprocess.run([FLAGS.torch_python, os.path.join(HERE, "torch_reference.py"),
                         "--json", json.dumps(settings), "--variants", FLAGS.torch_variants],
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    raise SystemExit(f"torch_reference.py failed:\n{proc.stderr[-3000:]}")
  theirs = json.loads(proc.stdout.strip().splitlines()[-1])

  peak = max(ours["matmul_peak_gflops"], theirs["matmul_peak_gflops"])
  flops = ours["flops"]
  rows = [("genjax (jax.jit)", ours["step_s"])]
  rows += [(f"pytorch {v}", theirs[f"{v}_step_s"]) for v in FLAGS.torch_variants.split(",")]
  best_torch = min(s for _, s in rows[1:])
  print(f"\n{name} train step ({FLAGS.config_args}): batch {config.batch_size}, image {shape}; "
        f"params genjax {ours['params']:,} / torch {theirs['params']:,}; torch {theirs['torch']} "
        f"({theirs['threads']} threads); FLOPs/step {flops / 1e9:.2f} GFLOP (XLA); matmul peak "
        f"{peak:.0f} GFLOP/s (jax {ours['matmul_peak_gflops']:.0f}, torch "
        f"{theirs['matmul_peak_gflops']:.0f})")
  print(f"{'variant':<20}{'ms/step':>10}{'images/s':>10}{'of peak':>9}{'genjax speed-up':>17}")
  for variant, step_s in rows:
    print(f"{variant:<20}{step_s * 1e3:>10.1f}{config.batch_size / step_s:>10.1f}"
          f"{flops / step_s / 1e9 / peak:>9.3f}{step_s / ours['step_s']:>16.2f}x")
  compiled = {v: round(theirs[f"{v}_first_step_s"], 1) for v in FLAGS.torch_variants.split(",")}
  print(f"genjax vs the faster PyTorch variant: {best_torch / ours['step_s']:.2f}x  "
        f"(compile: genjax {ours['compile_s']:.1f} s; torch first step {compiled})", flush=True)
  if settings.get("sample_num"):
    ddim = {"genjax (jax.jit)": genjax_ddim_s_per_image(config, shape, FLAGS.sample_num,
                                                         FLAGS.sample_steps)}
    ddim.update({f"pytorch {v}": theirs[f"{v}_ddim_s_per_image"]
                 for v in FLAGS.torch_variants.split(",")})
    print(f"DDIM-{FLAGS.sample_steps} sampling, {FLAGS.sample_num} images per call: " + ", ".join(
        f"{k} {v * 1e3:.1f} ms/image" for k, v in ddim.items()) + "; genjax speed-up over the "
        f"faster PyTorch: {min(list(ddim.values())[1:]) / ddim['genjax (jax.jit)']:.2f}x", flush=True)


def main(_):
  if not os.path.exists(FLAGS.torch_python):
    raise SystemExit(f"{FLAGS.torch_python} not found: run `make reference-venv` first")
  shape = tuple(int(s) for s in FLAGS.image_shape.split(","))
  for name in FLAGS.families:
    compare(name, shape)


if __name__ == "__main__":
  app.run(main)
