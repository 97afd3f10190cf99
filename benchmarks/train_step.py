"""Train-step throughput of a config under compiler-option sets, next to the machine's matmul peak.

  python benchmarks/train_step.py --config=configs/ddpm.py:dataset=fashion_mnist,size=small
  python benchmarks/train_step.py --config=... --variants=plain,dot,genjax --rounds=6
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/train_step.py --config=...

Runs the loop's own jitted step (EMA, NaN guard and metric accumulation included) on synthetic
uint8 batches of the dataset's shape, once per variant (a set of XLA:CPU options, VARIANTS), in
interleaved rounds so that a slow spell of the machine hits every variant alike, and prints per
variant the median step time, images/s, achieved GFLOP/s (XLA's FLOP count), the fraction of the
fp32 matmul peak measured in the same run, the speed-up over the first variant, and how far the
parameters and mean loss after 3 steps stray from the first variant's (same state and batch).
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

from genjax import compiler_options
from genjax.families import DataSpec, build_family
from genjax.train import sharding, steps
from genjax.train.state import TrainState

FLAGS = flags.FLAGS


YNN = compiler_options.YNN_FUSION_TYPE
CHECK_STEPS = 3  # steps after which each variant's parameters and loss are compared
VARIANTS = {  # name -> XLA:CPU options ({} = plain compile)
    "plain": {},
    "genjax": compiler_options.CPU_COMPILER_OPTIONS,
    "dot": {YNN: "LIBRARY_FUSION_TYPE_DOT"},
    "dot+reduce+eltwise": {YNN: "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE,"
                                "LIBRARY_FUSION_TYPE_ELTWISE"},
    "dot+conv": {YNN: "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"},
    # XLA:CPU's classic loop emitters for fusions instead of the MLIR fusion emitters.
    "genjax+classic": {**compiler_options.CPU_COMPILER_OPTIONS, "xla_cpu_use_fusion_emitters": False},
}


def _define_flags():  # only when run as a script: benchmarks/vs_pytorch.py imports `measure`
  config_flags.DEFINE_config_file("config", None, "configs/<family>.py[:key=value,...]")
  flags.DEFINE_string("image_shape", "28,28,1", "H,W,C of the synthetic batches.")
  flags.DEFINE_integer("num_classes", 10, "Label count of the synthetic batches.")
  flags.DEFINE_list("variants", ["genjax"], f"Option sets to compare, from {sorted(VARIANTS)}.")
  flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds (the median is reported).")
  flags.DEFINE_integer("steps", 2, "Steps per round and variant.")
  flags.DEFINE_integer("matmul_size", 2048, "Side of the square fp32 matmul used to measure peak.")
  flags.mark_flags_as_required(["config"])


def median_seconds(fn, repeats):
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
  return 2 * n**3 / median_seconds(lambda: mm(a, b), 10) / 1e9


def xla_flops(stage) -> float:
  """XLA's FLOP count of a lowered or compiled function (nan where the backend reports none)."""
  cost = stage.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def measure(config, shape, num_classes: int, variants=("genjax",), rounds: int = 5,
            steps_per_round: int = 2) -> dict:
  """Times the loop's jitted train step of `config` under each option set in `variants`
  (names in VARIANTS), interleaved: {name: {"step_s", "compile_s", "flops", "params",
  "param_err", "loss_err"}}; the errors compare CHECK_STEPS steps with the first variant's."""
  family = build_family(config, DataSpec(shape, num_classes))
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  local = {"image": rng.integers(0, 256, (config.batch_size,) + shape, dtype=np.uint8),
           "cond": {"label": rng.integers(0, max(num_classes, 1), config.batch_size).astype(np.int32)}}
  batch = sharding.global_batch(local, mesh)

  def init_fn(key, b):
    params, opt_state = family.init(key, b)
    return TrainState.create(params, opt_state, family.ema_view(params), key)

  new_state = lambda: jax.jit(init_fn, out_shardings=sharding.replicated(mesh))(
      jax.random.PRNGKey(0), batch)
  collection = steps.averages(steps.train_metric_names(family, new_state(), batch, {}))
  results, runners, checked = {}, {}, {}
  for name in variants:
    step = steps.make_train_step(family, config.ema_decay, collection, mesh,
                                 options=VARIANTS[name])
    state, acc = new_state(), steps.empty_accumulator(collection, mesh)
    t = time.perf_counter()
    compiled = step.lower(state, acc, batch, {}).compile()
    results[name] = {"compile_s": time.perf_counter() - t, "flops": xla_flops(compiled),
                     "params": sum(x.size for x in jax.tree.leaves(state.params)), "times": []}
    for _ in range(CHECK_STEPS):  # from the same state for every variant (step 1 alone says
      state, acc = compiled(state, acc, batch, {})  # little: zero-init output, Adam ~ sign(g))
    checked[name] = (jax.device_get(state.params), float(acc.compute()["loss"]))
    runners[name] = [compiled, state, acc]
  for _ in range(rounds):
    for name in variants:
      compiled, state, acc = runners[name]
      t = time.perf_counter()
      for _ in range(steps_per_round):
        state, acc = compiled(state, acc, batch, {})
      jax.block_until_ready(state)
      results[name]["times"].append((time.perf_counter() - t) / steps_per_round)
      runners[name][1:] = [state, acc]
  base_params, base_loss = checked[variants[0]]
  scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(base_params))
  for name in variants:
    params, loss = checked[name]
    results[name]["param_err"] = max(float(np.max(np.abs(a - b))) for a, b in
                                     zip(jax.tree.leaves(params), jax.tree.leaves(base_params))) / scale
    results[name]["loss_err"] = abs(loss - base_loss) / abs(base_loss)
    results[name]["step_s"] = float(np.median(results[name].pop("times")))
  return results


def main(_):
  config = FLAGS.config
  shape = tuple(int(s) for s in FLAGS.image_shape.split(","))
  unknown = set(FLAGS.variants) - set(VARIANTS)
  if unknown:
    raise SystemExit(f"unknown --variants {sorted(unknown)}; known: {sorted(VARIANTS)}")
  results = measure(config, shape, FLAGS.num_classes, FLAGS.variants, FLAGS.rounds, FLAGS.steps)
  peak = matmul_peak_gflops(FLAGS.matmul_size)
  first = results[FLAGS.variants[0]]
  print(f"{config.family} batch {config.batch_size} image {shape} params {first['params'] / 1e6:.2f}M "
        f"devices {jax.device_count()}x{jax.devices()[0].platform}; FLOPs/step "
        f"{first['flops'] / 1e9:.2f} GFLOP (XLA); matmul peak {peak:.0f} GFLOP/s (fp32 "
        f"{FLAGS.matmul_size}^2, measured now); median of {FLAGS.rounds} interleaved rounds")
  print(f"{'variant':<20}{'ms/step':>9}{'images/s':>10}{'GFLOP/s':>9}{'of peak':>9}{'speed-up':>10}"
        f"{'compile s':>11}{'param err':>11}{'loss err':>10}")
  for name, r in results.items():
    achieved = r["flops"] / r["step_s"] / 1e9
    print(f"{name:<20}{r['step_s'] * 1e3:>9.0f}{config.batch_size / r['step_s']:>10.1f}"
          f"{achieved:>9.1f}{achieved / peak:>9.3f}{first['step_s'] / r['step_s']:>9.2f}x"
          f"{r['compile_s']:>11.1f}{r['param_err']:>11.1e}{r['loss_err']:>10.1e}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
