"""The loop's jitted train and eval steps compile once per run: a fresh metric accumulator has
the abstract type of the one a step returns, so neither the second step nor the step after a
log (a new accumulator) nor the next evaluation compiles again (each would cost a compilation
of the whole step: ~30 s for the diffusion `small` step on 2 CPU cores)."""

import jax

from genjax.train import steps
from genjax.train.run import Run
from tests.helpers import smoke_config


def test_train_and_eval_steps_compile_once(tmp_path, data_dir):
  run = Run.create(smoke_config("vae", data_dir=data_dir), str(tmp_path))
  state = run.init_state()
  batches = run.train_iterator()
  batch = run.to_model_batch(next(batches))
  collection = steps.averages(steps.train_metric_names(run.family, state, batch, run.frozen))
  train_step = steps.make_train_step(run.family, run.config.ema_decay, collection, run.mesh)
  for _ in range(2):  # two "log periods", each starting from a new accumulator
    acc = steps.empty_accumulator(collection, run.mesh)
    for _ in range(2):
      state, acc = train_step(state, acc, run.to_model_batch(next(batches)), run.frozen)
    assert float(acc.compute()["loss"]) > 0
  assert train_step._cache_size() == 1

  eval_batch = next(run.eval_batches())
  shapes = jax.eval_shape(run.family.eval_metrics, state.ema_params, eval_batch,
                          jax.random.PRNGKey(0), run.frozen)
  eval_collection = steps.averages(shapes)
  eval_step = steps.make_eval_step(run.family, eval_collection, run.mesh)
  for _ in range(2):  # two evaluations of two batches each
    acc = steps.empty_accumulator(eval_collection, run.mesh)
    for i, batch in zip(range(2), run.eval_batches()):
      acc = eval_step(state.ema_params, acc, batch, jax.random.PRNGKey(i), run.frozen)
  assert eval_step._cache_size() == 1
