"""Train-step throughput of a config, next to this machine's measured matmul peak.

  python benchmarks/train_step.py --config=configs/vae.py:size=small
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/train_step.py --config=...

Runs the loop's own jitted step (EMA, NaN guard and metric accumulation
included) on synthetic uint8 batches of the dataset's shape, and prints
images/s, step time, FLOPs per step from XLA's cost analysis, achieved GFLOP/s,
the fp32 matmul peak measured in the same run, and their ratio.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from genjax.families import DataSpec, build_family
from genjax.train import sharding, steps
from genjax.train.state import TrainState

FLAGS = flags.FLAGS


def _define_flags():  # only when run as a script: benchmarks/vs_pytorch.py imports `measure`
  config_flags.DEFINE_config_file("config", None, "configs/<family>.py[:key=value,...]")
  flags.DEFINE_string("image_shape", "28,28,1", "H,W,C of the synthetic batches.")
  flags.DEFINE_integer("num_classes", 10, "Label count of the synthetic batches.")
  flags.DEFINE_integer("steps", 20, "Timed steps (after one warm-up step).")
  flags.DEFINE_integer("matmul_size", 2048, "Side of the square fp32 matmul used to measure peak.")
  flags.mark_flags_as_required(["config"])


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def matmul_peak_gflops(n: int) -> float:
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  jax.block_until_ready(mm(a, b))
  return 2 * n**3 / _median_time(lambda: mm(a, b), 10) / 1e9


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def measure(config, shape, num_classes: int, num_steps: int) -> dict:
  """Times the loop's jitted train step of `config` on synthetic batches: a dict of figures."""
  family = build_family(config, DataSpec(shape, num_classes))
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  local = {"image": rng.integers(0, 256, (config.batch_size,) + shape, dtype=np.uint8),
           "cond": {"label": rng.integers(0, max(num_classes, 1), config.batch_size).astype(np.int32)}}
  batch = sharding.global_batch(local, mesh)

  def init_fn(key, b):
    params, opt_state = family.init(key, b)
    return TrainState.create(params, opt_state, family.ema_view(params), key)

  state = jax.jit(init_fn, out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(0), batch)
  collection = steps.averages(steps.train_metric_names(family, state, batch, {}))
  step = steps.make_train_step(family, config.ema_decay, collection, mesh)
  acc = collection.empty()

  t = time.perf_counter()
  compiled = step.lower(state, acc, batch, {}).compile()
  compile_s = time.perf_counter() - t
  state, acc = step(state, acc, batch, {})  # warm-up
  jax.block_until_ready(state)
  t = time.perf_counter()
  for _ in range(num_steps):
    state, acc = step(state, acc, batch, {})
  jax.block_until_ready(state)
  return {"step_s": (time.perf_counter() - t) / num_steps, "compile_s": compile_s,
          "flops": _flops(compiled), "params": sum(x.size for x in jax.tree.leaves(state.params))}


def main(_):
  config = FLAGS.config
  shape = tuple(int(s) for s in FLAGS.image_shape.split(","))
  result = measure(config, shape, FLAGS.num_classes, FLAGS.steps)
  step_s, flops = result["step_s"], result["flops"]
  peak = matmul_peak_gflops(FLAGS.matmul_size)
  achieved = flops / step_s / 1e9
  print(f"config          {config.family} batch {config.batch_size} image {shape} "
        f"params {result['params'] / 1e6:.2f}M devices {jax.device_count()}x{jax.devices()[0].platform}")
  print(f"compile         {result['compile_s']:.1f} s")
  print(f"step time       {step_s * 1e3:.1f} ms   ({FLAGS.steps} steps)")
  print(f"images/s        {config.batch_size / step_s:.1f}")
  print(f"FLOPs/step      {flops / 1e9:.3f} GFLOP (XLA cost analysis)")
  print(f"achieved        {achieved:.1f} GFLOP/s")
  print(f"matmul peak     {peak:.1f} GFLOP/s (fp32 {FLAGS.matmul_size}^2, measured now)")
  print(f"ratio           {achieved / peak:.3f} of measured peak")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
