#!/usr/bin/env python3
"""NVIDIA tritonclient (HTTP) against a running ferroserve: health, server and model
metadata, and infer in JSON mode and in the binary tensor mode tritonclient uses by
default, compared with scikit-learn's own outputs from expected.json.

usage: tritonclient_http.py HOST:PORT REPO_ROOT
"""
import json
import os
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, root = sys.argv[1], sys.argv[2]
c = httpclient.InferenceServerClient(url=url)

assert c.is_server_live(), "server not live"
assert c.is_server_ready(), "server not ready"
meta = c.get_server_metadata()
assert meta["name"] == "ferroserve", meta
assert "binary_tensor_data" in meta["extensions"], meta

for model in ("iris_lr", "iris_dt"):
    assert c.is_model_ready(model), model
    assert c.is_model_ready(model, "1"), model
    mm = c.get_model_metadata(model)
    assert mm["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 4]}, mm
    with open(os.path.join(root, "examples/models", model, "1/expected.json")) as f:
        exp = json.load(f)
    rows = np.array(exp["rows"], dtype=np.float32)
    for binary in (False, True):
        inp = httpclient.InferInput("input", list(rows.shape), "FP32")
        inp.set_data_from_numpy(rows, binary_data=binary)
        outs = [
            httpclient.InferRequestedOutput("label", binary_data=binary),
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        res = c.infer(model, [inp], outputs=outs, request_id="interop-1")
        labels = res.as_numpy("label")
        proba = res.as_numpy("probabilities")
        assert labels.dtype == np.int64, labels.dtype
        assert labels.tolist() == exp["sklearn_predict"], (model, binary, labels)
        ort = np.array(exp["onnxruntime"]["probabilities"], dtype=np.float32)
        assert np.array_equal(proba.astype(np.float32), ort), (model, binary)
        assert np.abs(proba - np.array(exp["sklearn_predict_proba"])).max() < 1e-5
        assert res.get_response()["id"] == "interop-1"
    # tritonclient's plain default: binary inputs and outputs, no outputs named.
    inp = httpclient.InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows)
    res = c.infer(model, [inp])
    assert res.as_numpy("label").tolist() == exp["sklearn_predict"]
    print(f"{model}: tritonclient HTTP JSON + binary OK")

# Triton's model configuration and statistics extensions (404 before).
cfg = c.get_model_config("iris_lr")
assert cfg["name"] == "iris_lr" and cfg["platform"] == "onnxruntime_onnx", cfg
assert cfg["max_batch_size"] == 0, cfg  # examples/models do not batch
assert cfg["input"][0] == {"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}, cfg
stats = c.get_inference_statistics("iris_lr")
v1 = [s for s in stats["model_stats"] if s["version"] == "1"][0]
assert v1["inference_stats"]["success"]["count"] >= 3, stats
assert "model_stats" in c.get_inference_statistics(), "all models' statistics"
# Bare NaN in JSON data (binary_data=False: json.dumps writes NaN): a 400 before.
rows = np.array([[np.nan, np.inf, 1.4, 0.2]], dtype=np.float32)
inp = httpclient.InferInput("input", list(rows.shape), "FP32")
inp.set_data_from_numpy(rows, binary_data=False)
res = c.infer("iris_dt", [inp], outputs=[httpclient.InferRequestedOutput("label", binary_data=False)])
assert res.as_numpy("label").shape == (1,), res.get_response()
print("tritonclient HTTP config, statistics, bare NaN: OK")

try:
    c.get_model_metadata("no_such_model")
    raise SystemExit("unknown model did not fail")
except InferenceServerException as e:
    assert "not found" in str(e), e
print("tritonclient HTTP: OK")
