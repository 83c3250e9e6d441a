#!/usr/bin/env bash
# The ferroserve Python package inside Spark (local mode, Java 17) and Ray Data, in
# .venv-dist (pyspark, ray: heavy, so their own venv and test step); the wheel is the
# one scripts/setup.sh built.
set -euo pipefail
cd "$(dirname "$0")/../.."
export RAY_USAGE_STATS_ENABLED=0
# Spark's Python workers must use the venv's interpreter (where the wheel is).
export PYSPARK_PYTHON="$PWD/.venv-dist/bin/python"
export PYSPARK_DRIVER_PYTHON="$PYSPARK_PYTHON"
timeout 600 .venv-dist/bin/python -m pytest -q -p no:cacheprovider python/ferroserve-py/tests_dist "$@"
