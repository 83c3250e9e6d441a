#!/usr/bin/env bash
# Starts ferroserve on the example models (free loopback ports) and runs the
# real-client interop checks against it. Stops the server however it ends.
# usage: tests/interop/run.sh   (after scripts/setup.sh; uses target/debug/ferroserve)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# scripts/test.sh passes the binary its cargo test built; run alone, build one.
if [ -z "${FERROSERVE_BIN:-}" ]; then
  cargo build --quiet --bin ferroserve
  FERROSERVE_BIN="$ROOT/target/debug/ferroserve"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REST_PORT=$(free_port); GRPC_PORT=$(free_port)
LOG=$(mktemp)
WORK=$(mktemp -d)  # models the config reload adds from outside the repository
ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so.1.31.1" "$FERROSERVE_BIN" serve \
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
.venv-clients/bin/python tests/interop/tritonclient_grpc.py "127.0.0.1:$GRPC_PORT" "$ROOT"
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-tfs/bin/python tests/interop/grpc_clients.py tfs \
  "127.0.0.1:$REST_PORT" "127.0.0.1:$GRPC_PORT" "$ROOT" "$WORK"
# iris_str (BYTES labels) was added by the tfs run's HandleReloadConfigRequest.
.venv-clients/bin/python tests/interop/grpc_clients.py triton "127.0.0.1:$REST_PORT" "127.0.0.1:$GRPC_PORT" "$ROOT" iris_str

# Graceful shutdown: SIGTERM makes the server exit 0.
kill -TERM $PID
wait $PID

# --- TLS with client certificates (issue 10): a second server, certificates from openssl ---
tests/interop/make_certs.sh "$WORK"
REST_PORT=$(free_port); GRPC_PORT=$(free_port)
ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so.1.31.1" "$FERROSERVE_BIN" serve \
  --model-repository examples/models --rest-addr "127.0.0.1:$REST_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" \
  --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key" --tls-client-ca "$WORK/ca.pem" >"$LOG" 2>&1 &
PID=$!
CURL=(curl -sf --cacert "$WORK/ca.pem" --cert "$WORK/client.pem" --key "$WORK/client.key")
for _ in $(seq 1 300); do
  "${CURL[@]}" "https://localhost:$REST_PORT/v2/health/ready" >/dev/null && break
  kill -0 $PID 2>/dev/null || { cat "$LOG"; echo "TLS server exited"; exit 1; }
  sleep 0.1
done
"${CURL[@]}" "https://localhost:$REST_PORT/v2/health/ready" >/dev/null || { cat "$LOG"; echo "TLS server not ready"; exit 1; }
grep -q "mutual tls" "$LOG" || { cat "$LOG"; echo "start-up log does not say mutual TLS"; exit 1; }
ANSWER=$("${CURL[@]}" -H 'content-type: application/json' -d '{"instances": [[5.1, 3.5, 1.4, 0.2]]}' \
  "https://localhost:$REST_PORT/v1/models/iris_lr:predict")
[[ $ANSWER == *'"label":0'* ]] || { echo "TLS predict answered $ANSWER"; exit 1; }
if curl -sf --cacert "$WORK/ca.pem" "https://localhost:$REST_PORT/v2/health/ready" >/dev/null; then
  echo "a client without a certificate was served"; exit 1
fi
if curl -sf "http://localhost:$REST_PORT/v2/health/ready" >/dev/null; then
  echo "plain HTTP was served on the TLS port"; exit 1
fi
echo "curl over TLS: OK"
.venv-clients/bin/python tests/interop/tls_clients.py triton "localhost:$REST_PORT" "localhost:$GRPC_PORT" "$WORK" "$ROOT"
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-tfs/bin/python tests/interop/tls_clients.py tfs \
  "localhost:$REST_PORT" "localhost:$GRPC_PORT" "$WORK" "$ROOT"
kill -TERM $PID
wait $PID

# --- TF Serving's own client code on SavedModels (issue 16): tf.make_tensor_proto and
# tensorflow-serving-api's stubs, in .venv-tf, against a server of the SavedModel fixtures ---
REST_PORT=$(free_port); GRPC_PORT=$(free_port)
FERROSERVE_TENSORFLOW_PATH="$ROOT/.venv-tf/lib/python3.11/site-packages/tensorflow" "$FERROSERVE_BIN" serve \
  --model-repository tests/fixtures/tensorflow --rest-addr "127.0.0.1:$REST_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" >"$LOG" 2>&1 &
PID=$!
.venv-tf/bin/python tests/interop/tfs_saved_models.py "127.0.0.1:$REST_PORT" "127.0.0.1:$GRPC_PORT" "$ROOT" \
  || { cat "$LOG"; exit 1; }
kill -TERM $PID
wait $PID
echo "interop: OK"
