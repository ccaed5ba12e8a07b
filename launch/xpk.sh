#!/bin/bash
# Train on a GKE TPU cluster with xpk (github.com/AI-Hypercomputer/xpk); multi-slice runs
# set --num-slices and the config's DCN mesh, e.g. --config.dcn_mesh.data=2.
#
#   launch/xpk.sh CLUSTER TPU_TYPE NUM_SLICES IMAGE configs/anitalker_stage1.py:paper gs://bucket/runs/s1 [flags]
#
# IMAGE (e.g. us-docker.pkg.dev/PROJECT/REPO/jaxtalk:tpu) is built from the repository's
# Dockerfile with JAX_VARIANT=tpu and pushed first, so the pods run this checkout;
# JAXTALK_SKIP_BUILD=1 uses IMAGE as it is (already pushed). The push needs docker logged
# in to the registry (gcloud auth configure-docker REGION-docker.pkg.dev).
set -euo pipefail
CLUSTER=${1:?usage: launch/xpk.sh CLUSTER TPU_TYPE NUM_SLICES IMAGE CONFIG WORKDIR [flags]}
TPU_TYPE=${2:?tpu type, e.g. v5p-128}
SLICES=${3:?number of slices}
IMAGE=${4:?docker image}
CONFIG=${5:?config}
WORKDIR=${6:?workdir (gs://...)}
shift 6
EXTRA=$(printf ' %q' "$@")
if [ "${JAXTALK_SKIP_BUILD:-0}" != 1 ]; then
  REPO=$(cd "$(dirname "$0")/.." && pwd)
  docker build --build-arg JAX_VARIANT=tpu -t "$IMAGE" -f "$REPO/Dockerfile" "$REPO"
  docker push "$IMAGE"
fi
xpk workload create --cluster="$CLUSTER" --tpu-type="$TPU_TYPE" --num-slices="$SLICES" \
  --docker-image="$IMAGE" --workload="jaxtalk-$(date +%Y%m%d-%H%M%S)" \
  --command="jaxtalk train --config=$CONFIG --workdir=$WORKDIR --config.distributed.initialize=yes --config.dcn_mesh.data=$SLICES$EXTRA"
