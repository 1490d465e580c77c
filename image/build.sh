#!/usr/bin/env bash
# `make image`: the project image (Dockerfile), built with podman.
#
#   BASE_IMAGE  the base (default: localhost/homefeed-base:bookworm, made here from Debian's packages with mmdebstrap
#               when missing, as no registry may be reachable; python:3.11.7-slim-bookworm works where one is)
#   WHEELS      a folder of wheels pip may take packages from (default: /opt/wheels when it holds torch's CPU build,
#               as on the build machine); with it, PyTorch's own index is not asked
#   IMAGE       the tag (default: the one the manifests and pipelines run, pipelines/ray_backend.py IMAGE)
#
# It also builds localhost/homefeed-milvus:2.3.5 (image/milvus.Containerfile), the Milvus server the local container
# deployment runs (`homefeed cluster up`), from the same base.
#
# podman reads image/containers.conf (ulimits and runc for a sandboxed build machine) unless CONTAINERS_CONF is set.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/image/containers.conf}"
image="${IMAGE:-$(sed -n 's/^IMAGE = "\(.*\)"$/\1/p' pipelines/ray_backend.py)}"
base="${BASE_IMAGE:-localhost/homefeed-base:bookworm}"
wheels="${WHEELS:-}"
if [[ -z "$wheels" ]] && compgen -G "/opt/wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then wheels=/opt/wheels; fi

if [[ "$base" == localhost/homefeed-base:* ]] && ! podman image exists "$base"; then
  bash image/base.sh "$base"
fi

cert=()
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  cert=(--volume /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt)
fi
args=(--build-arg "BASE_IMAGE=$base" --tag "$image" "${cert[@]}")
if [[ -n "$wheels" ]]; then
  args+=(--volume "$(realpath "$wheels"):/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels --build-arg TORCH_INDEX=)
fi
start=$(date +%s)
podman build "${args[@]}" .
echo "built $image in $(( $(date +%s) - start )) s: $(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=iec)"

milvus_image="$(sed -n 's/^MILVUS_IMAGE = "\(.*\)".*$/\1/p' components/cluster/local_cluster.py)"
start=$(date +%s)
podman build --build-arg "BASE_IMAGE=$base" "${cert[@]}" --file image/milvus.Containerfile --tag "$milvus_image" image
echo "built $milvus_image in $(( $(date +%s) - start )) s: $(podman image inspect --format '{{.Size}}' "$milvus_image" | numfmt --to=iec)"
