#!/usr/bin/env python3
"""TF Serving's own client code against ferroserve serving the SavedModel fixtures
(tests/fixtures/tensorflow, issue 16): tensors made with tf.make_tensor_proto, sent with
tensorflow-serving-api's generated stubs (Predict with a signature name, Classify,
Regress, GetModelMetadata), answers read with tf.make_ndarray and compared with the
outputs TensorFlow itself gave (expected.json) within 1e-6 relative.

usage: tfs_saved_models.py REST_HOST:PORT GRPC_HOST:PORT REPO_ROOT
Runs in .venv-tf (tensorflow-cpu + tensorflow-serving-api, see scripts/setup.sh).
"""
import json
import os
import sys
import time
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2, get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc,
    regression_pb2)

MODELS = ["mlp", "cnn", "multi", "text", "tf1_classifier"]


def wait_available(rest_url, models, seconds=120):
    deadline = time.time() + seconds
    pending = set(models)
    while pending:
        for m in sorted(pending):
            try:
                with urllib.request.urlopen(f"http://{rest_url}/v1/models/{m}", timeout=5) as r:
                    state = json.load(r)["model_version_status"][0]
            except Exception:  # not known yet
                continue
            if state["state"] == "AVAILABLE":
                pending.discard(m)
            elif state["state"] == "END" and state["status"]["error_code"] != "OK":
                raise SystemExit(f"{m} failed to load: {state}")
        if pending and time.time() > deadline:
            raise SystemExit(f"not AVAILABLE in time: {sorted(pending)}")
        time.sleep(0.2)


def array(t):
    if t["dtype"] == "string":
        return np.array([s.encode() for s in t["data"]], dtype=object).reshape(t["shape"])
    return np.array(t["data"], dtype=t["dtype"]).reshape(t["shape"])


def check_equal(got, want, what):
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if want.dtype.kind == "f":
        # 1e-6 relative, or 1e-6 absolute near 0: the server runs TensorFlow's own
        # kernels (it turns oneDNN off), and a fixture recorded with oneDNN's sums a
        # convolution in another order (the cnn's logits: one float32 step of ~0.5).
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=what)
    else:
        assert got.tolist() == want.tolist(), (what, got, want)


def tf_example(features):
    out = tf.train.Example()
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        f = out.features.feature[name]
        if all(isinstance(v, int) for v in values):
            f.int64_list.value.extend(values)
        elif all(isinstance(v, (int, float)) for v in values):
            f.float_list.value.extend(values)
        else:
            f.bytes_list.value.extend(v.encode() for v in values)
    return out


def main(rest_url, grpc_url, root):
    wait_available(rest_url, MODELS)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(grpc_url))
    fixtures = os.path.join(root, "tests", "fixtures", "tensorflow")
    checked = 0
    for model in MODELS[:4]:
        with open(os.path.join(fixtures, model, "expected.json")) as f:
            expected = json.load(f)
        for signature, case in expected.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.model_spec.signature_name = signature
            for name, t in case["inputs"].items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(array(t)))
            response = stub.Predict(request, 30)
            assert response.model_spec.signature_name == signature, response.model_spec
            assert set(response.outputs) == set(case["outputs"]), (model, list(response.outputs))
            for name, t in case["outputs"].items():
                got = tf.make_ndarray(response.outputs[name])
                check_equal(got, array(t), f"{model}/{signature}/{name}")
                checked += 1

    meta = get_model_metadata_pb2.GetModelMetadataRequest()
    meta.model_spec.name = "multi"
    meta.metadata_field.append("signature_def")
    answer = stub.GetModelMetadata(meta, 30)
    defs = get_model_metadata_pb2.SignatureDefMap()
    answer.metadata["signature_def"].Unpack(defs)
    assert sorted(defs.signature_def) == ["combine", "serving_default"], list(defs.signature_def)
    assert defs.signature_def["combine"].inputs["b"].dtype == tf.uint8.as_datatype_enum

    with open(os.path.join(fixtures, "tf1_classifier", "expected.json")) as f:
        expected = json.load(f)
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "tf1_classifier"
    classify.input.example_list.examples.extend(tf_example(e) for e in expected["examples"])
    result = stub.Classify(classify, 30).result
    for row, want in zip(result.classifications, expected["classify"]["serving_default"], strict=True):
        assert [c.label for c in row.classes] == [w[0] for w in want], row
        np.testing.assert_allclose([c.score for c in row.classes], [w[1] for w in want], rtol=1e-6)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "tf1_classifier"
    regress.model_spec.signature_name = "regression"
    regress.input.example_list.examples.extend(tf_example(e) for e in expected["examples"])
    result = stub.Regress(regress, 30).result
    np.testing.assert_allclose([r.value for r in result.regressions], expected["regress"], rtol=1e-6)
    print(f"TF Serving client code on SavedModels: OK ({checked} outputs, Classify, Regress, metadata)")


if __name__ == "__main__":
    main(*sys.argv[1:4])
