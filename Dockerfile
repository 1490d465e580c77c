# The one project image: the pipelines' components, the KServe predictors, the RayJobs' and the standing Ray
# cluster's pods, the stream processor, Redis, the monitoring CronJob and the Evidently UI all run it
# (manifests/, pipelines/ray_backend.py IMAGE). Never built on the project's build machine, which has no
# container engine; docs/deploy.md says so.
#
#   docker build -t ghcr.io/homefeed-platform/homefeed:0.1.0 .                                     # CPU torch
#   docker build --build-arg TORCH_VARIANT=cu128 -t ghcr.io/homefeed-platform/homefeed:0.1.0-cuda .  # CUDA torch
#
# The CUDA variant differs only in the torch wheel (several GB of CUDA libraries); overlays/prod runs the ranking
# predictor on it. Everything else, the GPU RayJobs included, can run either.

# The Python the lock was resolved with (3.11.7), on Debian 12. Pin by digest where the registry can be reached.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_VARIANT=cpu

# redis-server backs the Feast online store (manifests/base/features/redis.yaml): Debian's package, so the platform
# needs no image it does not build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*

# Non-root, with the fixed uid and gid the manifests' securityContexts name (and components/cluster/rayjob.py).
RUN groupadd --gid 10001 homefeed \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin homefeed

WORKDIR /opt/homefeed
# Dependencies first: this layer changes only with the lock. The lock pins the CPU torch build (torch==2.13.0+cpu);
# the variant swaps that one line for the build from PyTorch's index of the same name. torchrec goes in without its
# CUDA fbgemm-gpu requirement, as `make install` does (the lock has fbgemm-gpu-cpu).
COPY requirements.lock ./
RUN sed "s/^torch==2\.13\.0+cpu$/torch==2.13.0+${TORCH_VARIANT}/" requirements.lock > /tmp/requirements.txt \
 && pip install --no-cache-dir --disable-pip-version-check \
      --extra-index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" -r /tmp/requirements.txt \
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
