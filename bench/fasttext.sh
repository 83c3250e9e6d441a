#!/usr/bin/env bash
# usage: bench/fasttext.sh [SECONDS] [CLIENTS] [TEXTS_PER_REQUEST]   (on demand; never in CI)
#
# fastText with jieba (issue 15), one Markdown table on stdout, ratios of one run:
#  * in process, predictions/s, one text per call: ferroserve's reader
#    (`ferroserve_fasttext::FastText::predict`, k = 1) against the fasttext Python
#    package's `model.predict` on the same model and the same segmented texts; then
#    with segmentation, the pipeline's `segmenter = "jieba"` step (jieba-rs) and the
#    reader against `model.predict(" ".join(jieba.cut(text)))` (examples/fasttext_bench.rs);
#  * end to end, texts/s: ferroserve's simple API (`{"model_id", "texts": [...]}`)
#    against the service it replaces, built here as it was: Flask under gunicorn
#    (sync workers, one per CPU), fasttext + jieba, a list of sentences per request,
#    `model.predict(" ".join(jieba.cut(text)))` for each; both loaded by
#    examples/request_flood.rs with CLIENTS keep-alive connections, the same body.
# Model: tests/fixtures/fasttext/zh.bin (trained by python/make_fasttext_models.py);
# texts: its corpus's sentences unsegmented, joined 1 to 3 at a time.
# Needs: scripts/setup.sh (.venv-ft: fasttext-wheel, jieba, flask, gunicorn). FT_VENV
# overrides the venv. Run it on a quiet machine; `uptime` is printed with the table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T=${1:-5}
CLIENTS=${2:-4}
PER_REQUEST=${3:-16}
FT_VENV=${FT_VENV:-$ROOT/.venv-ft}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MODEL=$ROOT/tests/fixtures/fasttext/zh.bin
WORK=$(mktemp -d /tmp/ferroserve-fasttext.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
wait_http() { # URL: poll until it answers, up to 120 s
  for _ in $(seq 1 1200); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not ready: $1" >&2; return 1
}

cargo build -q --release --bin ferroserve --example fasttext_bench --example request_flood
BIN=$TARGET/release/ferroserve
FLOOD=$TARGET/release/examples/request_flood

# Texts (raw and segmented by Python jieba) and the request body.
"$FT_VENV/bin/python" - "$ROOT/tests/fixtures/fasttext/train_zh.txt" "$WORK" "$PER_REQUEST" <<'PY'
import json, random, sys
import jieba
jieba.setLogLevel(60)
src, work, per_request = sys.argv[1], sys.argv[2], int(sys.argv[3])
sentences = sorted({"".join(l.split()[1:]) for l in open(src, encoding="utf-8") if l.strip()})
rng = random.Random(15)
raw = ["".join(rng.choice(sentences) for _ in range(rng.randint(1, 3))) for _ in range(500)]
with open(work + "/raw.txt", "w", encoding="utf-8") as f:
    f.write("\n".join(raw) + "\n")
with open(work + "/segmented.txt", "w", encoding="utf-8") as f:
    f.write("\n".join(" ".join(jieba.cut(t)) for t in raw) + "\n")
with open(work + "/body.json", "w", encoding="utf-8") as f:
    json.dump({"model_id": "zh", "texts": raw[:per_request]}, f, ensure_ascii=False)
PY

# --- in process ---------------------------------------------------------------------
ours=$("$TARGET/release/examples/fasttext_bench" "$MODEL" "$WORK/raw.txt" "$WORK/segmented.txt" "$T")
ours_predict=$(awk '/^predict_per_s/ {print $2}' <<<"$ours")
ours_jieba=$(awk '/^jieba_predict_per_s/ {print $2}' <<<"$ours")
theirs=$("$FT_VENV/bin/python" - "$MODEL" "$WORK" "$T" <<'PY'
import sys, time
import fasttext, jieba
jieba.setLogLevel(60)
fasttext.FastText.eprint = lambda *a, **k: None
model = fasttext.load_model(sys.argv[1])
work, seconds = sys.argv[2], float(sys.argv[3])
raw = [l for l in open(work + "/raw.txt", encoding="utf-8").read().splitlines() if l.strip()]
seg = [l for l in open(work + "/segmented.txt", encoding="utf-8").read().splitlines() if l.strip()]
def rate(texts, f):
    for t in texts[:50]: f(t)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for t in texts:
            f(t); count += 1
    return count / (time.perf_counter() - t0)
print("predict_per_s %.0f" % rate(seg, lambda t: model.predict(t, k=1)))
print("jieba_predict_per_s %.0f" % rate(raw, lambda t: model.predict(" ".join(jieba.cut(t)), k=1)))
PY
)
theirs_predict=$(awk '/^predict_per_s/ {print $2}' <<<"$theirs")
theirs_jieba=$(awk '/^jieba_predict_per_s/ {print $2}' <<<"$theirs")

# --- end to end ---------------------------------------------------------------------
mkdir -p "$WORK/repo/zh/1"
cp "$MODEL" "$WORK/repo/zh/1/model.bin"
printf '[preprocess]\nsegmenter = "jieba"\n' >"$WORK/repo/zh/config.toml"
"$BIN" serve --model-repository "$WORK/repo" --rest-addr 127.0.0.1:18410 \
  --grpc-addr 127.0.0.1:18411 >"$WORK/ferroserve.log" 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:18410/v2/models/zh/ready

cat >"$WORK/app.py" <<'PY'
# The old service: Flask, fasttext and jieba; a list of sentences per request.
import os
import fasttext, jieba
from flask import Flask, jsonify, request
jieba.setLogLevel(60)
jieba.initialize()
fasttext.FastText.eprint = lambda *a, **k: None
model = fasttext.load_model(os.environ["FT_MODEL"])
app = Flask(__name__)

@app.post("/predict")
def predict():
    texts = request.get_json()["texts"]
    labels, probabilities = [], []
    for text in texts:
        l, p = model.predict(" ".join(jieba.cut(text)))
        labels.append(list(l)); probabilities.append([float(x) for x in p])
    return jsonify({"prediction": labels, "probabilities": probabilities})
PY
FT_MODEL=$MODEL "$FT_VENV/bin/gunicorn" --chdir "$WORK" -w "$(nproc)" -b 127.0.0.1:18420 \
  --log-level warning app:app >"$WORK/gunicorn.log" 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:18420/

BODY=$(cat "$WORK/body.json")
flood() { # URL REQUESTS -> requests/s
  "$FLOOD" --url "$1" --body "$BODY" --requests "$2" --clients "$CLIENTS" | grep -oP 'req/s=\K[0-9.]+'
}
# Sized to run about T seconds each: a short probe first.
e2e() { # URL -> texts/s
  local probe n
  probe=$(flood "$1" 200)
  n=$(awk -v r="$probe" -v t="$T" 'BEGIN {n = int(r * t); print (n < 200 ? 200 : n)}')
  awk -v r="$(flood "$1" "$n")" -v p="$PER_REQUEST" 'BEGIN {printf "%.0f", r * p}'
}
ours_e2e=$(e2e http://127.0.0.1:18410/predict)
theirs_e2e=$(e2e http://127.0.0.1:18420/predict)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", a / b}'; }
echo "| fastText zh.bin, k = 1 | ferroserve | Python | ferroserve / Python |"
echo "|---|---|---|---|"
echo "| in process, predict on segmented text (predictions/s) | $ours_predict | $theirs_predict (fasttext) | $(ratio "$ours_predict" "$theirs_predict") |"
echo "| in process, jieba + predict (predictions/s) | $ours_jieba | $theirs_jieba (jieba + fasttext) | $(ratio "$ours_jieba" "$theirs_jieba") |"
echo "| end to end, $PER_REQUEST texts per request, $CLIENTS clients (texts/s) | $ours_e2e | $theirs_e2e (Flask + gunicorn, $(nproc) workers) | $(ratio "$ours_e2e" "$theirs_e2e") |"
echo
echo "load: $(uptime)"
