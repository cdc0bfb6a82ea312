#!/usr/bin/env bash
# Regenerates the protobuf/gRPC Go code under service/proto/<svc>pb from the
# .proto file in each. Uses Debian's protoc and pinned Go plugins; the output is
# committed so that users never need protoc.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.1

command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler" >&2; exit 1; }
bin="$(pwd)/.tools/bin"
mkdir -p "$bin"
if [ ! -x "$bin/protoc-gen-go" ] || ! "$bin/protoc-gen-go" --version | grep -q "${PROTOC_GEN_GO_VERSION#v}"; then
  GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
fi
if [ ! -x "$bin/protoc-gen-go-grpc" ] || ! "$bin/protoc-gen-go-grpc" --version | grep -q "${PROTOC_GEN_GO_GRPC_VERSION#v}"; then
  GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"
fi
export PATH="$bin:$PATH"

shopt -s nullglob
# One Go package per service: service/proto/<svc>pb/<svc>.proto.
protos=(service/proto/*/*.proto)
[ ${#protos[@]} -gt 0 ] || { echo "no .proto files"; exit 0; }
for p in "${protos[@]}"; do
  d=$(dirname "$p")
  protoc -I "$d" \
    --go_out="$d" --go_opt=paths=source_relative \
    --go-grpc_out="$d" --go-grpc_opt=paths=source_relative \
    "$p"
done
echo "generated: ${protos[*]}"
