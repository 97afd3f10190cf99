"""The jitted functions of the loop, built once per run around a family.

Everything here runs on device: the train step returns the updated state and
an updated clu metrics accumulator, so the host only syncs at log time. The frozen
stages' parameters (`frozen`) are a separate argument, replicated and never donated.
"""

from __future__ import annotations

import weakref
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from clu import metrics as clu_metrics
from flax import struct

from genjax import compiler_options
from genjax.families.base import Family
from genjax.train import sharding
from genjax.train.state import TrainState, ema_decay_at, ema_update


def averages(names) -> type[clu_metrics.Collection]:
  """A clu Collection averaging each named metric over examples (masked when given a mask).
  `names` may map names to per-example shapes (e.g. `jax.eval_shape` of `eval_metrics`): a
  metric shaped [B, K] is then averaged to a [K] vector (see `Family.summarize_eval`)."""
  shapes = names if isinstance(names, dict) else {}
  return clu_metrics.Collection.create(**{
      n: _vector_average(n, shapes[n].shape[1]) if n in shapes and len(shapes[n].shape) == 2
      else clu_metrics.Average.from_output(n) for n in sorted(names)})


def _vector_average(name: str, size: int) -> type[clu_metrics.Metric]:
  """clu's Average for per-example vectors [B, size]: the masked mean over examples, [size].
  Its empty value already has the vector's shape, so a jitted eval step compiles once."""

  @struct.dataclass
  class VectorAverage(clu_metrics.Metric):
    total: jax.Array
    count: jax.Array

    @classmethod
    def empty(cls):
      return cls(total=jnp.zeros((size,), jnp.float32), count=jnp.zeros((), jnp.float32))

    @classmethod
    def from_model_output(cls, mask=None, **outputs):
      values = outputs[name].astype(jnp.float32)
      weight = jnp.ones(values.shape[:1], jnp.float32) if mask is None else mask.astype(jnp.float32)
      return cls(total=weight @ values, count=weight.sum())

    def merge(self, other):
      return type(self)(total=self.total + other.total, count=self.count + other.count)

    def compute(self):
      return self.total / jnp.maximum(self.count, 1.0)

  return VectorAverage


def empty_accumulator(collection, mesh):
  """An empty accumulator placed as the jitted steps return theirs (replicated on `mesh`).

  A plain `collection.empty()` is uncommitted, so its abstract type differs from the
  accumulator a step returns, and jit compiles the step a second time on the second call
  (measured: ~30 s for the diffusion `small` step on 2 CPU cores, once per run and per eval).
  """
  return sharding.replicate(collection.empty(), mesh)


_FAMILY_STEPS = weakref.WeakKeyDictionary()


def _family_train_step(family: Family) -> Callable:
  """`family.train_step` under a jit of its own, one per family. `train_metric_names` and the
  loop's step both call it, so the family's step is traced once, not twice: a jit caches its
  trace per abstract signature, and the outer step inlines the inner one (the same program).
  Tracing is seconds of host time per run start (5 of the 33 s of a resumed 8-device smoke run)."""
  if family not in _FAMILY_STEPS:
    _FAMILY_STEPS[family] = jax.jit(family.train_step)
  return _FAMILY_STEPS[family]


def train_metric_names(family: Family, state: TrainState, batch, frozen) -> list[str]:
  """Traces (without running) one family step to learn the names of its metrics."""
  out = jax.eval_shape(_family_train_step(family), state.params, state.opt_state, batch, state.rng,
                       state.step, frozen)
  return sorted(out[2])


def make_train_step(family: Family, ema_decay: float, collection, mesh,
                    options: dict | None = None, state_sharding=None) -> Callable:
  """(state, accumulator, batch, frozen) -> (state, accumulator); donates the old state.

  `state_sharding`: the state's layout (`sharding.shardings_of(state)`; default replicated),
  kept from step to step.

  `options` replaces genjax's compiler options for this step ({} compiles plainly; the
  benchmarks compare option sets with it).

  A step with non-finite metrics leaves the state untouched; any non-finite
  metric or parameter records the step in `state.nonfinite_step`, so the loop
  names the failing step at its next sync and never checkpoints a bad state.
  """

  def step_fn(state: TrainState, acc, batch, frozen):
    rng = jax.random.fold_in(state.rng, state.step)
    params, opt_state, metrics = _family_train_step(family)(sharding.gathered(state.params, mesh),
                                                            state.opt_state, batch, rng, state.step, frozen)
    ema = ema_update(state.ema_params, family.ema_view(params), ema_decay_at(state.step, ema_decay))
    # The update is applied only if every metric AND every new parameter is finite (a
    # finite loss can still produce inf parameters through a huge update), so a non-finite
    # value never enters the state; the step is recorded and the loop stops at its next
    # sync. Gating on the parameters costs nothing measurable (diffusion `small`, 2 CPU
    # cores: compile 16.9-24.3 s and 1089-1283 ms/step with or without it, within drift).
    metrics_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
    params_finite = jnp.isfinite(optax.global_norm(params))
    healthy = metrics_finite & params_finite & (state.nonfinite_step < 0)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(healthy, n, o), new, old)
    first_bad = (state.nonfinite_step < 0) & ~(metrics_finite & params_finite)
    new_state = state.replace(
        step=jnp.where(healthy, state.step + 1, state.step),
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        ema_params=keep(ema, state.ema_params),
        nonfinite_step=jnp.where(first_bad, state.step, state.nonfinite_step),
    )
    return new_state, acc.merge(collection.single_from_model_output(**metrics))

  replicated = sharding.replicated(mesh)
  state_sharding = replicated if state_sharding is None else state_sharding
  return jax.jit(step_fn, donate_argnums=(0, 1),
                 in_shardings=(state_sharding, replicated, sharding.batch_sharded(mesh), replicated),
                 out_shardings=(state_sharding, replicated),
                 compiler_options=_options(mesh) if options is None else (options or None))


def make_eval_step(family: Family, collection, mesh, params_sharding=None,
                   metrics_fn: Callable | None = None) -> Callable:
  """(ema_params, accumulator, batch, rng, frozen) -> accumulator of masked per-example metrics
  (`family.eval_metrics`, or `metrics_fn` of the same signature, e.g. `family.train_statistics`).
  `params_sharding`: the EMA parameters' layout (default replicated)."""
  metrics_fn = family.eval_metrics if metrics_fn is None else metrics_fn

  def eval_fn(ema_params, acc, batch, rng, frozen):
    per_example = metrics_fn(sharding.gathered(ema_params, mesh), batch, rng, frozen)
    return acc.merge(collection.single_from_model_output(mask=batch["mask"], **per_example))

  replicated = sharding.replicated(mesh)
  return jax.jit(eval_fn, donate_argnums=(1,),
                 in_shardings=(replicated if params_sharding is None else params_sharding, replicated,
                               sharding.batch_sharded(mesh), replicated, replicated),
                 out_shardings=replicated, compiler_options=_options(mesh))


def make_sample_fn(family: Family, mesh, sharded: bool = False, **options) -> Callable:
  """(ema_params, rng, cond_or_None, num, frozen) -> images float32 [num, H, W, C] in [0, 1],
  replicated, or split along the batch over the mesh when `sharded`.
  `options` (sampler settings such as guidance_scale) go to the family's `sample_with`."""

  def sample_fn(ema_params, rng, cond, num, frozen):
    ema_params = sharding.gathered(ema_params, mesh)
    if options:
      return family.sample_with(ema_params, rng, num, cond, frozen=frozen, **options)
    return family.sample(ema_params, rng, num, cond, frozen)

  out = sharding.batch_sharded(mesh) if sharded else sharding.replicated(mesh)
  return jax.jit(sample_fn, static_argnums=(3,), out_shardings=out, compiler_options=_options(mesh))


def _options(mesh):
  return compiler_options.for_devices(mesh.devices.flat)
