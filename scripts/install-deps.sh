#!/usr/bin/env bash
# Installs the Debian packages EmberFS builds and tests with (idempotent:
# packages already present are skipped, so repeated runs cost nothing).
set -euo pipefail
# rsync, sqlite3, git, gcc, make: the tools tests of tests/fuse run them on a mount.
pkgs=(protobuf-compiler fuse3 fio redis-server rsync sqlite3 git gcc make)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi
