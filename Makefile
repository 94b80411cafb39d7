# The two commands of the README: `make report` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.joulebench-installed
CORES ?= all

.PHONY: report test test-fast test-slurm lint bench clean setup gpu-check gpu-wheels image

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml envs/system-packages.sh
	bash envs/system-packages.sh
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m joulebench.wordnet
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/snakemake --profile profiles/default --cores $(CORES)
	@echo "report: results/report.pdf and results/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

test-slurm: $(STAMP)
	JOULEBENCH_SLURM=1 $(BIN)/python -m pytest -q -rs -m slurm tests/test_slurm.py

bench: $(STAMP)
	$(BIN)/python benchmarks/harness.py
	$(BIN)/python benchmarks/noise_agreement.py --reuse-first results/bench/work/default
	$(BIN)/python benchmarks/meter_overhead.py --seconds 30
	$(BIN)/python benchmarks/backends.py

# The prepared GPU check (benchmarks/gpu_check.py). On the GPU machine, which has its own torch and no network, it runs
# with that machine's python3 and the wheels of `make gpu-wheels` (README: "The GPU check"); here it skips in one line.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_WHEELS := .whl
# 60 MiB: what a device call carries beside the working tree (64 MiB in all)
GPU_WHEEL_LIMIT := 62914560

gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py

gpu-wheels:
	$(PYTHON) -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
		-d $(GPU_WHEELS) -r benchmarks/gpu_wheels.txt
	@du -cb $(GPU_WHEELS)/*.whl | tail -n 1 | awk '{ if ($$1 > $(GPU_WHEEL_LIMIT)) { print "gpu-wheels: " $$1 \
		" bytes in $(GPU_WHEELS)/, over the $(GPU_WHEEL_LIMIT) a device call can carry"; exit 1 } \
		else print "gpu-wheels: " $$1 " bytes in $(GPU_WHEELS)/" }'

# The jobs' image (README: "Containers"), built with Apptainer (or Singularity) where it is installed: `make image`, or
# `make image IMAGE_DEF=containers/joulebench-cpu.def` for the CPU image; `IMAGE_ARGS=--fakeroot` where root is needed.
# Built beside, then renamed, so a failed build leaves no half-written image. Without Apptainer: one line, exit 2.
IMAGE ?= joulebench.sif
IMAGE_DEF ?= containers/joulebench.def
IMAGE_ARGS ?=
APPTAINER_BIN = $(firstword $(shell command -v apptainer singularity))

image:
	$(if $(APPTAINER_BIN),,$(error make image: no apptainer (or singularity) on PATH, so $(IMAGE) cannot be built \
		here; install Apptainer (https://apptainer.org/docs/admin/main/installation.html) or build on a machine \
		that has it, then set `container: $(IMAGE)` in the config))
	$(APPTAINER_BIN) build --force $(IMAGE_ARGS) $(IMAGE).part $(IMAGE_DEF) || { rm -f $(IMAGE).part; exit 1; }
	mv -f $(IMAGE).part $(IMAGE)
	@echo "image: $(IMAGE) (set container: $(IMAGE) and run snakemake --cores all --use-singularity)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint --cores 1

clean:
	rm -rf results logs checkpoints .snakemake
