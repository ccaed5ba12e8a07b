# The two commands a fresh clone needs: `make demo` (the main job on the embedded
# synthetic data) and `make test`. Both use the active Python environment; run
# `make install` first (README.md, "Installation").
PY ?= python
DEMO ?= demo_out

.PHONY: install test demo bench

install:
	$(PY) -m pip install -e ".[dev]"

test:
	$(PY) -m pytest -q -n 2 tests

demo:
	JAX_PLATFORMS=cpu jaxtalk prepare synthetic --out_dir=$(DEMO)/data --size=64
	JAX_PLATFORMS=cpu jaxtalk train --config=configs/toy_regression.py:tiny --workdir=$(DEMO)/toy_run

bench:
	JAX_PLATFORMS=cpu $(PY) benchmarks/loop_overhead.py
