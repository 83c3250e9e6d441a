#!/usr/bin/env bash
# usage: bench/soak.sh [SECONDS] [SWAP_EVERY]      (on demand; never in CI)
#
# Issue 9's soak: SECONDS (default 1800) of mixed load on one model whose version is
# swapped every SWAP_EVERY seconds (default 3), then one Markdown report:
#  * REST: TF Serving predict, one iris row, wrk keep-alive at c = $REST_C (default 8);
#  * gRPC: V2 ModelInfer, the same row, h2load at c = $GRPC_C (default 4);
#  * swaps: a new version directory (the ONNX iris LR and decision tree in turn) is
#    renamed into the repository every SWAP_EVERY s and picked up by the watcher (0.5 s
#    polls); versions older than the newest three are removed, so they unload too;
#  * failures: wrk's socket errors and non-2xx answers, h2load's non-2xx and errored
#    requests, and every request the server itself counted with an outcome other than
#    "ok" (`ferroserve_requests_total`, which also sees gRPC status codes that h2load
#    cannot; a failure's series is kept by model, not by version, so it outlives the
#    swaps);
#  * memory: the server's RSS every 10 s, with its least-squares slope over the whole
#    run and over its second half (MiB per hour).
# Exits non-zero when any request failed. Server pinned to CPU $SERVER_CPUS (default 1),
# load to $LOAD_CPUS (default 0); everything on 127.0.0.1; stops by itself.
# Needs: scripts/setup.sh (.ort/, .venv-clients), wrk, h2load.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T=${1:-1800}
SWAP_EVERY=${2:-3}
REST_C=${REST_C:-8}
GRPC_C=${GRPC_C:-4}
SERVER_CPUS=${SERVER_CPUS:-1}
export LOAD_CPUS=${LOAD_CPUS:-0}
PEERS_DIR=${PEERS_DIR:-$(cd "$ROOT/../shared/peers" 2>/dev/null && pwd || echo /work/shared/peers)}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk"; exit 1; }
command -v h2load >/dev/null || { echo "h2load missing: apt-get install -y nghttp2-client"; exit 1; }
[ -n "${SKIP_BUILD:-}" ] || cargo build -q --release --bin ferroserve
BIN=$TARGET/release/ferroserve

W=$(mktemp -d /tmp/ferroserve-soak.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$W/repo/m/1" "$W/staging"
cp examples/models/iris_lr/1/model.onnx "$W/repo/m/1/"
ARTIFACTS=(examples/models/iris_dt/1/model.onnx examples/models/iris_lr/1/model.onnx)
REST_PORT=$(free_port); GRPC_PORT=$(free_port)
ORT_DYLIB_PATH=$ROOT/.ort/libonnxruntime.so.1.31.1 taskset -c "$SERVER_CPUS" "$BIN" serve \
  --model-repository "$W/repo" --rest-addr "127.0.0.1:$REST_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" \
  --file-system-poll-wait-seconds 0.5 >"$W/server.log" 2>&1 &
SERVER=$!; PIDS+=("$SERVER")
U=http://127.0.0.1:$REST_PORT
for _ in $(seq 1 300); do curl -sf "$U/v2/health/ready" >/dev/null && break; sleep 0.1; done
curl -sf "$U/v2/health/ready" >/dev/null || { cat "$W/server.log"; echo "server not ready"; exit 1; }

echo '{"instances": [[5.1, 3.5, 1.4, 0.2]]}' >"$W/tfs.json"
"$ROOT/.venv-clients/bin/python" "$PEERS_DIR/grpc-body.py" "$W/v2.grpc" m input >/dev/null
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER/status"; }

echo "# $(date -Is) $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD); load average $(cut -d' ' -f1-3 /proc/loadavg)"
START=$(date +%s)

# The swapper: a new version every SWAP_EVERY s until the load stops.
(
  v=1
  while [ $(( $(date +%s) - START )) -lt "$T" ]; do
    sleep "$SWAP_EVERY"
    v=$((v + 1))
    mkdir -p "$W/staging/$v"
    cp "${ARTIFACTS[$((v % 2))]}" "$W/staging/$v/model.onnx"
    mv "$W/staging/$v" "$W/repo/m/$v"
    [ "$v" -gt 3 ] && rm -rf "$W/repo/m/$((v - 3))"
    echo "$v" >"$W/versions"
  done
) &
SWAPPER=$!; PIDS+=("$SWAPPER")

# RSS every 10 s.
(
  while kill -0 "$SERVER" 2>/dev/null; do
    echo "$(( $(date +%s) - START )) $(rss_kib)" >>"$W/rss.txt"
    sleep 10
  done
) &
SAMPLER=$!; PIDS+=("$SAMPLER")

"$PEERS_DIR/load.sh" "$U/v1/models/m:predict" "$W/tfs.json" "$REST_C" "$T" >"$W/rest.txt" 2>&1 &
REST=$!
taskset -c "$LOAD_CPUS" h2load -c "$GRPC_C" -m 1 -D "$T" -d "$W/v2.grpc" \
  -H 'content-type: application/grpc' -H 'te: trailers' \
  "http://127.0.0.1:$GRPC_PORT/inference.GRPCInferenceService/ModelInfer" >"$W/grpc.txt" 2>&1 &
GRPC=$!
wait "$REST" || true
wait "$GRPC" || true
wait "$SWAPPER" 2>/dev/null || true
echo "$(( $(date +%s) - START )) $(rss_kib)" >>"$W/rss.txt"
curl -s "$U/metrics" >"$W/metrics.txt"
kill "$SAMPLER" 2>/dev/null || true

python3 - "$W" "$T" "$SWAP_EVERY" <<'PY'
import re, sys
w, t, swap_every = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rest = open(f"{w}/rest.txt").read()
grpc = open(f"{w}/grpc.txt").read()
def field(text, pattern, default=0):
    m = re.search(pattern, text)
    return m.group(1) if m else default
rest_n = int(field(rest, r"n=(\d+)")); rest_err = int(field(rest, r"errors=(\d+)"))
rest_rate = float(field(rest, r"req/s=([\d.]+)", 0.0))
grpc_done = int(field(grpc, r"(\d+) done")); grpc_2xx = int(field(grpc, r"status codes: (\d+) 2xx"))
grpc_errored = int(field(grpc, r"(\d+) errored")) + int(field(grpc, r"(\d+) failed"))
grpc_rate = float(field(grpc, r"finished in [\d.]+s, ([\d.]+) req/s", 0.0))
server = {}
for line in open(f"{w}/metrics.txt"):
    m = re.match(r'ferroserve_requests_total\{(.*)\} (\d+)', line)
    if m:
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        key = (labels.get("protocol", ""), labels.get("outcome", ""))
        server[key] = server.get(key, 0) + int(m.group(2))
not_ok = {k: v for k, v in server.items() if k[1] != "ok"}
try:
    versions = int(open(f"{w}/versions").read())
except OSError:
    versions = 1
rss = [tuple(map(int, l.split())) for l in open(f"{w}/rss.txt") if len(l.split()) == 2]
def slope(points):  # KiB per second, least squares
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n; my = sum(p[1] for p in points) / n
    den = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else 0.0
mib_h = lambda s: s * 3600 / 1024
half = [p for p in rss if p[0] >= t / 2]
print()
print(f"{t} s of mixed load, a new version every {swap_every} s ({versions - 1} swaps):")
print()
print("| load | requests | req/s | failed |")
print("|---|---|---|---|")
print(f"| REST TF Serving predict (wrk) | {rest_n:,} | {rest_rate:,.0f} | {rest_err} |")
print(f"| gRPC V2 ModelInfer (h2load) | {grpc_done:,} | {grpc_rate:,.0f} | {grpc_done - grpc_2xx + grpc_errored} |")
print()
# Successes are counted per version and leave with it; failures are counted by model
# alone (version ""), so they stay for this check.
print("requests the server counted as failed (ferroserve_requests_total, outcome not ok): " +
      (", ".join(f"{p or '-'} {o}: {v:,}" for (p, o), v in sorted(not_ok.items())) or "none"))
print()
print(f"RSS: {rss[0][1] // 1024} MiB at start, {max(r for _, r in rss) // 1024} MiB peak, "
      f"{rss[-1][1] // 1024} MiB at the end; slope {mib_h(slope(rss)):+.1f} MiB/h over the run, "
      f"{mib_h(slope(half)):+.1f} MiB/h over its second half ({len(rss)} samples)")
failed = rest_err + (grpc_done - grpc_2xx + grpc_errored) + sum(not_ok.values())
if rest_n == 0 or grpc_done == 0:
    print("\nno load ran"); sys.exit(1)
if failed:
    print(f"\n{failed} failed requests"); sys.exit(1)
print("\nzero failed requests")
PY
