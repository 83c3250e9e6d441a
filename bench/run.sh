#!/usr/bin/env bash
# usage: bench/run.sh [SECONDS]        (on demand; never in CI)
#
# The side-by-side benchmark of issue 6, one command, one table (Markdown, stdout;
# raw lines in $OUT/raw.txt):
#  * one-row iris REST at c = 1, 10, 64 (wrk, Lua POST): ferroserve (batching off and
#    on), the bare hyper baseline (examples/bare_baseline.rs), and each Python peer
#    (MLServer, Triton via PyTriton, Flask+gunicorn, FastAPI+uvicorn, BentoML);
#  * gRPC V2 ModelInfer at the same concurrencies (h2load): ferroserve and Triton;
#  * the old check, `ab -n 1000 -c 10`, for ferroserve, the bare baseline and FastAPI;
#  * the PP-OCR direction classifier (CNN) at c = 64 with batching on (at ONNX Runtime's
#    best batch size, measured first) and off, against ONNX Runtime's own in-process
#    throughput at that batch size on the same core (examples/ort_inprocess.rs);
#  * resident memory with the iris models loaded, and time from start to ready;
#  * 10x overload (c = 640 on a queue of 64): answered req/s, 429s, latency (the 429s timed
#    apart by bench/latency_probe.py), then recovery.
# Server pinned to CPU $SERVER_CPUS (default 1), load generators to $LOAD_CPUS (default 0).
# Needs: scripts/setup.sh (.ort/), ../shared/peers/install-peers.sh (peers, wrk, ab, h2load),
# pip (downloads the rapidocr-onnxruntime 1.4.4 wheel once, for the CNN).
# env: PEERS_DIR (default ../shared/peers), PEERS (default /tmp/peers), ONLY (sections:
#      "rest grpc ab cnn mem overload"), PEER_LIST (default "mlserver triton flask fastapi bentoml").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T=${1:-10}
PEERS_DIR=${PEERS_DIR:-$(cd "$ROOT/../shared/peers" 2>/dev/null && pwd || echo /work/shared/peers)}
export PEERS=${PEERS:-/tmp/peers}
export SERVER_CPUS=${SERVER_CPUS:-1} LOAD_CPUS=${LOAD_CPUS:-0}
ONLY=${ONLY:-rest grpc ab cnn mem overload}
PEER_LIST=${PEER_LIST:-mlserver triton flask fastapi bentoml}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$(mktemp -d /tmp/ferroserve-bench.XXXXXX)}; mkdir -p "$OUT"
RAW=$OUT/raw.txt; : >"$RAW"
ORT_LIB=$ROOT/.ort/libonnxruntime.so.1.31.1
has() { [[ " $ONLY " = *" $1 "* ]]; }

cargo build -q --release --bin ferroserve --example bare_baseline --example ort_inprocess
BIN=$TARGET/release/ferroserve
BARE=$TARGET/release/examples/bare_baseline
ORT_BENCH=$TARGET/release/examples/ort_inprocess

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in $PEER_LIST; do "$PEERS_DIR/stop-peer.sh" "$p" 18100 >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
busy() { # % of all CPUs busy over 1 s
  read -r _ a b c d e f g h _ </proc/stat; t1=$((a+b+c+d+e+f+g+h)); i1=$((d+e)); sleep 1
  read -r _ a b c d e f g h _ </proc/stat; t2=$((a+b+c+d+e+f+g+h)); i2=$((d+e))
  echo $(( 100 - 100 * (i2 - i1) / (t2 - t1) ))
}
rss_kb() { # resident memory of PID, or with GROUP=1 of its whole process group (a peer's workers), kB
  local pids=$1
  [ "${GROUP:-0}" = 1 ] && pids=$(pgrep -g "$(ps -o pgid= -p "$1" | tr -d ' ')")
  for p in $pids; do awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null; done | awk '{s+=$1} END {print s+0}'
}
now_ms() { date +%s%3N; }
wait_http() { # URL: poll until 200, up to 120 s
  for _ in $(seq 1 1200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not ready: $1" >&2; return 1
}
load() { # NAME C URL BODY -> raw line
  local line; line=$("$PEERS_DIR/load.sh" "$3" "$4" "$2" "$T")
  echo "rest $1 $line" | tee -a "$RAW" >&2
}

# --- models -----------------------------------------------------------------------
REPO=$OUT/repo
mkdir -p "$REPO"
for m in iris_lr iris_dt; do cp -r "examples/models/$m" "$REPO/$m"; done
cp -r examples/models/iris_lr "$REPO/iris_lr_batched"
cat >"$REPO/iris_lr_batched/config.toml" <<'EOF'
[batching]
enabled = true
max_batch_size = 64
max_queue_delay_micros = 0
EOF
CNN_MODEL=$OUT/ch_ppocr_mobile_v2.0_cls_infer.onnx
if has cnn || has overload; then
  WHEEL_DIR=${WHEEL_DIR:-/tmp/ferroserve-bench-wheels}
  mkdir -p "$WHEEL_DIR"
  ls "$WHEEL_DIR"/rapidocr_onnxruntime-1.4.4-*.whl >/dev/null 2>&1 ||
    pip download -q --no-deps rapidocr-onnxruntime==1.4.4 -d "$WHEEL_DIR"
  unzip -p "$WHEEL_DIR"/rapidocr_onnxruntime-1.4.4-*.whl \
    rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx >"$CNN_MODEL"
  for m in cnn_batched cnn_single cnn_overload; do
    mkdir -p "$REPO/$m/1"; cp "$CNN_MODEL" "$REPO/$m/1/model.onnx"
  done
  # ONNX Runtime's own throughput at each batch size, on the server's core, first:
  # the batched model is configured with the best size found, as a Triton user would
  # set preferred_batch_sizes from perf_analyzer.
  FERROSERVE_ONNXRUNTIME_PATH=$ORT_LIB ROW_SHAPE=3,48,192 taskset -c "$SERVER_CPUS" \
    "$ORT_BENCH" "$CNN_MODEL" 3 1 2 4 8 16 32 >"$OUT/ort.txt"
  sed 's/^/# ort_inprocess /' "$OUT/ort.txt" | head -n -1 >>"$RAW"
  echo "cnn ort_inprocess $(tail -1 "$OUT/ort.txt")" | tee -a "$RAW" >&2
  BEST=$(tail -1 "$OUT/ort.txt" | grep -oP 'batch=\K[0-9]+')
  printf '[batching]\nenabled = true\nmax_batch_size = %s\npreferred_batch_sizes = [%s]\nmax_queue_delay_micros = 2000\n' "$BEST" "$BEST" >"$REPO/cnn_batched/config.toml"
  printf '[batching]\nenabled = false\n' >"$REPO/cnn_single/config.toml"
  printf '[batching]\nenabled = true\nmax_batch_size = %s\npreferred_batch_sizes = [%s]\nmax_queue_delay_micros = 2000\nmax_queue_length = 64\n' "$BEST" "$BEST" >"$REPO/cnn_overload/config.toml"
  # One 3x48x192 image per request, V2 binary tensor extension (JSON header + raw FP32).
  python3 - "$OUT" <<'PY'
import json, struct, sys
n = 3 * 48 * 192
raw = struct.pack("<%df" % n, *[((i * 7919) % 1000) / 1000 for i in range(n)])
head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3, 48, 192],
                               "parameters": {"binary_data_size": len(raw)}}]}).encode()
open(sys.argv[1] + "/cnn.bin", "wb").write(head + raw)
open(sys.argv[1] + "/cnn.hlen", "w").write(str(len(head)))
PY
fi

start_ferroserve() { # REPO: starts on ports 18200/18201, sets FS_PID, FS_READY_MS
  local t0; t0=$(now_ms)
  ORT_DYLIB_PATH=$ORT_LIB taskset -c "$SERVER_CPUS" "$BIN" serve --model-repository "$1" \
    --rest-addr 127.0.0.1:18200 --grpc-addr 127.0.0.1:18201 >"$OUT/ferroserve.log" 2>&1 &
  FS_PID=$!; PIDS+=("$FS_PID")
  wait_http http://127.0.0.1:18200/v2/health/ready
  FS_READY_MS=$(( $(now_ms) - t0 ))
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

echo "# $(date -Is) $(uname -n), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" | tee -a "$RAW" >&2
echo "# commit ${GIT_REV:-$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src 2>/dev/null || echo '+local')}, load average: $(cut -d' ' -f1-3 /proc/loadavg), CPUs busy before: $(busy)%" | tee -a "$RAW" >&2

IRIS_TFS=$PEERS_DIR/bodies/predict-1row.json
IRIS_V2=$PEERS_DIR/bodies/v2-infer-1row.json

# --- ferroserve ---------------------------------------------------------------------
start_ferroserve "$REPO"
echo "mem ferroserve rss_kb=$(rss_kb "$FS_PID") ready_ms=$FS_READY_MS" | tee -a "$RAW" >&2
if has rest; then
  "$PEERS_DIR/load.sh" http://127.0.0.1:18200/v1/models/iris_lr:predict "$IRIS_TFS" 10 2 >/dev/null
  for c in 1 10 64; do
    load ferroserve "$c" http://127.0.0.1:18200/v1/models/iris_lr:predict "$IRIS_TFS"
    load ferroserve-batching "$c" http://127.0.0.1:18200/v1/models/iris_lr_batched:predict "$IRIS_TFS"
    load ferroserve-v2 "$c" http://127.0.0.1:18200/v2/models/iris_lr/infer "$IRIS_V2"
  done
fi
if has grpc; then
  [ -r "$PEERS/v2-grpc-1row.bin" ] || "$PEERS/venv-clients/bin/python" "$PEERS_DIR/grpc-body.py" "$PEERS/v2-grpc-1row.bin"
  for c in 1 10 64; do
    echo "grpc ferroserve $("$PEERS_DIR/load-grpc.sh" 127.0.0.1:18201 "$PEERS/v2-grpc-1row.bin" "$c" "$T")" | tee -a "$RAW" >&2
  done
fi
if has ab; then
  echo "ab ferroserve $(taskset -c "$LOAD_CPUS" ab -q -n 1000 -c 10 -p "$IRIS_TFS" -T application/json \
    http://127.0.0.1:18200/v1/models/iris_lr:predict | grep -E '^(Requests per second|Failed requests|Non-2xx)' | tr -s ' ' | tr '\n' ';')" | tee -a "$RAW" >&2
fi
if has cnn; then
  HLEN=$(cat "$OUT/cnn.hlen")
  cat >"$OUT/cnn.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "$HLEN"
local f = assert(io.open("$OUT/cnn.bin", "rb")); wrk.body = f:read("*a"); f:close()
function done(s, lat, req)
  local e = s.errors
  io.write(string.format("req/s=%.1f p50=%.2fms p99=%.2fms n=%d errors=%d\n",
    s.requests / (s.duration / 1e6), lat:percentile(50) / 1000, lat:percentile(99) / 1000,
    s.requests, e.connect + e.read + e.write + e.status + e.timeout))
end
EOF
  for m in cnn_batched cnn_single; do
    taskset -c "$LOAD_CPUS" wrk -t 1 -c 64 -d 3s --timeout 30s -s "$OUT/cnn.lua" "http://127.0.0.1:18200/v2/models/$m/infer" >/dev/null
    echo "cnn $m c=64 $(taskset -c "$LOAD_CPUS" wrk -t 1 -c 64 -d "${T}s" --timeout 30s -s "$OUT/cnn.lua" \
      "http://127.0.0.1:18200/v2/models/$m/infer" | grep '^req/s=')" | tee -a "$RAW" >&2
  done
fi
if has overload; then
  HLEN=$(cat "$OUT/cnn.hlen")
  # Counts answers by status; wrk counts every non-2xx as an error.
  cat >"$OUT/overload.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "$HLEN"
local f = assert(io.open("$OUT/cnn.bin", "rb")); wrk.body = f:read("*a"); f:close()
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; shed = 0; other = 0 end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 429 then shed = shed + 1 else other = other + 1 end
end
function done(s, lat, req)
  local o, r, x = 0, 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); r = r + t:get("shed"); x = x + t:get("other") end
  local secs = s.duration / 1e6
  io.write(string.format("ok/s=%.1f 429/s=%.1f other=%d p50=%.2fms p99=%.2fms sockerr=%d\n",
    o / secs, r / secs, x, lat:percentile(50) / 1000, lat:percentile(99) / 1000,
    s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout))
end
EOF
  URL=http://127.0.0.1:18200/v2/models/cnn_overload/infer
  for phase in "before 64" "overload 640" "after 64"; do
    set -- $phase
    # Under overload, one more client times the 429s apart from the 200s (wrk gives
    # one latency over both): the target is a 429 p99 under 1 ms.
    PROBE_PID=
    if [ "$1" = overload ]; then
      taskset -c "$LOAD_CPUS" python3 bench/latency_probe.py "$URL" "$OUT/cnn.bin" "$T" \
        "Inference-Header-Content-Length=$HLEN" >"$OUT/probe.txt" 2>&1 &
      PROBE_PID=$!
    fi
    echo "overload $1 c=$2 $(taskset -c "$LOAD_CPUS" wrk -t 1 -c "$2" -d "${T}s" --timeout 30s -s "$OUT/overload.lua" "$URL" | grep '^ok/s=')" | tee -a "$RAW" >&2
    if [ -n "$PROBE_PID" ]; then
      wait "$PROBE_PID" || true
      echo "probe overload $(cat "$OUT/probe.txt")" | tee -a "$RAW" >&2
    fi
  done
fi
stop_pid "$FS_PID"


# --- bare baseline -------------------------------------------------------------------
if has rest || has ab; then
  t0=$(now_ms)
  taskset -c "$SERVER_CPUS" "$BARE" 127.0.0.1:18300 2>/dev/null &
  BARE_PID=$!; PIDS+=("$BARE_PID")
  until curl -sf -o /dev/null -d '{}' http://127.0.0.1:18300/; do sleep 0.05; done
  echo "mem bare rss_kb=$(rss_kb "$BARE_PID") ready_ms=$(( $(now_ms) - t0 ))" | tee -a "$RAW" >&2
  if has rest; then
    "$PEERS_DIR/load.sh" http://127.0.0.1:18300/ "$IRIS_TFS" 10 2 >/dev/null
    for c in 1 10 64; do load bare "$c" http://127.0.0.1:18300/ "$IRIS_TFS"; done
  fi
  if has ab; then
    echo "ab bare $(taskset -c "$LOAD_CPUS" ab -q -n 1000 -c 10 -p "$IRIS_TFS" -T application/json \
      http://127.0.0.1:18300/ | grep -E '^(Requests per second|Failed requests|Non-2xx)' | tr -s ' ' | tr '\n' ';')" | tee -a "$RAW" >&2
  fi
  stop_pid "$BARE_PID"
fi

# --- Python peers --------------------------------------------------------------------
if has rest || has grpc || has mem || has ab; then
  for p in $PEER_LIST; do
    case $p in
      mlserver|triton) URL=http://127.0.0.1:18100/v2/models/iris_lr/infer; BODY=$IRIS_V2 ;;
      *) URL=http://127.0.0.1:18100/predict; BODY=$IRIS_TFS ;;
    esac
    echo "# $(date +%T) CPUs busy before $p: $(busy)%" | tee -a "$RAW" >&2
    t0=$(now_ms)
    "$PEERS_DIR/start-peer.sh" "$p" 18100 >/dev/null
    ready=$(( $(now_ms) - t0 ))
    sleep 1
    echo "mem $p rss_kb=$(GROUP=1 rss_kb "$(cat "$PEERS/run/$p-18100.pid")") ready_ms=$ready" | tee -a "$RAW" >&2
    if has rest; then
      "$PEERS_DIR/load.sh" "$URL" "$BODY" 10 3 >/dev/null
      for c in 1 10 64; do load "$p" "$c" "$URL" "$BODY"; done
    fi
    if has grpc && [ "$p" = triton ]; then
      for c in 1 10 64; do
        echo "grpc triton $("$PEERS_DIR/load-grpc.sh" 127.0.0.1:18101 "$PEERS/v2-grpc-1row.bin" "$c" "$T")" | tee -a "$RAW" >&2
      done
    fi
    if has ab && [ "$p" = fastapi ]; then
      echo "ab fastapi $(taskset -c "$LOAD_CPUS" ab -q -n 1000 -c 10 -p "$IRIS_TFS" -T application/json \
        "$URL" | grep -E '^(Requests per second|Failed requests|Non-2xx)' | tr -s ' ' | tr '\n' ';')" | tee -a "$RAW" >&2
    fi
    "$PEERS_DIR/stop-peer.sh" "$p" 18100 >/dev/null
    sleep 2
  done
fi
echo "# $(date +%T) done; load average: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2

python3 bench/table.py "$RAW"
echo "raw lines: $RAW" >&2
