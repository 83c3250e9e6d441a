#!/usr/bin/env bash
# usage: bench/hotpath.sh [SECONDS]        (on demand; never in CI)
#
# Issue 9's hot-path targets, one command, one Markdown table on stdout (raw lines in
# $OUT/raw.txt). Every ratio is against a ceiling measured in the same run:
#  * one-row iris over REST at c = 1, 10, 64 (wrk, keep-alive): the bare hyper server
#    (examples/bare_baseline.rs), then ferroserve's `GET /v2/health/live` (no model, the
#    routing and middleware alone), TF Serving REST, V2 JSON and simple
#    API on the ONNX iris LR, TF Serving REST on the native scikit-learn pickle, and TF
#    Serving REST on the ONNX LR with batching on (zero delay);
#  * gRPC at c = 10 and 64 (h2load): a bare tonic server answering a fixed ModelInfer
#    reply (examples/bare_tonic.rs), then ferroserve's V2 ModelInfer and TF Serving
#    Predict on the same model;
#  * a new connection per request, `ab -n N -c 10`: bare against ferroserve's TF Serving
#    predict (ONNX LR and native scikit-learn) and `GET /v2/health/live` (the connection
#    handling alone), each with the server's CPU time per connection (/proc/PID/stat).
# The server under test is pinned to CPU $SERVER_CPUS (default 1) and the load generator
# to $LOAD_CPUS (default 0); each row notes how busy all CPUs were just before it.
# Needs: scripts/setup.sh (.ort/, .venv-clients, .venv-tf for the gRPC bodies), wrk, ab, h2load.
# env: ONLY (sections: "rest grpc ab"), AB_N (default 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T=${1:-8}
export SERVER_CPUS=${SERVER_CPUS:-1} LOAD_CPUS=${LOAD_CPUS:-0}
ONLY=${ONLY:-rest grpc ab}
AB_N=${AB_N:-20000}
PEERS_DIR=${PEERS_DIR:-$(cd "$ROOT/../shared/peers" 2>/dev/null && pwd || echo /work/shared/peers)}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d /tmp/ferroserve-hotpath.XXXXXX)}; mkdir -p "$OUT"
RAW=$OUT/raw.txt; : >"$RAW"
ORT_LIB=$ROOT/.ort/libonnxruntime.so.1.31.1
has() { [[ " $ONLY " = *" $1 "* ]]; }

cargo build -q --release --bin ferroserve --example bare_baseline --example bare_tonic
BIN=$TARGET/release/ferroserve

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
busy() { # % of all CPUs busy over 1 s
  read -r _ a b c d e f g h _ </proc/stat; t1=$((a+b+c+d+e+f+g+h)); i1=$((d+e)); sleep 1
  read -r _ a b c d e f g h _ </proc/stat; t2=$((a+b+c+d+e+f+g+h)); i2=$((d+e))
  echo $(( 100 - 100 * (i2 - i1) / (t2 - t1) ))
}
wait_http() { for _ in $(seq 1 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; return 1; }
wait_port() { for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "no listener on $1" >&2; return 1; }
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
rest() { # NAME C URL BODY
  local b; b=$(busy)
  local line; line=$("$PEERS_DIR/load.sh" "$3" "$4" "$2" "$T")
  echo "rest $1 busy=$b% $line" | tee -a "$RAW" >&2
}
get() { # NAME C URL: keep-alive GET load (wrk, no script)
  local b; b=$(busy)
  local out; out=$(taskset -c "$LOAD_CPUS" wrk -t 1 -c "$2" -d "${T}s" --latency "$3")
  local line; line=$(awk -v c="$2" -v t="$T" '
    /Requests\/sec:/ {r=$2} / 50%/ {p50=$2} / 99%/ {p99=$2} /Non-2xx/ {e=$NF} /Socket errors/ {e+=0}
    END {printf "gen=wrk c=%s t=%ss req/s=%s p50=%s p99=%s errors=%d", c, t, r, p50, p99, e}' <<<"$out")
  echo "rest $1 busy=$b% $line" | tee -a "$RAW" >&2
}
grpc() { # NAME C PORT BODY METHOD
  local b; b=$(busy)
  local line; line=$("$PEERS_DIR/load-grpc.sh" "127.0.0.1:$3" "$4" "$2" "$T" "$5")
  echo "grpc $1 busy=$b% $line" | tee -a "$RAW" >&2
}
ab_run() { # NAME URL BODY (empty: GET) PID (the server, for its CPU time)
  local b; b=$(busy)
  local body=(); [ -n "$3" ] && body=(-p "$3" -T application/json)
  local t0; t0=$(cpu_ticks "$4")
  local r; r=$(taskset -c "$LOAD_CPUS" ab -q -n "$AB_N" -c 10 "${body[@]}" "$2" 2>&1 |
    awk '/Requests per second/ {r=$4} /Failed requests/ {f=$3} /Non-2xx/ {n=$3} END {printf "req/s=%s failed=%s non2xx=%s", r, f, (n == "" ? 0 : n)}')
  local t1; t1=$(cpu_ticks "$4")
  echo "ab $1 busy=$b% $r cpu_us=$(( (t1 - t0) * 1000000 / $(getconf CLK_TCK) / AB_N ))" | tee -a "$RAW" >&2
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# --- models and bodies --------------------------------------------------------------
REPO=$OUT/repo; mkdir -p "$REPO"
cp -r examples/models/iris_lr examples/models/iris_sklearn "$REPO/"
cp -r examples/models/iris_lr "$REPO/iris_lr_batched"
printf '[batching]\nenabled = true\nmax_batch_size = 64\nmax_queue_delay_micros = 0\n' >"$REPO/iris_lr_batched/config.toml"
TFS_BODY=$OUT/tfs.json; echo '{"instances": [[5.1, 3.5, 1.4, 0.2]]}' >"$TFS_BODY"
V2_BODY=$OUT/v2.json; echo '{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}' >"$V2_BODY"
SIMPLE_BODY=$OUT/simple.json; echo '{"model_id": "iris_lr", "features": [5.1, 3.5, 1.4, 0.2]}' >"$SIMPLE_BODY"
if has grpc; then
  "$ROOT/.venv-clients/bin/python" "$PEERS_DIR/grpc-body.py" "$OUT/v2.grpc" iris_lr input >/dev/null
  "$ROOT/.venv-tf/bin/python" - "$OUT/tfs.grpc" <<'PY' 2>/dev/null
import struct, sys
from tensorflow_serving.apis import predict_pb2
req = predict_pb2.PredictRequest()
req.model_spec.name = "iris_lr"
t = req.inputs["input"]
t.dtype = 1  # DT_FLOAT
t.tensor_shape.dim.add(size=1); t.tensor_shape.dim.add(size=4)
t.float_val.extend([5.1, 3.5, 1.4, 0.2])
msg = req.SerializeToString()
open(sys.argv[1], "wb").write(struct.pack(">?I", False, len(msg)) + msg)
PY
fi

echo "# $(date -Is) $(uname -n), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" | tee -a "$RAW" >&2
echo "# commit ${GIT_REV:-$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src 2>/dev/null || echo '+local')}, load average: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2

# --- the ceilings ---------------------------------------------------------------------
taskset -c "$SERVER_CPUS" "$TARGET/release/examples/bare_baseline" 127.0.0.1:18300 2>/dev/null &
BARE=$!; PIDS+=("$BARE")
taskset -c "$SERVER_CPUS" "$TARGET/release/examples/bare_tonic" 127.0.0.1:18301 2>/dev/null &
TONIC=$!; PIDS+=("$TONIC")
wait_port 18300; wait_port 18301
if has rest; then
  "$PEERS_DIR/load.sh" http://127.0.0.1:18300/ "$TFS_BODY" 10 2 >/dev/null
  for c in 1 10 64; do rest bare "$c" http://127.0.0.1:18300/ "$TFS_BODY"; done
fi
has grpc && for c in 10 64; do grpc bare-tonic "$c" 18301 "$OUT/v2.grpc" /inference.GRPCInferenceService/ModelInfer; done
has ab && ab_run bare http://127.0.0.1:18300/ "$TFS_BODY" "$BARE"
stop_pid "$BARE"; stop_pid "$TONIC"

# --- ferroserve -----------------------------------------------------------------------
ORT_DYLIB_PATH=$ORT_LIB taskset -c "$SERVER_CPUS" "$BIN" serve --model-repository "$REPO" \
  --rest-addr 127.0.0.1:18200 --grpc-addr 127.0.0.1:18201 >"$OUT/ferroserve.log" 2>&1 &
FS=$!; PIDS+=("$FS")
wait_http http://127.0.0.1:18200/v2/health/ready
U=http://127.0.0.1:18200
if has rest; then
  "$PEERS_DIR/load.sh" "$U/v1/models/iris_lr:predict" "$TFS_BODY" 10 2 >/dev/null
  for c in 1 10 64; do
    get live "$c" "$U/v2/health/live"
    rest tfs "$c" "$U/v1/models/iris_lr:predict" "$TFS_BODY"
    rest v2 "$c" "$U/v2/models/iris_lr/infer" "$V2_BODY"
    rest simple "$c" "$U/predict" "$SIMPLE_BODY"
    rest tfs-sklearn "$c" "$U/v1/models/iris_sklearn:predict" "$TFS_BODY"
    rest tfs-batching "$c" "$U/v1/models/iris_lr_batched:predict" "$TFS_BODY"
  done
fi
if has grpc; then
  for c in 10 64; do
    grpc v2-infer "$c" 18201 "$OUT/v2.grpc" /inference.GRPCInferenceService/ModelInfer
    grpc tfs-predict "$c" 18201 "$OUT/tfs.grpc" /tensorflow.serving.PredictionService/Predict
  done
fi
if has ab; then
  ab_run ferroserve-live "$U/v2/health/live" "" "$FS"
  ab_run ferroserve "$U/v1/models/iris_lr:predict" "$TFS_BODY" "$FS"
  ab_run ferroserve-sklearn "$U/v1/models/iris_sklearn:predict" "$TFS_BODY" "$FS"
fi
echo "mem ferroserve rss_kb=$(awk '/^VmRSS:/ {print $2}' /proc/$FS/status)" | tee -a "$RAW" >&2
stop_pid "$FS"

python3 - "$RAW" <<'PY'
import re, sys
rows = [l.split() for l in open(sys.argv[1]) if l[0] != "#"]
def field(r, k):
    for x in r:
        if x.startswith(k + "="):
            return x.split("=", 1)[1]
    return ""
def rate(r):
    v = field(r, "req/s")
    return float(v) if v else 0.0
ceiling = {}
for r in rows:
    if r[0] == "rest" and r[1] == "bare": ceiling[("rest", field(r, "c"))] = rate(r)
    if r[0] == "grpc" and r[1] == "bare-tonic": ceiling[("grpc", field(r, "c"))] = rate(r)
    if r[0] == "ab" and r[1] == "bare": ceiling[("ab", "10")] = rate(r)
rest_tfs = {field(r, "c"): rate(r) for r in rows if r[0] == "rest" and r[1] == "tfs"}
print("| kind | path | c | req/s | p50 | p99 | errors | CPUs busy before | ratio |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    if r[0] == "mem":
        print(f"| memory | ferroserve RSS | | | | | | | {int(field(r, 'rss_kb')) // 1024} MiB |"); continue
    c = field(r, "c") or "10"
    base = ceiling.get((r[0], c))
    ceiling_name = "bare tonic" if r[0] == "grpc" else "bare"
    ratio = "" if r[1] in ("bare", "bare-tonic") or not base else f"{rate(r) / base:.2f}x {ceiling_name}"
    if r[0] == "grpc" and r[1] != "bare-tonic" and rest_tfs.get(c):
        ratio += f", {rate(r) / rest_tfs[c]:.2f}x REST tfs"
    p50 = field(r, "p50") or (("mean " + field(r, "mean")) if field(r, "mean") else "")
    p99 = field(r, "p99") or (("max " + field(r, "max")) if field(r, "max") else "")
    errors = field(r, "errors") or field(r, "failed")
    if r[0] == "grpc":
        errors = str(int(field(r, "n") or 0) - int(field(r, "2xx") or 0))
    if r[0] == "ab":
        ratio += f"{', ' if ratio else ''}server CPU {field(r, 'cpu_us')} us/connection"
    print(f"| {r[0]} | {r[1]} | {c} | {rate(r):.0f} | {p50} | {p99} | {errors} | {field(r, 'busy')} | {ratio} |")
PY
