#!/usr/bin/env bash
# Runs schemathesis (property-based API tests) against the OpenAPI description the
# server serves at /openapi.json: ferroserve on a free loopback port, a copy of the
# example models and a temporary state directory, a bounded number of examples per
# operation (about a minute in all). It must find no 5xx answer and no answer that
# breaks the description (status code, content type, body schema).
# usage: tests/openapi_schemathesis.sh   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# scripts/test.sh passes the binary its cargo test built; run alone, build one.
if [ -z "${FERROSERVE_BIN:-}" ]; then
  cargo build --quiet --bin ferroserve
  FERROSERVE_BIN="$ROOT/target/debug/ferroserve"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REST_PORT=$(free_port); GRPC_PORT=$(free_port)
WORK=$(mktemp -d)
# A copy: the fuzzed management routes (upload, delete, stop) must not touch the
# committed examples. Deployments are served in-process (`--worker-ports off`): a
# fuzzed /deploy would otherwise start worker processes (on the default ports, 8000
# and up) with whatever limits it drew, and a request that meets one of them while
# it restarts is rightly a 503, which this run counts as a failure (a CI run failed
# so). Workers have their own tests (tests/workers/).
cp -r examples/models "$WORK/models"
ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so.1.31.1" "$FERROSERVE_BIN" serve \
  --model-repository "$WORK/models" --state-dir "$WORK/state" --worker-ports off \
  --rest-addr "127.0.0.1:$REST_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$REST_PORT/v2/health/ready" >/dev/null && break
  kill -0 $PID 2>/dev/null || { cat "$WORK/server.log"; echo "server exited"; exit 1; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$REST_PORT/v2/health/ready" >/dev/null || { cat "$WORK/server.log"; echo "server not ready"; exit 1; }

# Every operation is fuzzed, the management ones too (they act on the copy). Job ids
# are never guessed (no stateful phase), so /v1/jobs/{id}/events answers 404 at once
# rather than streaming; --request-timeout bounds any request that would not end.
# Run from the temporary directory: schemathesis keeps a cache of past failures in
# ./.schemathesis, and each run here starts clean.
# One worker: with two, schemathesis generates cases in two threads through
# Hypothesis caches that are not thread-safe (lambda descriptions), and a CI run
# failed on a "FlakyFailure" raised inside the generator, not by any answer. The
# fuzzing phase repeats until --max-time anyway, and one worker still tests every
# operation in that time.
if ! (cd "$WORK" && "$ROOT/.venv-openapi/bin/schemathesis" run "http://127.0.0.1:$REST_PORT/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing --max-examples "${SCHEMATHESIS_EXAMPLES:-10}" --workers 1 \
  --generation-deterministic --request-timeout 10 --max-time "${SCHEMATHESIS_MAX_TIME:-75}" \
  --warnings off --no-color --report junit --report-dir "$WORK/report"); then
  tail -n 50 "$WORK/server.log"
  echo "schemathesis found failures"
  exit 1
fi
kill -TERM $PID
wait $PID
echo "openapi schemathesis: OK"
