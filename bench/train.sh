#!/usr/bin/env bash
# usage: bench/train.sh [ROWS]        (on demand; never in CI)
#
# Issue 13's training benchmark: a training job (logistic regression, grid C over
# [0.01, 0.1, 1, 10], 5 stratified folds, accuracy; examples/jobs/train.json) on the
# synthetic bank data (examples/jobs/make_bank.py, ROWS rows, default 20000) against
# scikit-learn's GridSearchCV(Pipeline([ColumnTransformer(StandardScaler,
# OneHotEncoder), LogisticRegression(solver="lbfgs", max_iter=1000)])) on the same
# file, grid and folds (StratifiedKFold(5), no shuffle: the job's default), in the
# same run. Reported: wall time of each (the job's from its own timings, the read
# included; scikit-learn's from pandas.read_csv to the refit), the best C and the CV
# means of both. scikit-learn runs with n_jobs=1, as the job runs on one thread.
# Release build; the server's job runs on its own thread (--job-workers 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${1:-20000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ORT_LIB=$ROOT/.ort/libonnxruntime.so.1.31.1
OUT=${OUT:-$(mktemp -d /tmp/ferroserve-train-bench.XXXXXX)}; mkdir -p "$OUT/data" "$OUT/repo"

cargo build -q --release --bin ferroserve
BIN=$TARGET/release/ferroserve
python3 examples/jobs/make_bank.py --rows "$ROWS" --new 10 --out "$OUT/data" >/dev/null

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ORT_DYLIB_PATH=$ORT_LIB FERROSERVE_LOG=warn "$BIN" serve --model-repository "$OUT/repo" \
  --state-dir "$OUT/state" --data-dir "$OUT/data" --rest-addr "127.0.0.1:$PORT" \
  --grpc-addr "127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')" \
  >"$OUT/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/v2/health/ready" && break; sleep 0.1; done

echo "# $(date -Is) $(uname -n), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# commit $(git rev-parse --short HEAD), $ROWS rows, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
ID=$(curl -sf -X POST -H 'Content-Type: application/json' --data @examples/jobs/train.json \
  "http://127.0.0.1:$PORT/v1/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
while :; do
  curl -sf "http://127.0.0.1:$PORT/v1/jobs/$ID" >"$OUT/job.json"
  STATE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$OUT/job.json")
  case $STATE in succeeded) break ;; failed|cancelled) cat "$OUT/job.json"; exit 1 ;; esac
  sleep 0.2
done

.venv/bin/python - "$OUT/data/bank.csv" "$OUT/job.json" <<'PY'
import json, sys, time
t0 = time.perf_counter()
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
spec = json.load(open("examples/jobs/train.json"))["spec"]
cats = spec["schema"]["categorical"]
nums = [f["key"] for f in spec["schema"]["features"] if f["key"] not in cats]
t1 = time.perf_counter()
df = pd.read_csv(sys.argv[1])
y = (df["y"] == "yes").astype(int)
pipe = Pipeline([
    ("enc", ColumnTransformer([("num", StandardScaler(), nums),
                               ("cat", OneHotEncoder(handle_unknown="ignore"), cats)])),
    ("lr", LogisticRegression(solver="lbfgs", max_iter=1000)),
])
grid = GridSearchCV(pipe, {"lr__C": spec["algorithm"]["grid"]["C"]},
                    cv=StratifiedKFold(spec["cv"]["folds"]), scoring="accuracy", n_jobs=1)
grid.fit(df[nums + cats], y)
t2 = time.perf_counter()
job = json.load(open(sys.argv[2]))
r = job["result"]
job_ms = sum(v for v in r["timings_ms"].values() if isinstance(v, (int, float)))
wall_ms = (job["finished_ms"] - job["started_ms"])
sk_ms = (t2 - t1) * 1000
print(f"\n| | wall ms | best C | CV mean accuracy per C |")
print("|---|---|---|---|")
print(f"| ferroserve job | {wall_ms:.0f} (timings {job_ms:.0f}) | {r['best_params']} | "
      + ", ".join(f"{c['mean']:.4f}" for c in r["cv_results"]) + " |")
print(f"| scikit-learn GridSearchCV | {sk_ms:.0f} | {grid.best_params_} | "
      + ", ".join(f"{m:.4f}" for m in grid.cv_results_["mean_test_score"]) + " |")
print(f"\nferroserve / scikit-learn time: {wall_ms / sk_ms:.2f}x (lower is faster); "
      f"scikit-learn's imports ({(t1 - t0) * 1000:.0f} ms) not counted")
PY
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
