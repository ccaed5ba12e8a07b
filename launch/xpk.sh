#!/bin/bash
# Train on a GKE TPU cluster with xpk (github.com/AI-Hypercomputer/xpk); multi-slice runs
# set --num-slices and the config's DCN mesh, e.g. --config.dcn_mesh.data=2.
#
#   launch/xpk.sh CLUSTER TPU_TYPE NUM_SLICES IMAGE configs/anitalker_stage1.py:paper gs://bucket/runs/s1 [flags]
#
# IMAGE is a container with jaxtalk installed (pip install -e . "jax[tpu]").
set -euo pipefail
CLUSTER=${1:?usage: launch/xpk.sh CLUSTER TPU_TYPE NUM_SLICES IMAGE CONFIG WORKDIR [flags]}
TPU_TYPE=${2:?tpu type, e.g. v5p-128}
SLICES=${3:?number of slices}
IMAGE=${4:?docker image}
CONFIG=${5:?config}
WORKDIR=${6:?workdir (gs://...)}
shift 6
EXTRA=$(printf ' %q' "$@")
xpk workload create --cluster="$CLUSTER" --tpu-type="$TPU_TYPE" --num-slices="$SLICES" \
  --docker-image="$IMAGE" --workload="jaxtalk-$(date +%Y%m%d-%H%M%S)" \
  --command="jaxtalk train --config=$CONFIG --workdir=$WORKDIR --config.distributed.initialize=yes --config.dcn_mesh.data=$SLICES$EXTRA"
