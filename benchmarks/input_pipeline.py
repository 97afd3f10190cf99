"""Does the input pipeline keep up with the train step? Images/s of the loop's own data path.

  python benchmarks/input_pipeline.py --config=configs/ddpm.py:dataset=fashion_mnist,size=small

Builds the run as `launch.py` does (workdir in a temporary folder, nothing trained) and times
`next(train_iterator)` followed by `to_model_batch` (the host batch placed on the devices), the
exact per-step host work of genjax/train/loop.py, after a few warm-up batches. Compare its
images/s with the train step's (benchmarks/train_step.py): in-memory splits (the small datasets)
are read without prefetch threads, so this time adds to every step's; the step is dispatched
asynchronously, so the next batch is read while the previous step still runs.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from genjax.train.run import Run  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<family>.py[:key=value,...]")
flags.DEFINE_integer("batches", 200, "Timed batches (after 5 warm-up batches).")
flags.mark_flags_as_required(["config"])


def main(_):
  config = FLAGS.config
  with tempfile.TemporaryDirectory() as workdir:
    run = Run.create(config, workdir)
    iterator = run.train_iterator()
    for _ in range(5):
      jax.block_until_ready(run.to_model_batch(next(iterator)))
    start = time.perf_counter()
    for _ in range(FLAGS.batches):
      batch = run.to_model_batch(next(iterator))
    jax.block_until_ready(batch)
    seconds = (time.perf_counter() - start) / FLAGS.batches
  print(f"{config.dataset}: {seconds * 1e3:.2f} ms per batch of {config.batch_size} "
        f"-> {config.batch_size / seconds:,.0f} images/s through the loop's data path")


if __name__ == "__main__":
  app.run(main)
