# Set-up and checks. Every target creates .venv when it is missing, installs the CPU build of
# torch first (an unpinned torch would pull a multi-GB CUDA build), then the project.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tssc-installed
DEMO := demo_out
# pytest workers: the test suite is CPU-bound and the machines have 2 cores.
JOBS ?= 2

.PHONY: install test lint demo benchmark clean

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

demo: $(STAMP)
	for kind in cardiac knee; do \
	  $(VENV)/bin/tssc-synth --kind $$kind --subjects 4 --size 64 --depth 16 --frames 12 \
	    --out $(DEMO)/$$kind/cohort --overwrite && \
	  $(VENV)/bin/tssc-run --input $(DEMO)/$$kind/cohort/samplesheet.csv --out $(DEMO)/$$kind/run \
	    --methods linear,nearest --size 64 --depth 16 --overwrite || exit 1; \
	  echo "== $$kind: $(DEMO)/$$kind/run/report/summary.csv"; \
	  cat $(DEMO)/$$kind/run/report/summary.csv; \
	done

benchmark: $(STAMP)
	$(PY) benchmarks/io.py

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
