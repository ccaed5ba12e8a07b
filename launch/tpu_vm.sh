#!/bin/bash
# Train on a Cloud TPU VM slice: the same command on every worker (--worker=all);
# jax.distributed.initialize() discovers the slice from the TPU metadata.
#
#   launch/tpu_vm.sh TPU_NAME ZONE configs/anitalker_stage1.py:paper gs://bucket/runs/s1 [--config.k=v ...]
#
# Prerequisite, once per slice: the repository at ~/jaxtalk on every worker and
#   pip install -e ~/jaxtalk "jax[tpu]"      (see README.md, "Installation").
set -euo pipefail
TPU=${1:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [flags]}
ZONE=${2:?zone}
CONFIG=${3:?config}
WORKDIR=${4:?workdir (a gs:// path so every worker writes to the same place)}
shift 4
EXTRA=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command \
  "cd ~/jaxtalk && jaxtalk train --config=$CONFIG --workdir=$WORKDIR --config.distributed.initialize=yes$EXTRA"
