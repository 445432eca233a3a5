# Set-up and checks. Every target creates .venv when it is missing, installs the CPU build of
# torch first (an unpinned torch would pull a multi-GB CUDA build), then the project.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tssc-installed
DEMO := demo_out
# pytest workers: the test suite is CPU-bound and the machines have 2 cores.
JOBS ?= 2

.PHONY: install test lint demo benchmark stage1-cpu clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -n $(JOBS) tests

# The demo first trains a small stage-1 model on its own training subjects (other seeds than
# the scored ones; a few minutes on 2 cores), then runs every method on each kind.
DEMO_STEPS ?= 400
demo: $(STAMP)
	for kind in cardiac knee; do \
	  $(VENV)/bin/tssc-synth --kind $$kind --subjects 4 --size 64 --depth 16 --frames 12 \
	    --seed 1 --out $(DEMO)/train/$$kind --overwrite || exit 1; \
	  for scan in $(DEMO)/train/$$kind/*.nii.gz; do \
	    $(VENV)/bin/tssc-prepare --scan $$scan --out $(DEMO)/train/prepared/$$(basename $$scan) \
	      --size 64 --depth 16 --overwrite > /dev/null || exit 1; \
	  done; \
	done
	$(VENV)/bin/tssc-train-stage1 --data $(DEMO)/train/prepared --out $(DEMO)/stage1 --overwrite \
	  --patch-size 8 --hidden 128 --depth 4 --heads 4 --steps $(DEMO_STEPS) --val-every 0 \
	  --checkpoint-every 100 --endpoint-fraction 0.75
	for kind in cardiac knee; do \
	  $(VENV)/bin/tssc-synth --kind $$kind --subjects 4 --size 64 --depth 16 --frames 12 \
	    --out $(DEMO)/$$kind/cohort --overwrite && \
	  $(VENV)/bin/tssc-run --input $(DEMO)/$$kind/cohort/samplesheet.csv --out $(DEMO)/$$kind/run \
	    --methods linear,nearest,diffusion --checkpoint $(DEMO)/stage1/checkpoint \
	    --size 64 --depth 16 --overwrite || exit 1; \
	  echo "== $$kind: $(DEMO)/$$kind/run/report/summary.csv"; \
	  cat $(DEMO)/$$kind/run/report/summary.csv; \
	done

benchmark: $(STAMP)
	$(PY) benchmarks/io.py

# The stage-1 CPU recipe (about 45 minutes on 2 cores): trains a model in stage1_cpu/stage1 and
# scores it against linear on held-out synthetic subjects. Resume with ARGS=--resume.
stage1-cpu: $(STAMP)
	$(PY) benchmarks/stage1.py --out stage1_cpu $(ARGS)

clean:
	rm -rf $(DEMO) stage1_cpu .pytest_cache .ruff_cache
