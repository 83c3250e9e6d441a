#!/usr/bin/env python3
"""Real gRPC clients against a running ferroserve, each result compared with the REST
answer for the same input and with onnxruntime's outputs in expected.json.

usage: grpc_clients.py triton REST_HOST:PORT GRPC_HOST:PORT REPO_ROOT [MODEL...]
       grpc_clients.py tfs    REST_HOST:PORT GRPC_HOST:PORT REPO_ROOT

triton: NVIDIA tritonclient.grpc (run in .venv-clients): live/ready, server and model
        metadata, infer on the given models (default iris_lr iris_dt: INT64 labels,
        FP32 probabilities; iris_str: BYTES labels), output selection, request id.
tfs:    TF Serving's own generated stubs, tensorflow-protobuf + the ModelService files
        (run in .venv-tfs with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python):
        GetModelMetadata, GetModelStatus, Predict with a version, HandleReloadConfigRequest
        adding a model (iris_str, copied to a temporary directory) and a label, Predict with the label,
        Classify.
The two modes run in two venvs because tritonclient and tensorflow-protobuf pin
different protobuf majors.
"""
import json
import os
import shutil
import sys
import tempfile
import urllib.request

import numpy as np


def rest(url, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{url}{path}", data=data,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def expected(root, rel):
    with open(os.path.join(root, rel)) as f:
        return json.load(f)


def triton(rest_url, grpc_url, root, models):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    c = grpcclient.InferenceServerClient(url=grpc_url)
    assert c.is_server_live(), "server not live"
    assert c.is_server_ready(), "server not ready"
    meta = c.get_server_metadata(as_json=True)
    assert meta["name"] == "ferroserve", meta
    for model in models:
        assert c.is_model_ready(model), model
        assert not c.is_model_ready(model, "999"), model
        mm = c.get_model_metadata(model, as_json=True)
        assert mm["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}], mm
        rm = rest(rest_url, f"/v2/models/{model}")
        for key in ("name", "versions", "platform"):
            assert mm[key] == rm[key], (key, mm[key], rm[key])
        as_rest = [{**o, "shape": [int(d) for d in o["shape"]]} for o in mm["outputs"]]
        assert as_rest == rm["outputs"], (as_rest, rm["outputs"])
        rel = (f"examples/models/{model}/1/expected.json" if model != "iris_str"
               else "tests/fixtures/onnx/iris_str/expected.json")
        exp = expected(root, rel)
        rows = np.array(exp["rows"], dtype=np.float32)
        inp = grpcclient.InferInput("input", list(rows.shape), "FP32")
        inp.set_data_from_numpy(rows)  # raw_input_contents, tritonclient's only mode
        res = c.infer(model, [inp], request_id="interop-grpc-1")
        assert res.get_response().id == "interop-grpc-1"
        labels = res.as_numpy("label")
        proba = res.as_numpy("probabilities")
        if model == "iris_str":
            assert labels.dtype == np.object_, labels.dtype
            assert [b.decode() for b in labels.tolist()] == exp["sklearn_predict"], labels
        else:
            assert labels.dtype == np.int64, labels.dtype
            assert labels.tolist() == exp["sklearn_predict"], (model, labels)
        ort = np.array(exp["onnxruntime"]["probabilities"], dtype=np.float32)
        assert np.array_equal(proba, ort), model

        # The same rows over REST give the same answer, element for element.
        doc = rest(rest_url, f"/v2/models/{model}/infer", {"inputs": [
            {"name": "input", "datatype": "FP32", "shape": list(rows.shape),
             "data": rows.flatten().tolist()}]})
        by_name = {o["name"]: o for o in doc["outputs"]}
        assert np.array_equal(np.array(by_name["probabilities"]["data"], dtype=np.float32),
                              proba.flatten()), model
        rest_labels = by_name["label"]["data"]
        grpc_labels = [b.decode() if isinstance(b, bytes) else b for b in labels.tolist()]
        assert rest_labels == grpc_labels, (rest_labels, grpc_labels)

        # Output selection.
        res = c.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("probabilities")])
        assert res.as_numpy("label") is None and res.as_numpy("probabilities") is not None

    try:
        c.infer("no_such_model", [inp])
        raise AssertionError("unknown model answered")
    except InferenceServerException as e:
        assert e.status() == "StatusCode.NOT_FOUND", e.status()
    print(f"tritonclient.grpc -> {grpc_url}: OK ({', '.join(models)})")


def tfs(rest_url, grpc_url, root, work):
    """`work`: a directory outside the repository for the model the reload adds."""
    import grpc
    from google.protobuf import wrappers_pb2
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow.core.example import example_pb2, feature_pb2
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                         get_model_status_pb2, model_management_pb2,
                                         model_service_pb2_grpc, predict_pb2,
                                         prediction_service_pb2_grpc)
    from tensorflow_serving.config import model_server_config_pb2

    channel = grpc.insecure_channel(grpc_url)
    predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    exp = expected(root, "examples/models/iris_lr/1/expected.json")
    rows = np.array(exp["rows"], dtype=np.float32)

    # GetModelMetadata: a SignatureDefMap packed in an Any, as TF Serving sends it.
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "iris_lr"
    meta = predict_stub.GetModelMetadata(req, timeout=10)
    assert meta.model_spec.version.value == 1, meta.model_spec
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(sigs), meta.metadata["signature_def"].type_url
    sig = sigs.signature_def["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert sig.inputs["input"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in sig.inputs["input"].tensor_shape.dim] == [-1, 4]
    rest_meta = rest(rest_url, "/v1/models/iris_lr/metadata")
    rest_sig = rest_meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sorted(rest_sig["outputs"]) == sorted(sig.outputs), (rest_sig["outputs"], list(sig.outputs))

    # GetModelStatus, compared with REST's.
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "iris_lr"
    status = model_stub.GetModelStatus(req, timeout=10)
    states = [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state))
              for s in status.model_version_status]
    rest_states = [(int(s["version"]), s["state"])
                   for s in rest(rest_url, "/v1/models/iris_lr")["model_version_status"]]
    assert states == rest_states == [(1, "AVAILABLE")], (states, rest_states)

    def predict(spec):
        req = predict_pb2.PredictRequest()
        req.model_spec.CopyFrom(spec)
        t = req.inputs["input"]
        t.dtype = types_pb2.DT_FLOAT
        t.tensor_shape.dim.add(size=rows.shape[0])
        t.tensor_shape.dim.add(size=4)
        t.float_val.extend(rows.flatten().tolist())
        return predict_stub.Predict(req, timeout=10)

    def check_answer(resp, version):
        assert resp.model_spec.name == "iris_lr" and resp.model_spec.version.value == version
        assert list(resp.outputs["label"].int64_val) == exp["sklearn_predict"]
        proba = np.array(resp.outputs["probabilities"].float_val, dtype=np.float32)
        ort = np.array(exp["onnxruntime"]["probabilities"], dtype=np.float32).flatten()
        assert np.array_equal(proba, ort)
        doc = rest(rest_url, "/v1/models/iris_lr/versions/1:predict", {"inputs": {"input": rows.tolist()}})
        assert np.array_equal(np.array(doc["outputs"]["probabilities"], dtype=np.float32).flatten(), proba)
        assert doc["outputs"]["label"] == list(resp.outputs["label"].int64_val)

    from tensorflow_serving.apis import model_pb2
    by_version = model_pb2.ModelSpec(name="iris_lr", signature_name="serving_default",
                                     version=wrappers_pb2.Int64Value(value=1))
    check_answer(predict(by_version), 1)

    # HandleReloadConfigRequest: keep the two example models, give iris_lr the label
    # "stable", and add iris_str from a directory outside the repository.
    added = os.path.join(work, "iris_str")
    os.makedirs(os.path.join(added, "1"), exist_ok=True)
    shutil.copy(os.path.join(root, "tests/fixtures/onnx/iris_str/model.onnx"), os.path.join(added, "1"))
    config = model_server_config_pb2.ModelServerConfig()
    for name in ("iris_lr", "iris_dt"):
        config.model_config_list.config.add(name=name, model_platform="onnx")
    labels = config.model_config_list.config[0].version_labels
    try:
        labels["stable"] = 1
    except TypeError:  # tensorflow-serving-api 2.11's old generated code sees the map as its entries
        labels.add(key="stable", value=1)
    config.model_config_list.config.add(name="iris_str", base_path=added, model_platform="onnx")
    resp = model_stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=60)
    assert resp.status.error_code == 0, resp
    check_answer(predict(model_pb2.ModelSpec(name="iris_lr", version_label="stable")), 1)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "iris_str"
    assert [s.state for s in model_stub.GetModelStatus(req, timeout=10).model_version_status] == [
        get_model_status_pb2.ModelVersionStatus.AVAILABLE]

    # Errors arrive as gRPC status codes.
    try:
        predict(model_pb2.ModelSpec(name="iris_lr", version_label="nope"))
        raise AssertionError("unknown label answered")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()

    # Classify: examples with one feature holding the row (iris_lr knows no feature names).
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "iris_lr"
    for row in rows[:3]:
        ex = req.input.example_list.examples.add()
        ex.features.feature["input"].float_list.value.extend(row.tolist())
    result = predict_stub.Classify(req, timeout=10).result
    scores = np.array([[c.score for c in cl.classes] for cl in result.classifications], dtype=np.float32)
    ort = np.array(exp["onnxruntime"]["probabilities"][:3], dtype=np.float32)
    assert np.array_equal(scores, ort), (scores, ort)
    print(f"TF Serving stubs -> {grpc_url}: OK")


def main():
    mode, rest_url, grpc_url, root = sys.argv[1:5]
    if mode == "triton":
        triton(rest_url, grpc_url, root, sys.argv[5:] or ["iris_lr", "iris_dt"])
    elif mode == "tfs" and len(sys.argv) > 5:
        # The added model must outlive this script: the server watches its directory
        # and unloads the model once it leaves the disk.
        tfs(rest_url, grpc_url, root, sys.argv[5])
    elif mode == "tfs":
        with tempfile.TemporaryDirectory() as work:
            tfs(rest_url, grpc_url, root, work)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
