"""The ferroserve Python package's batch-scoring benchmark (issue 19); run by
bench/python_package.sh, which documents it. Prints one Markdown table.

Data: ROWS rows (default 1,000,000) written once to a Parquet file in OUT: the four iris
features and eight features f0..f7 (normal). Models: the repository's iris
LogisticRegression pickle (examples/models/iris_sklearn) and a RandomForestClassifier
(100 trees, depth 8, on 8 features) trained here and saved with joblib.dump.

Single process: the file read in BATCH-row record batches; ferroserve's package scores
each batch as Arrow, and as a pandas DataFrame; scikit-learn (joblib.load, then
model.predict on each pandas chunk) scores the same chunks. Every run includes reading
the file and loading the model (after one untimed load of each, so that Python's
imports are not counted); ferroserve's labels are checked equal to scikit-learn's.

Spark local mode (local[SPARK_CORES]): `mapInArrow` with ferroserve.load_cached against
an iterator `pandas_udf` that joblib.loads the model once per task and predicts each
chunk (what MLflow's spark_udf does); both write to the `noop` sink, so the figure is
read + score. A warm-up on one batch's rows of each first (workers started, imports done).
"""

import os
import sys
import time
from typing import Iterator, Tuple

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import ferroserve

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ROWS = int(os.environ.get("ROWS", "1000000"))
BATCH = int(os.environ.get("BATCH", "65536"))
SPARK_CORES = int(os.environ.get("SPARK_CORES", "2"))
OUT = os.environ["OUT"]
IRIS = os.path.join(ROOT, "examples/models/iris_sklearn/1/model.joblib")
IRIS_NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
FOREST_NAMES = ["f%d" % i for i in range(8)]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def make_data():
    path = os.path.join(OUT, "rows.parquet")
    if os.path.exists(path) and pq.ParquetFile(path).metadata.num_rows == ROWS:
        return path
    rng = np.random.default_rng(0)
    columns = {}
    low, high = [4.0, 2.0, 1.0, 0.1], [8.0, 4.5, 7.0, 2.5]
    for name, lo, hi in zip(IRIS_NAMES, low, high):
        columns[name] = rng.uniform(lo, hi, ROWS)
    for name in FOREST_NAMES:
        columns[name] = rng.normal(size=ROWS)
    pq.write_table(pa.table(columns), path, row_group_size=BATCH)
    return path


def make_forest():
    path = os.path.join(OUT, "forest.joblib")
    if os.path.exists(path):
        return path
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=20000, n_features=8, n_informative=6, random_state=0)
    model = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0).fit(x, y)
    joblib.dump(model, path)
    return path


def sklearn_estimator(path):
    loaded = joblib.load(path)
    return loaded["model"] if isinstance(loaded, dict) else loaded


def single_process(data, model_path, names):
    """Rows per second of each way, and whether ferroserve's labels equal sklearn's."""
    results = {}

    def batches():
        return pq.ParquetFile(data).iter_batches(batch_size=BATCH, columns=names)

    # One untimed load of each first: Python imports (scikit-learn's modules, the
    # native module) are a once-per-process cost, not the load of this model.
    sklearn_estimator(model_path)
    ferroserve.Model.load(model_path)

    start = time.perf_counter()
    estimator = sklearn_estimator(model_path)
    want = []
    for batch in batches():
        want.append(estimator.predict(batch.to_pandas()[names].to_numpy()))
    results["sklearn"] = ROWS / (time.perf_counter() - start)
    want = np.concatenate(want)

    start = time.perf_counter()
    model = ferroserve.Model.load(model_path)
    got = []
    for batch in batches():
        got.append(model.predict(batch))  # kept as Arrow, as a Parquet writer would take it
    results["ferroserve_arrow"] = ROWS / (time.perf_counter() - start)
    got = [np.asarray(b.column(0).to_numpy(zero_copy_only=False)) for b in got]
    equal_arrow = np.array_equal(np.concatenate(got).astype(want.dtype), want)

    start = time.perf_counter()
    model = ferroserve.Model.load(model_path)
    got = []
    for batch in batches():
        got.append(model.predict(batch.to_pandas())["predict"].to_numpy())
    results["ferroserve_pandas"] = ROWS / (time.perf_counter() - start)
    equal_pandas = np.array_equal(np.concatenate(got).astype(want.dtype), want)
    return results, equal_arrow and equal_pandas


def spark_runs(data, models):
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import pandas_udf

    spark = (
        SparkSession.builder.master("local[%d]" % SPARK_CORES)
        .appName("ferroserve-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH))
        .config("spark.sql.files.maxPartitionBytes", str(max(1, os.path.getsize(data) // (2 * SPARK_CORES))))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    results = {}
    try:
        frame = spark.read.parquet(data)
        for label, model_path, names in models:
            label_type = {"string": "string", "int64": "bigint", "float64": "double"}[
                ferroserve.Model.load(model_path).signature["outputs"][0]["dtype"]
            ]

            def score(batches, model_path=model_path):
                model = ferroserve.load_cached(model_path)
                for batch in batches:
                    yield model.predict(batch)

            def mlflow_style(model_path=model_path, names=names):
                @pandas_udf(label_type)
                def predict(chunks: Iterator[Tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
                    # Iterator of Series: the model is loaded once per task, as
                    # MLflow's spark_udf does.
                    estimator = sklearn_estimator(model_path)
                    for columns in chunks:
                        x = pd.concat(columns, axis=1).to_numpy()
                        yield pd.Series(estimator.predict(x))

                return frame.select(predict(*names).alias("predict"))

            runs = {
                "ferroserve": lambda names=names, score=score: frame.select(*names).mapInArrow(
                    score, "predict %s" % label_type
                ),
                "pandas_udf": mlflow_style,
            }
            for way, build in runs.items():
                # Warm-up on one batch's rows: Python workers started, modules imported.
                build().limit(BATCH).write.format("noop").mode("overwrite").save()
                start = time.perf_counter()
                build().write.format("noop").mode("overwrite").save()
                results[(label, way)] = ROWS / (time.perf_counter() - start)
                log("spark", label, way, "%.0f rows/s" % results[(label, way)])
    finally:
        spark.stop()
    return results


def main():
    data = make_data()
    forest = make_forest()
    models = [("iris LogisticRegression", IRIS, IRIS_NAMES), ("RandomForest(100, depth 8)", forest, FOREST_NAMES)]
    single = {}
    for label, path, names in models:
        single[label] = single_process(data, path, names)
        log("single process", label, single[label])
    spark = {} if os.environ.get("SPARK", "1") == "0" else spark_runs(data, models)

    print("Single process, %d rows, %d-row batches, rows/s (read + score):" % (ROWS, BATCH))
    print()
    print("| model | sklearn (joblib + predict on pandas chunks) | ferroserve, Arrow | ferroserve, pandas | Arrow / sklearn | pandas / sklearn | labels equal |")
    print("|---|---|---|---|---|---|---|")
    for label, (r, equal) in single.items():
        print(
            "| %s | %.0f | %.0f | %.0f | %.2fx | %.2fx | %s |"
            % (
                label,
                r["sklearn"],
                r["ferroserve_arrow"],
                r["ferroserve_pandas"],
                r["ferroserve_arrow"] / r["sklearn"],
                r["ferroserve_pandas"] / r["sklearn"],
                "yes" if equal else "NO",
            )
        )
    if spark:
        print()
        print("Spark local[%d], %d rows, rows/s (read Parquet + score, noop sink):" % (SPARK_CORES, ROWS))
        print()
        print("| model | pandas_udf (joblib.load + predict) | ferroserve mapInArrow | ratio |")
        print("|---|---|---|---|")
        for label, _, _ in models:
            a, b = spark[(label, "pandas_udf")], spark[(label, "ferroserve")]
            print("| %s | %.0f | %.0f | %.2fx |" % (label, a, b, b / a))


if __name__ == "__main__":
    main()
