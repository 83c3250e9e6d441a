#!/usr/bin/env bash
# Runs every test of ferroserve: Rust unit and black-box tests, the scikit-learn
# fresh round, and the real-client interop checks. Sets up what it needs first
# (Python venvs, the ONNX Runtime library), so it works on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --no-build
# The free disk before the build: CI's ld once died with SIGBUS, the sign of a disk
# that filled while linking, and only this line can tell next time.
echo "free disk before the build: $(df -h . | tail -1)"
# No incremental compilation data (6 GB of target/debug/incremental for one run, on
# a clean clone rebuilt from nothing anyway); CI once ran out of disk.
export CARGO_INCREMENTAL=0
export ORT_DYLIB_PATH="$PWD/.ort/libonnxruntime.so.1.31.1"
# TensorFlow's C API for SavedModels (issue 16): the tensorflow-cpu wheel's libraries.
export FERROSERVE_TENSORFLOW_PATH="$PWD/.venv-tf/lib/python3.11/site-packages/tensorflow"

# --- deployment files: Helm chart, KServe manifests, Dockerfile (issue 18), offline ---
.venv/bin/python deploy/validate.py --self-test

# The Rust tests. Each black-box test binary of the server (tests/*.rs, about 40) links
# the whole server and its dependencies, about 160 MB: built all at once by
# `cargo test --workspace` they took 6 GB of target/debug/deps, and CI's disk ran out
# while linking them ("ld terminated with signal 7 [Bus error]"). So the integration
# test binaries are built and run a few at a time, and each group's binaries are removed
# once it has passed: the peak is the dependencies plus one group. The same tests with
# the same harness; every call names --workspace so that features resolve as for
# `cargo test --workspace` and nothing is built twice.
cargo test --workspace --lib --bins --examples
cargo test --workspace --doc
mapfile -t test_targets < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if "test" in target["kind"]:
            print(target["name"])' | sort -u)
test "${#test_targets[@]}" -gt 0
group_size=6
for ((i = 0; i < ${#test_targets[@]}; i += group_size)); do
    group=("${test_targets[@]:i:group_size}")
    args=()
    for t in "${group[@]}"; do args+=(--test "$t"); done
    cargo test --workspace "${args[@]}"
    for t in "${group[@]}"; do
        find target/debug/deps -maxdepth 1 -type f -regex ".*/${t}-[0-9a-f]+" -delete
    done
done

# The black-box tests above ran target/debug/ferroserve, which cargo test built with the
# test build's features (tokio's test-util, tonic's TLS). The steps below use that binary:
# a plain `cargo build --bin ferroserve` resolves features without the dev-dependencies
# and would rebuild tokio and everything above it a second time, in time and disk.
export FERROSERVE_BIN="$PWD/target/debug/ferroserve"
test -x "$FERROSERVE_BIN"

# --- the web console in a real browser (issue 17): Debian's chromium driven by
# Playwright; screenshots are kept under target/console-screenshots/ ---
timeout 300 .venv-clients/bin/python tests/console_browser.py "$FERROSERVE_BIN"

# --- the ferroserve Python package (issue 19): the wheel setup.sh built, under pytest ---
python/ferroserve-py/run_tests.sh
# ... and inside Spark (local mode) and Ray Data, its own step (.venv-dist)
python/ferroserve-py/run_dist_tests.sh

# --- scikit-learn fresh round (issue 4) ---
python/sklearn_fresh_round.sh

# --- OpenAPI description: schemathesis against the served /openapi.json (issue 17) ---
./tests/openapi_schemathesis.sh

# --- real clients (tritonclient, TF Serving stubs) ---
./tests/interop/run.sh

# What the build and the tests left on disk (CI once ran out of it).
du -sh target 2>/dev/null || true
df -h . | tail -1
echo "all tests passed"
