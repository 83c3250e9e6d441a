#!/usr/bin/env bash
# usage: bench/swap/run.sh [SECONDS] [CLIENTS]      (on demand; never in CI)
#
# Hot-swap benchmark of issue 3, one run: a steady client (V2 JSON infer, one iris
# row) with no swaps, then the same client while a new version of the model is added
# every second and picked up by the repository watcher (0.1 s polls); then 100 swaps
# back to back, forced by /reload_model, with the server's resident memory after the
# first and after the last. Prints a Markdown table; exits non-zero on any failed
# request. Client: examples/swap_load.rs. Needs scripts/setup.sh (.ort/).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
T=${1:-10}
C=${2:-8}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$ROOT/.ort/libonnxruntime.so.1.31.1}
cargo build --release --quiet --bin ferroserve --example swap_load

WORK=$(mktemp -d /tmp/ferroserve-swap.XXXXXX)
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/models/m/1" "$WORK/artifacts"
cp examples/models/iris_lr/1/model.onnx "$WORK/artifacts/b.onnx"
cp examples/models/iris_dt/1/model.onnx "$WORK/artifacts/a.onnx"
cp "$WORK/artifacts/b.onnx" "$WORK/models/m/1/model.onnx"

PORT=${PORT:-18601}
"$TARGET/release/ferroserve" serve --model-repository "$WORK/models" \
  --rest-addr "127.0.0.1:$PORT" --grpc-addr 127.0.0.1:0 \
  --file-system-poll-wait-seconds 0.1 >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null && break
  sleep 0.1
done

echo "$(date -u +%F), $(nproc) CPUs, $(uname -m), release build of $(git rev-parse --short HEAD), ${T}s per phase, $C clients"
echo
"$TARGET/release/examples/swap_load" --url "http://127.0.0.1:$PORT" --repo "$WORK/models" \
  --pid "$SERVER" --seconds "$T" --clients "$C" --swaps 100
