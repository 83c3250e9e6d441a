#!/usr/bin/env bash
# Starts ferroserve on the example models (free loopback ports) and runs the
# real-client interop checks against it. Stops the server however it ends.
# usage: tests/interop/run.sh   (after scripts/setup.sh; uses target/debug/ferroserve)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
cargo build --quiet --bin ferroserve
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REST_PORT=$(free_port); GRPC_PORT=$(free_port)
LOG=$(mktemp)
WORK=$(mktemp -d)  # models the config reload adds from outside the repository
ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so.1.31.1" ./target/debug/ferroserve serve \
  --model-repository examples/models --rest-addr "127.0.0.1:$REST_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" \
  --allowed-model-roots "$WORK" >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$LOG" "$WORK"' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$REST_PORT/v2/health/ready" >/dev/null && break
  kill -0 $PID 2>/dev/null || { cat "$LOG"; echo "server exited"; exit 1; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$REST_PORT/v2/health/ready" >/dev/null || { cat "$LOG"; echo "server not ready"; exit 1; }

.venv-clients/bin/python tests/interop/tritonclient_http.py "127.0.0.1:$REST_PORT" "$ROOT"
# --- gRPC clients (issue 5) ---
./python/setup-grpc-clients.sh >/dev/null  # .venv-tfs; no network once it exists
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-tfs/bin/python python/check-protos.py --write-set "$LOG.pb"
.venv-clients/bin/python python/check-protos.py --descriptor-set "$LOG.pb" && rm -f "$LOG.pb"
.venv-clients/bin/python tests/interop/grpc_clients.py triton "127.0.0.1:$REST_PORT" "127.0.0.1:$GRPC_PORT" "$ROOT"
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-tfs/bin/python tests/interop/grpc_clients.py tfs \
  "127.0.0.1:$REST_PORT" "127.0.0.1:$GRPC_PORT" "$ROOT" "$WORK"
# iris_str (BYTES labels) was added by the tfs run's HandleReloadConfigRequest.
.venv-clients/bin/python tests/interop/grpc_clients.py triton "127.0.0.1:$REST_PORT" "127.0.0.1:$GRPC_PORT" "$ROOT" iris_str

# Graceful shutdown: SIGTERM makes the server exit 0.
kill -TERM $PID
wait $PID
echo "interop: OK"
