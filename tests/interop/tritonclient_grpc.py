#!/usr/bin/env python3
"""NVIDIA tritonclient (gRPC) against a running ferroserve: Triton's model
configuration (get_model_config), statistics (get_inference_statistics) and
streaming inference (start_stream / async_stream_infer), which answered
UNIMPLEMENTED before; outputs compared with scikit-learn's from expected.json.

usage: tritonclient_grpc.py HOST:GRPC_PORT REPO_ROOT
"""
import json
import os
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

url, root = sys.argv[1], sys.argv[2]
c = grpcclient.InferenceServerClient(url=url)

cfg = c.get_model_config("iris_lr", as_json=True)["config"]
assert cfg["name"] == "iris_lr" and cfg["platform"] == "onnxruntime_onnx", cfg
assert cfg["backend"] == "onnxruntime", cfg
assert cfg.get("max_batch_size", 0) == 0, cfg  # examples/models do not batch
inp = cfg["input"][0]
assert inp["name"] == "input" and inp["data_type"] == "TYPE_FP32", cfg
assert [int(d) for d in inp["dims"]] == [-1, 4], cfg
# The message form too (protobuf, as tritonclient gives it by default).
assert c.get_model_config("iris_lr").config.input[0].dims == [-1, 4]
try:
    c.get_model_config("no_such_model")
    raise SystemExit("unknown model did not fail")
except InferenceServerException as e:
    assert e.status() == "StatusCode.NOT_FOUND", e
print("tritonclient gRPC get_model_config: OK")

with open(os.path.join(root, "examples/models/iris_lr/1/expected.json")) as f:
    exp = json.load(f)
rows = np.array(exp["rows"], dtype=np.float32)


def request(data):
    i = grpcclient.InferInput("input", list(data.shape), "FP32")
    i.set_data_from_numpy(data)
    return [i]


before = c.get_inference_statistics("iris_lr", "1").model_stats[0].inference_stats.success.count
# A stream of three requests, the second bad (3 columns): answered in order, the
# bad one with its error, and the stream goes on.
answers = queue.Queue()
c.start_stream(callback=lambda result, error: answers.put((result, error)))
c.async_stream_infer("iris_lr", request(rows), request_id="s1")
c.async_stream_infer("iris_lr", request(rows[:, :3].copy()), request_id="s2")
c.async_stream_infer("iris_lr", request(rows[:1]), request_id="s3")
got = [answers.get(timeout=30) for _ in range(3)]
c.stop_stream()
(r1, e1), (r2, e2), (r3, e3) = got
assert e1 is None and e3 is None, (e1, e3)
assert r2 is None and e2 is not None, (r2, e2)
assert r1.get_response().id == "s1" and r3.get_response().id == "s3"
assert r1.as_numpy("label").tolist() == exp["sklearn_predict"], r1.as_numpy("label")
assert r3.as_numpy("label").tolist() == exp["sklearn_predict"][:1]
print(f"tritonclient gRPC stream: OK (bad request: {e2.message()})")

stats = c.get_inference_statistics("iris_lr", "1", as_json=True)
v1 = stats["model_stats"][0]
assert v1["name"] == "iris_lr" and v1["version"] == "1", stats
after = int(v1["inference_stats"]["success"]["count"])
assert after == before + 2, (before, after)
assert int(v1["inference_stats"]["fail"]["count"]) >= 1, stats
every = c.get_inference_statistics().model_stats
assert {"iris_lr", "iris_dt"} <= {s.name for s in every}, every
print("tritonclient gRPC get_inference_statistics: OK")
