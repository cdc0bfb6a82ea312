#!/usr/bin/env bash
# Builds the emberfs Python wheel: gopy generates the extension from
# ./pybind into python/emberfs/_native, the emberfs binary is bundled for
# LocalCluster, and pip builds dist/emberfs-*.whl from python/.
# Usage: scripts/build-python.sh VENV_PYTHON
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:?usage: build-python.sh VENV_PYTHON}"

# goimports is needed by gopy; pinned with the x/tools in go.mod.
bin="$(pwd)/.tools/bin"
mkdir -p "$bin"
XTOOLS_VERSION="$(go list -m -f '{{.Version}}' golang.org/x/tools)"
if [ ! -x "$bin/goimports" ] || [ "$(cat "$bin/.goimports-version" 2>/dev/null)" != "$XTOOLS_VERSION" ]; then
  GOBIN="$bin" go install "golang.org/x/tools/cmd/goimports@${XTOOLS_VERSION}"
  echo "$XTOOLS_VERSION" > "$bin/.goimports-version"
fi
export PATH="$bin:$PATH"

out=python/emberfs/_native
rm -rf "$out"
mkdir -p "$out"
go tool gopy build -vm="$PY" -output="$(pwd)/$out" -name=pybind ./pybind
# Keep only what the package needs at run time.
find "$out" -maxdepth 1 -type f ! -name '*.so' ! -name '*.py' -delete
rm -f "$out/build.py"
# gopy's generated modules import each other as top-level modules; make
# them package-relative so the extension lives inside emberfs._native.
sed -i -E 's/^import _pybind$/from . import _pybind/; s/^from go import /from .go import /; s/^import go$/from . import go/' "$out"/*.py

mkdir -p python/emberfs/bin
go build -o python/emberfs/bin/emberfs ./cmd/emberfs

rm -rf dist python/build python/*.egg-info
"$PY" -m pip wheel --no-deps --no-build-isolation -q -w dist ./python
ls dist/*.whl
