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

# tcmalloc where the system has it (Debian / Ubuntu: apt install libtcmalloc-minimal4),
# preloaded into the demo's commands, as PyTorch/XLA's TPU images and vLLM's CPU builds preload
# it. XLA's CPU runtime allocates each step's buffers afresh (the tiny stage-1 step: 147 MB),
# and glibc serves every block over its mmap threshold (32 MB at most) from a new mapping
# whose pages fault in and are unmapped again, every step: 31 million page faults and 73 s
# of system time in one `make demo`, 1.3 million and 14 s with tcmalloc (README "The two
# commands"). The same results either way: the allocator moves no arithmetic. The tests run
# without it: the whole suite with it was within its run-to-run noise (docs/test_suite_time.md).
TCMALLOC ?= $(firstword $(wildcard /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 \
                                   /usr/lib64/libtcmalloc_minimal.so.4))
PRELOAD := $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC))
DEMO_RUN = $(PRELOAD) JAX_PLATFORMS=cpu $(PY) -m jaxtalk.demo --out=$(DEMO)

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
	$(DEMO_RUN)

demo-stage2: $(ENV)  # the demo plus stage 2 (speech -> motion): about seven more minutes
	$(DEMO_RUN) --stage2

bench: $(ENV)
	JAX_PLATFORMS=cpu $(PY) benchmarks/loop_overhead.py

format: $(ENV)  # what CI checks: ruff format + ruff check (ruff.toml)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
