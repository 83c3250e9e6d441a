"""ONNX models through the ferroserve package against onnxruntime's own Python API.

Fixtures: tests/fixtures/onnx (made by python/make_onnx_models.py; each expected.json
holds the inputs and what onnxruntime gave) and examples/models/iris_lr. Each model is
run by ferroserve (the server's ONNX backend, on the library of the installed
onnxruntime wheel or ORT_DYLIB_PATH) through numpy, pandas and Arrow, and by
`onnxruntime.InferenceSession` with the backend's session options on the same inputs;
the outputs must be equal, floats bit for bit (the same library, the same options).
"""

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import ferroserve

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
FIXTURES = os.path.join(ROOT, "tests/fixtures/onnx")
IRIS_LR = os.path.join(ROOT, "examples/models/iris_lr/1/model.onnx")
NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


def expected(name):
    with open(os.path.join(FIXTURES, name, "expected.json")) as f:
        return json.load(f)


def onnxruntime_outputs(path, feeds):
    """What onnxruntime gives with the session options of ferroserve's ONNX backend
    (one intra-op and one inter-op thread, graph optimization to the layout level)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_LAYOUT
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def feeds_for(path, name):
    """The inputs each model is scored on, typed as the graph declares them."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    types = {i.name: NUMPY_TYPES[i.type] for i in session.get_inputs()}
    if name == "iris_lr":
        rng = np.random.default_rng(3)
        rows = rng.uniform([4.0, 2.0, 1.0, 0.1], [8.0, 4.5, 7.0, 2.5], size=(40, 4))
        (input_name,) = types
        return {input_name: rows.astype(types[input_name])}
    spec = expected(name)
    if "rows" in spec:
        return {spec["input"]: np.array(spec["rows"], dtype=types[spec["input"]])}
    if "inputs" in spec:
        return {k: np.array(v, dtype=types[k]) for k, v in spec["inputs"].items()}
    return {k: np.array(v, dtype=types[k]).reshape(-1, 1) for k, v in spec["columns"].items()}


def assert_same(got, want, name):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    if want.dtype.kind == "f":
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    elif want.dtype.kind == "O":
        assert [str(x) for x in got.reshape(-1)] == [str(x) for x in want.reshape(-1)], name
    else:
        assert got.dtype == want.dtype, name
        assert np.array_equal(got, want), name


def arrow_column(values):
    """A numpy input as an Arrow column: 1-D as is, [n, k] as a fixed-size list."""
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.reshape(-1)
    if values.dtype == object:
        return pa.array([str(v) for v in values])
    if values.ndim == 1:
        return pa.array(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


CASES = [
    pytest.param(os.path.join(FIXTURES, n, "model.onnx"), n, id=n)
    for n in ["iris_str", "diabetes_f64", "multi_io", "bank_columns"]
] + [pytest.param(IRIS_LR, "iris_lr", id="iris_lr")]


@pytest.mark.parametrize("path,name", CASES)
def test_outputs_equal_onnxruntime_through_every_input_kind(path, name):
    model = ferroserve.Model.load(path)
    assert model.format == "onnx"
    feeds = feeds_for(path, name)
    want = onnxruntime_outputs(path, feeds)
    n_rows = len(next(iter(feeds.values())))

    # numpy: a dict of arrays in, a dict of arrays out, shapes as the graph gives them.
    got = model.predict(feeds)
    assert list(got) == list(want)
    for output in want:
        assert_same(got[output], want[output], output)
    if len(feeds) == 1:
        got = model.predict(next(iter(feeds.values())))
        for output in want:
            assert_same(got[output], want[output], output)

    # The committed outputs (from the script that made the fixture) agree too.
    if name != "iris_lr":
        for output, values in expected(name)["onnxruntime"].items():
            assert_same(got[output], np.array(values, dtype=want[output].dtype).reshape(want[output].shape), output)

    # Arrow: each input from its column (a one-input model: every column as its
    # matrix); a column per output, [n, k] outputs as fixed-size lists.
    if len(feeds) == 1:
        (matrix,) = feeds.values()
        columns = {"x%d" % j: arrow_column(matrix[:, j]) for j in range(matrix.shape[1])}
    else:
        columns = {k: arrow_column(v) for k, v in feeds.items()}
    batch = pa.record_batch(columns)
    got = model.predict(batch)
    assert isinstance(got, pa.RecordBatch)
    assert got.schema.names == list(want)
    for output, values in want.items():
        column = got.column(output).to_pylist()
        assert_same(np.array(column, dtype=values.dtype).reshape(values.shape), values, output)
    # A table of two batches: each batch is one run (ONNX Runtime's kernels for one row
    # may round differently from those for several, so compare with the same runs).
    table = pa.Table.from_batches([batch.slice(0, 1), batch.slice(1)])
    got = model.predict(table)
    assert isinstance(got, pa.Table) and got.num_rows == n_rows
    first = onnxruntime_outputs(path, {k: v[:1] for k, v in feeds.items()})
    rest = onnxruntime_outputs(path, {k: v[1:] for k, v in feeds.items()})
    for output in want:
        values = np.concatenate([first[output], rest[output]])
        column = got.column(output).to_pylist()
        assert_same(np.array(column, dtype=values.dtype).reshape(values.shape), values, output)

    # pandas: the same, with the frame's index kept (no 2-D cells in a DataFrame input).
    if all(np.asarray(v).ndim == 1 or np.asarray(v).shape[1] == 1 or len(feeds) == 1 for v in feeds.values()):
        if len(feeds) == 1:
            frame = pd.DataFrame(matrix, columns=list(columns))
        else:
            frame = pd.DataFrame({k: np.asarray(v).reshape(-1) for k, v in feeds.items()})
        frame.index = frame.index * 3
        got = model.predict(frame)
        assert isinstance(got, pd.DataFrame)
        assert got.index.equals(frame.index)
        assert list(got.columns) == list(want)
        for output, values in want.items():
            stacked = np.array(list(got[output]), dtype=values.dtype).reshape(values.shape)
            assert_same(stacked, values, output)


def test_signature_lists_the_graphs_inputs_and_outputs():
    model = ferroserve.Model.load(os.path.join(FIXTURES, "multi_io", "model.onnx"))
    signature = model.signature
    assert [(i["name"], i["dtype"]) for i in signature["inputs"]] == [
        ("f32", "float32"),
        ("f64", "float64"),
        ("i32", "int32"),
        ("i64", "int64"),
        ("flag", "bool"),
        ("text", "string"),
    ]
    assert signature["inputs"][0]["shape"] == [-1, 2]
    assert [o["name"] for o in signature["outputs"]] == [
        "f32_sum", "f64_neg", "i32_abs", "i64_neg", "flag_not", "text_out"
    ]
    iris = ferroserve.Model.load(os.path.join(FIXTURES, "iris_str", "model.onnx")).signature
    assert iris["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 4]}]
    assert [(o["name"], o["dtype"]) for o in iris["outputs"]] == [
        ("label", "string"),
        ("probabilities", "float32"),
    ]


def test_float16_in_and_out_as_onnxruntime_gives_them():
    """FP16 inputs and outputs (half_io): the halves onnxruntime-Python gave, bit for
    bit (the server's ONNX backend refused float16 before)."""
    exp = expected("half_io")
    model = ferroserve.Model.load(os.path.join(FIXTURES, "half_io", "model.onnx"))
    h = np.array(exp["input_bits"]["h"], dtype=np.uint16).view(np.float16).reshape(2, 3)
    x = np.array(exp["inputs"]["x"], dtype=np.float32)
    got = model.predict({"h": h, "x": x})
    for name in ["h_twice", "x_half"]:
        assert got[name].dtype == np.float16, name
        bits = got[name].view(np.uint16).reshape(-1).tolist()
        assert bits == exp["onnxruntime_half_bits"][name], name
    assert got["h_float"].dtype == np.float32
    assert got["h_float"].reshape(-1).tolist() == exp["onnxruntime"]["h_float"]


def test_the_runtime_comes_from_the_onnxruntime_wheel(monkeypatch):
    import onnxruntime

    monkeypatch.delenv("ORT_DYLIB_PATH", raising=False)
    library = ferroserve._onnxruntime_library()
    capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
    assert library == os.path.join(capi, ferroserve.ONNXRUNTIME_LIBRARY)
    # A library named by ORT_DYLIB_PATH is the native side's to open.
    monkeypatch.setenv("ORT_DYLIB_PATH", library)
    assert ferroserve._onnxruntime_library() is None
    # One that names no file says so, in this package's terms (the native side's
    # message named the server's --onnxruntime-path and scripts/setup.sh).
    monkeypatch.setenv("ORT_DYLIB_PATH", "/somewhere/libonnxruntime.so")
    with pytest.raises(ferroserve.ModelError, match="ORT_DYLIB_PATH is '/somewhere/"):
        ferroserve._onnxruntime_library()


def test_bad_input_raises_a_clear_error(tmp_path):
    model = ferroserve.Model.load(os.path.join(FIXTURES, "iris_str", "model.onnx"))
    with pytest.raises(ferroserve.PredictError, match=r"takes shape \[-1, 4\]"):
        model.predict(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ferroserve.PredictError, match='no input "nope"'):
        model.predict({"nope": np.zeros((1, 4))})
    with pytest.raises(ferroserve.PredictError, match="non-numeric"):
        model.predict(pd.DataFrame({"a": ["x"], "b": [1.0], "c": [1.0], "d": [1.0]}))
    with pytest.raises(ferroserve.PredictError, match="apply to fastText models"):
        model.predict(np.zeros((1, 4)), threshold=0.5)
    multi = ferroserve.Model.load(os.path.join(FIXTURES, "multi_io", "model.onnx"))
    with pytest.raises(ferroserve.PredictError, match="dict of input name"):
        multi.predict(np.zeros((1, 2)))
    feeds = feeds_for(os.path.join(FIXTURES, "multi_io", "model.onnx"), "multi_io")
    # A float that is not an integer is refused by an integer input, never truncated.
    with pytest.raises(ferroserve.PredictError, match="does not fit INT32"):
        multi.predict({**feeds, "i32": np.array([1.5, 2.0])})
    # An integer out of the input's range is refused, never wrapped.
    with pytest.raises(ferroserve.PredictError, match="does not fit INT32"):
        multi.predict({**feeds, "i32": np.array([2**40, 1])})
    with pytest.raises(ferroserve.PredictError, match="takes string"):
        multi.predict({**feeds, "text": np.array([1, 2])})
    with pytest.raises(ferroserve.PredictError, match='no column "flag"'):
        multi.predict(pa.record_batch({k: arrow_column(v) for k, v in feeds.items() if k != "flag"}))
    with pytest.raises(ferroserve.PredictError, match="has nulls"):
        multi.predict(pa.record_batch({**{k: arrow_column(v) for k, v in feeds.items()}, "i64": pa.array([1, None])}))

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07" + b"\xff" * 64)
    with pytest.raises(ferroserve.ModelError, match="cannot load ONNX model"):
        ferroserve.Model.load(broken)


def assert_runs_without_the_gil(call):
    """A Python thread keeps running while another thread is inside `call` (a native
    method, made to take at least 0.1 s): were the GIL held, it could not wake at all."""
    import threading
    import time

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
        call()
        after = time.perf_counter()
    finally:
        stop.set()
        sampling.join()
    assert after - before > 0.05, "the call must be long enough to tell (%.3f s)" % (after - before)
    during = [t for t in wakeups if before < t < after]
    assert len(during) >= max(3, (after - before) / 0.01), (len(during), after - before)


def test_predict_releases_the_gil():
    import time

    model = ferroserve.Model.load(os.path.join(FIXTURES, "iris_str", "model.onnx"))
    native = model._native  # the native call alone: it is what must run without the GIL
    n_rows = 50_000
    while True:
        rows = np.random.default_rng(1).uniform(0, 8, size=(n_rows, 4)).astype(np.float32)
        tensors = [("input", "float32", [n_rows, 4], rows.tobytes())]
        start = time.perf_counter()
        native._predict_tensors(tensors)
        if time.perf_counter() - start >= 0.1 or n_rows >= 6_400_000:
            break
        n_rows *= 2
    assert_runs_without_the_gil(lambda: native._predict_tensors(tensors))


MULTI_IO = os.path.join(FIXTURES, "multi_io", "model.onnx")
MULTI_IO_TAKES = (
    'the model takes "f32" (float32 [-1, 2]), "f64" (float64 [-1]), "i32" (int32 [-1]), '
    '"i64" (int64 [-1]), "flag" (bool [-1]), "text" (string [-1])'
)


def test_missing_inputs_are_named_before_anything_runs(capfd):
    # Bug: ONNX Runtime ran without the input and answered with its internal message
    # ("Missing Input: input", "Trying to get a TensorSeq, but got: (null)"), printed
    # to stderr too. The package now checks the names first, as the server does.
    multi = ferroserve.Model.load(MULTI_IO)
    feeds = feeds_for(MULTI_IO, "multi_io")
    capfd.readouterr()
    without_f32 = {k: v for k, v in feeds.items() if k != "f32"}
    with pytest.raises(ferroserve.PredictError) as raised:
        multi.predict(without_f32)
    assert str(raised.value) == 'input "f32" is missing; ' + MULTI_IO_TAKES
    with pytest.raises(ferroserve.PredictError) as raised:
        multi.predict({"f32": feeds["f32"], "flag": feeds["flag"]})
    assert str(raised.value) == 'inputs "f64", "i32", "i64", "text" are missing; ' + MULTI_IO_TAKES
    with pytest.raises(ferroserve.PredictError) as raised:
        multi.predict({})
    assert str(raised.value) == "no inputs given; " + MULTI_IO_TAKES
    # An unknown name is refused too, with what the model takes.
    with pytest.raises(ferroserve.PredictError) as raised:
        multi.predict({**feeds, "f16": feeds["f32"]})
    assert str(raised.value) == 'the model has no input "f16"; it takes' + MULTI_IO_TAKES[len("the model takes"):]

    iris = ferroserve.Model.load(IRIS_LR)
    (name,) = [i["name"] for i in iris.signature["inputs"]]
    with pytest.raises(ferroserve.PredictError, match=r'^no inputs given; the model takes "%s" \(float32 \[-1, 4\]\)$' % name):
        iris.predict({})
    # Nothing ran, so ONNX Runtime printed nothing.
    out, err = capfd.readouterr()
    assert "onnxruntime" not in err and "Missing Input" not in err, err
    # The whole dict still runs.
    assert set(multi.predict(feeds)) == {o["name"] for o in multi.signature["outputs"]}


def test_matrix_outputs_are_arrow_lists_that_spark_takes_and_lists_go_back_in():
    # Bug: [n, k] outputs were fixed-size lists, which Spark's mapInArrow refuses
    # (UNSUPPORTED_ARROWTYPE); they are lists, as the fastText columns are.
    model = ferroserve.Model.load(os.path.join(FIXTURES, "iris_str", "model.onnx"))
    rows = np.random.default_rng(2).uniform(0, 7, size=(5, 4)).astype(np.float32)
    want = model.predict(rows)["probabilities"]
    batch = pa.record_batch({"x%d" % j: rows[:, j] for j in range(4)})
    got = model.predict(batch)
    assert got.schema.field("probabilities").type == pa.list_(pa.float32())
    assert np.array_equal(np.array(got.column("probabilities").to_pylist(), dtype=np.float32), want)
    table = model.predict(pa.Table.from_batches([batch.slice(0, 2), batch.slice(2)]))
    assert table.schema.field("probabilities").type == pa.list_(pa.float32())
    # A list column whose rows are as long is a matrix input, as a fixed-size list is.
    lists = pa.record_batch({"input": pa.array(list(rows), pa.list_(pa.float32()))})
    assert np.array_equal(np.array(model.predict(lists).column("probabilities").to_pylist(), dtype=np.float32), want)
    ragged = pa.record_batch({"input": pa.array([[1.0, 2.0, 3.0, 4.0], [1.0]], pa.list_(pa.float32()))})
    with pytest.raises(ferroserve.PredictError, match="row 1 has 1 values"):
        model.predict(ragged)


def test_null_rows_scalars_and_bytes_that_are_not_utf8_are_refused():
    model = ferroserve.Model.load(os.path.join(FIXTURES, "iris_str", "model.onnx"))
    rows = pa.StructArray.from_arrays(
        [pa.array(np.arange(3.0)) for _ in range(4)], names=list("abcd"), mask=pa.array([False, True, True])
    )
    with pytest.raises(ferroserve.PredictError, match="2 null rows.*row 1"):
        model.predict(rows)
    multi = ferroserve.Model.load(os.path.join(FIXTURES, "multi_io", "model.onnx"))
    inputs = {
        "f32": np.ones((1, 2), np.float32),
        "f64": np.ones(1),
        "i32": np.ones(1, np.int32),
        "i64": np.ones(1, np.int64),
        "flag": np.ones(1, bool),
        "text": np.array([b"a"], dtype=object),
    }
    assert multi.predict(inputs)["text_out"].tolist() == list(
        multi.predict(dict(inputs, text=np.array(["a"], dtype=object)))["text_out"]
    )
    # A 0-d scalar for a [-1] input is refused, not taken as one row.
    with pytest.raises(ferroserve.PredictError, match="takes shape"):
        multi.predict(dict(inputs, f64=np.float64(1.0)))
    # ONNX strings are UTF-8: other bytes are refused with a clear message.
    with pytest.raises(ferroserve.PredictError, match="UTF-8"):
        multi.predict(dict(inputs, text=np.array([b"\xff"], dtype=object)))


def test_a_dict_of_feature_columns_is_read_as_a_dataframe():
    # Bug: Ray Data's batch_format="numpy" (a dict of column name to 1-D array) was
    # read as input names by a one-input model ("the model has no input 'a'"), while
    # the same columns as pandas or Arrow batches were its features.
    model = ferroserve.Model.load(os.path.join(FIXTURES, "iris_str", "model.onnx"))
    columns = {c: np.array([5.1, 6.7], dtype=np.float32) for c in "abcd"}
    columns["c"] = np.array([1.4, 5.2], dtype=np.float32)
    from_frame = model.predict(pd.DataFrame(columns))
    got = model.predict(columns)
    assert got["label"].tolist() == from_frame["label"].tolist()
    np.testing.assert_array_equal(
        got["probabilities"], np.stack(from_frame["probabilities"].to_numpy())
    )


def test_arrow_decimal_columns_are_float_inputs():
    # Bug: a decimal column (Spark's DecimalType through mapInArrow) was refused.
    import decimal

    model = ferroserve.Model.load(os.path.join(FIXTURES, "iris_str", "model.onnx"))
    rows = [["5.1", "3.5", "1.4", "0.2"], ["6.7", "3.0", "5.2", "2.3"]]
    floats = pa.table({c: pa.array([float(r[i]) for r in rows]) for i, c in enumerate("abcd")})
    decimals = pa.table(
        {c: pa.array([decimal.Decimal(r[i]) for r in rows], pa.decimal128(6, 2))
         for i, c in enumerate("abcd")}
    )
    assert model.predict(decimals).column("label").to_pylist() == (
        model.predict(floats).column("label").to_pylist()
    )
