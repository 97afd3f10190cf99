"""genjax on 2 processes x 2 CPU devices (JAX's multi-controller runtime on localhost, gloo
collectives), against 1 process with 4 devices: preemption of one process, checkpoint and
resume, the same training, evaluation, sample grids and FID/KID."""

import json
import os
import signal
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.helpers import REPO, free_port, launch, start_processes

# constant: the schedule must not depend on total_steps, which differs between the runs
CONFIG = ["--config=configs/vae.py:dataset=mnist5k,size=smoke", "--config.optim.schedule=constant"]
# Max |param difference| allowed between the 2-process and the 1-process run (S + 3 steps). The
# cross-process all-reduce adds the gradient shards in another order than XLA's in-process one:
# measured 4.0e-6, the size of the difference between 2 and 4 devices in one process (2.9e-6).
PARAM_TOLERANCE = 2e-5


def _state(workdir, step):
  """Every array of checkpoint `step` (params, optimizer state, EMA) on this process's CPU."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  checkpointer = ocp.StandardCheckpointer()
  cpu = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu),
                        checkpointer.metadata(path).item_metadata.tree)
  return jax.tree.leaves(checkpointer.restore(path, target))


def _eval_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if "eval/nelbo_nats" in r]


def _train_processes(workdir, data_dir, *args):
  address = f"localhost:{free_port()}"
  return start_processes([[sys.executable, os.path.join(REPO, "launch.py"), *CONFIG, f"--workdir={workdir}",
                           *args, f"--coordinator_address={address}", "--num_processes=2",
                           f"--process_id={i}"] for i in range(2)], data_dir=data_dir)


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
  """(2-process workdir, 1-process workdir, preempted step S): 2 processes train until SIGTERM
  reaches ONE of them at step S, then resume to S + 3; one process with 4 devices trains
  S + 3 steps straight."""
  two, one = str(tmp_path_factory.mktemp("two_processes")), str(tmp_path_factory.mktemp("one"))
  procs = _train_processes(two, data_dir, "--config.total_steps=100000", "--config.log_every=1",
                           "--config.checkpoint_every=100000", "--config.eval_every=0")
  for line in procs[0].stdout:  # wait until training is under way
    if line.startswith("[step 3/"):
      break
  procs[1].send_signal(signal.SIGTERM)  # process 0 is never signalled
  outs = [p.communicate(timeout=120)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  stopped = int(outs[0].split("preempted at step ")[1].split(";")[0])
  assert [d for d in os.listdir(os.path.join(two, "checkpoints")) if d.isdigit()] == [str(stopped)]
  final = [f"--config.total_steps={stopped + 3}", f"--config.eval_every={stopped + 3}"]
  resumed = launch([*CONFIG, *final, f"--workdir={two}", "--local_processes=2", "--local_devices=2"],
                   data_dir=data_dir, check=True)
  assert f"resumed from checkpoint step {stopped}" in resumed.stdout, resumed.stdout
  assert resumed.stdout.count("genjax: done") == 1, resumed.stdout  # process 0 alone prints
  launch([*CONFIG, *final, f"--workdir={one}"], data_dir=data_dir, check=True,
         env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  return two, one, stopped


def test_preempted_and_resumed_two_process_run_matches_one_process(runs):
  """SIGTERM to one process saves both at the same step; resumed, the run equals one process."""
  two, one, stopped = runs
  final = stopped + 3
  a, b = _state(two, final), _state(one, final)
  assert len(a) == len(b)
  worst = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
              for x, y in zip(a, b))
  assert worst <= PARAM_TOLERANCE, worst
  assert any(not np.array_equal(x, y) for x, y in zip(_state(two, stopped), a))  # it trained on
  # Evaluation on the test split, split over both processes: the same numbers.
  ev_two, ev_one = _eval_metrics(two), _eval_metrics(one)
  assert [r["step"] for r in ev_two] == [r["step"] for r in ev_one] == [final]
  for r2, r1 in zip(ev_two, ev_one):
    assert r2["eval/nelbo_nats"] == pytest.approx(r1["eval/nelbo_nats"], rel=1e-4)
  # Sample grids written once, by process 0.
  samples = sorted(os.listdir(os.path.join(two, "samples")))
  assert f"samples_{final:07d}.png" in samples and f"reconstructions_{final:07d}.png" in samples, samples


def _fid(workdir, data_dir, processes):
  driver = os.path.join(REPO, "tests", "multihost", "fid_driver.py")
  if processes == 1:
    procs = start_processes([[sys.executable, driver, workdir]], data_dir=data_dir,
                            devices_per_process=4)
  else:
    address = f"localhost:{free_port()}"
    procs = start_processes([[sys.executable, driver, workdir, address, str(processes), str(i)]
                             for i in range(processes)], data_dir=data_dir, devices_per_process=2)
  results = []
  for proc in procs:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    results.append(json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:]))
  return results


def test_fid_on_two_processes_equals_one_process(runs, data_dir):
  two, _, _ = runs
  both = _fid(two, data_dir, processes=2)
  alone, = _fid(two, data_dir, processes=1)
  assert alone["devices"] == 4 and [r["devices"] for r in both] == [4, 4]
  for r in both:  # every process ends with the merged numbers
    assert r["fid"] == pytest.approx(alone["fid"], rel=1e-6)
    assert r["kid"] == pytest.approx(alone["kid"], rel=1e-6, abs=1e-9)
    assert r["fid_num_samples"] == alone["fid_num_samples"] == 24
  # Each sample's features computed exactly once: half on each process.
  assert [r["features_computed"] for r in both] == [12, 12]
  assert alone["features_computed"] == 24
