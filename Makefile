# Set-up and checks. Every target creates .venv when it is missing, installs the CPU build of
# torch first (an unpinned torch would pull a multi-GB CUDA build), then the project; again when
# pyproject.toml or a bin/ script changes (pip copies the scripts into .venv/bin).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tssc-installed
DEMO := demo_out
# pytest workers: the test suite is CPU-bound and the machines have 2 cores.
JOBS ?= 2
# Where torch comes from: empty, pip's own configuration (the project's machines hold the CPU
# wheel); elsewhere https://download.pytorch.org/whl/cpu, as PyPI's Linux wheel is the CUDA one.
TORCH_INDEX ?=

# Nextflow's runtime, resolved from Maven Central (version pinned in tools/nextflow/pom.xml):
# its JARs in .venv/share/nextflow/lib, the offline `nextflow` command in .venv/bin.
NEXTFLOW := $(VENV)/bin/nextflow
NEXTFLOW_LIB := $(VENV)/share/nextflow/lib

.PHONY: install nextflow slurm test lint typecheck schema demo benchmark stage1-cpu stage1-gpu stage2-cpu baselines-cpu clean

$(STAMP): pyproject.toml $(wildcard bin/tssc-*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0 \
	  $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(STAMP)

$(NEXTFLOW): tools/nextflow/pom.xml tools/nextflow/nextflow | $(STAMP)
	rm -rf $(NEXTFLOW_LIB).tmp
	mvn -B -q -f tools/nextflow/pom.xml dependency:copy-dependencies \
	  -DoutputDirectory=$(abspath $(NEXTFLOW_LIB)).tmp
	rm -rf $(NEXTFLOW_LIB)
	mv $(NEXTFLOW_LIB).tmp $(NEXTFLOW_LIB)
	install -m 755 tools/nextflow/nextflow $@

nextflow: $(NEXTFLOW)

# Debian's slurm-wlm and munge, for the tests that run the pipeline on a one-machine SLURM
# cluster (tests/nextflow/slurm.py starts and stops its daemons). Installing needs root and
# apt-get; elsewhere those tests are skipped, with the reason.
slurm:
	@if command -v slurmctld >/dev/null || test -x /usr/sbin/slurmctld; then :; \
	elif test "$$(id -u)" = 0 && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; \
	else echo "note: slurm-wlm and munge are not installed (needs root and apt-get): SLURM tests skipped"; fi

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint $(NEXTFLOW) slurm
	$(PY) -m pytest -n $(JOBS) --dist loadgroup tests

# Not part of lint or test: a new release of a dependency's type stubs must not fail CI.
typecheck: $(STAMP)
	$(PY) -m mypy tssc_py

# Copy the library's lists (methods, model kinds, presets...) into the Nextflow schema and the
# pipeline's Groovy; a test fails while a copy differs.
schema: $(STAMP)
	$(PY) -m tssc_py.schema

# The demo trains small models on its own training subjects (other seeds than the scored ones):
# stage 1, stage 2 on stage 1's outputs, and the three learned registration baselines; then it
# runs every method on a cardiac and a knee cohort and writes one report of both.
DEMO_STEPS ?= 400
DEMO_STAGE2_STEPS ?= 200
DEMO_BASELINE_STEPS ?= 150
DEMO_METHODS := linear,nearest,demons,voxelmorph,transmorph,uvinet,diffusion
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
	  --preset DiT_tiny --patch-size 8 --hidden 128 --depth 4 --heads 4 --steps $(DEMO_STEPS) --val-every 0 \
	  --checkpoint-every 100 --endpoint-fraction 0.75
	$(VENV)/bin/tssc-train-stage2 --data $(DEMO)/train/prepared --stage1 $(DEMO)/stage1/checkpoint \
	  --out $(DEMO)/stage2 --overwrite --preset tiny --steps $(DEMO_STAGE2_STEPS) \
	  --val-subjects 0 --checkpoint-every 100
	for model in voxelmorph transmorph uvinet; do \
	  $(VENV)/bin/tssc-train-baseline --data $(DEMO)/train/prepared --model $$model \
	    --out $(DEMO)/$$model --overwrite --steps $(DEMO_BASELINE_STEPS) --val-every 0 \
	    --checkpoint-every 100 || exit 1; \
	done
	for kind in cardiac knee; do \
	  $(VENV)/bin/tssc-synth --kind $$kind --subjects 4 --size 64 --depth 16 --frames 12 \
	    --out $(DEMO)/$$kind/cohort --overwrite && \
	  $(VENV)/bin/tssc-run --input $(DEMO)/$$kind/cohort/samplesheet.csv --out $(DEMO)/$$kind/run \
	    --methods $(DEMO_METHODS) --checkpoint $(DEMO)/stage1/checkpoint \
	    --checkpoint $(DEMO)/voxelmorph/checkpoint --checkpoint $(DEMO)/transmorph/checkpoint \
	    --checkpoint $(DEMO)/uvinet/checkpoint --refine-checkpoint $(DEMO)/stage2/checkpoint \
	    --size 64 --depth 16 --dataset $$kind --overwrite || exit 1; \
	done
	$(VENV)/bin/tssc-report --dataset cardiac=$(DEMO)/cardiac/run --dataset knee=$(DEMO)/knee/run \
	  --out $(DEMO)/report --overwrite
	@echo "== $(DEMO)/report/comparison.csv (figures and report.html in $(DEMO)/report/)"
	@cat $(DEMO)/report/comparison.csv

benchmark: $(STAMP)
	$(PY) benchmarks/io.py
	$(PY) benchmarks/stage1_sampling.py
	$(PY) benchmarks/stage1_attention.py
	$(PY) benchmarks/stage2.py

# The stage-1 CPU recipe (about 40 minutes on 2 cores): trains a model over the rigid_demons prior
# in stage1_cpu/stage1 on knees and hearts, some turning, and scores it against linear and
# demons on held-out synthetic subjects, a held-out motion among them. Resume with ARGS=--resume.
stage1-cpu: $(STAMP)
	$(PY) benchmarks/stage1.py --out stage1_cpu $(ARGS)

# The longer stage-1 recipe for one GPU (3 times the training subjects, batch 32, 4000 steps)
# in stage1_gpu/, scored like stage1-cpu. Resume with ARGS=--resume.
stage1-gpu: $(STAMP)
	$(PY) benchmarks/stage1.py --out stage1_gpu --train-knee 24 --train-cardiac 24 \
	  --train-turning 24 --batch-size 32 --steps 4000 $(ARGS)

# The stage-2 CPU recipe (after stage1-cpu): trains stage 2 on the stage-1 model's outputs in
# stage2_cpu/stage2 and scores full TSSC against stage 1 alone. Resume with ARGS=--resume.
stage2-cpu: $(STAMP)
	$(PY) benchmarks/stage2_recipe.py --stage1-run stage1_cpu --out stage2_cpu $(ARGS)

# The registration baselines on the CPU (12 minutes on one thread of a shared 2-core CPU): trains voxelmorph,
# transmorph and uvinet in baselines_cpu/ and scores them and demons against linear on
# held-out synthetic subjects. Resume with ARGS=--resume.
baselines-cpu: $(STAMP)
	$(PY) benchmarks/baselines.py --out baselines_cpu $(ARGS)

clean:
	rm -rf $(DEMO) stage1_cpu stage2_cpu baselines_cpu .pytest_cache .ruff_cache
