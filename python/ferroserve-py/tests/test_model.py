"""The ferroserve Python package against scikit-learn.

Fixture models: crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1 (each JSON file
holds the rows and what scikit-learn itself predicted, see make_sklearn_fixtures.py)
and examples/models. Every model is scored through each input kind it accepts: numpy,
pandas, an Arrow RecordBatch and an Arrow Table.
"""

import glob
import json
import os
import threading
import time

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import ferroserve

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SKLEARN_FIXTURES = os.path.join(ROOT, "crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1")
HOSTILE = os.path.join(ROOT, "crates/ferroserve-sklearn/tests/hostile")
IRIS = os.path.join(ROOT, "examples/models/iris_sklearn/1/model.joblib")


def fixture_cases():
    cases = []
    for path in sorted(glob.glob(os.path.join(SKLEARN_FIXTURES, "*.json"))):
        with open(path) as f:
            spec = json.load(f)
        for name in spec["files"]:
            cases.append(pytest.param(spec, os.path.join(SKLEARN_FIXTURES, name), id=name))
    return cases


def assert_predictions_equal(got, spec, shaped=False):
    """`got` equals scikit-learn's predict; `shaped`: it is a numpy answer, whose shape
    must be scikit-learn's too (a DataFrame or Arrow column holds one value a row)."""
    want = spec["predict"]
    if want and isinstance(want[0], list):
        if shaped:
            assert np.shape(got) == np.shape(want), (np.shape(got), np.shape(want))
        want = [v for row in want for v in row]
        got = np.asarray(got).reshape(-1)
    elif shaped:
        assert np.ndim(got) == 1, np.shape(got)
    got = list(got)
    assert len(got) == len(want)
    if spec["classifier"]:
        assert [type(w)(g) for g, w in zip(got, want)] == want
    else:
        tolerance = 1e-6 if "float32" in spec["name"] else 1e-9
        np.testing.assert_allclose(np.asarray(got, dtype=float), want, rtol=tolerance, atol=1e-12)


def frame_of(spec):
    """The fixture's rows as a DataFrame, as scikit-learn was given them."""
    data = spec["input"]
    if data["kind"] == "dense":
        rows = np.array(data["rows"], dtype=np.float64)
        names = spec["feature_names"] or ["x%d" % i for i in range(rows.shape[1])]
        return pd.DataFrame(rows, columns=names)
    if data["kind"] == "text":
        return pd.DataFrame({"text": data["docs"]})
    columns = {}
    for column in data["columns"]:
        if column["kind"] == "numeric":
            columns[column["name"]] = pd.Series(
                [np.nan if v is None else v for v in column["values"]], dtype="float64"
            )
        else:
            columns[column["name"]] = pd.Series(column["values"], dtype=object)
    return pd.DataFrame(columns)


@pytest.mark.parametrize("spec,path", fixture_cases())
def test_fixture_predictions_equal_scikit_learn_through_every_input_kind(spec, path):
    model = ferroserve.Model.load(path)
    frame = frame_of(spec)
    kind = spec["input"]["kind"]
    if spec["predict"] and isinstance(spec["predict"][0], list):
        assert model.signature["outputs"][0]["shape"] == [-1, len(spec["predict"][0])]

    got = model.predict(frame)
    assert isinstance(got, pd.DataFrame)
    assert list(got.columns) == ["predict"]
    assert got.index.equals(frame.index)
    assert_predictions_equal(got["predict"], spec)

    if kind == "dense":
        got = model.predict(np.array(spec["input"]["rows"], dtype=np.float64))
        assert isinstance(got, np.ndarray)
        assert_predictions_equal(got, spec, shaped=True)
    elif kind == "text":
        got = model.predict(np.array(spec["input"]["docs"], dtype=object))
        assert_predictions_equal(got, spec, shaped=True)

    # Arrow from pandas keeps string columns as strings and missing numbers as nulls.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    batch = table.combine_chunks().to_batches()[0]
    got = model.predict(batch)
    assert isinstance(got, pa.RecordBatch)
    assert got.schema.names == ["predict"]
    assert_predictions_equal(got.column(0).to_pylist(), spec)

    # A table of several batches gives a table with the same batches, in order.
    split = pa.Table.from_batches([batch.slice(0, 5), batch.slice(5)])
    got = model.predict(split)
    assert isinstance(got, pa.Table)
    assert got.num_rows == frame.shape[0]
    assert_predictions_equal(got.column("predict").to_pylist(), spec)


def test_signature_names_inputs_and_outputs():
    model = ferroserve.Model.load(IRIS)
    signature = model.signature
    assert signature["inputs"] == [
        {
            "name": "input",
            "dtype": "float64",
            "shape": [-1, 4],
            "feature_names": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        }
    ]
    assert signature["outputs"] == [{"name": "predict", "dtype": "string", "shape": [-1]}]

    columns = ferroserve.Model.load(os.path.join(SKLEARN_FIXTURES, "ct_onehot_logreg.p5.pkl"))
    inputs = {i["name"]: i for i in columns.signature["inputs"]}
    assert inputs["age"]["dtype"] == "float64"
    assert inputs["city"]["dtype"] == "string"


def iris_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform([4.0, 2.0, 1.0, 0.1], [8.0, 4.5, 7.0, 2.5], size=(n, 4))


def test_iris_equals_live_scikit_learn_and_selects_columns_by_name():
    estimator = joblib.load(IRIS)["model"]
    model = ferroserve.Model.load(IRIS)
    rows = iris_rows(500)
    want = estimator.predict(rows)
    assert list(model.predict(rows)) == list(want)

    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame = pd.DataFrame(rows, columns=names)
    # Columns are matched by the model's feature names, whatever their order.
    shuffled = frame[names[::-1]]
    assert list(model.predict(shuffled)["predict"]) == list(want)
    got = model.predict(pa.RecordBatch.from_pandas(shuffled, preserve_index=False))
    assert got.column(0).to_pylist() == list(want)
    # Narrower integer and float types are widened to float64.
    as_f32 = pa.record_batch([pa.array(rows[:, i], pa.float32()) for i in range(4)], names=names)
    want32 = estimator.predict(rows.astype(np.float32).astype(np.float64))
    assert model.predict(as_f32).column(0).to_pylist() == list(want32)


def test_bad_input_raises_a_clear_error():
    model = ferroserve.Model.load(IRIS)
    with pytest.raises(ferroserve.PredictError, match="features"):
        model.predict(np.zeros((2, 3)))
    with pytest.raises(ferroserve.PredictError, match="2-D"):
        model.predict(np.zeros(4))
    # Numbers float64 cannot hold, text and ragged rows: refused, never cast.
    for data, message in [
        (np.array([["a", "1", "1", "1"]]), "array of text"),
        (np.array([[1 + 2j, 1, 1, 1]]), "complex numbers"),
        (np.zeros((1, 4), dtype="datetime64[s]"), "dates"),
        ([[1, 2, 3, 4], [1, 2]], "not a rectangular array"),
        (np.array([[1.0, "x", 1.0, 1.0]], dtype=object), "expected numbers"),
    ]:
        with pytest.raises(ferroserve.PredictError, match=message):
            model.predict(data)
    assert model.predict(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=object)).shape == (1,)
    with pytest.raises(ferroserve.PredictError, match="missing input column"):
        model.predict(pa.record_batch({"a": ["x"], "b": ["y"], "c": ["z"], "d": ["w"]}))
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    with pytest.raises(ferroserve.PredictError, match="holds text"):
        model.predict(pa.record_batch({n: ["x"] for n in names}))
    with pytest.raises(ferroserve.PredictError, match="not a number type"):
        model.predict(pa.record_batch({n: pa.array([[1.0]]) for n in names}))
    with pytest.raises(ferroserve.PredictError, match="4 features"):
        model.predict(pa.record_batch({"a": [1.0]}))
    columns = ferroserve.Model.load(os.path.join(SKLEARN_FIXTURES, "ct_onehot_logreg.p5.pkl"))
    with pytest.raises(ferroserve.PredictError, match="by name"):
        columns.predict(np.zeros((1, 4)))
    with pytest.raises(ferroserve.PredictError, match="no column"):
        columns.predict(pd.DataFrame({"age": [1.0]}))
    with pytest.raises(ferroserve.ModelError, match="cannot read"):
        ferroserve.Model.load(os.path.join(ROOT, "no-such-model.joblib"))


def hostile_cases():
    with open(os.path.join(HOSTILE, "expected_errors.json")) as f:
        expected = json.load(f)
    return [pytest.param(name, message, id=name) for name, message in sorted(expected.items())]


@pytest.mark.parametrize("name,message", hostile_cases())
def test_hostile_pickle_raises_with_the_readers_message_and_runs_nothing(name, message):
    # The corpus's payloads would create /tmp/ferroserve-canary-<name> if unpickled.
    for canary in glob.glob("/tmp/ferroserve-canary-*"):
        os.remove(canary)
    with pytest.raises(ferroserve.ModelError) as raised:
        ferroserve.Model.load(os.path.join(HOSTILE, "files", name))
    assert message in str(raised.value)
    assert glob.glob("/tmp/ferroserve-canary-*") == []


def test_predict_releases_the_gil():
    """A Python thread keeps running while another thread is inside a long predict."""
    model = ferroserve.Model.load(
        os.path.join(SKLEARN_FIXTURES, "knn_classifier.z3.joblib")
    )
    n_features = model.signature["inputs"][0]["shape"][1]
    native = model._native  # the native call alone: it is what must run without the GIL
    # A batch that takes at least 0.1 s here, however fast the machine.
    n_rows = 25_000
    while True:
        rows = np.random.default_rng(1).normal(size=(n_rows, n_features))
        payload = rows.tobytes()
        start = time.perf_counter()
        native._predict_dense(payload, n_rows, n_features)
        if time.perf_counter() - start >= 0.1 or n_rows >= 3_200_000:
            break
        n_rows *= 2

    wakeups = []
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            wakeups.append(time.perf_counter())
            time.sleep(0.001)

    sampling = threading.Thread(target=sampler)
    sampling.start()
    try:
        time.sleep(0.01)
        before = time.perf_counter()
        native._predict_dense(payload, rows.shape[0], n_features)
        after = time.perf_counter()
    finally:
        stop.set()
        sampling.join()
    assert after - before > 0.05, "the batch must be long enough to tell (%.3f s)" % (after - before)
    during = [t for t in wakeups if before < t < after]
    # Were the GIL held for the whole call, the sampler could not wake inside it at all.
    # Released, it wakes about every millisecond; allow a slow, loaded machine 10x.
    assert len(during) >= max(3, (after - before) / 0.01), (len(during), after - before)


def test_load_cached_loads_a_file_once_per_process():
    first = ferroserve.load_cached(IRIS)
    assert ferroserve.load_cached(os.path.relpath(IRIS)) is first
    assert ferroserve.Model.load(IRIS) is not first


def test_load_cached_keeps_only_the_model_of_the_file_there_now(tmp_path):
    # Bug: every version of a file republished under one path stayed cached for the
    # life of the process (13 MiB more per republished forest, never given back).
    import shutil

    path = str(tmp_path / "model.joblib")
    before = len(ferroserve._CACHE)
    models = []
    for i in range(3):
        shutil.copy(IRIS, path + ".tmp")
        os.utime(path + ".tmp", ns=(i * 10**9, i * 10**9))
        os.replace(path + ".tmp", path)
        model = ferroserve.load_cached(path)
        assert ferroserve.load_cached(path) is model
        assert all(model is not old for old in models)
        models.append(model)
    # One cached model for the path, the last: the others are the caller's alone.
    assert len(ferroserve._CACHE) == before + 1
    assert [m for _, m in ferroserve._CACHE.values() if m in models] == models[-1:]


IRIS_NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_named_columns_that_lack_a_feature_are_refused_not_taken_by_position():
    # Bug: a frame whose columns are named, one of them not a feature ("SL"), was scored
    # by column order, so a reordered frame silently gave other predictions.
    model = ferroserve.Model.load(IRIS)
    rows = iris_rows(50)
    frame = pd.DataFrame(rows, columns=IRIS_NAMES).rename(columns={"sepal_length": "SL"})
    reordered = frame[["petal_width", "SL", "sepal_width", "petal_length"]]
    message = r'no column for the model\'s feature "sepal_length".*4 features by name.*"SL"'
    for data in (
        frame,
        reordered,
        pa.RecordBatch.from_pandas(reordered, preserve_index=False),
        pa.Table.from_pandas(reordered, preserve_index=False),
    ):
        with pytest.raises(ferroserve.PredictError, match=message):
            model.predict(data)
    # Every feature missing: each is named.
    with pytest.raises(ferroserve.PredictError, match=r'features "sepal_length", "sepal_width", "petal_length", "petal_width"'):
        model.predict(pd.DataFrame(rows, columns=["a", "b", "c", "d"]))
    # A feature in two columns is ambiguous.
    twice = pd.DataFrame(rows[:, [0, 0, 1, 2, 3]], columns=["sepal_length"] + IRIS_NAMES)
    with pytest.raises(ferroserve.PredictError, match='2 columns named "sepal_length"'):
        model.predict(twice)


def test_unnamed_columns_still_go_by_position_and_extra_named_columns_are_left_out():
    model = ferroserve.Model.load(IRIS)
    rows = iris_rows(50)
    want = list(model.predict(rows))
    # pandas' default RangeIndex columns (and other integer labels) carry no names.
    assert list(model.predict(pd.DataFrame(rows))["predict"]) == want
    assert list(model.predict(pd.DataFrame(rows, columns=[10, 11, 12, 13]))["predict"]) == want
    # ... nor do they once in Arrow, where they become "0", "1", ...
    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    assert table.column_names == ["0", "1", "2", "3"]
    assert model.predict(table).column("predict").to_pylist() == want
    # Named columns with every feature: by name, whatever the order; others left out.
    frame = pd.DataFrame(rows, columns=IRIS_NAMES)
    frame["row_id"] = np.arange(len(frame), dtype=np.float64)
    shuffled = frame[["row_id"] + IRIS_NAMES[::-1]]
    assert list(model.predict(shuffled)["predict"]) == want
    batch = pa.RecordBatch.from_pandas(shuffled, preserve_index=False)
    assert model.predict(batch).column(0).to_pylist() == want


def test_a_model_without_feature_names_takes_named_columns_by_position():
    # As scikit-learn does (with a warning) for an estimator fitted on a numpy array.
    path = os.path.join(SKLEARN_FIXTURES, "random_forest_classifier.z3.joblib")
    model = ferroserve.Model.load(path)
    assert model.signature["inputs"][0].get("feature_names") is None
    n = model.signature["inputs"][0]["shape"][1]
    rows = np.random.default_rng(2).normal(size=(20, n))
    want = list(model.predict(rows))
    named = pd.DataFrame(rows, columns=["c%d" % i for i in range(n)])
    assert list(model.predict(named)["predict"]) == want
    assert model.predict(pa.RecordBatch.from_pandas(named, preserve_index=False)).column(0).to_pylist() == want


@pytest.mark.parametrize(
    "option,value,error",
    [
        ("sessions", 10_000, ValueError),
        ("sessions", 0, ValueError),
        ("sessions", -1, ValueError),
        ("threads", 2**40, ValueError),
        ("threads", 1025, ValueError),
        ("threads", -1, ValueError),
        ("threads", 1.5, TypeError),
    ],
)
def test_absurd_threads_and_sessions_are_refused(option, value, error):
    with pytest.raises(error, match=option):
        ferroserve.Model.load(IRIS, **{option: value})


def test_threads_and_sessions_within_bounds_load():
    assert ferroserve.MAX_THREADS == 1024 and ferroserve.MAX_SESSIONS == 256
    ferroserve.Model.load(IRIS, threads=0, sessions=1)
    ferroserve.Model.load(IRIS, threads=ferroserve.MAX_THREADS, sessions=ferroserve.MAX_SESSIONS)


TEXT_ZH = os.path.join(SKLEARN_FIXTURES, "text_tfidf_logreg_zh.z3.joblib")


def test_text_models_decode_bytes_and_refuse_missing_and_2d_documents():
    # Bug: bytes documents were scored as str(bytes) ("b'...'"), None and NaN as the
    # words "None" and "nan", and a 2-D array was flattened (2 rows in, 4 answers out).
    with open(TEXT_ZH.replace(".z3.joblib", ".json")) as f:
        docs = [d for d in json.load(f)["input"]["docs"] if d]
    estimator = joblib.load(TEXT_ZH)
    model = ferroserve.Model.load(TEXT_ZH)
    want = list(estimator.predict([d.encode() for d in docs]))
    assert want == list(estimator.predict(docs))
    as_bytes = np.empty(len(docs), dtype=object)
    as_bytes[:] = [d.encode() for d in docs]
    assert list(model.predict(as_bytes)) == want
    assert list(model.predict(np.array([d.encode() for d in docs]))) == want
    assert list(model.predict(pd.DataFrame({"text": list(as_bytes)}))["predict"]) == want
    assert list(model.predict(pa.record_batch({"text": pa.array(list(as_bytes), pa.binary())})).column(0).to_pylist()) == want
    with pytest.raises(ferroserve.PredictError, match="document 1 is missing"):
        model.predict(np.array(["a", None], dtype=object))
    with pytest.raises(ferroserve.PredictError, match="document 0 is missing"):
        model.predict(np.array([np.nan, "a"], dtype=object))
    with pytest.raises(ferroserve.PredictError, match="document 0 is missing"):
        model.predict(pd.DataFrame({"text": [None, "a"]}))
    with pytest.raises(ferroserve.PredictError, match="not valid UTF-8"):
        model.predict([b"\xff\xfe"])
    with pytest.raises(ferroserve.PredictError, match="1-D"):
        model.predict(np.array([["a", "b"], ["c", "d"]]))


def test_a_dict_of_columns_is_read_by_its_columns_never_its_keys():
    # Bug: a dict batch (Ray Data's batch_format="numpy") given to a text model was
    # scored as one document, str(dict).
    path = os.path.join(SKLEARN_FIXTURES, "text_tfidf_logreg.z3.joblib")
    model = ferroserve.Model.load(path)
    docs = np.array(["the team scored a goal", "new app for the phone", "cheese cake and bread"])
    want = list(joblib.load(path).predict(list(docs)))
    assert list(model.predict({"text": docs})) == want
    assert list(model.predict({"input": docs, "id": np.arange(3)})) == want
    with pytest.raises(ferroserve.PredictError, match="'a', 'b'"):
        model.predict({"a": docs, "b": docs})
    # A dense model reads a dict's columns by name, as a DataFrame's.
    iris = ferroserve.Model.load(IRIS)
    rows = np.random.default_rng(5).uniform(1, 7, size=(6, 4))
    columns = {name: rows[:, j] for j, name in reversed(list(enumerate(IRIS_NAMES)))}
    assert list(iris.predict(columns)) == list(iris.predict(rows))


def test_a_struct_array_with_null_rows_is_refused_not_a_panic():
    # Bug: arrow-rs's RecordBatch::from(StructArray) panicked on null rows
    # (pyo3's PanicException, a BaseException).
    rows = pa.StructArray.from_arrays(
        [pa.array(np.arange(3.0)) for _ in IRIS_NAMES], names=IRIS_NAMES, mask=pa.array([False, True, False])
    )
    with pytest.raises(ferroserve.PredictError, match="1 null rows.*row 1"):
        ferroserve.Model.load(IRIS).predict(rows)
    # Without null rows a struct array is a record batch.
    valid = pa.StructArray.from_arrays([pa.array(np.arange(3.0)) for _ in IRIS_NAMES], names=IRIS_NAMES)
    assert len(ferroserve.Model.load(IRIS).predict(valid)) == 3


def test_a_model_says_it_cannot_be_pickled_and_what_to_do():
    import copy
    import pickle

    model = ferroserve.Model.load(IRIS)
    for dump in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError, match="cannot be pickled.*load_cached"):
            dump(model)


def test_devices_fifos_and_missing_files_are_refused_before_reading(tmp_path):
    # Bug: /dev/zero was read until memory ran out; /dev/urandom and a FIFO forever.
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", "/dev/urandom", str(fifo)):
        with pytest.raises(ferroserve.ModelError, match="not a regular file"):
            ferroserve.Model.load(path)
    # Bug: load_cached raised FileNotFoundError where Model.load raises ModelError.
    missing = str(tmp_path / "missing.joblib")
    for load in (ferroserve.Model.load, ferroserve.load_cached):
        with pytest.raises(ferroserve.ModelError, match="cannot read"):
            load(missing)
    # A bytes path is a path.
    assert ferroserve.Model.load(IRIS.encode()).format == "sklearn"


def test_pandas_arrays_are_read_as_the_series_they_make():
    # Bug: a string column's `.values` (an ArrowStringArray), a Categorical or a
    # nullable float array raised IndexError / AttributeError instead of an answer.
    path = os.path.join(SKLEARN_FIXTURES, "text_tfidf_logreg.z3.joblib")
    model = ferroserve.Model.load(path)
    texts = pd.Series(["good movie", "bad plot", "the compiler crashed"], dtype="string")
    want = list(model.predict(list(texts)))
    for data in (texts.values, texts.array, pd.Categorical(texts), pd.Index(texts)):
        got = model.predict(data)
        assert list(got[ferroserve.PREDICT_OUTPUT]) == want, type(data).__name__
    iris = ferroserve.Model.load(IRIS)
    with pytest.raises(ferroserve.PredictError):
        iris.predict(pd.array([5.1, 3.5, 1.4, 0.2], dtype="Float64"))


def test_arrow_decimal_columns_are_numbers_as_pandas_reads_them():
    # Bug: a decimal column (Spark's DecimalType through mapInArrow) was refused as
    # "not a number type", while the same Decimal objects in a DataFrame were read.
    import decimal

    model = ferroserve.Model.load(IRIS)
    rows = iris_rows(20)
    text = {n: ["%.4f" % r[i] for r in rows] for i, n in enumerate(IRIS_NAMES)}
    frame = pd.DataFrame({n: [decimal.Decimal(t) for t in v] for n, v in text.items()})
    want = model.predict(frame)[ferroserve.PREDICT_OUTPUT].tolist()
    for kind in (pa.decimal128(10, 4), pa.decimal256(40, 6)):
        table = pa.table(
            {n: pa.array([decimal.Decimal(t) for t in v], kind) for n, v in text.items()}
        )
        got = model.predict(table).column(ferroserve.PREDICT_OUTPUT).to_pylist()
        assert got == want, kind
