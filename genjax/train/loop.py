"""The one training loop of genjax: `train_and_evaluate(config, workdir)`.

Every family runs through this function. The loop owns jit and sharding,
per-step RNG (`fold_in(rng, step)`), the EMA, NaN detection, evaluation and
sample grids, logging, checkpoints (resume by default) and preemption. A
family only supplies the methods of `genjax.families.base.Family`.
"""

from __future__ import annotations

import collections
import json
import logging
import time
import jax
import ml_collections

from genjax import multihost, paths
from genjax.errors import NonFiniteLossError, TrainingFailedError
from genjax.train import sharding, steps
from genjax.train.checkpoint import Checkpointer
from genjax.train.clip_evaluator import TrainingCLIP
from genjax.train.fid_evaluator import TrainingFID
from genjax.train.metric_writer import MetricWriter
from genjax.train.preemption import PreemptionWatcher
from genjax.train.progress import Progress, format_duration
from genjax.train.run import CLIP_STREAM, EVAL_STREAM, FID_STREAM, SAMPLE_STREAM, STATISTICS_STREAM, Run
from genjax.train.state import TrainState

# Consecutive logs on which Family.health_message must report a problem before
# the run stops (a single log can catch a transient dip).
HEALTH_PATIENCE = 3

# Steps the host may dispatch ahead of the device. Unbounded, the host queues every step up to
# the next log (tens of steps on a slow device): a SIGTERM then waits for all of them before its
# checkpoint, which can outlast a preemption's grace period. Two keep the device busy.
MAX_STEPS_IN_FLIGHT = 2


def _write_config(config, workdir):
  path = paths.resolve(workdir) / "config.json"
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if path.exists() and path.read_text() != text:
    logging.warning("config differs from the one this workdir was started with; "
                    "the old one is kept as config.previous.json")
    path.replace(path.parent / "config.previous.json")
  path.write_text(text)


# Logged with every training line: the window's speed and the run's training time so far
# (summed over resumptions; evaluation excluded), which tables report beside their metrics.
STEPS_PER_SECOND, TRAIN_SECONDS = "perf/steps_per_second", "perf/train_seconds"
FINISHED_FILE = "finished.json"


def _write_finished(workdir, step: int, train_seconds: float, params: int, frozen_params: int) -> None:
  """Marks a run that reached its total_steps with its final evaluation done (a sweep skips it)."""
  record = {"step": int(step), "train_seconds": round(train_seconds, 1), "params": int(params),
            "frozen_params": int(frozen_params), "devices": jax.device_count(),
            "platform": jax.devices()[0].platform}
  (paths.resolve(workdir) / FINISHED_FILE).write_text(json.dumps(record, indent=2) + "\n")


def read_finished(workdir) -> dict | None:
  """finished.json of a run, or None if it has not finished (or the file is unreadable)."""
  path = paths.resolve(workdir) / FINISHED_FILE
  try:
    return json.loads(path.read_text()) if path.exists() else None
  except (OSError, ValueError):
    return None


def _check_finite(state: TrainState, checkpointer: Checkpointer) -> None:
  bad = int(state.nonfinite_step)
  if bad >= 0:
    last = checkpointer.latest_step()
    where = (f"the last good checkpoint is step {last} in {checkpointer.directory}" if last is not None
             else "no checkpoint was saved yet")
    raise NonFiniteLossError(
        f"loss became NaN/inf at step {bad}; training stopped and {where}. Lower "
        f"optim.learning_rate or set optim.grad_clip, then rerun to resume from that checkpoint.")


class Evaluator:
  """Test-split metrics, a sample grid (under the eval split's first conditions), the
  family's extra image sets and, when configured, FID/KID."""

  def __init__(self, run: Run, state: TrainState):
    self.run = run
    cfg = run.config.eval
    first = next(run.eval_batches())
    shapes = jax.eval_shape(run.family.eval_metrics, state.ema_params, first,
                            jax.random.PRNGKey(0), run.frozen)
    self.collection = steps.averages(shapes) if shapes else None
    if self.collection is not None:
      self.eval_step = steps.make_eval_step(run.family, self.collection, run.mesh,
                                            sharding.shardings_of(state.ema_params))
    self.statistics_batches = cfg.get("statistics_batches", 0)
    shapes = jax.eval_shape(run.family.train_statistics, state.ema_params, first, jax.random.PRNGKey(0),
                            run.frozen) if self.statistics_batches > 0 else {}
    self.statistics = steps.averages(shapes) if shapes else None
    if self.statistics is not None:
      self.statistics_step = steps.make_eval_step(run.family, self.statistics, run.mesh,
                                                  sharding.shardings_of(state.ema_params),
                                                  metrics_fn=run.family.train_statistics)
    # Replicated outputs: every host can read them (a batch-sharded output would leave
    # process 0 unable to read the rows on other hosts' devices).
    self.images_fn = jax.jit(run.family.eval_images, out_shardings=sharding.replicated(run.mesh))
    self.draws = run.family.generates_images
    self.grid_size = cfg.grid_size
    self.grid_cond = run.conditions(self.grid_size) if self.draws else None
    self.fid = TrainingFID(run) if cfg.fid_samples > 0 and self.draws else None
    self.clip = TrainingCLIP(run) if cfg.get("clip_score") and self.draws else None
    self.last_paths = {}
    # The same noise at every evaluation, so successive grids are comparable.
    self.sample_rng = jax.random.fold_in(run.base_rng, SAMPLE_STREAM)

  def __call__(self, state: TrainState, step: int, writer: MetricWriter) -> dict:
    results = {}
    run = self.run
    eval_rng = jax.random.fold_in(run.base_rng, EVAL_STREAM)
    first_batch = None
    if self.collection is not None:
      acc = steps.empty_accumulator(self.collection, run.mesh)
      for i, batch in enumerate(run.eval_batches()):
        first_batch = first_batch if first_batch is not None else batch
        acc = self.eval_step(state.ema_params, acc, batch, jax.random.fold_in(eval_rng, i), run.frozen)
      results = {f"eval/{k}": float(v) for k, v in run.family.summarize_eval(acc.compute()).items()}
    if self.statistics is not None:
      results.update(self._train_statistics(state, step))
    paths = {}
    if self.draws:
      samples = run.sample(state, self.grid_size, self.grid_cond, self.sample_rng)
      paths["samples"] = writer.write_images(step, "samples", samples)
    if first_batch is None:
      first_batch = next(run.eval_batches())
    for name, images in self.images_fn(state.ema_params, first_batch, eval_rng, run.frozen).items():
      paths[name] = writer.write_images(step, name, images)
    self.last_paths = paths
    if self.fid is not None:
      fid_rng = jax.random.fold_in(run.base_rng, FID_STREAM)
      results.update({f"eval/{k}": float(v) for k, v in self.fid(state, fid_rng, step).items()})
    if self.clip is not None:
      clip_rng = jax.random.fold_in(run.base_rng, CLIP_STREAM)
      results.update({f"eval/{k}": v for k, v in self.clip(state, clip_rng, step).items()})
    return results

  def _train_statistics(self, state: TrainState, step: int) -> dict:
    """`family.train_statistics` averaged over the first `eval.statistics_batches` training
    batches (in order, the same at every evaluation); process 0 stores them in
    WORKDIR/statistics/step_S.json, where later stages read them."""
    run = self.run
    rng = jax.random.fold_in(run.base_rng, STATISTICS_STREAM)
    acc = steps.empty_accumulator(self.statistics, run.mesh)
    for i, batch in enumerate(run.eval_batches(split="train", num_batches=self.statistics_batches)):
      acc = self.statistics_step(state.ema_params, acc, batch, jax.random.fold_in(rng, i), run.frozen)
    stats = {k: float(v) for k, v in acc.compute().items()}
    if multihost.is_main():
      folder = paths.resolve(run.workdir) / "statistics"
      folder.mkdir(parents=True, exist_ok=True)
      (folder / f"step_{step}.json").write_text(json.dumps(
          {"step": step, "train_batches": self.statistics_batches,
           "batch_size": run.config.eval.batch_size, **stats}, indent=2))
    return {f"stats/{k}": v for k, v in stats.items()}


def evaluate_latest(run: Run) -> dict:
  """Evaluates the run's latest checkpoint; writes WORKDIR/eval_<step>.json and sample grids."""
  state, step = run.restore_latest()
  writer = MetricWriter(run.workdir, enabled=jax.process_index() == 0)
  try:
    results = Evaluator(run, state)(state, step, writer)
  finally:
    writer.close()
  if jax.process_index() == 0:
    (paths.resolve(run.workdir) / f"eval_{step}.json").write_text(
        json.dumps({"step": step, **results}, indent=2))
    print(json.dumps({"step": step, **results}, indent=2))
  return results


def _evaluate_and_log(evaluator: Evaluator, state: TrainState, step: int, writer: MetricWriter) -> None:
  results = evaluator(state, step, writer)
  writer.write_scalars(step, results)
  if results:
    multihost.say("  eval: " + " ".join(f"{k.split('/', 1)[1]}={v:.4f}" for k, v in results.items()))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       preemption: PreemptionWatcher | None = None) -> TrainState:
  """Trains `config.family` on `config.dataset`, resuming from `workdir` if it
  holds a checkpoint. Returns the final TrainState (after a preemption, the state saved;
  `preemption.stopped` then says so: pass a watcher to know, as a sweep does)."""
  run = Run.create(config, workdir)
  is_main = jax.process_index() == 0
  if is_main:
    paths.resolve(workdir).mkdir(parents=True, exist_ok=True)
    _write_config(config, workdir)
  writer = MetricWriter(workdir, enabled=is_main)
  checkpointer = run.checkpointer()
  own_watcher = preemption is None
  preemption = preemption or PreemptionWatcher()

  train_iter = run.train_iterator()
  start = checkpointer.latest_step()
  if start is None:
    state = run.init_state()
  else:
    state, data_state = run.restore(checkpointer, start, run.abstract_state())
    train_iter.set_state(data_state)
    writer.truncate_after(start)
    multihost.say(f"genjax: resumed from checkpoint step {start} in {checkpointer.directory}")
  start = int(state.step)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  n_frozen = sum(x.size for x in jax.tree.leaves(run.frozen))
  frozen_note = f" (+{n_frozen:,} frozen in {', '.join(run.stages)})" if run.stages else ""
  multihost.say(f"genjax: {config.family} on {config.dataset} {tuple(run.info.image_shape)}, "
       f"{n_params:,} params{frozen_note}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
       f"global batch {config.batch_size}, steps {start}->{config.total_steps}, workdir {workdir}")

  evaluator = Evaluator(run, state)
  if evaluator.fid is not None and evaluator.fid.pending(start):
    multihost.say(f"genjax: finishing the evaluation of step {start} that was interrupted")
    _evaluate_and_log(evaluator, state, start, writer)

  probe_batch = run.first_train_batch()
  collection = steps.averages(steps.train_metric_names(run.family, state, probe_batch, run.frozen))
  train_step = steps.make_train_step(run.family, config.ema_decay, collection, run.mesh,
                                     state_sharding=sharding.shardings_of(state))
  acc = steps.empty_accumulator(collection, run.mesh)
  progress = Progress(config.total_steps, config.batch_size, start,
                      train_seconds=writer.last_value(TRAIN_SECONDS))
  t_start = time.perf_counter()

  step = start
  unhealthy_logs = 0
  in_flight = collections.deque()  # a tiny result of each dispatched step, oldest first
  try:
    while step < config.total_steps:
      batch = run.to_model_batch(next(train_iter))
      state, acc = train_step(state, acc, batch, run.frozen)  # dispatched asynchronously
      in_flight.append(state.step + 0)  # a copy: `state` itself is donated to the next step
      if len(in_flight) > MAX_STEPS_IN_FLIGHT:
        in_flight.popleft().block_until_ready()
      step += 1
      last = step == config.total_steps
      if step % config.log_every == 0 or last:
        _check_finite(state, checkpointer)
        scalars = {k: float(v) for k, v in acc.compute().items()}
        acc = steps.empty_accumulator(collection, run.mesh)
        multihost.say(progress.line(step, scalars))
        writer.write_scalars(step, {**{f"train/{k}": v for k, v in scalars.items()},
                                    STEPS_PER_SECOND: progress.rate, TRAIN_SECONDS: progress.train_seconds})
        problem = run.family.health_message(scalars)
        unhealthy_logs = unhealthy_logs + 1 if problem else 0
        if unhealthy_logs >= HEALTH_PATIENCE:
          raise TrainingFailedError(
              f"stopped at step {step}: {problem} (on {HEALTH_PATIENCE} consecutive logs); "
              f"checkpoints up to step {checkpointer.latest_step()} are kept in {checkpointer.directory}")
      preempted = preemption.should_stop(step)
      if step % config.checkpoint_every == 0 or last or preempted:
        _check_finite(state, checkpointer)
        checkpointer.save(step, state, train_iter.get_state(), run.stage_records)
      if preempted:
        multihost.say(f"genjax: preempted at step {step}; checkpoint saved. Rerun the same command to resume.")
        break
      if config.eval_every and (step % config.eval_every == 0 or last):
        _check_finite(state, checkpointer)
        t_eval = time.perf_counter()
        _evaluate_and_log(evaluator, state, step, writer)
        progress.exclude(time.perf_counter() - t_eval)
  finally:
    train_iter.close()
    checkpointer.close()
    writer.close()
    if own_watcher:
      preemption.close()

  evaluation_pending = evaluator.fid is not None and evaluator.fid.pending(step)
  if step == config.total_steps and not preemption.stopped and not evaluation_pending and is_main:
    _write_finished(workdir, step, progress.train_seconds, n_params, n_frozen)
  if step == config.total_steps and step > start and is_main:
    outputs = {"config": paths.resolve(workdir) / "config.json", "metrics": writer.jsonl_path,
               **evaluator.last_paths, "checkpoints": checkpointer.directory,
               "tensorboard": f"tensorboard --logdir {paths.resolve(workdir) / 'tensorboard'}"}
    multihost.say(f"genjax: done, {step - start} steps in {format_duration(time.perf_counter() - t_start)}.\n" +
         "\n".join(f"  {name + ':':<17}{where}" for name, where in outputs.items()))
  return state
