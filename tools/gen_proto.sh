#!/usr/bin/env bash
# Regenerates the committed Python code for proto/ into OUT (default client_py).
# Usage: tools/gen_proto.sh [OUT]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/client_py}
py=${PYTHON:-python}
export PATH="$(dirname "$(command -v "$py")"):$PATH"
mkdir -p "$out/conveyor/v1"
"$py" -m grpc_tools.protoc -I "$here/proto" \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  "$here"/proto/conveyor/v1/*.proto
touch "$out/conveyor/v1/__init__.py"
