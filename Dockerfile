# The one project image (F9): pipeline components, KServe predictors, RayJob entrypoints, the stream processor, the
# monitoring CronJob and the Evidently UI all run it. Draft: never built here (no container engine on this machine).
#
# The base is pinned by version; pin it by digest where the registry can be reached.
FROM python:3.11.7-slim-bookworm

# Non-root, with a fixed uid the manifests' securityContext names (runAsUser 10001).
RUN groupadd --gid 10001 homefeed && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/homefeed homefeed

WORKDIR /opt/homefeed
# Dependencies first (the layer changes only with the lock), then the project.
COPY requirements.lock pyproject.toml ./
# TODO(F9): the lock pins the CPU build of torch 2.13.0 and fbgemm-gpu-cpu; the GPU ranking predictor needs the CUDA
# build. Decide: one image with the CUDA wheel (runs on CPU too, several GB) or a CPU and a CUDA variant.
RUN pip install --no-cache-dir -r requirements.lock \
 && pip install --no-cache-dir --no-deps torchrec==1.9.2
COPY homefeed homefeed
COPY components components
COPY models models
COPY serving serving
COPY pipelines pipelines
COPY monitoring monitoring
COPY feature_repo feature_repo
RUN pip install --no-cache-dir --no-deps --no-build-isolation .

USER 10001:10001
ENV HOME=/tmp HOMEFEED_WORKSPACE=/workspace
ENTRYPOINT ["homefeed"]
