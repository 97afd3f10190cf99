"""The loop's FID/KID evaluator on a trained run, as one of several processes (or alone),
with the tiny stand-in feature network; prints one `RESULT {json}` line per process.

  python tests/multihost/fid_driver.py WORKDIR [COORDINATOR NUM_PROCESSES PROCESS_ID]
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402

if len(sys.argv) > 2:
  jax.distributed.initialize(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

from genjax.train import stages  # noqa: E402
from genjax.train.fid_evaluator import TrainingFID  # noqa: E402
from genjax.train.run import Run  # noqa: E402
from genjax.train.sweep import apply_overrides  # noqa: E402
from tests.metrics.tiny import tiny_features  # noqa: E402

workdir = sys.argv[1]
# 48 reference images: a cache name no other test uses; removed first, so every run computes
# the reference statistics itself (on several processes: split and merged).
config = apply_overrides(stages.read_run_config(workdir), {
    "eval.fid_samples": 24, "eval.fid_reference_count": 48, "eval.batch_size": 8})
run = Run.create(config, workdir)
fid = TrainingFID(run, tiny_features(batch_size=8))
cache = os.path.join(run.data_dir, "genjax_fid_stats", "mnist5k-test-48-default.npz")
if jax.process_index() == 0 and os.path.exists(cache):
  os.remove(cache)
state, step = run.restore_latest()
out = fid(state, jax.random.PRNGKey(0), step)
print("RESULT " + json.dumps({**out, "features_computed": fid.features_computed,
                              "process": jax.process_index(), "devices": jax.device_count()}),
      flush=True)
