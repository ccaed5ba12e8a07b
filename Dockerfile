# jaxtalk in a container: the image launch/xpk.sh runs on GKE, and the CLI anywhere else.
#
#   docker build --build-arg JAX_VARIANT=cpu  -t jaxtalk:cpu  .
#   docker build --build-arg JAX_VARIANT=cuda -t jaxtalk:cuda .   # NVIDIA driver from the host
#   docker build --build-arg JAX_VARIANT=tpu  -t jaxtalk:tpu  .   # Cloud TPU VMs, GKE TPU pools
#   docker run --rm jaxtalk:cpu train --config=toy_regression:tiny --workdir=/tmp/run
#
# JAX_VARIANT picks the JAX build (jax[cpu], jax[cuda12] with its pip CUDA libraries,
# jax[tpu] with libtpu); EXTRAS adds jaxtalk extras, e.g. --build-arg EXTRAS=tfds.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG JAX_VARIANT=cpu
ARG EXTRAS=""

# ffmpeg for video decoding and encoding (jaxtalk/media); the imageio-ffmpeg wheel would do
# too, but the system one is faster and handles more codecs. Debian's version of the base
# image's release: pinning one would break with each point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# JAX for the chosen accelerator first: the largest layer, kept when only jaxtalk changes.
# The range is setup.py's.
RUN case "${JAX_VARIANT}" in \
        cpu) jax="jax[cpu]" ;; \
        cuda) jax="jax[cuda12]" ;; \
        tpu) jax="jax[tpu]" ;; \
        *) echo "JAX_VARIANT must be cpu, cuda or tpu, not ${JAX_VARIANT}" >&2; exit 1 ;; \
    esac \
    && pip install "${jax}>=0.10,<0.13"

WORKDIR /opt/jaxtalk
COPY . .
# hadolint ignore=DL3013
RUN pip install ".${EXTRAS:+[${EXTRAS}]}" \
    && jaxtalk --version

# Runs as `jaxtalk <command>`; xpk and Kubernetes give their own command (bash -c "jaxtalk ...").
ENTRYPOINT ["jaxtalk"]
CMD ["--help"]
