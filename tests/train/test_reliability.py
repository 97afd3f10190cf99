"""Gaps a review found, each with a test that failed before its fix: a sweep ends at a
preemption, stale evaluation states are removed, data iterators are closed, a non-finite
parameter never enters the training state, workdir URIs are not mangled."""

import jax
import jax.numpy as jnp
import numpy as np

from genjax import paths
from genjax.data import pipeline
from genjax.train import loop, steps
from genjax.train.fid_evaluator import TrainingFID
from genjax.train.preemption import PreemptionWatcher
from genjax.train.run import Run
from tests.helpers import smoke_config

FAST = {"total_steps": 2, "log_every": 1, "eval_every": 0, "checkpoint_every": 2}


def test_sweep_stops_at_a_preemption(tmp_path, data_dir, monkeypatch):
  """SIGTERM during run 1 of 3: run 1 saves, and runs 2 and 3 are not started (they were)."""
  from genjax import entry
  sweep_file = tmp_path / "sweep_config.py"
  sweep_file.write_text("def get_hyper(h):\n  return h.sweep('seed', [1, 2, 3])\n")
  orig_init = PreemptionWatcher.__init__

  def requested_init(self):
    orig_init(self)
    self._requested = True  # as if SIGTERM arrived before the first step ended

  monkeypatch.setattr(PreemptionWatcher, "__init__", requested_init)
  entry.run_sweep(smoke_config("vae", FAST, data_dir=data_dir), str(tmp_path / "sweep"),
                  str(sweep_file))
  assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["seed=1", "sweep.json"]
  assert (tmp_path / "sweep" / "seed=1" / "checkpoints" / "1").is_dir()  # saved at step 1
  assert not (tmp_path / "sweep" / "seed=1" / "finished.json").exists()


def test_stale_evaluation_states_are_removed(tmp_path, data_dir):
  """An evaluation interrupted at step 3, then a resume from step 5: nothing can finish it,
  so it is removed (it stayed forever); the one at the resumed step is kept."""
  run = Run.create(smoke_config("vae", {"eval.fid_samples": 8}, data_dir=data_dir), str(tmp_path))
  fid = TrainingFID(run, features=object())  # never called here
  fid.state_dir.mkdir(parents=True)
  for name in ("fid_step_3.npz", "fid_step_3.npz.tmp123", "fid_step_5.npz"):
    (fid.state_dir / name).write_bytes(b"x")
  assert fid.pending(5)
  assert sorted(p.name for p in fid.state_dir.iterdir()) == ["fid_step_5.npz"]
  assert not fid.pending(7)
  assert not list(fid.state_dir.iterdir())


def test_training_closes_every_data_iterator(tmp_path, data_dir, monkeypatch):
  opened, closed = [], []
  for cls in (pipeline.TrainIterator, pipeline.EvalBatches):
    orig_init, orig_close = cls.__init__, cls.close

    def init(self, *a, orig_init=orig_init, **k):
      orig_init(self, *a, **k)
      opened.append(self)

    def close(self, orig_close=orig_close):
      closed.append(self)
      orig_close(self)

    monkeypatch.setattr(cls, "__init__", init)
    monkeypatch.setattr(cls, "close", close)
  loop.train_and_evaluate(smoke_config("vae", {**FAST, "eval_every": 2}, data_dir=data_dir),
                          str(tmp_path))
  assert opened and {id(i) for i in opened} <= {id(i) for i in closed}, (len(opened), len(closed))


def test_a_non_finite_parameter_never_enters_the_state(tmp_path, data_dir, monkeypatch):
  """Finite metrics but an update to inf: the state keeps its old parameters and records
  the step (the inf parameters used to be kept and only the step recorded)."""
  run = Run.create(smoke_config("vae", data_dir=data_dir), str(tmp_path))
  state = run.init_state()
  batch = run.first_train_batch()
  family_step = run.family.train_step

  def exploding_step(params, *args):
    new, opt_state, metrics = family_step(params, *args)
    return jax.tree.map(lambda p: p * jnp.inf, new), opt_state, metrics

  monkeypatch.setattr(run.family, "train_step", exploding_step)
  collection = steps.averages(steps.train_metric_names(run.family, state, batch, run.frozen))
  train_step = steps.make_train_step(run.family, run.config.ema_decay, collection, run.mesh)
  before = jax.tree.map(np.asarray, state.params)
  state, _ = train_step(state, steps.empty_accumulator(collection, run.mesh), batch, run.frozen)
  assert int(state.nonfinite_step) == 0 and int(state.step) == 0
  for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(old, np.asarray(new))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.ema_params))


def test_workdir_uris_are_kept_and_local_paths_made_absolute(tmp_path, monkeypatch):
  assert str(paths.resolve("gs://bucket/runs/vae") / "checkpoints") == "gs://bucket/runs/vae/checkpoints"
  monkeypatch.chdir(tmp_path)
  assert str(paths.resolve("runs/vae")) == str(tmp_path / "runs" / "vae")
