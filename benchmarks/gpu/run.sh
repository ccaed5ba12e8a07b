#!/bin/bash
# The suite's GPU run, on the lent machine, from the repository root (benchmarks/gpu/prepare.py
# prepared .whl/ and .refs/ here and printed the call):
#
#   bash benchmarks/gpu/run.sh [suite arguments]     (default: --full --budget_s=520)
#
# Installs the carried wheels into $SITE (/tmp/site; jaxtalk itself is not installed: the
# repository is on PYTHONPATH), prints nvidia-smi, the versions and a check of every import
# the suite needs, then runs benchmarks/suite.py with the torch sides on the GPU beside the
# official checkouts in .refs/, ending it before the device tool's 600 s: its rows in
# $OUT/suite_gpu.json (written after each benchmark), this log in $OUT/run.log, everything
# each benchmark printed in $OUT/benches.log.
set -u -o pipefail
OUT=${OUT:-/tmp/jaxtalk_gpu}
SITE=${SITE:-/tmp/site}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
[ $# -gt 0 ] || set -- --full --budget_s=520
{
  echo "== $(date -u +%FT%TZ) $(hostname) $(nproc) CPUs"
  nvidia-smi || echo "nvidia-smi: not found"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 1
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  $PY - <<'PY'
import importlib, importlib.metadata as md, sys
print("python", sys.version.split()[0])
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint", "chex",
             "numpy", "scipy", "torch", "triton", "grain", "array-record", "simplejpeg"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} -")
import jax
print("jax devices", jax.devices())
try:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print("torch sees", gpu)
except ImportError as e:
    print("torch:", e)
for module in ("jaxtalk.models.lia.generator", "jaxtalk.inference.liveportrait",
               "jaxtalk.models.anitalker.stage2", "jaxtalk.diffusion.samplers",
               "data_pipelines.loaders", "data_pipelines.datasets", "data_pipelines.synthetic.generate"):
    try:
        importlib.import_module(module)
    except Exception as e:  # the suite still runs; its row for this benchmark says why
        print(f"import {module}: {type(e).__name__}: {e}")
PY
  command -v ffmpeg >/dev/null || echo "no ffmpeg on PATH: data_loader cannot make its set"
  timeout -k 5 560 $PY benchmarks/suite.py "$@" --out="$OUT/suite_gpu.json" \
    --log="$OUT/benches.log" --lia_reference="$PWD/.refs/LIA" \
    --liveportrait_reference="$PWD/.refs/LivePortrait"
  echo "== suite exit $?"
} 2>&1 | tee "$OUT/run.log"
