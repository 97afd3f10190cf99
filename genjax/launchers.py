"""Running the same `launch.py` command on several processes: on this machine (a simulated
multi-host run), on every worker of a TPU VM slice, on a SLURM GPU cluster, or on GKE via xpk.

genjax itself is always the same program: one process per host (or per GPU), joined by
`jax.distributed.initialize` (JAX's multi-controller runtime). These functions only build
the commands that start those processes; with `dry_run` they print them instead.

  python launch.py --config=... --workdir=W --local_processes=2 --local_devices=2
  python launch.py --config=... --workdir=gs://B/run --tpu=NAME --zone=ZONE --dry_run
  python launch.py --config=... --workdir=/shared/run --slurm --nodes=2 --gpus_per_node=8 --dry_run
  python launch.py --config=... --workdir=gs://B/run --xpk --cluster=C --tpu_type=v5p-32 --dry_run
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from typing import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# launch.py flags that choose where to run; they are removed from the command each process runs.
LAUNCHER_FLAGS = {  # name -> takes a value
    "local_processes": True, "local_devices": True, "tpu": True, "zone": True, "project": True,
    "slurm": False, "nodes": True, "gpus_per_node": True, "time": True, "partition": True,
    "xpk": False, "cluster": True, "tpu_type": True, "num_slices": True, "docker_image": True,
    "dry_run": False,
}
# Environment passed on to remote processes when set here (data and cache locations).
FORWARDED_ENV = ("GENJAX_DATA_DIR", "GENJAX_COMPILATION_CACHE", "GENJAX_FASHION_MNIST_DIR")
REMOTE_DIR = "genjax"  # the code's folder in the home directory of each TPU VM worker


def drop_flags(argv: Sequence[str], flags: dict[str, bool]) -> list[str]:
  """argv without the flags named in `flags` (name -> takes a value): --name=value,
  --name value, --name and --noname."""
  out, skip = [], False
  for arg in argv:
    if skip:
      skip = False
      continue
    name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
    bare = name[2:] if name and name.startswith("no") and name[2:] in flags else name
    if bare in flags:
      skip = flags[bare] and "=" not in arg
      continue
    out.append(arg)
  return out


def worker_args(argv: Sequence[str]) -> list[str]:
  """launch.py's arguments without the launcher flags: what every process runs."""
  return drop_flags(argv, LAUNCHER_FLAGS)


def _jax_for(accelerator: str) -> str:
  """The pip requirement of jax for an accelerator, at the version genjax is tested with."""
  return shlex.quote(f"jax[{accelerator}]=={importlib.metadata.version('jax')}")


def _environment() -> str:
  pairs = [f"{k}={shlex.quote(os.environ[k])}" for k in FORWARDED_ENV if os.environ.get(k)]
  return " ".join(["PYTHONUNBUFFERED=1", *pairs])


def free_port() -> int:
  """A TCP port on localhost nobody listens on now (for a local coordinator)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


# ------------------------------------------------------------------------------ this machine

def run_local(args: Sequence[str], processes: int, devices_per_process: int, dry_run: bool = False) -> int:
  """Starts `processes` copies of launch.py ARGS on this machine, each with its own
  `devices_per_process` CPU devices, joined into one multi-process run; returns the worst
  exit code. SIGTERM / Ctrl-C here is passed on to every process (they save and stop)."""
  port = free_port()
  commands = [[sys.executable, os.path.join(REPO, "launch.py"), *args,
               f"--coordinator_address=localhost:{port}", f"--num_processes={processes}",
               f"--process_id={i}"] for i in range(processes)]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices_per_process),
             PYTHONUNBUFFERED="1")
  if dry_run:
    for command in commands:
      print(f"JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES={devices_per_process} {shlex.join(command)}")
    return 0
  children = [subprocess.Popen(command, env=env) for command in commands]

  def forward(signum, frame):
    del frame
    for child in children:
      if child.poll() is None:
        child.send_signal(signum)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    codes = [child.wait() for child in children]
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  return max(codes, key=abs)


# ------------------------------------------------------------------------------ TPU VM slices

def tpu_vm_commands(args: Sequence[str], tpu: str, zone: str, project: str | None = None) -> list[list[str]]:
  """Copies this checkout's committed HEAD to every worker of the TPU VM slice, sets it up
  there and runs launch.py ARGS on all workers at once (they find each other through the
  TPU metadata). The workdir must be one every worker can write: a gs:// bucket."""
  where = [f"--zone={zone}", *([f"--project={project}"] if project else [])]
  archive = f"/tmp/{REMOTE_DIR}.tar.gz"
  remote = (f"mkdir -p ~/{REMOTE_DIR} && tar xzf ~/{REMOTE_DIR}.tar.gz -C ~/{REMOTE_DIR} && "
            f"cd ~/{REMOTE_DIR} && make setup && .venv/bin/pip install --quiet {_jax_for('tpu')} && "
            f"{_environment()} .venv/bin/python launch.py {shlex.join(args)}")
  return [
      ["git", "-C", REPO, "archive", "--format=tar.gz", "-o", archive, "HEAD"],
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{tpu}:~/", "--worker=all", *where],
      ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, "--worker=all", *where,
       f"--command={remote}"],
  ]


# ------------------------------------------------------------------------------ SLURM

def slurm_script(args: Sequence[str], nodes: int, gpus_per_node: int, time: str = "24:00:00",
                 partition: str | None = None) -> str:
  """An sbatch script: one task (process) per GPU; JAX reads the SLURM environment to find
  the coordinator, the process count and each process's GPU (`--distributed=on`)."""
  lines = ["#!/bin/bash", "#SBATCH --job-name=genjax", f"#SBATCH --nodes={nodes}",
           f"#SBATCH --ntasks-per-node={gpus_per_node}", f"#SBATCH --gpus-per-node={gpus_per_node}",
           f"#SBATCH --time={time}", "#SBATCH --output=genjax-%j.out"]
  if partition:
    lines.append(f"#SBATCH --partition={partition}")
  lines += ["", "set -euo pipefail", f"cd {shlex.quote(REPO)}",
            f"# The GPU build of jax, once, on a login node: .venv/bin/pip install {_jax_for('cuda12')}",
            f"srun --kill-on-bad-exit=1 env {_environment()} .venv/bin/python launch.py "
            f"{shlex.join([*args, '--distributed=on'])}", ""]
  return "\n".join(lines)


# ------------------------------------------------------------------------------ GKE via xpk

def xpk_command(args: Sequence[str], cluster: str, tpu_type: str, num_slices: int = 1,
                docker_image: str | None = None, zone: str | None = None,
                project: str | None = None) -> list[str]:
  """`xpk workload create` for a GKE cluster of TPU slices. Without `docker_image`, xpk
  builds one from python:3.11 and this checkout (`--script-dir`), installed at start."""
  workload = _workload_name(args)
  if docker_image:
    image, setup = [f"--docker-image={docker_image}"], ""
  else:
    image = ["--base-docker-image=python:3.11", f"--script-dir={REPO}"]
    setup = f"pip install --quiet -r requirements.txt {_jax_for('tpu')} && "
  command = f"{setup}{_environment()} python launch.py {shlex.join(args)}"
  return ["xpk", "workload", "create", f"--cluster={cluster}", f"--workload={workload}",
          f"--tpu-type={tpu_type}", f"--num-slices={num_slices}", *image,
          *([f"--zone={zone}"] if zone else []), *([f"--project={project}"] if project else []),
          f"--command={command}"]


def _workload_name(args: Sequence[str]) -> str:
  """genjax-<workdir's last part>, as lowercase letters, digits and dashes (xpk's rule)."""
  workdir = next((a.split("=", 1)[1] for a in args if a.startswith("--workdir=")), "run")
  name = re.sub(r"[^a-z0-9]+", "-", os.path.basename(workdir.rstrip("/")).lower()).strip("-")
  return ("genjax-" + (name or "run"))[:40].rstrip("-")


def run_commands(commands: Sequence[Sequence[str]], dry_run: bool) -> int:
  for command in commands:
    print(shlex.join(command), flush=True)
    if not dry_run:
      code = subprocess.call(list(command))
      if code:
        return code
  return 0
