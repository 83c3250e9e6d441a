#!/usr/bin/env bash
# scikit-learn fresh round (issue 4): trains the fixture models again with the
# scikit-learn of the repository's .venv (python/requirements-models.txt), saves them
# in every pickle/joblib form into a temporary directory, and checks that the native
# estimators predict exactly what scikit-learn predicted for them.
#
# usage: python/sklearn_fresh_round.sh   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "missing $PY: run scripts/setup.sh first" >&2
  exit 1
fi
out=$(mktemp -d "${TMPDIR:-/tmp}/ferroserve-sklearn-fresh.XXXXXX")
trap 'rm -rf "$out"' EXIT
"$PY" crates/ferroserve-sklearn/tests/fixtures/sklearn/make_sklearn_fixtures.py "$out" --all-formats
"$PY" crates/ferroserve-sklearn/tests/fixtures/sklearn/make_text_fixtures.py "$out" --all-formats
FERROSERVE_SKLEARN_FIXTURES="$out" cargo test -p ferroserve-sklearn --test fidelity -- --nocapture
