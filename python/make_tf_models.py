"""Writes the TensorFlow SavedModel fixtures of tests/tensorflow.rs and the outputs
TensorFlow itself computes for them.

Run with the TensorFlow environment: .venv-tf/bin/python python/make_tf_models.py

Each model goes to tests/fixtures/tensorflow/<name>/1/ (saved_model.pb, variables/),
and tests/fixtures/tensorflow/<name>/expected.json holds, per signature, the inputs
sent and the outputs TensorFlow gave (run through the loaded SavedModel, as TF
Serving would).

tf1_classifier is a TF1-style graph (tf.compat.v1, SavedModelBuilder), as Estimators
exported them: its signatures take serialized tf.Example protos (classification,
regression, predict); its expected.json holds the examples as TF Serving REST writes
them and the classes, scores and values TensorFlow gave. Its
assets.extra/tf_serving_warmup_requests is TF Serving's warm-up file (PredictionLog
records from tensorflow-serving-api, written with tf.io.TFRecordWriter).
"""
import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As the server runs TensorFlow (it turns the oneDNN kernels off unless told
# otherwise: they abort on some inputs and fail on others that TensorFlow's own
# kernels answer), so the outputs recorded are those of the same kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tensorflow")
tf.random.set_seed(7)
rng = np.random.default_rng(7)
keras = tf.keras


def save(name, module, signatures, cases):
    """Saves `module` with `signatures` (a tf.Module), or exports the Keras objects
    `module` lists through Keras's ExportArchive (what `model.export` uses, and what
    TensorFlow's C++ loader reads: a Keras 3 model saved with tf.saved_model.save has
    two variables per weight and fails there), then reloads it and records each
    case's outputs."""
    base = os.path.join(OUT, name)
    shutil.rmtree(base, ignore_errors=True)
    path = os.path.join(base, "1")
    if isinstance(module, list):
        archive = keras.export.ExportArchive()
        for tracked in module:
            archive.track(tracked)
        for key, fn in signatures.items():
            archive.add_endpoint(name=key, fn=fn, input_signature=fn.input_signature)
        archive.write_out(path, verbose=False)
    else:
        tf.saved_model.save(module, path, signatures=signatures)
    loaded = tf.saved_model.load(path)
    expected = {}
    for signature, inputs in cases:
        fn = loaded.signatures[signature]
        outs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        expected[signature] = {
            "inputs": {k: to_json(np.asarray(v)) for k, v in inputs.items()},
            "outputs": {k: to_json(v.numpy()) for k, v in outs.items()},
        }
    with open(os.path.join(base, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


def to_json(a):
    if a.dtype.kind in ("S", "O"):
        data = [x.decode() if isinstance(x, bytes) else str(x) for x in a.reshape(-1)]
    elif a.dtype == np.bool_:
        data = [bool(x) for x in a.reshape(-1)]
    elif a.dtype.kind == "f":
        data = [float(x) for x in a.reshape(-1)]
    else:
        data = [int(x) for x in a.reshape(-1)]
    return {"dtype": str(a.dtype) if a.dtype.kind not in ("S", "O") else "string",
            "shape": list(a.shape), "data": data}


def mlp():
    model = keras.Sequential([
        keras.Input(shape=(4,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(3, activation="softmax"),
    ])
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def serve(features):
        return {"probabilities": model(features)}

    save("mlp", [model], {"serving_default": serve},
         [("serving_default", {"features": rng.normal(size=(5, 4)).astype(np.float32)})])


def cnn():
    model = keras.Sequential([
        keras.Input(shape=(8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
    ])

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image")])
    def serve(image):
        return {"logits": model(image)}

    save("cnn", [model], {"serving_default": serve},
         [("serving_default", {"image": rng.random(size=(3, 8, 8, 1)).astype(np.float32)})])


def multi():
    """Two signatures, several named inputs and outputs of several dtypes."""
    holder = tf.Module()
    holder.w = tf.Variable([[0.5], [-1.25], [2.0]], dtype=tf.float32)

    @tf.function(input_signature=[
        tf.TensorSpec([None, 3], tf.float32, name="x"),
        tf.TensorSpec([None], tf.int64, name="count"),
        tf.TensorSpec([None], tf.bool, name="flag"),
    ])
    def serve(x, count, flag):
        score = tf.squeeze(tf.matmul(x, holder.w), axis=1)
        return {
            "score": score,
            "doubled": tf.cast(count, tf.int32) * 2,
            "gated": tf.where(flag, tf.cast(score, tf.float64), tf.constant(-1.0, tf.float64)),
            "positive": score > 0,
        }

    @tf.function(input_signature=[
        tf.TensorSpec([None, 2], tf.float64, name="a"),
        tf.TensorSpec([None, 2], tf.uint8, name="b"),
    ])
    def combine(a, b):
        return {"sum": a + tf.cast(b, tf.float64), "max_b": tf.reduce_max(b, axis=1)}

    # A signature ferroserve cannot serve (a float16 output): left out, the rest load.
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="v")])
    def half(v):
        return {"h": tf.cast(v, tf.float16)}

    holder.serve = serve
    holder.combine = combine
    holder.half = half
    save("multi", holder, {"serving_default": serve, "combine": combine, "half": half}, [
        ("serving_default", {
            "x": rng.normal(size=(4, 3)).astype(np.float32),
            "count": np.array([1, 2, 3, -4], dtype=np.int64),
            "flag": np.array([True, False, True, True]),
        }),
        ("combine", {
            "a": rng.normal(size=(2, 2)),
            "b": np.array([[1, 200], [7, 3]], dtype=np.uint8),
        }),
    ])


def text():
    """A string input through a StringLookup layer; string and int outputs."""
    lookup = keras.layers.StringLookup(vocabulary=["cat", "dog", "a rather long word over 22 bytes"])
    lookup(tf.constant(["cat"]))  # builds it, which the export needs

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
    def serve(words):
        return {
            "ids": lookup(words),
            "upper": tf.strings.upper(words),
            "length": tf.strings.length(words),
        }

    save("text", [lookup], {"serving_default": serve}, [
        ("serving_default", {"words": np.array(
            [b"dog", b"cat", b"unknown", b"a rather long word over 22 bytes", b""], dtype=object)}),
    ])


def slow():
    """A signature whose run time the request sets: `n` turns of a while loop of
    small matrix products, each turn a few ops TensorFlow can cancel between (the
    request deadline's test: a run past it is cancelled, not left holding the
    version)."""

    class Slow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="n")])
        def run(self, n):
            def body(i, x):
                return i + 1, tf.matmul(x, x) / 64.0

            x = tf.ones([64, 64])
            _, x = tf.while_loop(lambda i, x: i < n[0], body, [tf.constant(0), x])
            return {"y": tf.reshape(tf.reduce_sum(x), [1]) + tf.cast(n * 0, tf.float32)}

    module = Slow()
    save("slow", module, {"serving_default": module.run}, [("serving_default", {"n": np.array([3], np.int32)})])


def any_rank():
    """A signature whose input has no shape at all (`tf.TensorSpec(None)`, as TF1
    placeholders without a shape have too): TF Serving feeds it any shape, and the
    metadata says `unknown_rank`. expected.json holds several cases (one per rank,
    a scalar included) under "cases"."""

    class AnyRank(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
        def run(self, x):
            return {"y": x * 2.0 + 1.0}

    module = AnyRank()
    base = os.path.join(OUT, "any_rank")
    shutil.rmtree(base, ignore_errors=True)
    path = os.path.join(base, "1")
    tf.saved_model.save(module, path, signatures={"serving_default": module.run})
    fn = tf.saved_model.load(path).signatures["serving_default"]
    cases = []
    for x in [np.array(1.5, np.float32),
              np.array([0.5, -1.25, 3.0], np.float32),
              np.array([[1.0, 2.0], [-0.5, 0.25]], np.float32),
              np.arange(6, dtype=np.float32).reshape(2, 1, 3) / 4]:
        y = fn(x=tf.constant(x))["y"].numpy()
        cases.append({"inputs": {"x": to_json(x)}, "outputs": {"y": to_json(y)}})
    with open(os.path.join(base, "expected.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1, sort_keys=True)
        f.write("\n")


def conv_any_rank():
    """A convolution whose input has no shape (`tf.TensorSpec(None)`): TF Serving feeds
    it any shape, and a request that is not of rank 4 must be answered with
    TensorFlow's error, not abort the server (oneDNN's Conv2D CHECK-fails on it). A
    second signature, `pool`, convolves and max-pools an image that may be too small
    to pool (a 3x3 image gives a 0x0 pool, summed to 0), which oneDNN failed."""

    class ConvAnyRank(tf.Module):
        def __init__(self):
            self.w = tf.Variable(rng.normal(size=(3, 3, 1, 2)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
        def run(self, x):
            return {"y": tf.nn.conv2d(x, self.w, 1, "SAME")}

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32,
                                                    name="image")])
        def pool(self, image):
            conv = tf.nn.conv2d(image, self.w, 1, "VALID")
            pooled = tf.nn.max_pool2d(conv, 2, 2, "VALID")
            averaged = tf.nn.avg_pool2d(image, 3, 2, "VALID")
            return {"y": tf.reduce_sum(pooled, axis=[1, 2, 3]),
                    "a": tf.reduce_sum(averaged, axis=[1, 2, 3])}

    module = ConvAnyRank()
    save("conv_any_rank", module, {"serving_default": module.run, "pool": module.pool},
         [("serving_default", {"x": rng.random(size=(1, 4, 4, 1)).astype(np.float32)}),
          ("pool", {"image": np.ones((1, 3, 3, 1), np.float32)})])


def tf_example(features):
    """A tf.train.Example from TF Serving REST's JSON features (ints, floats, strings)."""
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


CLASS_NAMES = ["setosa", "versicolor", "virginica"]


def tf1_classifier():
    """A TF1 graph with classify, regress and predict signatures over tf.Examples."""
    base = os.path.join(OUT, "tf1_classifier")
    shutil.rmtree(base, ignore_errors=True)
    path = os.path.join(base, "1")
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="input_example_tensor")
        parsed = tf.io.parse_example(serialized, {
            "x": tf.io.FixedLenFeature([2], tf.float32),
            "bucket": tf.io.FixedLenFeature([1], tf.int64, default_value=[0]),
            "kind": tf.io.FixedLenFeature([], tf.string, default_value=""),
        })
        w = v1.get_variable("w", initializer=tf.constant([[1.0, -1.0, 0.5], [0.25, 2.0, -1.5]]))
        b = v1.get_variable("b", initializer=tf.constant([0.1, 0.0, -0.1]))
        big = tf.cast(tf.equal(parsed["kind"], "big"), tf.float32)[:, None]
        logits = (tf.matmul(parsed["x"], w) + b
                  + 0.5 * tf.cast(parsed["bucket"], tf.float32) + big * tf.constant([0.0, 0.0, 1.5]))
        scores = tf.nn.softmax(logits, name="scores")
        classes = tf.tile(tf.constant([CLASS_NAMES]), tf.stack([tf.shape(serialized)[0], 1]),
                          name="classes")
        value = tf.reduce_sum(logits * tf.constant([1.0, 2.0, 3.0]), axis=1, name="value")
        sm = v1.saved_model
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            classify = sm.classification_signature_def(serialized, classes, scores)
            builder = sm.Builder(path)
            builder.add_meta_graph_and_variables(sess, [sm.tag_constants.SERVING], signature_def_map={
                "serving_default": classify,
                "classification": classify,
                "scores_only": sm.classification_signature_def(serialized, None, scores),
                "regression": sm.regression_signature_def(serialized, value),
                "predict": sm.predict_signature_def({"examples": serialized}, {"scores": scores}),
            }, strip_default_attrs=True)
            builder.save()

    examples = [
        {"x": [0.5, -1.25], "bucket": 1, "kind": "small"},
        {"x": [2.0, 0.75]},
        {"x": [-1.5, 3.25], "bucket": 3, "kind": "big"},
        {"x": [0.125, 0.0625], "kind": "big"},
    ]
    context = {"kind": "big"}
    with_context = [{"x": [1.0, -0.5]}, {"x": [0.25, 2.5], "bucket": 2}]
    loaded = tf.saved_model.load(path)

    def run(signature, protos):
        fn = loaded.signatures[signature]
        outs = fn(inputs=tf.constant([p.SerializeToString() for p in protos]))
        return {k: v.numpy() for k, v in outs.items()}

    def classified(outs):
        scores = outs.get("scores")
        classes = outs.get("classes")
        n, k = (scores if scores is not None else classes).shape
        return [[[classes[i][j].decode() if classes is not None else "",
                  float(scores[i][j]) if scores is not None else 0.0] for j in range(k)]
                for i in range(n)]

    protos = [tf_example(e) for e in examples]
    # With a context, TF Serving feeds the context's bytes followed by each example's.
    ctx = tf_example(context)
    merged = []
    for e in with_context:
        m = tf.train.Example()
        m.ParseFromString(ctx.SerializeToString() + tf_example(e).SerializeToString())
        merged.append(m)
    expected = {
        "examples": examples,
        "classify": {s: classified(run(s, protos)) for s in ("serving_default", "scores_only")},
        "regress": [float(v) for v in run("regression", protos)["outputs"]],
        "context": context,
        "examples_with_context": with_context,
        "classify_with_context": classified(run("classification", merged)),
    }
    predict = loaded.signatures["predict"](
        examples=tf.constant([p.SerializeToString() for p in protos]))
    expected["predict"] = {"scores": to_json(predict["scores"].numpy())}
    with open(os.path.join(base, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    write_warmup(path, protos)


def write_warmup(path, protos):
    """TF Serving's warm-up file: one record of each kind it replays."""
    from tensorflow_serving.apis import (classification_pb2, inference_pb2, model_pb2,
                                         predict_pb2, prediction_log_pb2, regression_pb2)

    def spec(signature):
        return model_pb2.ModelSpec(name="tf1_classifier", signature_name=signature)

    examples = protos[:2]
    classify = classification_pb2.ClassificationRequest(model_spec=spec("classification"))
    classify.input.example_list.examples.extend(examples)
    regress = regression_pb2.RegressionRequest(model_spec=spec("regression"))
    regress.input.example_list.examples.extend(examples)
    predict = predict_pb2.PredictRequest(model_spec=spec("predict"))
    predict.inputs["examples"].CopyFrom(
        tf.make_tensor_proto([p.SerializeToString() for p in examples]))
    multi = inference_pb2.MultiInferenceRequest()
    multi.tasks.add(model_spec=spec("classification"), method_name="tensorflow/serving/classify")
    multi.tasks.add(model_spec=spec("regression"), method_name="tensorflow/serving/regress")
    multi.input.example_list_with_context.examples.extend(examples)
    multi.input.example_list_with_context.context.CopyFrom(tf_example({"kind": "big"}))
    logs = [
        prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=classify)),
        prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress)),
        prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=predict)),
        prediction_log_pb2.PredictionLog(
            multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=multi)),
    ]
    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(extra, "tf_serving_warmup_requests")) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


if __name__ == "__main__":
    import sys

    # A name writes that fixture alone (the others stay as they are).
    chosen = sys.argv[1:] or ["mlp", "cnn", "multi", "text", "tf1_classifier", "slow", "any_rank",
                              "conv_any_rank"]
    for name in chosen:
        globals()[name]()
    print("written to", os.path.normpath(OUT))
