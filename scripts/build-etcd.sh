#!/usr/bin/env bash
# Builds the etcd server that EmberFS's etcd engine is tested against and
# prints the binary's path. The server comes from the Go module proxy through
# the wrapper module in scripts/etcdserver (go install of the server module is
# refused because of its replace directives). The binary is cached under
# $EMBERFS_CACHE (default ~/.cache/emberfs), keyed by a hash of the wrapper's
# sources, so only the first run on a machine (or a version bump) compiles;
# a lock lets parallel test binaries call this script at once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/etcdserver"
cache="${EMBERFS_CACHE:-$HOME/.cache/emberfs}"
key="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)"
version="$(awk '$1=="require" && $2=="go.etcd.io/etcd/server/v3" {print $3}' "$src/go.mod")"
out="$cache/etcd-$version-$key"
bin="$out/etcd"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$cache"
exec 9>"$cache/etcd-build.lock"
flock 9
if [ ! -x "$bin" ]; then
  echo "build-etcd: building etcd $version into $out (first time on this machine)" >&2
  mkdir -p "$out"
  (cd "$src" && GOWORK=off GOFLAGS=-mod=readonly go build -trimpath -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
