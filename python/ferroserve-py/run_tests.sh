#!/usr/bin/env bash
# Tests of the ferroserve Python package against the wheel scripts/setup.sh built and
# installed into .venv-py (so what is tested is what `pip install` gives).
# usage: python/ferroserve-py/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/../.."
timeout 300 .venv-py/bin/python -m pytest -q -p no:cacheprovider python/ferroserve-py/tests "$@"
