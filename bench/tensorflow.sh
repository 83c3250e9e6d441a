#!/usr/bin/env bash
# usage: bench/tensorflow.sh [SECONDS] [BINARY]
# TensorFlow SavedModels (issue 16): ferroserve's throughput against TensorFlow's own
# in-process throughput calling the same signature from Python at the same batch.
#   - MLP (tests/fixtures/tensorflow/mlp), 1 row per request and 32 rows per request,
#     TF Serving REST predict, concurrency 1 and 8, no batching;
#   - CNN (tests/fixtures/tensorflow/cnn), 1 image per request at concurrency 64 with
#     batching on (max_batch_size 32, max_queue_delay_micros $CNN_DELAY_MICROS, default
#     0), against TensorFlow calling the signature with
#     batches of 32;
#   - RSS of the server with no model, and with the MLP loaded; the MLP's load time
#     (ferroserve's "loaded" log line, which includes warm-up).
# Load from h2load --h1 (Debian nghttp2-client), SECONDS each (default 10) after a 2 s
# warm-up; TensorFlow's figure is rows/s over SECONDS of back-to-back calls of the
# loaded SavedModel's signature (tf.saved_model.load, as TF Serving runs it, minus
# the network). Every answer is first checked against TensorFlow's expected.json.
# Prints a Markdown table. Needs scripts/setup.sh (.venv-tf).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${1:-10}
BIN=${2:-target/release/ferroserve}
TF_DIR="$ROOT/.venv-tf/lib/python3.11/site-packages/tensorflow"
command -v h2load >/dev/null || { echo "h2load missing: apt-get install -y nghttp2-client"; exit 1; }
[ -x "$BIN" ] || cargo build --release --bin ferroserve
export TF_CPP_MIN_LOG_LEVEL=2

T=$(mktemp -d)
PID=""
trap '[ -z "$PID" ] || { kill $PID 2>/dev/null; wait $PID 2>/dev/null || true; }; rm -rf "$T"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# start REPO: starts the server on REPO, waits until ready, sets PID and URL.
start() {
  local port; port=$(free_port)
  FERROSERVE_LOG_FORMAT=json FERROSERVE_TENSORFLOW_PATH="$TF_DIR" "$BIN" serve --model-repository "$1" \
    --rest-addr "127.0.0.1:$port" --grpc-addr "127.0.0.1:$(free_port)" >"$T/server.log" 2>&1 &
  PID=$!
  URL="http://127.0.0.1:$port"
  for _ in $(seq 1 600); do
    curl -sf "$URL/v2/health/ready" >/dev/null && return
    kill -0 $PID 2>/dev/null || { cat "$T/server.log"; echo "server exited"; exit 1; }
    sleep 0.1
  done
  cat "$T/server.log"; echo "server not ready"; exit 1
}
stop() { kill -TERM $PID; wait $PID || true; PID=""; }

# h2load_rps BODY_FILE PATH CONCURRENCY: requests/s over SECONDS_EACH, all 2xx.
h2load_rps() {
  h2load --h1 -c "$3" -D 2 -H 'content-type: application/json' -d "$1" "$URL$2" >/dev/null 2>&1 || true
  local out; out=$(h2load --h1 -c "$3" -D "$SECONDS_EACH" -H 'content-type: application/json' -d "$1" "$URL$2")
  echo "$out" | grep -q " 0 failed, 0 errored" || { echo "$out" >&2; echo "requests failed" >&2; exit 1; }
  echo "$out" | awk '/^finished in/ {gsub(",", "", $4); print $4}'
}

# Request bodies (rows from the fixtures' inputs, repeated to the batch) and TF's figures.
.venv-tf/bin/python - "$T" "$ROOT" "$SECONDS_EACH" <<'PY' 2>/dev/null
import json, os, sys, time
import numpy as np
import tensorflow as tf
out, root, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
fx = os.path.join(root, "tests/fixtures/tensorflow")
figures = {}
def case(model):
    with open(os.path.join(fx, model, "expected.json")) as f:
        return json.load(f)["serving_default"]
def rows(t):
    return np.array(t["data"], dtype=t["dtype"]).reshape(t["shape"])
def bench(fn, name, x, key):
    fn(**{name: x})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(**{name: x}); n += 1
    figures[key] = n * x.shape[0] / (time.perf_counter() - start)
for model, name, batches in [("mlp", "features", [1, 32]), ("cnn", "image", [1, 32])]:
    c = case(model)
    x = rows(c["inputs"][name])
    fn = tf.saved_model.load(os.path.join(fx, model, "1")).signatures["serving_default"]
    for b in batches:
        xb = np.resize(x, (b,) + x.shape[1:])
        with open(os.path.join(out, f"{model}_{b}.json"), "w") as f:
            json.dump({"inputs": {name: xb.tolist()}}, f)
        bench(fn, name, tf.constant(xb), f"{model}_{b}")
    with open(os.path.join(out, f"{model}_check.json"), "w") as f:
        json.dump({"inputs": {name: x.tolist()}}, f)
with open(os.path.join(out, "tf.json"), "w") as f:
    json.dump(figures, f)
PY

# A repository with the MLP, and one with the CNN batched.
mkdir -p "$T/empty" "$T/mlp" "$T/cnn"
cp -r tests/fixtures/tensorflow/mlp/1 "$T/mlp/1"
mkdir -p "$T/mlp_repo" && mv "$T/mlp" "$T/mlp_repo/mlp"
mkdir -p "$T/cnn_repo/cnn" && cp -r tests/fixtures/tensorflow/cnn/1 "$T/cnn_repo/cnn/1"
printf '[batching]\nenabled = true\nmax_batch_size = 32\nmax_queue_delay_micros = %s\n' \
  "${CNN_DELAY_MICROS:-0}" >"$T/cnn_repo/cnn/config.toml"

check() { # MODEL: the answer equals TensorFlow's within 1e-6 relative, or 1e-6 absolute
  # near 0 (the server runs TF's own kernels, oneDNN off; the fixtures were recorded
  # with oneDNN's, which sum a convolution in another order)
  curl -sf -H 'content-type: application/json' -d @"$T/$1_check.json" "$URL/v1/models/$1:predict" \
    >"$T/answer.json"
  python3 - "$T/answer.json" "tests/fixtures/tensorflow/$1/expected.json" <<'PY'
import json, sys
got = json.load(open(sys.argv[1]))["outputs"]
want = list(json.load(open(sys.argv[2]))["serving_default"]["outputs"].values())[0]["data"]
flat = []
def walk(v):
    if isinstance(v, list):
        for x in v: walk(x)
    else: flat.append(v)
walk(got)
assert len(flat) == len(want) and all(abs(a - b) <= 1e-6 * max(abs(b), 1.0) for a, b in zip(flat, want)), (flat, want)
PY
}

start "$T/empty"
RSS_EMPTY=$(rss_kib $PID)
stop

START_NS=$(date +%s%N)
start "$T/mlp_repo"
until curl -sf "$URL/v1/models/mlp" | grep -q AVAILABLE; do sleep 0.05; done
READY_MS=$(( ($(date +%s%N) - START_NS) / 1000000 ))
LOAD_MS=$(grep '"message":"loaded"' "$T/server.log" | grep -o '"elapsed_ms":[0-9]*' | head -1 | cut -d: -f2 || true)
RSS_MLP=$(rss_kib $PID)
check mlp
MLP1_C1=$(h2load_rps "$T/mlp_1.json" /v1/models/mlp:predict 1)
MLP1_C8=$(h2load_rps "$T/mlp_1.json" /v1/models/mlp:predict 8)
MLP32_C1=$(h2load_rps "$T/mlp_32.json" /v1/models/mlp:predict 1)
MLP32_C8=$(h2load_rps "$T/mlp_32.json" /v1/models/mlp:predict 8)
stop

start "$T/cnn_repo"
until curl -sf "$URL/v1/models/cnn" | grep -q AVAILABLE; do sleep 0.05; done
check cnn
CNN_C64=$(h2load_rps "$T/cnn_1.json" /v1/models/cnn:predict 64)
BATCHES=$(curl -sf "$URL/metrics" | awk '/^ferroserve_batch_size_(sum|count)\{model="cnn"/ {print $2}' | paste -sd' ')
stop

python3 - "$T/tf.json" "$MLP1_C1" "$MLP1_C8" "$MLP32_C1" "$MLP32_C8" "$CNN_C64" <<'PY'
import json, sys
tf = json.load(open(sys.argv[1]))
mlp1_c1, mlp1_c8, mlp32_c1, mlp32_c8, cnn_c64 = map(float, sys.argv[2:7])
rows = [
    ("MLP, 1 row/request, c=1", mlp1_c1, tf["mlp_1"]),
    ("MLP, 1 row/request, c=8", mlp1_c8, tf["mlp_1"]),
    ("MLP, 32 rows/request, c=1", mlp32_c1 * 32, tf["mlp_32"]),
    ("MLP, 32 rows/request, c=8", mlp32_c8 * 32, tf["mlp_32"]),
    ("CNN, 1 image/request, c=64, batching (max 32)", cnn_c64, tf["cnn_32"]),
]
print("| case | ferroserve rows/s | TensorFlow in-process rows/s (same batch) | ratio |")
print("|---|---|---|---|")
for name, ours, theirs in rows:
    print(f"| {name} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f}x |")
PY
echo
echo "CNN batches (sum of rows, count): $BATCHES"
echo "RSS: $((RSS_EMPTY / 1024)) MiB with no model, $((RSS_MLP / 1024)) MiB with the MLP SavedModel loaded"
echo "MLP load (TensorFlow loaded first, then the SavedModel, warm-up included): ${LOAD_MS} ms; server start to AVAILABLE: ${READY_MS} ms"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
