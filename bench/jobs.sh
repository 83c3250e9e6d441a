#!/usr/bin/env bash
# usage: bench/jobs.sh [ROWS]        (on demand; never in CI)
#
# The scoring-job benchmark of issue 13, one command, one Markdown table (stdout; raw
# lines in $OUT/raw.txt):
#  * a ROWS-row iris CSV (default 1 000 000; generated into a temporary directory,
#    removed at the end) scored by a score job (CSV -> CSV, batch $BATCH, default 256)
#    with native scikit-learn logistic regression (examples/models/iris_sklearn) and
#    with ONNX logistic regression (examples/models/iris_lr); rows/s from the job's
#    own started/finished times;
#  * against (a) the backend's own in-process throughput at the same batch size
#    (examples/jobs_inprocess.rs, pinned to the server's CPUs; target: the job >= 0.7x)
#    and (b) pandas.read_csv + model.predict + predict_proba in Python (.venv; for ONNX,
#    onnxruntime's Python session) on the same file, pinned the same way;
#  * the server's peak RSS while each job runs (VmHWM, reset through clear_refs before
#    the job);
#  * the one-row iris p99 at c=$C (wrk, $T s) with the server idle and while scoring
#    jobs run (jobs queued back to back so that one runs for the whole wrk run; target:
#    within 2x of idle).
# Server and the in-process/Python runs pinned to CPU $SERVER_CPUS (default 1), wrk to
# $LOAD_CPUS (default 0). Needs: .ort/ (scripts/setup.sh), wrk, .venv with pandas and
# scikit-learn (and onnxruntime for the ONNX Python figure). Run it on a quiet machine:
# the load average is printed with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${1:-1000000}
BATCH=${BATCH:-256}
C=${C:-10}
T=${T:-8}
SERVER_CPUS=${SERVER_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ORT_LIB=$ROOT/.ort/libonnxruntime.so.1.31.1
PY=$ROOT/.venv/bin/python
command -v wrk >/dev/null || { echo "wrk missing"; exit 1; }
OUT=$(mktemp -d /tmp/ferroserve-jobs-bench.XXXXXX)
RAW=$OUT/raw.txt; : >"$RAW"
PID=""
cleanup() {
  [ -n "$PID" ] && { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; }
  [ -n "${KEEP:-}" ] || rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -n "${SKIP_BUILD:-}" ] || cargo build -q --release --bin ferroserve --example jobs_inprocess
BIN=$TARGET/release/ferroserve
INPROC=$TARGET/release/examples/jobs_inprocess

# --- data and models ----------------------------------------------------------------
DATA=$OUT/data; REPO=$OUT/repo
mkdir -p "$DATA" "$REPO/iris_sk/1" "$REPO/iris_onnx/1" "$REPO/iris/1"
FEATURES='feature_names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]'
cp examples/models/iris_sklearn/1/model.joblib "$REPO/iris_sk/1/"
cp examples/models/iris_lr/1/model.onnx "$REPO/iris_onnx/1/"
cp examples/models/iris_lr/1/model.onnx "$REPO/iris/1/"
echo "$FEATURES" >"$REPO/iris_sk/config.toml"
echo "$FEATURES" >"$REPO/iris_onnx/config.toml"
python3 - "$DATA/rows.csv" "$ROWS" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("id,sepal_length,sepal_width,petal_length,petal_width\n")
    for i in range(n):
        f.write("%d,%.1f,%.1f,%.1f,%.1f\n" % (i, 4.3 + (i * 7) % 36 / 10, 2.0 + (i * 11) % 24 / 10,
                                             1.0 + (i * 13) % 59 / 10, 0.1 + (i * 17) % 24 / 10))
PY
echo "csv: $ROWS rows, $(du -h "$DATA/rows.csv" | cut -f1)" >&2

# --- server -----------------------------------------------------------------------
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REST_PORT=$(port); GRPC_PORT=$(port)
ORT_DYLIB_PATH=$ORT_LIB taskset -c "$SERVER_CPUS" "$BIN" serve --model-repository "$REPO" \
  --rest-addr "127.0.0.1:$REST_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" \
  --state-dir "$OUT/state" --data-dir "$DATA" >"$OUT/ferroserve.log" 2>&1 &
PID=$!
BASE=http://127.0.0.1:$REST_PORT
for _ in $(seq 1 1200); do
  curl -sf -o /dev/null "$BASE/v2/health/ready" && break
  sleep 0.1
done
echo "# $(date -Is) $(uname -n), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" | tee -a "$RAW" >&2
echo "# commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src 2>/dev/null || echo '+local'), uptime: $(uptime | sed 's/.*load/load/')" | tee -a "$RAW" >&2

submit() { # MODEL SINK -> job id
  curl -sf -X POST -H 'content-type: application/json' "$BASE/v1/jobs" -d "{\"kind\": \"score\", \"spec\": {
    \"model\": \"$1\", \"source\": {\"path\": \"rows.csv\"}, \"sink\": {\"path\": \"$2\"},
    \"carry\": [\"id\"], \"batch_size\": $BATCH}}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])'
}
job_field() { # ID PYTHON-EXPR-ON-j
  curl -sf "$BASE/v1/jobs/$1" | python3 -c "import json,sys; j=json.load(sys.stdin); print($2)"
}
wait_state() { # ID STATES...
  local id=$1; shift
  for _ in $(seq 1 6000); do
    local s; s=$(job_field "$id" 'j["state"]')
    for want in "$@"; do [ "$s" = "$want" ] && { echo "$s"; return; }; done
    sleep 0.1
  done
  echo timeout
}
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$PID/status"; }

score() { # NAME MODEL SINK -> raw line
  echo 5 >"/proc/$PID/clear_refs"   # resets VmHWM to the current RSS
  local before; before=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  local id; id=$(submit "$2" "$3")
  local state; state=$(wait_state "$id" succeeded failed cancelled)
  [ "$state" = succeeded ] || { echo "job $1: $state: $(job_field "$id" 'j["error"]')" >&2; exit 1; }
  local rate; rate=$(job_field "$id" "round(j['progress']['rows_written'] / ((j['finished_ms'] - j['started_ms']) / 1000), 1)")
  echo "job_$1 rows/s=$rate rss_before_mb=$((before / 1024)) peak_rss_mb=$(($(hwm_kb) / 1024))" | tee -a "$RAW" >&2
  rm -f "$DATA/$3"
}
score sklearn iris_sk out_sk.csv
score onnx iris_onnx out_onnx.csv
score onnx_to_parquet iris_onnx out_onnx.parquet

# --- in process and Python, on the server's CPUs ------------------------------------
for m in sklearn:examples/models/iris_sklearn/1/model.joblib onnx:examples/models/iris_lr/1/model.onnx; do
  echo "inproc_${m%%:*} $(FERROSERVE_ONNXRUNTIME_PATH=$ORT_LIB taskset -c "$SERVER_CPUS" "$INPROC" "${m#*:}" "$BATCH" 5)" | tee -a "$RAW" >&2
done
echo "python_sklearn $(OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c "$SERVER_CPUS" "$PY" - "$DATA/rows.csv" <<'PY'
import sys, time, joblib, pandas as pd
model = joblib.load("examples/models/iris_sklearn/1/model.joblib")
model = model["model"] if isinstance(model, dict) else model
t = time.perf_counter()
df = pd.read_csv(sys.argv[1])
x = df[["sepal_length", "sepal_width", "petal_length", "petal_width"]].to_numpy()
label, proba = model.predict(x), model.predict_proba(x)
print("rows/s=%.1f" % (len(df) / (time.perf_counter() - t)))
PY
)" | tee -a "$RAW" >&2
echo "python_onnx $(OMP_NUM_THREADS=1 taskset -c "$SERVER_CPUS" "$PY" - "$DATA/rows.csv" <<'PY' || echo "rows/s=0 (no onnxruntime in .venv)"
import sys, time, pandas as pd, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 1
s = ort.InferenceSession("examples/models/iris_lr/1/model.onnx", o)
t = time.perf_counter()
df = pd.read_csv(sys.argv[1])
x = df[["sepal_length", "sepal_width", "petal_length", "petal_width"]].to_numpy("float32")
s.run(None, {s.get_inputs()[0].name: x})
print("rows/s=%.1f" % (len(df) / (time.perf_counter() - t)))
PY
)" | tee -a "$RAW" >&2

# --- online p99, idle and while scoring ---------------------------------------------
cat >"$OUT/iris.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
function done(s, lat, req)
  local e = s.errors
  io.write(string.format("req/s=%.1f p50=%.2fms p99=%.2fms n=%d errors=%d\n",
    s.requests / (s.duration / 1e6), lat:percentile(50) / 1000, lat:percentile(99) / 1000,
    s.requests, e.connect + e.read + e.write + e.status + e.timeout))
end
EOF
URL="$BASE/v1/models/iris:predict"
taskset -c "$LOAD_CPUS" wrk -t 1 -c "$C" -d 2s -s "$OUT/iris.lua" "$URL" >/dev/null
echo "online_idle c=$C $(taskset -c "$LOAD_CPUS" wrk -t 1 -c "$C" -d "${T}s" -s "$OUT/iris.lua" "$URL" | grep '^req/s=')" | tee -a "$RAW" >&2
for MODEL in iris_sk iris_onnx; do
  # Enough jobs queued back to back (one worker) to outlast the wrk run.
  IDS=(); for k in 1 2 3 4 5 6; do IDS+=("$(submit $MODEL "busy_$k.csv")"); done
  # (the first may be done already when the last is queued: any state but queued)
  wait_state "${IDS[0]}" running succeeded failed >/dev/null
  LINE=$(taskset -c "$LOAD_CPUS" wrk -t 1 -c "$C" -d "${T}s" -s "$OUT/iris.lua" "$URL" | grep '^req/s=')
  RUNNING=$(curl -sf "$BASE/v1/jobs?state=running" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
  echo "online_while_${MODEL} c=$C $LINE job_running_at_end=$RUNNING" | tee -a "$RAW" >&2
  for id in "${IDS[@]}"; do curl -s -o /dev/null -X POST "$BASE/v1/jobs/$id/cancel"; done
  for id in "${IDS[@]}"; do wait_state "$id" succeeded failed cancelled >/dev/null; done
  rm -f "$DATA"/busy_*.csv
done

# --- table ------------------------------------------------------------------------
python3 - "$RAW" "$ROWS" "$BATCH" <<'PY'
import re, sys
rows, header = {}, []
for line in open(sys.argv[1]):
    if line.startswith("#"):
        header.append(line.strip("# \n"))
        continue
    name, rest = line.split(" ", 1)
    rows[name] = dict(re.findall(r"([\w/]+)=([\d.]+)", rest))
for h in header:
    print(h + "  ")
n, batch = int(sys.argv[2]), sys.argv[3]
f = lambda k, v="rows/s": float(rows[k][v])
print(f"\nscoring {n} CSV rows, batch {batch}:\n")
print("| model | job rows/s | in-process backend rows/s | job / in-process | pandas + predict rows/s | job / Python | peak RSS MB (before) |")
print("|---|---|---|---|---|---|---|")
for m in ("sklearn", "onnx"):
    job, inp, py = f(f"job_{m}"), f(f"inproc_{m}"), f(f"python_{m}")
    print(f"| {m} | {job:,.0f} | {inp:,.0f} | {job / inp:.2f}x | {py:,.0f} | {job / py if py else 0:.2f}x | {rows[f'job_{m}']['peak_rss_mb']} ({rows[f'job_{m}']['rss_before_mb']}) |")
print(f"| onnx, Parquet sink | {f('job_onnx_to_parquet'):,.0f} | | | | | {rows['job_onnx_to_parquet']['peak_rss_mb']} |")
print("\none-row iris (ONNX), TF Serving REST, c=10:\n")
print("| server | req/s | p50 ms | p99 ms | p99 / idle |")
print("|---|---|---|---|---|")
idle = f("online_idle", "p99")
for k in ("online_idle", "online_while_iris_sk", "online_while_iris_onnx"):
    print(f"| {k.replace('online_', '')} | {f(k, 'req/s'):,.0f} | {rows[k]['p50']} | {rows[k]['p99']} | {f(k, 'p99') / idle:.2f}x |")
PY
