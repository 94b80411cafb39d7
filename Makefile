# The two commands of the README: `make report` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.joulebench-installed
CORES ?= all

.PHONY: report test test-fast test-slurm lint bench clean setup

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

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint --cores 1

clean:
	rm -rf results logs checkpoints .snakemake
