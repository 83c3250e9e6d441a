#!/usr/bin/env bash
# usage: python/setup-grpc-clients.sh
# Creates .venv-tfs: TF Serving's own generated Python stubs (tensorflow-protobuf, no
# TensorFlow) pinned by python/requirements-tfs.txt, completed with the ModelService
# files by python/tfs-stubs-complete.sh. The interop test (tests/interop/grpc_clients.py)
# runs in it with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python.
# Needs PyPI once (pip install, and one `pip download` of tensorflow-serving-api==2.11.0);
# does nothing when the venv is already complete, so test runs stay offline.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$PWD/.venv-tfs"   # absolute: tfs-stubs-complete.sh changes directory
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import grpc, tensorflow_serving.apis.predict_pb2' 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r python/requirements-tfs.txt
fi
./python/tfs-stubs-complete.sh "$VENV"
