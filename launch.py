"""genjax entry point: flags in, train / eval / sample out.

  python launch.py --config=configs/vae.py:dataset=mnist5k,size=smoke --workdir=/tmp/vae
  python launch.py --config=configs/vae.py --workdir=/tmp/vae --config.optim.learning_rate=1e-3
  python launch.py --workdir=/tmp/vae --mode=eval          # rebuilt from /tmp/vae/config.json
  python launch.py --workdir=/tmp/t2i --mode=sample --prompt "a red sneaker on the left" --guidance=3
  python launch.py --config=configs/vae.py:size=smoke --workdir=/tmp/sweep --mode=sweep [--dry_run]

Several processes (one per host; see genjax/launchers.py and README "Several hosts"):
  python launch.py --config=... --workdir=/tmp/vae --local_processes=2 --local_devices=2
  python launch.py --config=... --workdir=gs://BUCKET/vae --tpu=NAME --zone=ZONE [--dry_run]
  python launch.py --config=... --workdir=/shared/vae --slurm --nodes=2 --gpus_per_node=8 [--dry_run]
  python launch.py --config=... --workdir=gs://BUCKET/vae --xpk --cluster=C --tpu_type=v5p-32 [--dry_run]

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
flags.DEFINE_integer("steps", None, "--mode=sample: sampling steps (diffusion: DDIM steps; MaskGIT: "
                     "parallel decoding steps T; default: the run's).")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Call jax.distributed.initialize() (multi-host TPU pods / multi-process GPU). "
                  "auto: when the environment says this is one of several processes.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a multi-process run "
                    "started by hand (TPU VMs, SLURM and MPI are detected without it).")
flags.DEFINE_integer("num_processes", None, "With --coordinator_address: how many processes.")
flags.DEFINE_integer("process_id", None, "With --coordinator_address: this process's index.")
# Launchers (genjax/launchers.py): start this same command on several processes.
flags.DEFINE_integer("local_processes", 0, "Run as N processes on this machine (a simulated multi-host run).")
flags.DEFINE_integer("local_devices", 1, "With --local_processes: CPU devices per process.")
flags.DEFINE_string("tpu", None, "Run on every worker of this TPU VM slice (gcloud; needs --zone).")
flags.DEFINE_string("zone", None, "--tpu / --xpk: the Cloud zone.")
flags.DEFINE_string("project", None, "--tpu / --xpk: the Cloud project (default: gcloud's).")
flags.DEFINE_bool("slurm", False, "Write an sbatch script (one process per GPU) and submit it.")
flags.DEFINE_integer("nodes", 1, "--slurm: nodes.")
flags.DEFINE_integer("gpus_per_node", 8, "--slurm: GPUs (= processes) per node.")
flags.DEFINE_string("time", "24:00:00", "--slurm: time limit.")
flags.DEFINE_string("partition", None, "--slurm: partition.")
flags.DEFINE_bool("xpk", False, "Submit to a GKE cluster with `xpk workload create`.")
flags.DEFINE_string("cluster", None, "--xpk: the GKE cluster.")
flags.DEFINE_string("tpu_type", None, "--xpk: TPU slice type, e.g. v5p-32.")
flags.DEFINE_integer("num_slices", 1, "--xpk: number of slices.")
flags.DEFINE_string("docker_image", None, "--xpk: an image with genjax installed (default: built by xpk).")
flags.DEFINE_bool("dry_run", False, "With a launcher: print the commands (or script) instead of running them. "
                  "With --mode=sweep: list the runs, their state and one launch command per run.")
flags.mark_flags_as_required(["workdir"])

_MULTIPROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")


def _multiprocess_environment() -> bool:
  if any(os.environ.get(k) for k in _MULTIPROCESS_ENV):
    return True
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):  # a multi-host TPU slice
    return True
  return int(os.environ.get("SLURM_NTASKS", "1")) > 1 or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


def launch_elsewhere() -> int | None:
  """Runs a launcher flag's processes (an exit code), or None: run here as one process."""
  from genjax import launchers
  from genjax.errors import ConfigError
  args = launchers.worker_args(sys.argv[1:])
  if FLAGS.local_processes:
    if FLAGS.local_processes < 1 or FLAGS.local_devices < 1:
      raise ConfigError("--local_processes and --local_devices must be positive")
    return launchers.run_local(args, FLAGS.local_processes, FLAGS.local_devices, FLAGS.dry_run)
  if FLAGS.tpu:
    if not FLAGS.zone:
      raise ConfigError("--tpu needs --zone (the TPU VM's zone, e.g. us-central2-b)")
    if not FLAGS.workdir.startswith("gs://"):
      print(f"genjax: note: every worker of a multi-host slice writes checkpoints to --workdir; "
            f"{FLAGS.workdir} must be shared by them (use gs://BUCKET/...)", file=sys.stderr)
    return launchers.run_commands(launchers.tpu_vm_commands(args, FLAGS.tpu, FLAGS.zone, FLAGS.project),
                                  FLAGS.dry_run)
  if FLAGS.slurm:
    script = launchers.slurm_script(args, FLAGS.nodes, FLAGS.gpus_per_node, FLAGS.time, FLAGS.partition)
    if FLAGS.dry_run:
      print(script, end="")
      return 0
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "genjax.sbatch")
    with open(path, "w") as f:
      f.write(script)
    return launchers.run_commands([["sbatch", path]], dry_run=False)
  if FLAGS.xpk:
    if not (FLAGS.cluster and FLAGS.tpu_type):
      raise ConfigError("--xpk needs --cluster and --tpu_type (e.g. v5p-32)")
    return launchers.run_commands([launchers.xpk_command(
        args, FLAGS.cluster, FLAGS.tpu_type, FLAGS.num_slices, FLAGS.docker_image, FLAGS.zone,
        FLAGS.project)], FLAGS.dry_run)
  if FLAGS.dry_run:
    raise ConfigError("--dry_run goes with a launcher: --local_processes, --tpu, --slurm or --xpk")
  return None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from genjax.errors import UserError
  # A sweep's dry run lists one launch command per run (launcher flags kept: one job per run).
  sweep_listing = FLAGS.mode == "sweep" and FLAGS.dry_run
  try:
    code = None if sweep_listing else launch_elsewhere()
  except UserError as e:
    print(f"genjax: error: {e}", file=sys.stderr)
    sys.exit(2)
  if code is not None:
    sys.exit(code)
  logging.set_verbosity(logging.WARNING)  # keep the console for genjax's own progress lines
  # tfds suggests OpenCV for decoding; genjax decodes each split once, so PIL is fine.
  logging.get_absl_logger().addFilter(lambda record: "OpenCV is not installed" not in record.getMessage())
  import jax
  if FLAGS.num_processes is not None:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  elif FLAGS.distributed == "on" or (FLAGS.distributed == "auto" and _multiprocess_environment()):
    jax.distributed.initialize()

  from genjax import compilation_cache, entry, launchers
  compilation_cache.enable()
  try:
    if FLAGS.config is not None and FLAGS.mode in ("eval", "sample") and jax.process_index() == 0:
      print(f"genjax: --mode={FLAGS.mode} rebuilds the run from {FLAGS.workdir}/config.json; "
            f"--config is not used", flush=True)
    entry.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, num_samples=FLAGS.num_samples,
              config_path=FLAGS["config"].config_filename if FLAGS.config is not None else "",
              prompts=FLAGS.prompt,
              prompts_file=FLAGS.prompts_file, guidance=FLAGS.guidance, steps=FLAGS.steps,
              dry_run=sweep_listing,
              base_args=launchers.drop_flags(sys.argv[1:], {"mode": True, "workdir": True, "dry_run": False}))
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
