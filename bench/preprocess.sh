#!/usr/bin/env bash
# usage: bench/preprocess.sh [ITERATIONS]        (on demand; never in CI)
#
# Pre-processing per item (issue 15), in process, one Markdown table on stdout:
#  * image: a 97x61 JPEG (tests/fixtures/preprocess/images/photo.jpg) and a 640x480
#    JPEG made here decoded, resized (bilinear) to 224x224 and normalized with the
#    ImageNet mean/std into a float32 NCHW tensor, by ferroserve's
#    `preprocess::image::images_to_tensor` (examples/preprocess_bench.rs, release
#    build) and by PIL + numpy doing the same steps (.venv: pillow, numpy);
#  * tokenization: all-MiniLM-L6-v2's tokenizer.json (max_length 128, padding to
#    128), one text per call, by ferroserve's `preprocess::tokenizer::TextTokenizer`
#    and by the Python `tokenizers` package (.venv), over the same texts.
# Ratios of one run; run it on a quiet machine (`uptime` is printed with the table).
# Needs: scripts/setup.sh (.venv with pillow and tokenizers, .ort/).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --example preprocess_bench >/dev/null 2>&1
BIN=target/release/examples/preprocess_bench
MINILM=tests/fixtures/preprocess/minilm

# A larger photo-like JPEG, and texts of several lengths.
.venv/bin/python - "$WORK" <<'PY'
import sys, numpy as np
from PIL import Image
rng = np.random.default_rng(5)
y, x = np.mgrid[0:480, 0:640]
a = np.stack([x * 255 / 639, y * 255 / 479, 128 + 100 * np.sin(x / 9) * np.cos(y / 13)], -1)
a = np.clip(a + rng.normal(0, 10, a.shape), 0, 255).astype(np.uint8)
Image.fromarray(a, "RGB").save(sys.argv[1] + "/big.jpg", quality=90)
words = "the model server decodes images and tokenizes text natively without a python hop".split()
with open(sys.argv[1] + "/texts.txt", "w") as f:
    for i in range(200):
        f.write(" ".join(words[(i * 7 + j) % len(words)] for j in range(5 + i % 40)) + "\n")
PY

python_image() { # FILE
  .venv/bin/python - "$1" "$N" <<'PY'
import sys, time, numpy as np
from PIL import Image
path, n = sys.argv[1], int(sys.argv[2])
data = open(path, "rb").read()
import io
mean = np.array([0.485, 0.456, 0.406], np.float32); std = np.array([0.229, 0.224, 0.225], np.float32)
def run():
    img = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.BILINEAR)
    a = (np.asarray(img).astype(np.float32) * np.float32(1 / 255) - mean) / std
    return np.ascontiguousarray(a.transpose(2, 0, 1))
for _ in range(3): run()
t = time.perf_counter()
for _ in range(n): run()
print("%.1f" % ((time.perf_counter() - t) * 1e6 / n))
PY
}

python_tokenize() {
  .venv/bin/python - "$MINILM/tokenizer.json" "$WORK/texts.txt" <<'PY'
import sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
tok.enable_truncation(max_length=128)
tok.enable_padding(length=128, pad_id=0, pad_token="[PAD]")
texts = [l for l in open(sys.argv[2]).read().splitlines() if l.strip()]
count, t = 0, time.perf_counter()
while time.perf_counter() - t < 3.0:
    for s in texts:
        tok.encode_batch([s]); count += 1
print("%.1f" % ((time.perf_counter() - t) * 1e6 / count))
PY
}

echo "| item | ferroserve (µs) | Python (µs) | Python / ferroserve |"
echo "|---|---|---|---|"
for img in tests/fixtures/preprocess/images/photo.jpg "$WORK/big.jpg"; do
  ours=$("$BIN" "$img" 224 224 "$N" "$MINILM" "$WORK/texts.txt" | awk '/image_us/ {print $2}')
  theirs=$(python_image "$img")
  echo "| image $(basename "$img") -> 224x224 NCHW f32 | $ours | $theirs (PIL + numpy) | $(awk -v a="$ours" -v b="$theirs" 'BEGIN {printf "%.2f", b / a}') |"
done
ours=$("$BIN" tests/fixtures/preprocess/images/photo.jpg 224 224 3 "$MINILM" "$WORK/texts.txt" | awk '/tokenize_us/ {print $2}')
theirs=$(python_tokenize)
echo "| tokenize one text (MiniLM, max_length 128) | $ours | $theirs (tokenizers) | $(awk -v a="$ours" -v b="$theirs" 'BEGIN {printf "%.2f", b / a}') |"
echo
echo "load: $(uptime)"
