#!/usr/bin/env python3
"""Builds the fixtures of tests/preprocess.rs (issue 15: pre- and post-processing),
with the answers numpy and onnxruntime-Python give for them.

usage: make_preprocess_fixtures.py [REPO_ROOT]      (run with .venv's python)

Writes tests/fixtures/preprocess/logits/
  model.onnx     a hand-made linear classifier: float32 input [N,4] -> logits float32
                 [N,4] (MatMul + Add), so softmax and labels have raw scores to act on
  labels.txt     its four class names, one per line
  expected.json  the input rows; onnxruntime's logits; numpy's softmax of them
                 (float64, stored as float32); for k in 1..4 the classification
                 strings Triton gives ("%g:index:label", C++ stream formatting) of the
                 logits and of the softmaxed scores; TF Serving classify's top-2
                 labels and scores of the softmaxed scores.
Deterministic: the same inputs give the same files.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

LABELS = ["cat", "dog", "bird", "fish"]


def softmax(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def classification(scores, k, labels):
    out = []
    for row in scores:
        # Best first; equal scores keep column order (a stable sort).
        order = sorted(range(len(row)), key=lambda i: -float(row[i]))[:k]
        out.append(["%g:%d:%s" % (float(row[i]), i, labels[i]) if labels else "%g:%d" % (float(row[i]), i) for i in order])
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    out = os.path.join(root, "tests/fixtures/preprocess/logits")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(15)
    w = rng.normal(size=(4, 4)).astype(np.float32) * 2
    b = rng.normal(size=(4,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["logits"]),
        ],
        "logits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 4])],
        [
            helper.make_tensor("W", TensorProto.FLOAT, [4, 4], w.flatten().tolist()),
            helper.make_tensor("B", TensorProto.FLOAT, [4], b.tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(out, "model.onnx")
    onnx.save(model, path)
    with open(os.path.join(out, "labels.txt"), "w") as f:
        f.write("\n".join(LABELS) + "\n")

    rows = rng.normal(size=(6, 4)).astype(np.float32)
    logits = ort.InferenceSession(path).run(["logits"], {"input": rows})[0]
    probs = softmax(logits)
    expected = {
        "input": "input",
        "rows": rows.tolist(),
        "logits": logits.tolist(),
        "softmax": probs.tolist(),
        "classification_logits_unlabelled": {k: classification(logits, k, None) for k in range(1, 5)},
        "classification_softmax": {k: classification(probs, k, LABELS) for k in range(1, 5)},
        "classify_top2": [
            [[LABELS[i], float(row[i])] for i in sorted(range(4), key=lambda i: -float(row[i]))[:2]]
            for row in probs
        ],
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
