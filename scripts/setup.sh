#!/usr/bin/env bash
# Sets up everything ferroserve and its tests need on a fresh machine, then builds
# the release binary. Safe to run again: finished steps are skipped.
#   .venv          scikit-learn, skl2onnx, onnxruntime (fixtures, expected outputs)
#   .venv-clients  NVIDIA tritonclient (interop tests)
#   .ort/          libonnxruntime.so.1.31.1, taken from the onnxruntime==1.31.1 wheel
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

make_venv .venv python/requirements-models.txt
make_venv .venv-clients python/requirements-clients.txt

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
