# The two commands a fresh clone needs: `make demo` (the main job on the embedded
# synthetic data) and `make test`. Both use the active Python environment; run
# `make install` first (README.md, "Installation").
PY ?= python
DEMO ?= demo_out

.PHONY: install test demo demo-stage2 bench

install:
	$(PY) -m pip install -e ".[dev]"

test:
	$(PY) -m pytest -q -n 2 tests

demo:
	JAX_PLATFORMS=cpu $(PY) -m jaxtalk.demo --out=$(DEMO)

demo-stage2:  # the demo plus stage 2 (speech -> motion): about ten more minutes
	JAX_PLATFORMS=cpu $(PY) -m jaxtalk.demo --out=$(DEMO) --stage2

bench:
	JAX_PLATFORMS=cpu $(PY) benchmarks/loop_overhead.py
