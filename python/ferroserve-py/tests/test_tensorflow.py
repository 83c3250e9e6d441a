"""TensorFlow SavedModels through the ferroserve package against TensorFlow's own outputs.

Fixtures: the server's tests/fixtures/tensorflow/<model>/1 (made by
python/make_tf_models.py; each expected.json holds, per signature, the inputs and what
TensorFlow gave for them). Each model is run by ferroserve (the server's TensorFlow
backend on TensorFlow's C API) through numpy, pandas and Arrow; floats must equal
TensorFlow's within 1e-6 relative (as the server's tests/tensorflow.rs checks), every
other dtype exactly.

TensorFlow's libraries come from FERROSERVE_TENSORFLOW_PATH (run_tests.sh points it at
the .venv-tf environment scripts/setup.sh makes) or an installed tensorflow wheel; where
neither is there, these tests are skipped.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import ferroserve

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
FIXTURES = os.path.join(ROOT, "tests/fixtures/tensorflow")
MODELS = ["mlp", "cnn", "multi", "text"]


def _tensorflow_available():
    try:
        ferroserve._tensorflow_library()
        return True
    except ferroserve.ModelError:
        return False


if not _tensorflow_available():
    pytest.skip(
        "TensorFlow's libraries are not installed (no tensorflow wheel, no "
        "FERROSERVE_TENSORFLOW_PATH)",
        allow_module_level=True,
    )


def model_dir(name):
    return os.path.join(FIXTURES, name, "1")


def expected(name):
    with open(os.path.join(FIXTURES, name, "expected.json")) as f:
        return json.load(f)


def to_numpy(t):
    if t["dtype"] == "string":
        array = np.empty(len(t["data"]), dtype=object)
        array[:] = t["data"]
        return array.reshape(t["shape"])
    return np.asarray(t["data"], dtype=t["dtype"]).reshape(t["shape"])


def assert_equal_to_tensorflow(got, want, what):
    want = to_numpy(want)
    got = np.asarray(got)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if want.dtype.kind == "f":
        assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
        # Within 1e-6 relative, or 1e-6 absolute for values near 0: the package runs
        # TensorFlow's own kernels (it turns oneDNN off), and a fixture recorded with
        # oneDNN's sums a convolution in another order: -0.01293194 against
        # -0.01293186 in the cnn's logits, a few float32 steps of its terms (~0.5).
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=what)
    elif want.dtype == object:
        assert [str(v) for v in got.reshape(-1)] == [str(v) for v in want.reshape(-1)], what
    else:
        assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
        np.testing.assert_array_equal(got, want, err_msg=what)


def cases():
    for name in MODELS:
        for signature in sorted(expected(name)):
            yield pytest.param(name, signature, id="%s-%s" % (name, signature))


@pytest.mark.parametrize("name,signature", list(cases()))
def test_numpy_outputs_equal_tensorflows(name, signature):
    case = expected(name)[signature]
    inputs = {k: to_numpy(t) for k, t in case["inputs"].items()}
    model = ferroserve.Model.load(model_dir(name), signature_name=signature)
    assert model.format == "tensorflow"
    assert model.signature_name == signature
    got = model.predict(inputs)
    assert sorted(got) == sorted(case["outputs"])
    for output, want in case["outputs"].items():
        assert_equal_to_tensorflow(got[output], want, "%s %s %s" % (name, signature, output))
    # The same through the default model with signature_name= and with_signature.
    default = ferroserve.Model.load(model_dir(name))
    for result in (
        default.predict(inputs, signature_name=signature),
        default.with_signature(signature).predict(inputs),
    ):
        for output, want in case["outputs"].items():
            assert_equal_to_tensorflow(result[output], want, "%s %s %s" % (name, signature, output))


def test_an_input_of_any_rank_takes_every_shape_tensorflow_takes():
    model = ferroserve.Model.load(model_dir("any_rank"))
    assert model.signature["inputs"] == [{"name": "x", "dtype": "float32", "shape": None}]
    for case in expected("any_rank")["cases"]:
        x = to_numpy(case["inputs"]["x"])
        got = model.predict({"x": x})["y"]
        assert_equal_to_tensorflow(got, case["outputs"]["y"], "shape %s" % (x.shape,))


def test_a_one_input_model_takes_a_bare_array_and_a_dataframe_and_arrow():
    case = expected("mlp")["serving_default"]
    features = to_numpy(case["inputs"]["features"])
    want = case["outputs"]["probabilities"]
    model = ferroserve.Model.load(model_dir("mlp"))
    assert_equal_to_tensorflow(model.predict(features)["probabilities"], want, "numpy")
    # float64 columns are cast to the signature's float32, as the server casts them.
    frame = pd.DataFrame(features.astype(np.float64), columns=["a", "b", "c", "d"], index=[7, 8, 9, 10, 11])
    out = model.predict(frame)
    assert list(out.index) == [7, 8, 9, 10, 11]
    assert_equal_to_tensorflow(np.stack(out["probabilities"].to_list()), want, "pandas")
    batch = pa.record_batch(frame.reset_index(drop=True))
    got = model.predict(batch)
    assert isinstance(got, pa.RecordBatch)
    assert_equal_to_tensorflow(np.asarray(got.column("probabilities").to_pylist(), dtype=np.float32), want, "arrow")
    table = model.predict(pa.Table.from_batches([batch, batch]))
    assert isinstance(table, pa.Table) and table.num_rows == 2 * len(features)


def test_named_inputs_from_arrow_columns_and_text_from_pandas():
    case = expected("multi")["serving_default"]
    inputs = {k: to_numpy(t) for k, t in case["inputs"].items()}
    model = ferroserve.Model.load(model_dir("multi"))
    x = inputs["x"]
    batch = pa.record_batch(
        {
            "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]),
            "count": pa.array(inputs["count"]),
            "flag": pa.array(inputs["flag"]),
        }
    )
    got = model.predict(batch)
    for output, want in case["outputs"].items():
        assert_equal_to_tensorflow(got.column(output).to_numpy(zero_copy_only=False), want, output)

    case = expected("text")["serving_default"]
    model = ferroserve.Model.load(model_dir("text"))
    frame = pd.DataFrame({"words": case["inputs"]["words"]["data"]})
    out = model.predict(frame)
    for output, want in case["outputs"].items():
        assert_equal_to_tensorflow(out[output].to_numpy(), want, output)


def test_signatures_list_the_served_ones_with_their_tensors():
    model = ferroserve.Model.load(model_dir("multi"))
    assert model.signature_name == "serving_default"
    signatures = model.signatures
    # `half` has a float16 output, which the backend does not serve: it is left out.
    assert sorted(signatures) == ["combine", "serving_default"]
    default = model.signature
    assert [i["name"] for i in default["inputs"]] == ["count", "flag", "x"]
    assert {i["name"]: (i["dtype"], i["shape"]) for i in default["inputs"]} == {
        "count": ("int64", [-1]),
        "flag": ("bool", [-1]),
        "x": ("float32", [-1, 3]),
    }
    assert [o["name"] for o in default["outputs"]] == ["doubled", "gated", "positive", "score"]
    assert "serving_default" in default["description"]
    assert signatures["serving_default"]["inputs"] == default["inputs"]
    assert signatures["combine"]["method_name"] == "tensorflow/serving/predict"
    combine = model.with_signature("combine")
    assert [i["name"] for i in combine.signature["inputs"]] == ["a", "b"]
    assert combine.signature_name == "combine"
    # A saved_model.pb path loads its directory.
    by_file = ferroserve.Model.load(os.path.join(model_dir("mlp"), "saved_model.pb"))
    assert by_file.format == "tensorflow"


def test_bad_signatures_inputs_and_directories_raise_clear_errors(tmp_path):
    model = ferroserve.Model.load(model_dir("multi"))
    with pytest.raises(ferroserve.ModelError, match='no signature "half"' ):
        model.with_signature("half")
    with pytest.raises(ferroserve.ModelError, match="combine, serving_default"):
        ferroserve.Model.load(model_dir("multi"), signature_name="nope")
    with pytest.raises(ferroserve.PredictError, match="no signature"):
        model.predict({}, signature_name="nope")
    with pytest.raises(ferroserve.PredictError, match="missing"):
        model.predict({"x": np.zeros((2, 3), dtype=np.float32)})
    with pytest.raises(ferroserve.PredictError, match="no input"):
        model.predict({"nope": np.zeros(2)})
    with pytest.raises(ferroserve.PredictError, match=r"shape"):
        model.predict(
            {
                "x": np.zeros((2, 4), dtype=np.float32),
                "count": np.zeros(2, dtype=np.int64),
                "flag": np.zeros(2, dtype=bool),
            }
        )
    with pytest.raises(ferroserve.PredictError, match="does not fit"):
        model.predict(
            {
                "x": np.zeros((2, 3), dtype=np.float32),
                "count": np.array([0.5, 1.0]),
                "flag": np.zeros(2, dtype=bool),
            }
        )
    with pytest.raises(ferroserve.PredictError, match="fastText"):
        model.predict({}, k=2)
    with pytest.raises(ferroserve.ModelError, match="without saved_model.pb"):
        ferroserve.Model.load(str(tmp_path))
    # A SavedModel whose variables are gone is refused at load, not at every run.
    broken = tmp_path / "mlp"
    shutil.copytree(model_dir("mlp"), broken)
    shutil.rmtree(broken / "variables")
    with pytest.raises(ferroserve.ModelError, match="variables"):
        ferroserve.Model.load(str(broken))
    with pytest.raises(ferroserve.ModelError, match="MetaGraph|tags|serve2"):
        ferroserve.Model.load(model_dir("mlp"), tags=["serve2"])


def test_a_convolution_of_the_wrong_rank_raises_and_the_process_goes_on():
    # oneDNN's Conv2D aborted the process on a tensor that is not of rank 4 (which an
    # input of unknown shape lets through); importing ferroserve turns oneDNN off.
    # In a process of its own, whose environment does not set the variable.
    code = (
        "import numpy as np, ferroserve\n"
        "m = ferroserve.Model.load(%r)\n"
        "try:\n"
        "    m.predict({'x': np.ones((2, 2, 1), dtype=np.float32)})\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
        "print('alive')\n"
    ) % model_dir("conv_any_rank")
    env = dict(os.environ)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "PredictError" in run.stdout and "4-dimensional" in run.stdout, run.stdout
    assert run.stdout.rstrip().endswith("alive"), run.stdout


def test_the_library_comes_from_the_environment_or_the_wheel(monkeypatch, tmp_path):
    monkeypatch.delenv("FERROSERVE_TENSORFLOW_PATH", raising=False)
    # With no variable, the installed tensorflow wheel's package directory, found by
    # its import machinery (a fake one on sys.path here).
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('never imported')\n")
    (fake / ferroserve.TENSORFLOW_LIBRARY).write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert ferroserve._tensorflow_library() == str(fake)
    (fake / ferroserve.TENSORFLOW_LIBRARY).unlink()
    with pytest.raises(ferroserve.ModelError, match="tensorflow-cpu"):
        ferroserve._tensorflow_library()
    monkeypatch.setenv("FERROSERVE_TENSORFLOW_PATH", "/somewhere")
    assert ferroserve._tensorflow_library() is None


def test_predict_releases_the_gil():
    from test_onnx import assert_runs_without_the_gil

    model = ferroserve.Model.load(model_dir("cnn"))
    native = model._native  # the native call alone: it is what must run without the GIL
    n_rows = 256
    native._predict_tensors([("image", "float32", [1, 8, 8, 1], bytes(256))])  # warm-up
    while True:
        images = np.random.default_rng(1).uniform(0, 1, size=(n_rows, 8, 8, 1)).astype(np.float32)
        tensors = [("image", "float32", [n_rows, 8, 8, 1], images.tobytes())]
        start = time.perf_counter()
        native._predict_tensors(tensors)
        if time.perf_counter() - start >= 0.1 or n_rows >= 1_000_000:
            break
        n_rows *= 2
    assert_runs_without_the_gil(lambda: native._predict_tensors(tensors))


def test_loading_a_saved_model_leaves_openssl_importable():
    # Bug: TensorFlow's libraries were opened RTLD_GLOBAL, so their BoringSSL symbols
    # took the place of OpenSSL's, and importing _hashlib (hashlib, ssl, pandas, ...)
    # after a load crashed the process (SIGSEGV). A fresh interpreter: nothing may have
    # loaded OpenSSL before the model.
    script = (
        "import sys, ferroserve\n"
        "ferroserve.Model.load(sys.argv[1])\n"
        "import _hashlib, hashlib\n"
        "assert hashlib.sha256(b'x').hexdigest().startswith('2d711642')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, model_dir("mlp")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def serialized_example(features):
    """A tf.train.Example in its wire format (what `SerializeToString` gives), made
    without TensorFlow: float lists, int64 lists and bytes features."""
    entries = b""
    for key, value in sorted(features.items()):
        if isinstance(value, list):  # FloatList, packed
            feature = _field(2, _field(1, struct.pack("<%df" % len(value), *value)))
        elif isinstance(value, int):  # Int64List, packed
            feature = _field(3, _field(1, _varint(value)))
        else:  # BytesList
            feature = _field(1, _field(1, value.encode()))
        entries += _field(1, _field(1, key.encode()) + _field(2, feature))
    return _field(1, entries)


def test_string_inputs_take_bytes_unchanged():
    # Bug: string inputs had to be valid UTF-8 (bytes were decoded, Arrow binary refused),
    # so serialized tf.train.Examples, what a TF1 estimator's signatures take, could not
    # be given at all.
    want = expected("tf1_classifier")
    examples = [serialized_example(e) for e in want["examples"]]
    assert any(not _is_utf8(e) for e in examples)
    scores = np.array(want["predict"]["scores"]["data"], dtype=np.float32).reshape(4, 3)
    model = ferroserve.Model.load(model_dir("tf1_classifier"), signature_name="predict")
    as_object = np.empty(len(examples), dtype=object)
    as_object[:] = examples
    for data in (as_object, np.array(examples), {"examples": as_object}):
        np.testing.assert_allclose(model.predict(data)["scores"], scores, rtol=1e-6)
    for column in (pa.array(examples, pa.binary()), pa.array(examples, pa.large_binary())):
        got = model.predict(pa.record_batch({"examples": column}))
        np.testing.assert_allclose(np.array(got.column("scores").to_pylist()), scores, rtol=1e-6)
    got = model.predict(pd.DataFrame({"examples": examples}))
    np.testing.assert_allclose(np.stack(got["scores"].to_list()), scores, rtol=1e-6)
    # The classify and regress signatures, as TensorFlow gave them.
    classify = model.with_signature("serving_default").predict(as_object)
    assert classify["classes"].tolist() == [[c for c, _ in row] for row in want["classify"]["serving_default"]]
    np.testing.assert_allclose(
        classify["scores"], [[s for _, s in row] for row in want["classify"]["serving_default"]], rtol=1e-6
    )
    regress = model.predict(as_object, signature_name="regression")["outputs"]
    np.testing.assert_allclose(regress, want["regress"], rtol=1e-6)


def _is_utf8(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_string_outputs_are_str_when_utf8_else_bytes():
    # Bug: string outputs were decoded with replacement characters (lossy). An output
    # whose elements are all UTF-8 is str (as ONNX strings are); any other is bytes,
    # every element, unchanged; in Arrow a string or a binary column.
    model = ferroserve.Model.load(model_dir("text"))
    words = np.array([b"\xffcat", b"dog"], dtype=object)
    got = model.predict(words)
    assert got["upper"].tolist() == [b"\xffCAT", b"DOG"]
    assert got["length"].tolist() == [4, 3]
    assert model.predict(np.array([b"dog", "cat"], dtype=object))["upper"].tolist() == ["DOG", "CAT"]
    batch = pa.record_batch({"words": pa.array(list(words), pa.binary())})
    got = model.predict(batch)
    assert got.column("upper").type == pa.binary()
    assert got.column("upper").to_pylist() == [b"\xffCAT", b"DOG"]
    utf8 = pa.record_batch({"words": pa.array(["dog"])})
    assert model.predict(utf8).column("upper").to_pylist() == ["DOG"]
    # A stream has one schema: the column is binary in every batch when one needs it.
    table = model.predict(pa.Table.from_batches([utf8.cast(batch.schema), batch]))
    assert table.column("upper").type == pa.binary()
    assert table.column("upper").to_pylist() == [b"DOG", b"\xffCAT", b"DOG"]


def test_a_str_tag_is_one_tag():
    # Bug: tags="serve" was taken as the tags "s", "e", "r", "v", "e".
    model = ferroserve.Model.load(model_dir("mlp"), tags="serve")
    assert model.format == "tensorflow"
    with pytest.raises(TypeError, match="tags"):
        ferroserve.Model.load(model_dir("mlp"), tags=1)
