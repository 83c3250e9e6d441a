#!/usr/bin/env python3
"""Builds the example and test ONNX models, with the outputs the training framework
and onnxruntime-Python give for them.

usage: make_onnx_models.py [REPO_ROOT] [--only NAME,NAME...]

Writes
  examples/models/iris_lr/1/model.onnx    LogisticRegression, float32 [N,4] -> label int64, probabilities
  examples/models/iris_dt/1/model.onnx    DecisionTreeClassifier, same signature
  tests/fixtures/onnx/iris_str/model.onnx  LogisticRegression with string class labels
  tests/fixtures/onnx/iris_int/model.onnx  DecisionTreeClassifier with integer class labels
                                           that are not 0..n-1 (1, 5, 7)
  tests/fixtures/onnx/iris_lr_int/model.onnx  LogisticRegression with those labels (its
                                           LinearClassifier names them in classlabels_ints)
  tests/fixtures/onnx/diabetes_f64/model.onnx  Ridge on float64 inputs (output float64)
  tests/fixtures/onnx/multi_io/model.onnx  hand-made graph with one input of each dtype
  tests/fixtures/onnx/half_io/model.onnx   hand-made graph with float16 inputs and outputs
  tests/fixtures/onnx/bank_columns/model.onnx  ColumnTransformer(OneHotEncoder on string
                                           columns, numeric columns passed through) +
                                           LogisticRegression, one ONNX input per column
  tests/fixtures/onnx/any_rank/model.onnx  hand-made graph whose input and outputs have no
                                           declared shape (unknown rank): Mul by 2, Squeeze
  tests/fixtures/onnx/scalar/model.onnx    hand-made graph with a real scalar (shape []) input
                                           and output
  tests/fixtures/onnx/slow_loop/model.onnx  hand-made graph: a Loop that adds 1 n times (n, an
                                           int64 scalar input), so a run lasts as long as
                                           asked (about a microsecond an iteration)
  examples/models/iris_sklearn/1/model.joblib  the iris_lr estimator itself, with string
                                           labels, saved by joblib as {"model", "feature_names"}
and an expected.json next to each model: the input rows, scikit-learn's own predict /
predict_proba and onnxruntime's outputs. Classifiers are exported with zipmap=False.
Deterministic: the same inputs give the same files.

--only NAME,NAME... writes only the models named (their directory's last part before
the version: iris_lr, any_rank, ...), leaving the other files as they are.
"""
import json
import os
import sys

import joblib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

OPSETS = {"": 15, "ai.onnx.ml": 3}
# Held-out rows: every 10th iris row is never trained on.
IRIS_X, IRIS_Y = load_iris(return_X_y=True)
HOLD = np.arange(len(IRIS_X)) % 10 == 0


def save(model_proto, path, check=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if check:
        onnx.checker.check_model(model_proto)
    with open(path, "wb") as f:
        f.write(model_proto.SerializeToString())


def write_expected(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def onnx_outputs(path, feeds):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, feeds)))


def tolist(a):
    a = np.asarray(a)
    if a.dtype.kind in "OUS":
        return [x.decode() if isinstance(x, bytes) else str(x) for x in a.reshape(-1)]
    return a.tolist()


def iris_classifier(root, rel, make, labels=None):
    X = IRIS_X.astype(np.float32)
    y = IRIS_Y if labels is None else np.array(labels)[IRIS_Y]
    m = make().fit(X[~HOLD], y[~HOLD])
    onx = convert_sklearn(
        m,
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(m): {"zipmap": False}},
        target_opset=OPSETS,
    )
    path = os.path.join(root, rel, "model.onnx")
    save(onx, path)
    Xh = X[HOLD]
    out = onnx_outputs(path, {"input": Xh})
    label_ok = (out["label"] == m.predict(Xh)).all()
    proba_diff = float(np.abs(out["probabilities"] - m.predict_proba(Xh)).max())
    assert label_ok and proba_diff < 1e-5, (rel, label_ok, proba_diff)
    write_expected(
        os.path.join(root, rel, "expected.json"),
        {
            "input": "input",
            "rows": Xh.tolist(),
            "sklearn_predict": tolist(m.predict(Xh)),
            "sklearn_predict_proba": m.predict_proba(Xh).tolist(),
            "onnxruntime": {k: tolist(v) for k, v in out.items()},
        },
    )
    print(f"{rel}: labels equal, max |proba diff| vs sklearn {proba_diff:.1e}")


def iris_sklearn(root, rel):
    """The scikit-learn estimator itself, as the Python services saved theirs."""
    X = IRIS_X
    names = np.array(["setosa", "versicolor", "virginica"])
    y = names[IRIS_Y]
    m = LogisticRegression(max_iter=1000).fit(X[~HOLD], y[~HOLD])
    os.makedirs(os.path.join(root, rel), exist_ok=True)
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    joblib.dump({"model": m, "feature_names": features}, os.path.join(root, rel, "model.joblib"))
    Xh = X[HOLD]
    write_expected(
        os.path.join(root, rel, "expected.json"),
        {
            "input": "input",
            "feature_names": features,
            "rows": Xh.tolist(),
            "sklearn_predict": tolist(m.predict(Xh)),
            "sklearn_predict_proba": m.predict_proba(Xh).tolist(),
        },
    )
    print(f"{rel}: written")


def diabetes_regressor(root, rel):
    X, y = load_diabetes(return_X_y=True)
    hold = np.arange(len(X)) % 10 == 0
    m = Ridge(alpha=0.5).fit(X[~hold], y[~hold])
    onx = convert_sklearn(
        m, initial_types=[("input", DoubleTensorType([None, X.shape[1]]))], target_opset=OPSETS
    )
    path = os.path.join(root, rel, "model.onnx")
    save(onx, path)
    Xh = X[hold][:8]
    out = onnx_outputs(path, {"input": Xh})
    diff = float(np.abs(out["variable"].reshape(-1) - m.predict(Xh)).max())
    assert diff < 1e-9, diff
    write_expected(
        os.path.join(root, rel, "expected.json"),
        {
            "input": "input",
            "rows": Xh.tolist(),
            "sklearn_predict": m.predict(Xh).tolist(),
            "onnxruntime": {k: tolist(v) for k, v in out.items()},
        },
    )
    print(f"{rel}: max |diff| vs sklearn {diff:.1e}")


def multi_io(root, rel):
    """One input of each dtype the server must carry, each echoed through a simple op."""
    B = "batch"
    inputs = [
        helper.make_tensor_value_info("f32", TensorProto.FLOAT, [B, 2]),
        helper.make_tensor_value_info("f64", TensorProto.DOUBLE, [B]),
        helper.make_tensor_value_info("i32", TensorProto.INT32, [B]),
        helper.make_tensor_value_info("i64", TensorProto.INT64, [B]),
        helper.make_tensor_value_info("flag", TensorProto.BOOL, [B]),
        helper.make_tensor_value_info("text", TensorProto.STRING, [B]),
    ]
    outputs = [
        helper.make_tensor_value_info("f32_sum", TensorProto.FLOAT, [B, 1]),
        helper.make_tensor_value_info("f64_neg", TensorProto.DOUBLE, [B]),
        helper.make_tensor_value_info("i32_abs", TensorProto.INT32, [B]),
        helper.make_tensor_value_info("i64_neg", TensorProto.INT64, [B]),
        helper.make_tensor_value_info("flag_not", TensorProto.BOOL, [B]),
        helper.make_tensor_value_info("text_out", TensorProto.STRING, [B]),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("ReduceSum", ["f32", "axes"], ["f32_sum"], keepdims=1),
        helper.make_node("Neg", ["f64"], ["f64_neg"]),
        helper.make_node("Abs", ["i32"], ["i32_abs"]),
        helper.make_node("Neg", ["i64"], ["i64_neg"]),
        helper.make_node("Not", ["flag"], ["flag_not"]),
        helper.make_node("Identity", ["text"], ["text_out"]),
    ]
    graph = helper.make_graph(nodes, "multi_io", inputs, outputs, initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    path = os.path.join(root, rel, "model.onnx")
    save(model, path)
    feeds = {
        "f32": np.array([[1.5, 2.0], [-1.0, 0.25]], dtype=np.float32),
        "f64": np.array([0.1, -2.5]),
        "i32": np.array([-3, 4], dtype=np.int32),
        "i64": np.array([7, -9000000000], dtype=np.int64),
        "flag": np.array([True, False]),
        "text": np.array(["setosa", "über"], dtype=object),
    }
    out = onnx_outputs(path, feeds)
    write_expected(
        os.path.join(root, rel, "expected.json"),
        {
            "inputs": {k: tolist(v) for k, v in feeds.items()},
            "onnxruntime": {k: tolist(v) for k, v in out.items()},
        },
    )
    print(f"{rel}: written")


def half_io(root, rel):
    """FP16 in and out: float16 doubled, float16 to float32 and float32 to float16."""
    B = "batch"
    inputs = [
        helper.make_tensor_value_info("h", TensorProto.FLOAT16, [B, 3]),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, 3]),
    ]
    outputs = [
        helper.make_tensor_value_info("h_twice", TensorProto.FLOAT16, [B, 3]),
        helper.make_tensor_value_info("h_float", TensorProto.FLOAT, [B, 3]),
        helper.make_tensor_value_info("x_half", TensorProto.FLOAT16, [B, 3]),
    ]
    nodes = [
        helper.make_node("Add", ["h", "h"], ["h_twice"]),
        helper.make_node("Cast", ["h"], ["h_float"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["x"], ["x_half"], to=TensorProto.FLOAT16),
    ]
    graph = helper.make_graph(nodes, "half_io", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    path = os.path.join(root, rel, "model.onnx")
    save(model, path)
    feeds = {
        "h": np.array([[1.5, -0.333, 65504.0], [6e-8, -0.0, 2049.0]], dtype=np.float16),
        "x": np.array([[0.1, 70000.0, -1e-9], [3.14159, -2.5, 1.0 / 3.0]], dtype=np.float32),
    }
    out = onnx_outputs(path, feeds)
    # Every value as its IEEE half bits too, so a test compares bit for bit.
    bits = lambda a: np.asarray(a, dtype=np.float16).view(np.uint16).reshape(-1).tolist()
    write_expected(
        os.path.join(root, rel, "expected.json"),
        {
            "inputs": {k: tolist(v.astype(np.float64)) for k, v in feeds.items()},
            "input_bits": {"h": bits(feeds["h"])},
            "onnxruntime": {
                k: [None if not np.isfinite(x) else x for x in np.asarray(v, np.float64).reshape(-1).tolist()]
                for k, v in out.items()
            },
            "onnxruntime_half_bits": {k: bits(v) for k, v in out.items() if v.dtype == np.float16},
        },
    )
    print(f"{rel}: written")


def bank_columns(root, rel):
    """A tabular pipeline the way it is usually written: columns selected by name, a
    one-hot encoding of the string columns, the numeric ones passed through. Exported
    with one ONNX input per column ([N, 1] each), which the simple API feeds from
    named features."""
    import pandas as pd

    rng = np.random.RandomState(7)
    n = 200
    jobs = np.array(["admin.", "technician", "services", "management", "retired"])
    marital = np.array(["married", "single", "divorced"])
    df = pd.DataFrame(
        {
            "age": rng.randint(18, 90, n).astype(np.float32),
            "job": jobs[rng.randint(0, len(jobs), n)],
            "marital": marital[rng.randint(0, len(marital), n)],
            "balance": rng.normal(1500, 2000, n).round(0).astype(np.float32),
        }
    )
    score = (
        (df["age"] - 50) / 15
        + df["balance"] / 2000
        + df["job"].isin(["management", "retired"]) * 1.0
        - (df["marital"] == "married") * 0.7
        + rng.normal(0, 0.5, n)
    )
    y = np.where(score > 0.3, "yes", "no")
    hold = np.arange(n) % 10 == 0
    m = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), ["job", "marital"]),
                        ("numeric", "passthrough", ["age", "balance"]),
                    ]
                ),
            ),
            ("classifier", LogisticRegression(max_iter=2000)),
        ]
    ).fit(df[~hold], y[~hold])
    initial_types = [
        ("age", FloatTensorType([None, 1])),
        ("job", StringTensorType([None, 1])),
        ("marital", StringTensorType([None, 1])),
        ("balance", FloatTensorType([None, 1])),
    ]
    onx = convert_sklearn(
        m,
        initial_types=initial_types,
        options={id(m.named_steps["classifier"]): {"zipmap": False}},
        target_opset=OPSETS,
    )
    path = os.path.join(root, rel, "model.onnx")
    save(onx, path)
    test = df[hold].reset_index(drop=True)
    feeds = {
        "age": test[["age"]].to_numpy(np.float32),
        "job": test[["job"]].to_numpy(object),
        "marital": test[["marital"]].to_numpy(object),
        "balance": test[["balance"]].to_numpy(np.float32),
    }
    out = onnx_outputs(path, feeds)
    label_ok = (out["label"] == m.predict(test)).all()
    proba_diff = float(np.abs(out["probabilities"] - m.predict_proba(test)).max())
    assert label_ok and proba_diff < 1e-5, (rel, label_ok, proba_diff)
    write_expected(
        os.path.join(root, rel, "expected.json"),
        {
            "columns": {
                c: [float(v) if c in ("age", "balance") else str(v) for v in test[c]]
                for c in ["age", "job", "marital", "balance"]
            },
            "classes": tolist(m.classes_),
            "sklearn_predict": tolist(m.predict(test)),
            "sklearn_predict_proba": m.predict_proba(test).tolist(),
            "onnxruntime": {k: tolist(v) for k, v in out.items()},
        },
    )
    print(f"{rel}: labels equal, max |proba diff| vs sklearn {proba_diff:.1e}")


def shaped(a):
    """A tensor as {"shape", "data"}: its shape and its values in row-major order."""
    a = np.asarray(a)
    return {"shape": list(a.shape), "data": a.reshape(-1).tolist()}


def any_rank(root, rel):
    """An input and outputs with no declared shape (make_tensor_value_info(..., None):
    unknown rank), which onnxruntime runs with any shape: y = x * 2, and x with every
    dimension of 1 dropped (Squeeze without axes, whose rank even onnxruntime's shape
    inference cannot tell)."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("squeezed", TensorProto.FLOAT, None),
    ]
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["y"]),
        helper.make_node("Squeeze", ["x"], ["squeezed"]),
    ]
    graph = helper.make_graph(nodes, "any_rank", inputs, outputs, initializer=[two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    assert not model.graph.input[0].type.tensor_type.HasField("shape")
    path = os.path.join(root, rel, "model.onnx")
    # onnx's checker wants a shape on every graph input and output; onnxruntime does
    # not, and runs the graph (exporters write such models), which is what is served.
    save(model, path, check=False)
    xs = [
        np.array(3.0, dtype=np.float32),
        np.array([3.0, 4.0], dtype=np.float32),
        np.array([[[1.0], [2.0]]], dtype=np.float32),
        np.array([[1.0, -2.0, 3.5], [0.25, 5.0, -6.0]], dtype=np.float32),
    ]
    cases = []
    for x in xs:
        out = onnx_outputs(path, {"x": x})
        cases.append({"inputs": {"x": shaped(x)}, "outputs": {k: shaped(v) for k, v in out.items()}})
    write_expected(os.path.join(root, rel, "expected.json"), {"cases": cases})
    print(f"{rel}: written")


def scalar(root, rel):
    """A real scalar (a shape with no dimensions), which stays a scalar: doubled = s + s."""
    inputs = [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])]
    outputs = [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [])]
    nodes = [helper.make_node("Add", ["s", "s"], ["doubled"])]
    graph = helper.make_graph(nodes, "scalar", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    assert model.graph.input[0].type.tensor_type.HasField("shape")
    path = os.path.join(root, rel, "model.onnx")
    save(model, path)
    s = np.array(1.25, dtype=np.float32)
    out = onnx_outputs(path, {"s": s})
    write_expected(
        os.path.join(root, rel, "expected.json"),
        {"cases": [{"inputs": {"s": shaped(s)}, "outputs": {k: shaped(v) for k, v in out.items()}}]},
    )
    print(f"{rel}: written")


def slow_loop(root, rel):
    """A run as long as asked: a Loop of `n` iterations (an int64 scalar input), each
    adding 1 to a float32 accumulator, which is the output y (n itself, for small n).
    onnxruntime takes about a microsecond an iteration, and checks its run's terminate
    flag before each node of the body, so a run can be cut at any iteration."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, []),
        ],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "", "zero"], ["y"], body=body)],
        "slow_loop",
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        initializer=[helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    path = os.path.join(root, rel, "model.onnx")
    save(model, path)
    cases = []
    for n in [0, 3, 1000]:
        feeds = {"n": np.array(n, dtype=np.int64)}
        out = onnx_outputs(path, feeds)
        cases.append({"inputs": {k: shaped(v) for k, v in feeds.items()}, "outputs": {k: shaped(v) for k, v in out.items()}})
    write_expected(os.path.join(root, rel, "expected.json"), {"cases": cases})
    print(f"{rel}: written")


def main():
    args = sys.argv[1:]
    only = None
    if "--only" in args:
        i = args.index("--only")
        if i + 1 >= len(args):
            sys.exit("--only needs a comma-separated list of model names")
        only = set(args[i + 1].split(","))
        del args[i : i + 2]
    root = args[0] if args else os.path.join(os.path.dirname(__file__), "..")
    ex = os.path.join(root, "examples", "models")
    fx = os.path.join(root, "tests", "fixtures", "onnx")
    makers = [
        ("iris_lr", lambda: iris_classifier(ex, "iris_lr/1", lambda: LogisticRegression(max_iter=1000))),
        (
            "iris_dt",
            lambda: iris_classifier(ex, "iris_dt/1", lambda: DecisionTreeClassifier(max_depth=4, random_state=0)),
        ),
        (
            "iris_str",
            lambda: iris_classifier(
                fx, "iris_str", lambda: LogisticRegression(max_iter=1000), ["setosa", "versicolor", "virginica"]
            ),
        ),
        (
            "iris_int",
            lambda: iris_classifier(
                fx, "iris_int", lambda: DecisionTreeClassifier(max_depth=4, random_state=0), [1, 5, 7]
            ),
        ),
        (
            "iris_lr_int",
            lambda: iris_classifier(
                fx, "iris_lr_int", lambda: LogisticRegression(max_iter=500), [1, 5, 7]
            ),
        ),
        ("iris_sklearn", lambda: iris_sklearn(ex, "iris_sklearn/1")),
        ("diabetes_f64", lambda: diabetes_regressor(fx, "diabetes_f64")),
        ("multi_io", lambda: multi_io(fx, "multi_io")),
        ("half_io", lambda: half_io(fx, "half_io")),
        ("bank_columns", lambda: bank_columns(fx, "bank_columns")),
        ("any_rank", lambda: any_rank(fx, "any_rank")),
        ("scalar", lambda: scalar(fx, "scalar")),
        ("slow_loop", lambda: slow_loop(fx, "slow_loop")),
    ]
    if only is not None:
        unknown = only - {name for name, _ in makers}
        if unknown:
            sys.exit(f"--only: no model named {', '.join(sorted(unknown))}")
    for name, make in makers:
        if only is None or name in only:
            make()


if __name__ == "__main__":
    main()
