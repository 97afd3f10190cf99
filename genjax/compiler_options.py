"""XLA:CPU compiler options genjax compiles its hot executables with.

`xla_cpu_experimental_ynn_fusion_type` routes op kinds through YNNPACK's kernels:
- DOT: dense layers, attention, and every 1x1 convolution (XLA rewrites them as dots), instead
  of Eigen. Measured on 2 cores: FID Inception features 19.6 -> 27.5 images/s (within 1.3e-5 of
  the Eigen path); the t2i `size=small` diffusion train step 0.86 -> 1.15 steps/s.
- REDUCE: sums and maxima. Without it XLA:CPU splits every long reduction into a
  reduce-window plus a reduce, emitted as plain loops: a sum of a [64, 28, 28, 96] map over
  (0, 1, 2) took 20 ms, 1.2 ms with it. GroupNorm statistics, bias gradients and the global
  norm of the gradients are such sums: the diffusion `small` train step 1226 -> 1091 ms.
Convolutions (INDIVIDUAL_CONVOLUTION: step 1883 ms) and elementwise fusions (ELTWISE: 1182 ms)
stayed on Eigen / XLA's own loops: slower or no better (docs/speed.md, benchmarks/train_step.py).
Applied per executable (jit's `compiler_options`), so nothing else changes; accelerators get
no options.
"""

import functools

import jax
import numpy as np

YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
CPU_COMPILER_OPTIONS = {YNN_FUSION_TYPE: "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def for_devices(devices) -> dict | None:
  """The options for executables placed on `devices` (None: compile plainly)."""
  if devices[0].platform != "cpu":
    return None
  return CPU_COMPILER_OPTIONS if cpu_accepts_options() else None


@functools.cache
def cpu_accepts_options() -> bool:
  """False on an XLA that does not know the option (another jax version): plain Eigen then."""
  try:
    probe = jax.jit(lambda x: x @ x, compiler_options=CPU_COMPILER_OPTIONS)
    probe.lower(np.ones((2, 2), np.float32)).compile()
    return True
  except Exception:  # noqa: BLE001 -- any refusal means "not supported here"
    return False
