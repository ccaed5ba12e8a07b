# The two commands a fresh clone needs: `make demo` (the main job on the embedded
# synthetic data) and `make test`. Without PY=..., both run in the project's virtual
# environment .venv, which they create and fill (pip install -e ".[dev]") when it is
# missing or setup.py changed; with PY=python (as CI does) they use that interpreter.
VENV ?= .venv
DEMO ?= demo_out
ifeq ($(origin PY), undefined)
PY := $(VENV)/bin/python
ENV := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)
endif

.PHONY: install test demo demo-stage2 bench format

$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	touch $@

install: $(ENV)  # with PY=..., installs into that interpreter's environment instead
ifndef ENV
	$(PY) -m pip install -e ".[dev]"
endif

test: $(ENV)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

demo: $(ENV)
	JAX_PLATFORMS=cpu $(PY) -m jaxtalk.demo --out=$(DEMO)

demo-stage2: $(ENV)  # the demo plus stage 2 (speech -> motion): about seven more minutes
	JAX_PLATFORMS=cpu $(PY) -m jaxtalk.demo --out=$(DEMO) --stage2

bench: $(ENV)
	JAX_PLATFORMS=cpu $(PY) benchmarks/loop_overhead.py

format: $(ENV)  # what CI checks: ruff format + ruff check (ruff.toml)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
