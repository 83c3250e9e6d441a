"""Fixtures for the isolated-deployments tests (tests/workers.rs).

Writes
  tests/fixtures/onnx/memory_hog/model.onnx  input "mib" int64 [1]; allocates and fills
                                             a float32 tensor of that many MiB
                                             (ConstantOfShape), answers "total" float32
                                             [1], the tensor's sum (mib * 262144)
so that a request can push a worker past its memory limit on demand.
Run with the .venv interpreter: .venv/bin/python python/make_worker_fixtures.py
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def memory_hog(root):
    per_mib = helper.make_tensor("per_mib", TensorProto.INT64, [1], [262144])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("Mul", ["mib", "per_mib"], ["elements"]),
        helper.make_node("ConstantOfShape", ["elements"], ["block"], value=one),
        helper.make_node("ReduceSum", ["block"], ["total"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "memory_hog",
        [helper.make_tensor_value_info("mib", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [1])],
        initializer=[per_mib],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(root, "tests/fixtures/onnx/memory_hog/model.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (total,) = session.run(None, {"mib": np.array([2], dtype=np.int64)})
    assert total.tolist() == [524288.0], total
    print(f"{path}: 2 MiB -> total {total.tolist()}")


if __name__ == "__main__":
    memory_hog(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
