#!/usr/bin/env bash
# Tests of the ferroserve Python package against the wheel scripts/setup.sh built and
# installed into .venv-py (so what is tested is what `pip install` gives).
# usage: python/ferroserve-py/run_tests.sh [pytest args]
# The SavedModel tests (tests/test_tensorflow.py) open TensorFlow's libraries from the
# .venv-tf environment scripts/setup.sh makes (tensorflow-cpu), unless
# FERROSERVE_TENSORFLOW_PATH is already set; with neither they are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
TF_DIR="$PWD/.venv-tf/lib/python3.11/site-packages/tensorflow"
if [ -z "${FERROSERVE_TENSORFLOW_PATH:-}" ] && [ -f "$TF_DIR/libtensorflow_cc.so.2" ]; then
  export FERROSERVE_TENSORFLOW_PATH="$TF_DIR"
fi
timeout 300 .venv-py/bin/python -m pytest -q -p no:cacheprovider python/ferroserve-py/tests "$@"
