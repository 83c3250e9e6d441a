"""Batch scoring with the ferroserve package inside Spark and Ray (issue 19).

Run by python/ferroserve-py/run_dist_tests.sh in .venv-dist (pyspark, ray and the
wheel). Both score the same rows with the iris model and a random forest and must give
exactly what scikit-learn's own `predict` gives.
"""

import os

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import ferroserve

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
IRIS = os.path.join(ROOT, "examples/models/iris_sklearn/1/model.joblib")
FOREST = os.path.join(
    ROOT, "crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1/random_forest_classifier.z3.joblib"
)
IRIS_NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def sklearn_estimator(path):
    loaded = joblib.load(path)
    return loaded["model"] if isinstance(loaded, dict) else loaded


def rows_for(path, n=2000):
    estimator = sklearn_estimator(path)
    rng = np.random.default_rng(7)
    if path == IRIS:
        x = rng.uniform([4.0, 2.0, 1.0, 0.1], [8.0, 4.5, 7.0, 2.5], size=(n, 4))
        names = IRIS_NAMES
    else:
        x = rng.normal(size=(n, estimator.n_features_in_))
        names = ["f%d" % i for i in range(x.shape[1])]
    return pd.DataFrame(x, columns=names), list(estimator.predict(x))


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("ferroserve-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.mark.parametrize("path", [IRIS, FOREST], ids=["iris_lr", "random_forest"])
def test_spark_map_in_arrow_equals_scikit_learn(spark, path):
    frame, want = rows_for(path)
    frame.insert(0, "row", np.arange(len(frame)))
    label_dtype = ferroserve.Model.load(path).signature["outputs"][0]["dtype"]
    label_type = {"string": "string", "int64": "bigint", "float64": "double"}[label_dtype]

    def score(batches):
        # load_cached: the model is read once per Python worker, not once per batch.
        model = ferroserve.load_cached(path)
        for batch in batches:
            predicted = model.predict(batch.drop_columns(["row"]))
            yield pa.record_batch([batch.column("row"), predicted.column(0)], names=["row", "predict"])

    df = spark.createDataFrame(frame).repartition(3)
    result = df.mapInArrow(score, "row long, predict %s" % label_type).toPandas()
    result = result.sort_values("row")
    assert len(result) == len(want)
    assert list(result["predict"]) == want


IRIS_ONNX = os.path.join(ROOT, "tests/fixtures/onnx/iris_str/model.onnx")


def onnxruntime_library():
    """ONNX Runtime's library: ORT_DYLIB_PATH, the onnxruntime wheel's, or the one
    scripts/setup.sh leaves in .ort/ (this environment has no onnxruntime wheel)."""
    try:
        return ferroserve._onnxruntime_library() or os.environ["ORT_DYLIB_PATH"]
    except ferroserve.ModelError:
        local = os.path.join(ROOT, ".ort", ferroserve.ONNXRUNTIME_LIBRARY)
        if not os.path.isfile(local):
            pytest.skip("no ONNX Runtime library (no onnxruntime wheel, ORT_DYLIB_PATH or .ort/)")
        return local


def test_spark_map_in_arrow_takes_an_onnx_classifiers_probabilities(spark, monkeypatch):
    # Bug: an [n, k] output came back as an Arrow fixed-size list, which Spark refuses
    # (UNSUPPORTED_ARROWTYPE FixedSizeList(3)); it is a list: array<float>.
    library = onnxruntime_library()
    monkeypatch.setenv("ORT_DYLIB_PATH", library)
    rows = np.random.default_rng(0).uniform(0, 7, size=(40, 4)).astype(np.float32)
    want = ferroserve.Model.load(IRIS_ONNX).predict(rows)
    frame = pd.DataFrame(rows, columns=list("abcd"))
    frame.insert(0, "row", np.arange(len(frame)))

    def score(batches):
        os.environ.setdefault("ORT_DYLIB_PATH", library)
        model = ferroserve.load_cached(IRIS_ONNX)
        for batch in batches:
            predicted = model.predict(batch.drop_columns(["row"]))
            yield pa.record_batch(
                [batch.column("row"), predicted.column("label"), predicted.column("probabilities")],
                names=["row", "label", "probabilities"],
            )

    df = spark.createDataFrame(frame).repartition(2)
    result = df.mapInArrow(score, "row long, label string, probabilities array<float>").toPandas()
    result = result.sort_values("row")
    assert list(result["label"]) == list(want["label"])
    got = np.stack(result["probabilities"].to_list()).astype(np.float32)
    np.testing.assert_array_equal(got, want["probabilities"])


def test_ray_data_map_batches_equals_scikit_learn():
    import ray

    # Defined here so that Ray ships the class by value (its workers cannot import
    # this test module).
    class Scorer:
        """A Ray Data actor: the model is loaded once, in the actor's constructor."""

        def __init__(self, path):
            self.model = ferroserve.Model.load(path)

        def __call__(self, batch):
            predicted = self.model.predict(batch.drop_columns(["row"]))
            return pa.table({"row": batch.column("row"), "predict": predicted.column("predict")})

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=1, include_dashboard=False, object_store_memory=200 * 1024 * 1024)
    try:
        for path in (IRIS, FOREST):
            frame, want = rows_for(path)
            frame.insert(0, "row", np.arange(len(frame)))
            ds = ray.data.from_arrow(pa.Table.from_pandas(frame, preserve_index=False))
            scored = ds.map_batches(
                Scorer,
                fn_constructor_args=(path,),
                batch_format="pyarrow",
                batch_size=500,
                concurrency=1,
            )
            result = scored.to_pandas().sort_values("row")
            assert list(result["predict"]) == want
    finally:
        ray.shutdown()
