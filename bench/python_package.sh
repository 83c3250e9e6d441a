#!/usr/bin/env bash
# usage: bench/python_package.sh        (on demand; never in CI)
#
# Batch scoring with the ferroserve Python package (issue 19), one command, one Markdown
# table on stdout (progress on stderr). A Parquet file of ROWS rows (default 1,000,000;
# generated here into $OUT, kept for reruns) is scored with the iris LogisticRegression
# pickle and with a RandomForestClassifier (100 trees, depth 8) trained and joblib-dumped
# here:
#  * single process: ferroserve's package (Arrow batches, and pandas chunks) against
#    joblib.load + model.predict on the same pandas chunks; labels checked equal;
#  * Spark local mode (local[$SPARK_CORES], default 2): df.mapInArrow with
#    ferroserve.load_cached against an iterator pandas_udf doing joblib.load + predict
#    (the MLflow spark_udf pattern); SPARK=0 skips it.
# Needs scripts/setup.sh (.venv-dist: pyspark, Java 17, scikit-learn and the installed
# wheel). PYTHON picks another interpreter. Ratios from one run are what counts; note
# the load (uptime) beside them, and run it on a quiet machine for absolute figures.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv-dist/bin/python}
export OUT=${OUT:-/tmp/ferroserve-python-package-bench}
# Spark's Python workers must use the same interpreter (where the wheel is).
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$PYTHON} PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$PYTHON}
mkdir -p "$OUT"
echo "load before: $(uptime)" >&2
"$PYTHON" bench/python_package.py
echo
echo "Load after the run: $(uptime | sed 's/.*load average/load average/')"
