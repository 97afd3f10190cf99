"""genjax entry point: flags in, train / eval / sample out.

  python launch.py --config=configs/vae.py:dataset=mnist5k,size=smoke --workdir=/tmp/vae
  python launch.py --config=configs/vae.py --workdir=/tmp/vae --config.optim.learning_rate=1e-3
  python launch.py --workdir=/tmp/vae --mode=eval          # rebuilt from /tmp/vae/config.json
  python launch.py --workdir=/tmp/t2i --mode=sample --prompt "a red sneaker on the left" --guidance=3
  python launch.py --config=configs/vae.py:size=smoke --workdir=/tmp/sweep --mode=sweep

Training resumes from --workdir automatically. Errors a user can fix are
printed as one `genjax: error: ...` line with a non-zero exit.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<family>.py[:key=value,...]", lock_config=True)
flags.DEFINE_string("workdir", None, "Where config.json, metrics.jsonl, samples/ and checkpoints/ go.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample", "sweep"], "What to run.")
flags.DEFINE_integer("num_samples", 64, "--mode=sample: how many images to draw (per prompt with --prompt).")
flags.DEFINE_multi_string("prompt", [], "--mode=sample: a caption to draw images of (repeatable).")
flags.DEFINE_string("prompts_file", None, "--mode=sample: a text file with one prompt per line.")
flags.DEFINE_float("guidance", None, "--mode=sample: classifier-free guidance scale (default: the run's).")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Call jax.distributed.initialize() (multi-host TPU pods / multi-process GPU). "
                  "auto: when the environment says this is one of several processes.")
flags.mark_flags_as_required(["workdir"])

_MULTIPROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")


def _multiprocess_environment() -> bool:
  if any(os.environ.get(k) for k in _MULTIPROCESS_ENV):
    return True
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):  # a multi-host TPU slice
    return True
  return int(os.environ.get("SLURM_NTASKS", "1")) > 1 or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # keep the console for genjax's own progress lines
  # tfds suggests OpenCV for decoding; genjax decodes each split once, so PIL is fine.
  logging.get_absl_logger().addFilter(lambda record: "OpenCV is not installed" not in record.getMessage())
  import jax
  if FLAGS.distributed == "on" or (FLAGS.distributed == "auto" and _multiprocess_environment()):
    jax.distributed.initialize()

  from genjax import compilation_cache, entry
  from genjax.errors import UserError
  compilation_cache.enable()
  try:
    if FLAGS.config is not None and FLAGS.mode in ("eval", "sample"):
      print(f"genjax: --mode={FLAGS.mode} rebuilds the run from {FLAGS.workdir}/config.json; "
            f"--config is not used", flush=True)
    entry.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, num_samples=FLAGS.num_samples,
              config_path=FLAGS["config"].config_filename if FLAGS.config is not None else "",
              prompts=FLAGS.prompt,
              prompts_file=FLAGS.prompts_file, guidance=FLAGS.guidance)
  except UserError as e:
    print(f"genjax: error: {e}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv):
  """absl's parser, but config mistakes end in one clear line instead of a traceback."""
  from genjax.errors import UserError
  for arg in argv:
    path = arg.split("=", 1)[1].split(":")[0] if arg.startswith("--config=") else None
    if path and not os.path.isfile(path):
      print(f"genjax: error: config file {path!r} not found; configs live in configs/<family>.py",
            file=sys.stderr)
      sys.exit(2)
  try:
    return FLAGS(argv)
  except (UserError, flags.Error) as e:
    message = str(e)
  except (AttributeError, KeyError) as e:  # ml_collections: --config.<key> that does not exist
    overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    message = (f"unknown config key {str(e).strip(chr(34))} (in {', '.join(overrides)}); "
               f"see the config file for the keys it defines")
  print(f"genjax: error: {message}", file=sys.stderr)
  sys.exit(2)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `configs` imports `genjax`
  app.run(main, flags_parser=parse_flags)
