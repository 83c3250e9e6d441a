"""pandas columns that are numbers without being a plain numpy number dtype (booleans,
nullable Int64/Float64/boolean, categoricals of numbers), columns of arrays for
[n, k] inputs, dictionary-encoded Arrow columns, and scalars where rows belong.

Each answer is compared with what scikit-learn or onnxruntime gives on the same data
(onnxruntime with the ONNX backend's session options, as test_onnx.py runs it).
"""

import os

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import ferroserve

from test_onnx import FIXTURES, assert_same, onnxruntime_outputs

IRIS_STR = os.path.join(FIXTURES, "iris_str", "model.onnx")
MULTI_IO = os.path.join(FIXTURES, "multi_io", "model.onnx")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
IRIS_SKLEARN = os.path.join(ROOT, "examples/models/iris_sklearn/1/model.joblib")


def iris_frame(n=6, seed=4):
    rng = np.random.default_rng(seed)
    rows = rng.uniform([4.0, 2.0, 1.0, 0.1], [8.0, 4.5, 7.0, 2.5], size=(n, 4))
    return pd.DataFrame(rows.round(1), columns=list("abcd"), dtype="float32")


def assert_frame_equals_onnxruntime(got, want, index):
    assert isinstance(got, pd.DataFrame) and got.index.equals(index)
    assert list(got.columns) == list(want)
    for output, values in want.items():
        stacked = np.array(list(got[output]), dtype=values.dtype).reshape(values.shape)
        assert_same(stacked, values, output)


@pytest.mark.parametrize(
    "column,values",
    [
        pytest.param("d", [True, False, True, False, True, True], id="bool"),
        pytest.param("a", pd.array([5, 7, 6, 4, 8, 5], dtype="Int64"), id="Int64"),
        pytest.param("b", pd.array([3.5, 2.25, 3.0, 4.0, 2.5, 3.0], dtype="Float64"), id="Float64"),
        pytest.param("d", pd.array([True, False, True, True, False, False], dtype="boolean"), id="boolean"),
        pytest.param("c", pd.array([1, 5, 2, 6, 1, 5], dtype="int64[pyarrow]"), id="int64-pyarrow"),
        pytest.param("c", pd.Categorical([1.5, 4.5, 1.5, 6.0, 4.5, 1.5]), id="categorical"),
    ],
)
def test_a_one_input_model_takes_number_columns_of_any_pandas_dtype(column, values):
    # Bug: float32 columns beside a bool or nullable one made an object matrix, which
    # was taken as text ("input 'input' takes str or bytes; got float").
    model = ferroserve.Model.load(IRIS_STR)
    frame = iris_frame().assign(**{column: values})
    # The matrix numpy makes of these values, cast to the input's float32.
    matrix = np.column_stack([np.asarray(frame[c], dtype=np.float64) for c in frame]).astype(np.float32)
    want = onnxruntime_outputs(IRIS_STR, {"input": matrix})
    assert_frame_equals_onnxruntime(model.predict(frame), want, frame.index)
    # Every column a categorical of numbers, as scikit-learn takes it too.
    everything = iris_frame()
    want = onnxruntime_outputs(IRIS_STR, {"input": everything.to_numpy()})
    assert_frame_equals_onnxruntime(model.predict(everything.astype("category")), want, everything.index)


def test_missing_values_in_nullable_columns_are_nan_for_float_inputs_and_refused_for_others():
    # A float input takes pd.NA as NaN, as it takes NaN in a numpy array.
    model = ferroserve.Model.load(IRIS_STR)
    frame = iris_frame().assign(a=pd.array([5, None, 6, 4, 8, 5], dtype="Int64"))
    matrix = frame.astype({"a": np.float64}).to_numpy().astype(np.float32)
    assert np.isnan(matrix[1, 0])
    want = onnxruntime_outputs(IRIS_STR, {"input": matrix})
    assert_frame_equals_onnxruntime(model.predict(frame), want, frame.index)
    frame = iris_frame().assign(d=pd.array([True, None, True, False, True, True], dtype="boolean"))
    matrix = frame.astype({"d": np.float64}).to_numpy().astype(np.float32)
    want = onnxruntime_outputs(IRIS_STR, {"input": matrix})
    assert_frame_equals_onnxruntime(model.predict(frame), want, frame.index)

    # An integer or boolean input has no NaN (numpy's NaN is refused there too): the
    # column and row are named.
    multi = ferroserve.Model.load(MULTI_IO)
    columns = {
        "f32": list(np.array([[1.5, 2.0], [-1.0, 0.25]], np.float32)),
        "f64": pd.array([0.1, None], dtype="Float64"),
        "i32": pd.array([-3, 4], dtype="Int32"),
        "i64": pd.array([7, -9000000000], dtype="Int64"),
        "flag": pd.array([True, False], dtype="boolean"),
        "text": ["setosa", "über"],
    }
    feeds = {
        "f32": np.array([[1.5, 2.0], [-1.0, 0.25]], np.float32),
        "f64": np.array([0.1, np.nan]),
        "i32": np.array([-3, 4], np.int32),
        "i64": np.array([7, -9000000000], np.int64),
        "flag": np.array([True, False]),
        "text": np.array(["setosa", "über"], dtype=object),
    }
    want = onnxruntime_outputs(MULTI_IO, feeds)
    frame = pd.DataFrame(columns)
    assert_frame_equals_onnxruntime(multi.predict(frame), want, frame.index)
    for name, values in [
        ("i32", pd.array([-3, None], dtype="Int32")),
        ("i64", pd.array([None, 1], dtype="Int64")),
        ("flag", pd.array([True, None], dtype="boolean")),
        ("i32", pd.Categorical([None, 4])),
    ]:
        with pytest.raises(ferroserve.PredictError, match="column %r has a missing value.*takes" % name):
            multi.predict(pd.DataFrame(dict(columns, **{name: values})))


def test_a_column_of_arrays_is_an_n_by_k_input_as_an_arrow_list_column_is():
    # Bug: a DataFrame could not feed an [n, k] input ("takes str or bytes; got ndarray").
    model = ferroserve.Model.load(IRIS_STR)
    matrix = iris_frame().to_numpy()
    want = onnxruntime_outputs(IRIS_STR, {"input": matrix})
    index = pd.RangeIndex(0, 12, 2)
    for cells in (list(matrix), [list(map(float, row)) for row in matrix], [tuple(row) for row in matrix]):
        for name in ("input", "rows"):
            frame = pd.DataFrame({name: cells}, index=index)
            assert_frame_equals_onnxruntime(model.predict(frame), want, index)
    with pytest.raises(ferroserve.PredictError, match="row 1 has 1 values, row 0 has 4"):
        model.predict(pd.DataFrame({"input": [[1.0, 2.0, 3.0, 4.0], [1.0]]}))
    with pytest.raises(ferroserve.PredictError, match="row 1 is None"):
        model.predict(pd.DataFrame({"input": [[1.0, 2.0, 3.0, 4.0], None]}))
    with pytest.raises(ferroserve.PredictError, match=r"row 1 holds a missing value \(None\)"):
        model.predict(pd.DataFrame({"input": [[1.0, 2.0, 3.0, 4.0], [1.0, None, 3.0, 4.0]]}))
    with pytest.raises(ferroserve.PredictError, match=r"column 'e' is non-numeric \(object\)"):
        model.predict(iris_frame().assign(e=list(matrix)))

    # A model with several inputs, one of them [n, 2], from a DataFrame.
    multi = ferroserve.Model.load(MULTI_IO)
    feeds = {
        "f32": np.array([[1.5, 2.0], [-1.0, 0.25], [3.0, 4.0]], np.float32),
        "f64": np.array([0.1, -2.5, 3.0]),
        "i32": np.array([-3, 4, 5], np.int32),
        "i64": np.array([7, -9000000000, 2], np.int64),
        "flag": np.array([True, False, True]),
        "text": np.array(["setosa", "über", "x"], dtype=object),
    }
    want = onnxruntime_outputs(MULTI_IO, feeds)
    frame = pd.DataFrame(dict(feeds, f32=list(feeds["f32"])), index=[5, 3, 1])
    assert_frame_equals_onnxruntime(multi.predict(frame), want, frame.index)
    with pytest.raises(ferroserve.PredictError, match="column 'f32': row 2 has 3 values, row 0 has 2"):
        multi.predict(frame.assign(f32=[[1.0, 2.0], [1.0, 2.0], [1.0, 2.0, 3.0]]))


def fitted_logistic_regression(tmp_path):
    from sklearn.linear_model import LogisticRegression

    frame = iris_frame(60, seed=1).astype(np.float64)
    labels = np.where(frame["c"] < 2.5, "setosa", np.where(frame["d"] < 1.6, "versicolor", "virginica"))
    estimator = LogisticRegression(max_iter=500).fit(frame, labels)
    path = tmp_path / "logreg.joblib"
    joblib.dump(estimator, path)
    return estimator, ferroserve.Model.load(path), frame


def test_scikit_learn_models_take_categorical_columns_of_numbers_as_scikit_learn_does(tmp_path):
    # Bug: "LogisticRegression needs numbers but column 0 ("a") holds text".
    estimator, model, frame = fitted_logistic_regression(tmp_path)
    categorical = frame.astype("category")
    want = estimator.predict(categorical)
    assert list(want) == list(estimator.predict(frame))
    assert list(model.predict(categorical)["predict"]) == list(want)
    mixed = frame.astype({"b": "category", "d": "category"})
    assert list(model.predict(mixed)["predict"]) == list(estimator.predict(mixed))
    nullable = frame.astype({"a": "Float64"}).assign(d=frame["d"].astype("category"))
    assert list(model.predict(nullable)["predict"]) == list(estimator.predict(frame))


def test_dictionary_encoded_arrow_columns_of_numbers_are_decoded(tmp_path):
    estimator, model, frame = fitted_logistic_regression(tmp_path)
    want = list(estimator.predict(frame))
    batch = pa.RecordBatch.from_pandas(frame.astype("category"), preserve_index=False)
    assert pa.types.is_dictionary(batch.schema.field("a").type)
    assert model.predict(batch).column(0).to_pylist() == want
    assert model.predict(pa.Table.from_batches([batch.slice(0, 7), batch.slice(7)])).column(0).to_pylist() == want

    onnx = ferroserve.Model.load(IRIS_STR)
    rows = iris_frame()
    want = onnxruntime_outputs(IRIS_STR, {"input": rows.to_numpy()})
    batch = pa.RecordBatch.from_pandas(rows.astype("category"), preserve_index=False)
    got = onnx.predict(batch)
    assert_same(np.array(got.column("probabilities").to_pylist(), np.float32), want["probabilities"], "probabilities")


def test_a_scalar_or_none_is_named_not_counted_as_dimensions():
    model = ferroserve.Model.load(IRIS_SKLEARN)
    with pytest.raises(ferroserve.PredictError, match=r"got a scalar \(5\.0\)"):
        model.predict(5.0)
    with pytest.raises(ferroserve.PredictError, match="got None"):
        model.predict(None)
    with pytest.raises(ferroserve.PredictError, match="got 1 dimensions"):
        model.predict(np.zeros(4))
    onnx = ferroserve.Model.load(IRIS_STR)
    with pytest.raises(ferroserve.PredictError, match="input 'input': got None"):
        onnx.predict(None)


def test_a_saved_model_takes_nullable_columns_and_a_column_of_arrays_as_its_matrix():
    try:
        ferroserve._tensorflow_library()
    except ferroserve.ModelError:
        pytest.skip("TensorFlow's libraries are not installed (no tensorflow wheel, no FERROSERVE_TENSORFLOW_PATH)")
    import json

    fixture = os.path.join(ROOT, "tests/fixtures/tensorflow/mlp")
    with open(os.path.join(fixture, "expected.json")) as f:
        case = json.load(f)["serving_default"]
    features = np.asarray(case["inputs"]["features"]["data"], np.float32).reshape(case["inputs"]["features"]["shape"])
    model = ferroserve.Model.load(os.path.join(fixture, "1"))
    want = model.predict(features)["probabilities"]
    # As TensorFlow gave it when the fixture was made.
    recorded = case["outputs"]["probabilities"]
    np.testing.assert_allclose(want, np.asarray(recorded["data"]).reshape(recorded["shape"]), rtol=1e-6, atol=1e-6)
    frame = pd.DataFrame(features, columns=list("abcd"), index=[7, 8, 9, 10, 11])
    for data in (
        frame.astype({"a": "Float64", "b": "Float32"}),
        pd.DataFrame({"features": list(features)}, index=frame.index),
    ):
        got = model.predict(data)
        assert got.index.equals(frame.index)
        assert np.array_equal(np.stack(got["probabilities"].to_list()), want)
