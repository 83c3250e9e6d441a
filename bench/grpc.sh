#!/usr/bin/env bash
# usage: bench/grpc.sh [SECONDS] [BINARY]
# Unary gRPC throughput and latency (KServe V2 ModelInfer, TF Serving Predict) beside
# the REST figures (V2 infer, TF Serving predict, JSON) from the same run and the same
# load generator: h2load (Debian nghttp2-client), HTTP/2 for gRPC, --h1 (HTTP/1.1
# keep-alive) for REST. One iris row per request to iris_lr (ONNX logistic regression).
# Server pinned to CPU $SERVER_CPUS (default 1), load to $LOAD_CPUS (default 0);
# concurrency 1, 10, 64; SECONDS each (default 10) after a 2 s warm-up.
# Prints a Markdown table. h2load only checks HTTP status, so one call of each kind is
# first checked with the real clients (tritonclient.grpc, TF Serving stubs).
# Needs scripts/setup.sh and python/setup-grpc-clients.sh (the venvs, .ort/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${1:-10}
BIN=${2:-target/release/ferroserve}
SERVER_CPUS=${SERVER_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
command -v h2load >/dev/null || { echo "h2load missing: apt-get install -y nghttp2-client"; exit 1; }
[ -x "$BIN" ] || cargo build --release --bin ferroserve

T=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REST_PORT=$(free_port); GRPC_PORT=$(free_port)
ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so.1.31.1" taskset -c "$SERVER_CPUS" "$BIN" serve \
  --model-repository examples/models --rest-addr "127.0.0.1:$REST_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" \
  >"$T/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true; rm -rf "$T"' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$REST_PORT/v2/health/ready" >/dev/null && break
  sleep 0.1
done

# Request bodies: gRPC messages framed for h2load (flag byte + 4-byte length), JSON for REST.
.venv-clients/bin/python - "$T" <<'PY'
import struct, sys
from tritonclient.grpc import service_pb2
req = service_pb2.ModelInferRequest(model_name="iris_lr")
inp = req.inputs.add(name="input", datatype="FP32", shape=[1, 4])
inp.contents.fp32_contents.extend([5.1, 3.5, 1.4, 0.2])
msg = req.SerializeToString()
open(sys.argv[1] + "/v2.bin", "wb").write(struct.pack(">?I", False, len(msg)) + msg)
PY
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-tfs/bin/python - "$T" <<'PY'
import struct, sys
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2
req = predict_pb2.PredictRequest()
req.model_spec.name = "iris_lr"
t = req.inputs["input"]
t.dtype = types_pb2.DT_FLOAT
t.tensor_shape.dim.add(size=1)
t.tensor_shape.dim.add(size=4)
t.float_val.extend([5.1, 3.5, 1.4, 0.2])
msg = req.SerializeToString()
open(sys.argv[1] + "/tfs.bin", "wb").write(struct.pack(">?I", False, len(msg)) + msg)
PY
echo '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}' >"$T/v2.json"
echo '{"instances":[[5.1,3.5,1.4,0.2]]}' >"$T/tfs.json"

# One real call of each gRPC kind, so a grpc-status error cannot pass as a 200.
.venv-clients/bin/python tests/interop/grpc_clients.py triton "127.0.0.1:$REST_PORT" "127.0.0.1:$GRPC_PORT" "$ROOT" iris_lr >/dev/null
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-tfs/bin/python - "127.0.0.1:$GRPC_PORT" "$T/tfs.bin" <<'PY'
import sys, grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
body = open(sys.argv[2], "rb").read()[5:]
stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(sys.argv[1]))
r = stub.Predict(predict_pb2.PredictRequest.FromString(body), timeout=10)
assert list(r.outputs["label"].int64_val) == [0], r
PY

run() { # NAME C URL BODY [h2load args...]
  local name=$1 c=$2 url=$3 body=$4; shift 4
  local out
  out=$(taskset -c "$LOAD_CPUS" h2load -c "$c" -m 1 --warm-up-time=2 -D "$SECONDS_EACH" -d "$body" "$@" "$url")
  local rps done ok mean max
  rps=$(grep -oP 'finished in .*?, \K[0-9.]+(?= req/s)' <<<"$out")
  done=$(grep -oP 'requests: [0-9]+ total, [0-9]+ started, \K[0-9]+(?= done)' <<<"$out")
  ok=$(grep -oP 'status codes: \K[0-9]+(?= 2xx)' <<<"$out")
  mean=$(grep -P '^time for request:' <<<"$out" | awk '{print $6}')
  max=$(grep -P '^time for request:' <<<"$out" | awk '{print $5}')
  [ "$done" = "$ok" ] || { echo "$name c=$c: $ok of $done requests got 2xx" >&2; exit 1; }
  printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$c" "$rps" "$mean" "$max" "$done"
}
GRPC=(-H 'content-type: application/grpc' -H 'te: trailers')
echo "| API | c | req/s | mean | max | requests |"
echo "| --- | --- | --- | --- | --- | --- |"
for c in 1 10 64; do
  run "gRPC V2 ModelInfer" "$c" "http://127.0.0.1:$GRPC_PORT/inference.GRPCInferenceService/ModelInfer" "$T/v2.bin" "${GRPC[@]}"
  run "gRPC TFS Predict" "$c" "http://127.0.0.1:$GRPC_PORT/tensorflow.serving.PredictionService/Predict" "$T/tfs.bin" "${GRPC[@]}"
  run "REST V2 infer (JSON)" "$c" "http://127.0.0.1:$REST_PORT/v2/models/iris_lr/infer" "$T/v2.json" --h1 -H 'content-type: application/json'
  run "REST TFS predict (JSON)" "$c" "http://127.0.0.1:$REST_PORT/v1/models/iris_lr:predict" "$T/tfs.json" --h1 -H 'content-type: application/json'
done
