#!/usr/bin/env bash
# usage: bench/metrics_rss.sh [TOTAL_REQUESTS]      (on demand; never in CI)
#
# Resident memory of a server that is never scraped (issue 10): starts ferroserve on
# 127.0.0.1 with iris_lr, sends TOTAL_REQUESTS (default 1,000,000) one-row TF Serving
# predicts in five equal rounds (examples/request_flood.rs), and prints VmRSS before,
# after each round and at the end. Nothing reads /metrics meanwhile, so only the
# recorder's own upkeep keeps histogram samples from piling up: RSS should stay
# flat after the first round (it grew ~85 bytes a request before the upkeep thread).
# Bounded: each round sends a fixed number of requests; the server is stopped on exit.
# env: PORT (default 18531), CLIENTS (default 8), PROFILE (release | debug, default release).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOTAL=${1:-1000000}
PORT=${PORT:-18531}
CLIENTS=${CLIENTS:-8}
PROFILE=${PROFILE:-release}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$ROOT/.ort/libonnxruntime.so.1.31.1}

if [ "$PROFILE" = release ]; then
  cargo build -q --release --bin ferroserve --example request_flood
else
  cargo build -q --bin ferroserve --example request_flood
fi
BIN=$TARGET/$PROFILE/ferroserve
FLOOD=$TARGET/$PROFILE/examples/request_flood

WORK=$(mktemp -d /tmp/ferroserve-metrics-rss.XXXXXX)
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/repo"
cp -r examples/models/iris_lr "$WORK/repo/iris_lr"

"$BIN" serve --model-repository "$WORK/repo" --rest-addr "127.0.0.1:$PORT" \
  --grpc-addr 127.0.0.1:0 >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 600); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/v2/health/ready" && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
  sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$PORT/v2/health/ready" || { echo "server not ready" >&2; exit 1; }

rss() { awk '/^VmRSS:/ {printf "%.1f MB", $2 / 1024}' "/proc/$SERVER/status"; }
URL="http://127.0.0.1:$PORT/v1/models/iris_lr:predict"
BODY='{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
ROUND=$(( (TOTAL + 4) / 5 ))
echo "VmRSS before: $(rss)"
for i in 1 2 3 4 5; do
  "$FLOOD" --url "$URL" --body "$BODY" --requests "$ROUND" --clients "$CLIENTS"
  echo "VmRSS after $((i * ROUND)) requests: $(rss)"
done
