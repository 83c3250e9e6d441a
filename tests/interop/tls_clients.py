#!/usr/bin/env python3
"""Real clients against a ferroserve serving TLS with client certificates (mTLS), the
certificates from make_certs.sh: a few calls each, answers compared with
expected.json.

usage: tls_clients.py triton REST_HOST:PORT GRPC_HOST:PORT CERT_DIR REPO_ROOT
       tls_clients.py tfs    REST_HOST:PORT GRPC_HOST:PORT CERT_DIR REPO_ROOT

triton: tritonclient.http (ssl=True, ssl_options, ssl_context_factory) and
        tritonclient.grpc (ssl=True, root_certificates, private_key, certificate_chain);
        a gRPC client without a certificate is refused. Runs in .venv-clients.
tfs:    TF Serving's stubs over grpc.secure_channel(grpc.ssl_channel_credentials(...)).
        Runs in .venv-tfs with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python.
"""
import json
import os
import sys

import numpy as np


def main():
    mode, rest_url, grpc_url, certs, root = sys.argv[1:6]
    path = lambda name: os.path.join(certs, name)  # noqa: E731
    read = lambda name: open(path(name), "rb").read()  # noqa: E731
    with open(os.path.join(root, "examples/models/iris_lr/1/expected.json")) as f:
        exp = json.load(f)
    rows = np.array(exp["rows"], dtype=np.float32)

    if mode == "triton":
        import gevent.ssl
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        c = httpclient.InferenceServerClient(
            url=rest_url, ssl=True,
            ssl_options={"ca_certs": path("ca.pem"), "certfile": path("client.pem"),
                         "keyfile": path("client.key")},
            ssl_context_factory=gevent.ssl.create_default_context)
        assert c.is_server_ready()
        inp = httpclient.InferInput("input", list(rows.shape), "FP32")
        inp.set_data_from_numpy(rows)
        assert c.infer("iris_lr", [inp]).as_numpy("label").tolist() == exp["sklearn_predict"]
        print(f"tritonclient.http over TLS -> {rest_url}: OK")

        g = grpcclient.InferenceServerClient(
            url=grpc_url, ssl=True, root_certificates=path("ca.pem"),
            private_key=path("client.key"), certificate_chain=path("client.pem"))
        assert g.is_server_ready()
        inp = grpcclient.InferInput("input", list(rows.shape), "FP32")
        inp.set_data_from_numpy(rows)
        assert g.infer("iris_lr", [inp]).as_numpy("label").tolist() == exp["sklearn_predict"]
        # Refused at the handshake (grpc's C core logs the server's alert to stderr).
        try:
            grpcclient.InferenceServerClient(
                url=grpc_url, ssl=True, root_certificates=path("ca.pem")).is_server_live()
            raise AssertionError("a client without a certificate was served")
        except InferenceServerException as e:
            assert e.status() == "StatusCode.UNAVAILABLE", e
        print(f"tritonclient.grpc over TLS -> {grpc_url}: OK")
    elif mode == "tfs":
        import grpc
        from tensorflow.core.framework import types_pb2
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        credentials = grpc.ssl_channel_credentials(
            root_certificates=read("ca.pem"), private_key=read("client.key"),
            certificate_chain=read("client.pem"))
        with grpc.secure_channel(grpc_url, credentials) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "iris_lr"
            t = req.inputs["input"]
            t.dtype = types_pb2.DT_FLOAT
            t.tensor_shape.dim.add(size=rows.shape[0])
            t.tensor_shape.dim.add(size=4)
            t.float_val.extend(rows.flatten().tolist())
            resp = stub.Predict(req, timeout=10)
            assert list(resp.outputs["label"].int64_val) == exp["sklearn_predict"]
        print(f"TF Serving stubs over TLS -> {grpc_url}: OK")
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
