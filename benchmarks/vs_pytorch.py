"""genjax's diffusion train step beside the same step in PyTorch (eager and torch.compile).

  python benchmarks/vs_pytorch.py                       # configs/ddpm.py fashion_mnist small
  python benchmarks/vs_pytorch.py --steps=20 --torch_python=.venv-ref/bin/python

One run, one after the other on the same machine: genjax's jitted loop step (as `launch.py`
compiles it: EMA, NaN guard and metrics included) in this process, then
benchmarks/torch_reference.py in the reference venv (`make reference-venv`) with the same U-Net,
widths, batch, objective, optimizer and EMA, on synthetic uint8 batches of the dataset's shape.
Each side measures an fp32 2048^2 matmul in its own process; the fraction of peak uses the
larger of the two (the machine's best measured matmul) and XLA's FLOP count of genjax's step for
both (the same network and step). Prints step times, images/s, ratios and fractions of peak.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks.train_step import matmul_peak_gflops, measure  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/ddpm.py:dataset=fashion_mnist,size=small",
                                "a configs/ddpm.py config (the U-Net family)")
flags.DEFINE_string("image_shape", "28,28,1", "H,W,C of the synthetic batches.")
flags.DEFINE_integer("steps", 10, "Timed steps per variant (after warm-up).")
flags.DEFINE_string("torch_python", ".venv-ref/bin/python", "Python of the venv with torch.")
flags.DEFINE_string("torch_variants", "eager,compile", "PyTorch variants to time.")

HERE = os.path.dirname(os.path.abspath(__file__))


def torch_settings(config, shape, steps: int) -> dict:
  m = config.model
  if config.family != "ddpm" or m.conditional or m.get("text_encoder", "none") != "none":
    raise SystemExit("vs_pytorch compares the unconditional diffusion step (configs/ddpm.py)")
  if m.parameterization != "eps" or m.schedule != "cosine" or m.loss_weighting != "none" \
      or m.get("timestep_power", 1.0) != 1.0 or m.dropout:
    raise SystemExit("the PyTorch twin implements eps-prediction, cosine schedule, uniform t, "
                     "no dropout: use configs/ddpm.py's defaults")
  return {"image_shape": list(shape), "ch": m.ch, "ch_mult": list(m.ch_mult),
          "num_res_blocks": m.num_res_blocks, "attn_resolutions": list(m.attn_resolutions),
          "num_heads": m.num_heads, "norm_groups": m.norm_groups, "timesteps": m.timesteps,
          "batch_size": config.batch_size, "learning_rate": config.optim.learning_rate,
          "ema_decay": config.ema_decay, "steps": steps}


def main(_):
  config = FLAGS.config
  shape = tuple(int(s) for s in FLAGS.image_shape.split(","))
  settings = torch_settings(config, shape, FLAGS.steps)
  ours = measure(config, shape, 0, ("genjax",), rounds=FLAGS.steps, steps_per_round=1)["genjax"]
  ours["matmul_peak_gflops"] = matmul_peak_gflops(2048)
  if not os.path.exists(FLAGS.torch_python):
    raise SystemExit(f"{FLAGS.torch_python} not found: run `make reference-venv` first")
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
  best_torch = min(s for name, s in rows[1:])
  print(f"diffusion train step: {config.family} ch={config.model.ch} batch {config.batch_size} "
        f"image {shape}; params genjax {ours['params']:,} / torch {theirs['params']:,}; "
        f"torch {theirs['torch']} ({theirs['threads']} threads)")
  print(f"FLOPs/step {flops / 1e9:.2f} GFLOP (XLA); matmul peak {peak:.0f} GFLOP/s "
        f"(jax {ours['matmul_peak_gflops']:.0f}, torch {theirs['matmul_peak_gflops']:.0f})")
  print(f"{'variant':<20}{'ms/step':>10}{'images/s':>10}{'of peak':>9}{'genjax speed-up':>17}")
  for name, step_s in rows:
    print(f"{name:<20}{step_s * 1e3:>10.1f}{config.batch_size / step_s:>10.1f}"
          f"{flops / step_s / 1e9 / peak:>9.3f}{step_s / ours['step_s']:>16.2f}x")
  print(f"genjax vs the faster PyTorch variant: {best_torch / ours['step_s']:.2f}x")


if __name__ == "__main__":
  app.run(main)
