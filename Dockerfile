# The one project image: the pipelines' components, the KServe predictors, the RayJobs' and the standing Ray
# cluster's pods, the stream processor, Redis, the monitoring CronJob and the Evidently UI all run it
# (manifests/, pipelines/ray_backend.py IMAGE).
#
#   make image                                                                     # here: podman, a Debian base
#   docker build -t ghcr.io/homefeed-platform/homefeed:0.1.0 .                                     # CPU torch
#   docker build --build-arg TORCH_VARIANT=cu128 -t ghcr.io/homefeed-platform/homefeed:0.1.0-cuda .  # CUDA torch
#
# The CUDA variant differs only in the torch wheel (several GB of CUDA libraries); overlays/prod runs the ranking
# predictor on it. Everything else, the GPU RayJobs included, can run either.

# Any Debian 12 with python3 and python3-venv: the official Python image where a registry can be reached, or the
# base `make base-image` builds from Debian's packages with mmdebstrap (image/base.sh) where none can.
ARG BASE_IMAGE=python:3.11.7-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_VARIANT=cpu
# Where torch's build for TORCH_VARIANT comes from: PyTorch's index, or (TORCH_INDEX empty) a folder of wheels named by
# PIP_FIND_LINKS that the build mounts (`make image WHEELS=...`).
ARG TORCH_INDEX=https://download.pytorch.org/whl
ARG PIP_FIND_LINKS
# A CA bundle for pip, where the package index is reached through a proxy that re-signs TLS (`make image` mounts the
# host's); unset, pip uses its own.
ARG PIP_CERT

# redis-server backs the Feast online store (manifests/base/features/redis.yaml): Debian's package, so the platform
# needs no image it does not build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*

# Non-root, with the fixed uid and gid the manifests' securityContexts name (and components/cluster/rayjob.py).
RUN groupadd --gid 10001 homefeed \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin homefeed

# The project's own Python environment: a venv works on either base (Debian's python3 refuses system-wide pip).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/homefeed
# Dependencies first: this layer changes only with the lock. The lock pins the CPU torch build (torch==2.13.0+cpu);
# the variant swaps that one line for the build from PyTorch's index of the same name. torchrec goes in without its
# CUDA fbgemm-gpu requirement, as `make install` does (the lock has fbgemm-gpu-cpu).
COPY requirements.lock ./
RUN sed "s/^torch==2\.13\.0+cpu$/torch==2.13.0+${TORCH_VARIANT}/" requirements.lock > /tmp/requirements.txt \
 && pip install --no-cache-dir --disable-pip-version-check \
      ${TORCH_INDEX:+--extra-index-url "${TORCH_INDEX}/${TORCH_VARIANT}"} -r /tmp/requirements.txt \
 && pip install --no-cache-dir --disable-pip-version-check --no-deps torchrec==1.9.2 \
 && rm /tmp/requirements.txt

# The project, installed in place as `make install` does: feature_repo/ and other data the code finds beside its
# modules stay where the code looks for them.
COPY pyproject.toml README.md ./
COPY homefeed homefeed
COPY components components
COPY models models
COPY serving serving
COPY pipelines pipelines
COPY monitoring monitoring
COPY feature_repo feature_repo
COPY bench bench
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation -e . \
 && python -m compileall -q homefeed components models serving pipelines monitoring

# Read-only root filesystem in every pod: HOME and scratch are the /tmp emptyDir the manifests mount.
USER 10001:10001
ENV HOME=/tmp PYTHONUNBUFFERED=1 HOMEFEED_WORKSPACE=/tmp/workspace
ENTRYPOINT ["homefeed"]
