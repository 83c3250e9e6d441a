#!/usr/bin/env bash
# usage: bench/replicas.sh [SECONDS]        (on demand; never in CI)
#
# Issue 18's benchmark: one-row iris (ONNX logistic regression, TF Serving REST,
# one fixed row, no cache) through nginx in front of 1, 2 and 3 ferroserve
# replicas, against one replica called directly (the baseline, measured in the same
# run). This machine has few cores: the replicas, nginx and wrk share them, so the
# scaling shown is bounded by the cores, not by ferroserve; the table says how many.
# Each replica: --inference-threads 1, its own state directory, the same repository.
# nginx: Debian's package (scripts/setup.sh installs it), one worker, keep-alive to
# the upstreams, as in tests/replicas.rs. wrk: one thread, C connections (default
# 10), SECONDS per run (default 10) after a 2 s warm-up.
# Run it on a quiet machine; the ratios of one run are what counts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T=${1:-10}
C=${C:-10}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ORT_LIB=$ROOT/.ort/libonnxruntime.so.1.31.1
command -v wrk >/dev/null || { echo "wrk missing (../shared/peers/install-peers.sh)"; exit 1; }
[ -x /usr/sbin/nginx ] || { echo "nginx missing (scripts/setup.sh installs it)"; exit 1; }
OUT=${OUT:-$(mktemp -d /tmp/ferroserve-replicas-bench.XXXXXX)}; mkdir -p "$OUT"
RAW=$OUT/raw.txt; : >"$RAW"

cargo build -q --release --bin ferroserve
BIN=$TARGET/release/ferroserve

REPO=$OUT/repo
mkdir -p "$REPO/iris/1"
cp examples/models/iris_lr/1/model.onnx "$REPO/iris/1/"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
NGINX_PID=""
cleanup() {
  [ -z "$NGINX_PID" ] || { kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; }
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

PORTS=()
for n in 1 2 3; do
  port=$(free_port)
  ORT_DYLIB_PATH=$ORT_LIB FERROSERVE_LOG=warn "$BIN" serve --model-repository "$REPO" \
    --state-dir "$OUT/state$n" --rest-addr "127.0.0.1:$port" --grpc-addr "127.0.0.1:$(free_port)" \
    --inference-threads 1 >"$OUT/replica$n.log" 2>&1 &
  PIDS+=($!)
  PORTS+=("$port")
done
for port in "${PORTS[@]}"; do
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/v2/health/ready" && break
    sleep 0.1
  done
done

start_nginx() { # N: nginx in front of the first N replicas; sets NGINX_PORT
  [ -z "$NGINX_PID" ] || { kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; }
  NGINX_PORT=$(free_port)
  local dir=$OUT/nginx$1 servers=""
  mkdir -p "$dir"
  for port in "${PORTS[@]:0:$1}"; do servers+="server 127.0.0.1:$port max_fails=0; "; done
  local user=""
  [ "$(id -u)" -ne 0 ] || user="user root root;"
  cat >"$dir/nginx.conf" <<CONF
$user
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  upstream ferroserve { $servers keepalive 32; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://ferroserve;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_next_upstream error timeout http_502 http_503 non_idempotent;
    }
  }
}
CONF
  /usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf" &
  NGINX_PID=$!
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/v2/health/live" && return
    sleep 0.05
  done
  echo "nginx did not start: $(cat "$dir/error.log")"; exit 1
}

cat >"$OUT/iris.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
function done(s, lat, req)
  local e = s.errors
  io.write(string.format("req/s=%.1f p50=%.2fms p99=%.2fms n=%d errors=%d\n",
    s.requests / (s.duration / 1e6), lat:percentile(50) / 1000, lat:percentile(99) / 1000,
    s.requests, e.connect + e.read + e.write + e.status + e.timeout))
end
LUA

echo "# $(date -Is) $(uname -n), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" | tee -a "$RAW" >&2
echo "# commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src 2>/dev/null || echo '+local'), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2
run() { # NAME URL
  wrk -t 1 -c "$C" -d 2s --timeout 30s -s "$OUT/iris.lua" "$2" >/dev/null
  echo "$1 $(wrk -t 1 -c "$C" -d "${T}s" --timeout 30s -s "$OUT/iris.lua" "$2" | grep '^req/s=')" | tee -a "$RAW" >&2
}
run direct_1 "http://127.0.0.1:${PORTS[0]}/v1/models/iris:predict"
for n in 1 2 3; do
  start_nginx "$n"
  run "nginx_$n" "http://127.0.0.1:$NGINX_PORT/v1/models/iris:predict"
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2

python3 - "$RAW" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("#"):
        print(line.strip("# \n") + "  ")
        continue
    name, rest = line.split(" ", 1)
    rows[name] = dict(re.findall(r"([\w/]+)=([\d.]+)", rest))
base = float(rows["direct_1"]["req/s"])
print("\n| run | req/s | vs one replica direct | p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|---|")
for name, r in rows.items():
    print(f"| {name} | {r['req/s']} | {float(r['req/s']) / base:.2f}x | {r['p50']} | {r['p99']} | {r['errors']} |")
PY
