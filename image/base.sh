#!/usr/bin/env bash
# A Debian 12 base image from Debian's packages, for machines that reach Debian's mirrors but no container registry:
# mmdebstrap writes a minimal root filesystem with Python as a tarball, podman imports it as image $1.
set -euo pipefail
tag="${1:-localhost/homefeed-base:bookworm}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$tmp/base.tar"
podman import --quiet "$tmp/base.tar" "$tag" >/dev/null
echo "base image $tag: $(podman image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec)"
