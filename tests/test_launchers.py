"""The launchers' commands, as `launch.py ... --dry_run` prints them (nothing is started)."""

import shlex
import subprocess
import sys

import jax

from tests.helpers import REPO

CONFIG = "--config=configs/vae.py:dataset=mnist5k,size=smoke"


def _dry_run(*args):
  proc = subprocess.run([sys.executable, "launch.py", CONFIG, *args, "--dry_run"], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout


def test_tpu_vm_copies_the_code_and_runs_on_every_worker():
  out = _dry_run("--workdir=gs://bucket/vae-run", "--tpu", "my-tpu", "--zone=us-central2-b",
                 "--project=my-project")
  archive, scp, ssh = [shlex.split(line) for line in out.splitlines()]
  assert archive[:2] == ["git", "-C"] and "archive" in archive
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
  for command in (scp, ssh):
    assert {"--worker=all", "--zone=us-central2-b", "--project=my-project"} <= set(command)
  remote = next(a for a in ssh if a.startswith("--command="))
  assert f"jax[tpu]=={jax.__version__}" in remote
  # The command every worker runs: the user's, without the launcher's own flags.
  run = shlex.split(remote.split(" && ")[-1])
  assert run[-3:] == ["launch.py", CONFIG, "--workdir=gs://bucket/vae-run"], run
  assert "PYTHONUNBUFFERED=1" in run


def test_slurm_script_runs_one_process_per_gpu():
  script = _dry_run("--workdir=/shared/vae", "--slurm", "--nodes=2", "--gpus_per_node=8",
                    "--partition=a100")
  lines = script.splitlines()
  assert lines[0] == "#!/bin/bash"
  for directive in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=a100"):
    assert f"#SBATCH {directive}" in lines
  srun = shlex.split(next(l for l in lines if l.startswith("srun")))
  assert srun[-4:] == ["launch.py", CONFIG, "--workdir=/shared/vae", "--distributed=on"], srun
  assert not any(a.startswith(("--slurm", "--nodes", "--dry_run")) for a in srun)


def test_xpk_workload_create():
  out = _dry_run("--workdir=gs://b/Vae_Run.1", "--xpk", "--cluster=c1", "--tpu_type=v5p-32",
                 "--num_slices=2", "--zone=us-east5-a")
  command = shlex.split(out)
  assert command[:3] == ["xpk", "workload", "create"]
  assert {"--cluster=c1", "--tpu-type=v5p-32", "--num-slices=2", "--zone=us-east5-a",
          "--workload=genjax-vae-run-1", "--base-docker-image=python:3.11"} <= set(command), command
  inner = shlex.split(next(a for a in command if a.startswith("--command="))[10:].split(" && ")[-1])
  assert inner[-3:] == ["launch.py", CONFIG, "--workdir=gs://b/Vae_Run.1"], inner
  with_image = shlex.split(_dry_run("--workdir=gs://b/r", "--xpk", "--cluster=c1", "--tpu_type=v5p-32",
                                    "--docker_image=gcr.io/p/genjax:1"))
  assert "--docker-image=gcr.io/p/genjax:1" in with_image
  assert not any(a.startswith("--base-docker-image") for a in with_image)


def test_local_processes_share_one_coordinator():
  lines = _dry_run("--workdir=/tmp/run", "--local_processes=3", "--local_devices=2").splitlines()
  assert len(lines) == 3
  commands = [shlex.split(l) for l in lines]
  assert all("JAX_NUM_CPU_DEVICES=2" in c for c in commands)
  assert [c[-1] for c in commands] == ["--process_id=0", "--process_id=1", "--process_id=2"]
  assert len({c[-3] for c in commands}) == 1 and commands[0][-3].startswith("--coordinator_address=localhost:")


def test_launcher_mistakes_are_one_line_errors():
  for args, needle in ((["--tpu=x"], "--tpu needs --zone"),
                       (["--xpk", "--cluster=c"], "--xpk needs --cluster and --tpu_type"),
                       ([], "--dry_run goes with a launcher")):
    proc = subprocess.run([sys.executable, "launch.py", CONFIG, "--workdir=/tmp/x", *args, "--dry_run"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
