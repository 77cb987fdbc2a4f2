#!/usr/bin/env bash
# Generates the Go code for proto/ into conveyor/v1 (package conveyorv1, import path
# conveyor.dev/go/conveyor/v1, from the protos' go_package option).
# Needs protoc, protoc-gen-go and protoc-gen-go-grpc on PATH.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto=${CONVEYOR_PROTO_DIR:-$here/../../proto}
protoc -I "$proto" \
  --go_out="$here" --go_opt=module=conveyor.dev/go \
  --go-grpc_out="$here" --go-grpc_opt=module=conveyor.dev/go \
  "$proto"/conveyor/v1/*.proto
