"""Numbers held in object-dtype pandas columns and numpy object arrays (what
``df.astype(object)``, ``np.array(rows, dtype=object)`` or a CSV column with one odd
cell gives).

An object column or array of numbers goes to an input of numbers as numbers, converted
as numpy converts it (``np.asarray(values, dtype=float64)``; integers and booleans keep
numpy's own dtype, so a large int64 stays exact), and to a text input as text. A value
numpy cannot make a number of is refused naming the column and the value. Each answer
is compared with what scikit-learn or onnxruntime gives on the same data.
"""

import json
import os

import joblib
import numpy as np
import pandas as pd
import pytest

import ferroserve

from test_onnx import FIXTURES, assert_same, feeds_for, onnxruntime_outputs
from test_pandas_inputs import IRIS_STR, MULTI_IO, assert_frame_equals_onnxruntime, fitted_logistic_regression, iris_frame

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BANK_COLUMNS = os.path.join(FIXTURES, "bank_columns", "model.onnx")
SKLEARN_FIXTURES = os.path.join(ROOT, "crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1")
CT_COLUMNS = os.path.join(SKLEARN_FIXTURES, "ct_positions_on_strings_logreg.z3.joblib")


def test_a_scikit_learn_model_takes_object_columns_of_numbers(tmp_path):
    # Bug: "LogisticRegression needs numbers but column 0 ("a") holds text".
    estimator, model, frame = fitted_logistic_regression(tmp_path)
    want = list(estimator.predict(frame))
    as_objects = frame.astype(object)
    assert list(estimator.predict(as_objects)) == want
    assert list(model.predict(as_objects)["predict"]) == want
    # One object column among float ones, in another order, beside a text column the
    # model does not read (left out, as before).
    some = frame[["d", "b", "a", "c"]].astype({"b": object}).assign(note="x")
    assert list(model.predict(some)["predict"]) == list(estimator.predict(some[["a", "b", "c", "d"]]))
    # Python ints, numpy scalars and a number written as text, as numpy converts them.
    cells = frame.astype(object)
    cells["a"] = [int(v) if float(v).is_integer() else np.float32(v) for v in frame["a"]]
    cells.loc[3, "b"] = str(frame.loc[3, "b"])
    assert list(model.predict(cells)["predict"]) == list(estimator.predict(cells))
    # A dict of object arrays reads as a DataFrame.
    arrays = {name: frame[name].to_numpy(dtype=object) for name in frame}
    assert list(model.predict(arrays)) == want


def test_a_range_index_frame_of_objects_goes_by_position(tmp_path):
    # Bug: "the DataFrame has no column '0'": the label 0 was looked up as "0".
    estimator, model, frame = fitted_logistic_regression(tmp_path)
    rows = frame.to_numpy(dtype=object)
    want = list(estimator.predict(frame))
    assert list(model.predict(pd.DataFrame(rows))["predict"]) == want
    assert list(model.predict(rows)) == want
    # One object column among float ones, labelled by position too.
    mixed = pd.DataFrame(frame.to_numpy()).astype({2: object})
    assert list(model.predict(mixed)["predict"]) == want


def test_missing_values_in_object_columns_are_nan_for_scikit_learn(tmp_path):
    from sklearn.tree import DecisionTreeClassifier

    frame = iris_frame(60, seed=2).astype(np.float64)
    frame.loc[::7, "a"] = np.nan
    labels = np.where(frame["c"] < 2.5, "setosa", "other")
    estimator = DecisionTreeClassifier(random_state=0).fit(frame, labels)
    path = tmp_path / "tree.joblib"
    joblib.dump(estimator, path)
    model = ferroserve.Model.load(path)
    as_objects = frame.astype(object)
    as_objects.loc[::7, "a"] = None
    as_objects.loc[1, "a"] = pd.NA
    want = frame.copy()
    want.loc[1, "a"] = np.nan
    assert list(model.predict(as_objects)["predict"]) == list(estimator.predict(want))
    # Only missing values: a column of NaN.
    empty = as_objects.assign(a=pd.Series([None] * len(frame), dtype=object))
    assert list(model.predict(empty)["predict"]) == list(estimator.predict(frame.assign(a=np.nan)))


def test_text_in_a_column_of_numbers_is_refused_naming_the_column_and_value(tmp_path):
    _, model, frame = fitted_logistic_regression(tmp_path)
    bad = frame.astype(object)
    bad.loc[4, "b"] = "n/a"
    with pytest.raises(ferroserve.PredictError, match=r"column 'b'.*'n/a'.*row 4"):
        model.predict(bad)
    with pytest.raises(ferroserve.PredictError, match=r"column 1.*'n/a'.*row 4"):
        model.predict(pd.DataFrame(bad.to_numpy()))
    with pytest.raises(ferroserve.PredictError, match=r"'n/a'.*row 4, column 1"):
        model.predict(bad.to_numpy())

    # A column of text only, in a frame whose columns have no names, to a model fitted
    # with feature names: named by position (was: missing input column "a").
    text = pd.DataFrame(frame.to_numpy()).assign(**{"3": "x"}).drop(columns=[3])
    text.columns = range(4)
    with pytest.raises(ferroserve.PredictError, match=r"needs numbers but column 3 \(\"d\"\) holds text"):
        model.predict(text)
    with pytest.raises(ferroserve.PredictError, match=r"expected 4 columns, got 3"):
        model.predict(text.iloc[:, 1:])

    # A model that selects its columns by name: a number column that holds objects.
    columns = ferroserve.Model.load(CT_COLUMNS)
    with open(CT_COLUMNS.replace(".z3.joblib", ".json")) as f:
        spec = json.load(f)
    data = pd.DataFrame(
        {c["name"]: pd.Series(c["values"], dtype=object) for c in spec["input"]["columns"]}
    )
    assert list(columns.predict(data)["predict"]) == spec["predict"]
    data.loc[2, "income"] = "lots"
    with pytest.raises(ferroserve.PredictError, match=r"column 'income'.*'lots'.*row 2"):
        columns.predict(data)


def test_an_onnx_matrix_input_takes_object_arrays_and_columns_of_numbers():
    # Bug: "input 'input' takes str or bytes; got float".
    model = ferroserve.Model.load(IRIS_STR)
    frame = iris_frame()
    matrix = frame.to_numpy()
    want = onnxruntime_outputs(IRIS_STR, {"input": matrix})
    got = model.predict(matrix.astype(object))
    for output in want:
        assert_same(got[output], want[output], output)
    got = model.predict({"input": matrix.astype(np.float64).astype(object)})
    for output in want:
        assert_same(got[output], want[output], output)
    assert_frame_equals_onnxruntime(model.predict(frame.astype(object)), want, frame.index)
    assert_frame_equals_onnxruntime(model.predict(frame.astype({"b": object})), want, frame.index)
    assert_frame_equals_onnxruntime(model.predict(pd.DataFrame(matrix.astype(object))), want, frame.index)
    # None is NaN for a float input, as in np.asarray(..., dtype=float64).
    holes = matrix.astype(object)
    holes[1, 2] = None
    want = onnxruntime_outputs(IRIS_STR, {"input": np.asarray(holes, dtype=np.float64).astype(np.float32)})
    got = model.predict(holes)
    for output in want:
        assert_same(got[output], want[output], output)

    bad = matrix.astype(object)
    bad[2, 3] = "abc"
    with pytest.raises(ferroserve.PredictError, match=r"input 'input'.*'abc'.*row 2, column 3"):
        model.predict(bad)
    with pytest.raises(ferroserve.PredictError, match=r"column 3.*'abc'.*row 2"):
        model.predict(pd.DataFrame(bad))


def test_an_onnx_model_with_one_input_per_column_takes_object_number_columns():
    # Bug: "input 'age' takes str or bytes; got float".
    model = ferroserve.Model.load(BANK_COLUMNS)
    feeds = feeds_for(BANK_COLUMNS, "bank_columns")
    want = onnxruntime_outputs(BANK_COLUMNS, feeds)
    frame = pd.DataFrame({name: values.reshape(-1) for name, values in feeds.items()})
    got = model.predict(frame.assign(age=frame["age"].astype(object)))
    assert_frame_equals_onnxruntime(got, want, frame.index)
    got = model.predict(frame.astype(object))
    assert_frame_equals_onnxruntime(got, want, frame.index)
    got = model.predict(dict(feeds, age=feeds["age"].astype(np.float64).astype(object)))
    for output in want:
        assert_same(got[output], want[output], output)

    bad = frame.astype({"balance": object})
    bad.loc[5, "balance"] = "unknown"
    with pytest.raises(ferroserve.PredictError, match=r"column 'balance'.*'unknown'.*row 5"):
        model.predict(bad)
    # A text input still takes text only.
    with pytest.raises(ferroserve.PredictError, match="input 'job' takes str or bytes; got int"):
        model.predict(frame.assign(job=pd.Series([7] * len(frame), dtype=object)))


def test_object_arrays_of_integers_and_booleans_keep_their_values():
    model = ferroserve.Model.load(MULTI_IO)
    big = 2**53 + 1  # not a float64: an int64 input must get it exactly
    feeds = {
        "f32": np.array([[1.5, 2.0], [-1.0, 0.25]], np.float32),
        "f64": np.array([0.1, np.nan]),
        "i32": np.array([-3, 4], np.int32),
        "i64": np.array([big, -9000000000], np.int64),
        "flag": np.array([True, False]),
        "text": np.array(["setosa", "über"], dtype=object),
    }
    want = onnxruntime_outputs(MULTI_IO, feeds)
    objects = {
        "f32": feeds["f32"].astype(object),
        "f64": np.array([0.1, None], dtype=object),
        "i32": np.array([-3, np.int64(4)], dtype=object),
        "i64": np.array([big, -9000000000], dtype=object),
        "flag": np.array([True, np.bool_(False)], dtype=object),
        "text": feeds["text"],
    }
    got = model.predict(objects)
    for output in want:
        assert_same(got[output], want[output], output)
    assert got["i64_neg"][0] == -big
    frame = pd.DataFrame({name: list(values) if values.ndim == 2 else values for name, values in objects.items()})
    assert_frame_equals_onnxruntime(model.predict(frame), want, frame.index)

    # No NaN in an integer input: a missing value there is refused, naming it.
    with pytest.raises(ferroserve.PredictError, match=r"input 'i64'.*missing value.*row 1.*int64"):
        model.predict(dict(objects, i64=np.array([1, None], dtype=object)))
    with pytest.raises(ferroserve.PredictError, match=r"column 'i32' has a missing value \(row 0\)"):
        model.predict(frame.assign(i32=pd.Series([None, 4], dtype=object)))
