"""fastText models through the ferroserve package against the fasttext package.

Fixtures: tests/fixtures/fasttext (made by python/make_fasttext_models.py in .venv-ft;
expected.json holds what the fasttext package's `predict(text, k, threshold)` gave for
each model, text, k and threshold). Labels must be equal, probabilities within 1e-5
(as crates/ferroserve-fasttext's own tests compare them).
"""

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import ferroserve

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
FIXTURES = os.path.join(ROOT, "tests/fixtures/fasttext")

with open(os.path.join(FIXTURES, "expected.json")) as f:
    EXPECTED = json.load(f)

_MODELS = {}


def model_for(name):
    if name not in _MODELS:
        _MODELS[name] = ferroserve.Model.load(os.path.join(FIXTURES, EXPECTED[name]["file"]))
    return _MODELS[name]


def assert_answer(labels, probabilities, case):
    assert list(labels) == case["labels"], case
    assert len(probabilities) == len(case["probabilities"])
    np.testing.assert_allclose(np.asarray(probabilities, dtype=float), case["probabilities"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_predictions_equal_the_fasttext_package(name):
    model = model_for(name)
    assert model.format == "fasttext"
    cases = EXPECTED[name]["cases"]
    for case in cases:
        labels, probabilities = model.predict(case["text"], k=case["k"], threshold=case["threshold"])
        assert isinstance(probabilities, np.ndarray) and probabilities.dtype == np.float32
        assert_answer(labels, probabilities, case)

    # Many texts at once, through each input kind, for each (k, threshold) pair.
    for k, threshold in sorted({(c["k"], c["threshold"]) for c in cases}):
        group = [c for c in cases if (c["k"], c["threshold"]) == (k, threshold)]
        texts = [c["text"] for c in group]

        labels, probabilities = model.predict(texts, k=k, threshold=threshold)
        for case, l, p in zip(group, labels, probabilities):
            assert_answer(l, p, case)

        frame = pd.DataFrame({"text": texts}, index=np.arange(len(texts)) * 10)
        got = model.predict(frame, k=k, threshold=threshold)
        assert list(got.columns) == ["labels", "probabilities"]
        assert got.index.equals(frame.index)
        for case, l, p in zip(group, got["labels"], got["probabilities"]):
            assert_answer(l, p, case)

        batch = pa.record_batch({"text": texts})
        got = model.predict(batch, k=k, threshold=threshold)
        assert isinstance(got, pa.RecordBatch)
        assert got.schema.names == ["labels", "probabilities"]
        for case, l, p in zip(group, got.column(0).to_pylist(), got.column(1).to_pylist()):
            assert_answer(l, p, case)

        table = pa.Table.from_batches([batch.slice(0, 1), batch.slice(1)])
        got = model.predict(table, k=k, threshold=threshold)
        assert isinstance(got, pa.Table) and got.num_rows == len(texts)
        for case, l, p in zip(group, got.column("labels").to_pylist(), got.column("probabilities").to_pylist()):
            assert_answer(l, p, case)


def test_defaults_are_k_1_and_threshold_0():
    model = model_for("softmax")
    case = next(c for c in EXPECTED["softmax"]["cases"] if c["k"] == 1 and c["threshold"] == 0.0)
    labels, probabilities = model.predict(case["text"])
    assert_answer(labels, probabilities, case)


def test_signature_lists_text_in_and_labels_out():
    model = model_for("softmax")
    signature = model.signature
    assert signature["inputs"] == [{"name": "text", "dtype": "string", "shape": [-1]}]
    assert [o["name"] for o in signature["outputs"]] == ["labels", "probabilities"]
    assert "__label__sports" in signature["labels"]
    assert "softmax" in signature["description"]


def test_bad_requests_raise_clear_errors():
    model = model_for("softmax")
    with pytest.raises(ferroserve.PredictError, match="newline"):
        model.predict("two\nlines")
    with pytest.raises(ferroserve.PredictError, match="k must be"):
        model.predict("text", k=0)
    with pytest.raises(ferroserve.PredictError, match="null"):
        model.predict(pa.record_batch({"text": ["a", None]}))
    with pytest.raises(ferroserve.PredictError, match="one text column"):
        model.predict(pd.DataFrame({"a": ["x"], "b": ["y"]}))
    with pytest.raises(ferroserve.PredictError, match="expected texts"):
        model.predict([1.5])
    iris = ferroserve.Model.load(os.path.join(ROOT, "examples/models/iris_sklearn/1/model.joblib"))
    with pytest.raises(ferroserve.PredictError, match="apply to fastText models"):
        iris.predict(np.zeros((1, 4)), k=2)


def test_a_truncated_model_raises_the_readers_message(tmp_path):
    with open(os.path.join(FIXTURES, "softmax.bin"), "rb") as f:
        head = f.read(200)
    path = tmp_path / "cut.bin"
    path.write_bytes(head)
    with pytest.raises(ferroserve.ModelError, match="(truncated|invalid) fastText model"):
        ferroserve.Model.load(path)


def test_predict_releases_the_gil():
    import time

    from test_onnx import assert_runs_without_the_gil

    native = model_for("lid176")._native
    texts = ["Hello, how are you today? Ceci est une phrase en français."] * 2000
    while True:
        start = time.perf_counter()
        native._predict_texts(texts, 5, 0.0)
        if time.perf_counter() - start >= 0.1 or len(texts) >= 1_000_000:
            break
        texts = texts * 2
    assert_runs_without_the_gil(lambda: native._predict_texts(texts, 5, 0.0))


def test_a_dict_of_columns_is_read_by_its_text_column_never_its_keys():
    # Bug: a dict (Ray Data's batch_format="numpy") was iterated: its keys were the texts.
    model = ferroserve.Model.load(os.path.join(FIXTURES, "lid.176.ftz"))
    texts = ["Bonjour, comment allez-vous ?", "Guten Morgen", "Buenos dias"]
    want = model.predict(texts)
    for batch in ({"text": np.array(texts)}, {"text": np.array(texts), "id": np.arange(3)}, {"t": texts}):
        labels, probabilities = model.predict(batch)
        assert labels == want[0]
    with pytest.raises(ferroserve.PredictError, match="'a', 'b'"):
        model.predict({"a": texts, "b": texts})


def test_null_rows_fractional_k_and_nan_threshold_are_refused():
    model = ferroserve.Model.load(os.path.join(FIXTURES, "lid.176.ftz"))
    rows = pa.StructArray.from_arrays([pa.array(["hello", "world"])], names=["text"], mask=pa.array([True, False]))
    with pytest.raises(ferroserve.PredictError, match="null rows"):
        model.predict(rows)
    with pytest.raises(ferroserve.PredictError, match="integer"):
        model.predict("hello", k=1.7)
    with pytest.raises(ferroserve.PredictError, match="NaN"):
        model.predict("hello", threshold=float("nan"))
