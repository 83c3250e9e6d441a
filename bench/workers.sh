#!/usr/bin/env bash
# usage: bench/workers.sh [SECONDS]        (on demand; never in CI)
#
# Issue 14's benchmark: one-row iris (ONNX logistic regression, TF Serving REST, one
# fixed row, no cache) predicted in-process by one server, and through a second
# server that forwards to the model's worker process (deployed with POST /deploy).
# Prints throughput ratio (target >= 0.5x) and p50 added (target <= 100 us), the
# idle worker's RSS and the time from deploy to ready. Both servers run at once with
# --inference-threads 1 (the worker with cpu_limit 1); also the RSS of both servers
# (the main server holds no copy of the deployed model); wrk: one thread, C connections
# (default 10), SECONDS per run (default 10) after a 2 s warm-up. The forwarded path
# has one more process and hop on the same few cores: run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T=${1:-10}
C=${C:-10}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ORT_LIB=$ROOT/.ort/libonnxruntime.so.1.31.1
command -v wrk >/dev/null || { echo "wrk missing (apt-get install -y wrk)"; exit 1; }
OUT=${OUT:-$(mktemp -d /tmp/ferroserve-workers-bench.XXXXXX)}; mkdir -p "$OUT"
RAW=$OUT/raw.txt; : >"$RAW"

# PROFILE=debug measures the debug binary (a rough look when no release build exists).
# SKIP_BUILD=1 uses the binary already built; BIN= names another (a build to compare).
PROFILE=${PROFILE:-release}
if [ -z "${SKIP_BUILD:-}" ]; then
  if [ "$PROFILE" = release ]; then cargo build -q --release --bin ferroserve; else cargo build -q --bin ferroserve; fi
fi
BIN=${BIN:-$TARGET/$PROFILE/ferroserve}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start() { # NAME -> sets PORT
  local repo=$OUT/$1/repo
  mkdir -p "$repo/iris/1"
  cp examples/models/iris_lr/1/model.onnx "$repo/iris/1/"
  PORT=$(free_port)
  local wp; wp=$(free_port)
  ORT_DYLIB_PATH=$ORT_LIB FERROSERVE_LOG=warn "$BIN" serve --model-repository "$repo" \
    --rest-addr "127.0.0.1:$PORT" --grpc-addr "127.0.0.1:$(free_port)" \
    --worker-ports "$wp-$((wp + 20))" --inference-threads 1 >"$OUT/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/v2/health/ready" && return
    sleep 0.1
  done
  echo "$1 did not start: $(cat "$OUT/$1.log")"; exit 1
}
start inproc; INPROC=$PORT
start main; MAIN=$PORT
t0=$(date +%s.%N)
curl -s -o "$OUT/deploy.json" -H "Content-Type: application/json" -d '{"model_id":"iris","resources":{"cpu_limit":"1"}}' "http://127.0.0.1:$MAIN/deploy"
t1=$(date +%s.%N)
grep -q '"pid"' "$OUT/deploy.json" || { echo "deploy failed: $(cat "$OUT/deploy.json")"; exit 1; }
WPID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$OUT/deploy.json")
sleep 1
RSS_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$WPID/status")
# The deployed model lives only in its worker: the main server holds no copy of it.
INPROC_RSS_KB=$(awk '/^VmRSS/ {print $2}' "/proc/${PIDS[0]}/status")
MAIN_RSS_KB=$(awk '/^VmRSS/ {print $2}' "/proc/${PIDS[1]}/status")

cat >"$OUT/iris.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
function done(s, lat, req)
  local e = s.errors
  io.write(string.format("req/s=%.1f p50=%.3fms p99=%.3fms n=%d errors=%d\n",
    s.requests / (s.duration / 1e6), lat:percentile(50) / 1000, lat:percentile(99) / 1000,
    s.requests, e.connect + e.read + e.write + e.status + e.timeout))
end
LUA
echo "# $(date -Is) $(uname -n), $(nproc) CPUs, $PROFILE build; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2
echo "# deploy to ready: $(python3 -c "print(f'{$t1 - $t0:.2f}')") s; idle worker RSS: $((RSS_KB / 1024)) MiB; RSS of the main server (model in its worker): $((MAIN_RSS_KB / 1024)) MiB, of the in-process server: $((INPROC_RSS_KB / 1024)) MiB" | tee -a "$RAW" >&2
run() { # NAME URL
  wrk -t 1 -c "$C" -d 2s --timeout 30s -s "$OUT/iris.lua" "$2" >/dev/null
  echo "$1 $(wrk -t 1 -c "$C" -d "${T}s" --timeout 30s -s "$OUT/iris.lua" "$2" | grep '^req/s=')" | tee -a "$RAW" >&2
}
run in_process "http://127.0.0.1:$INPROC/v1/models/iris:predict"
run forwarded "http://127.0.0.1:$MAIN/v1/models/iris:predict"
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2

python3 - "$RAW" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("#"):
        print(line.strip("# \n") + "  ")
        continue
    name, rest = line.split(" ", 1)
    rows[name] = {k: float(v) for k, v in re.findall(r"([\w/]+)=([\d.]+)", rest)}
a, b = rows["in_process"], rows["forwarded"]
print("\n| run | req/s | p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|")
for name, r in rows.items():
    print(f"| {name} | {r['req/s']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | {r['errors']:.0f} |")
print(f"\nthroughput forwarded / in-process: {b['req/s'] / a['req/s']:.2f}x (target >= 0.5x); "
      f"p50 added: {(b['p50'] - a['p50']) * 1000:.0f} us (target <= 100 us)")
PY
