"""Writes the TensorFlow SavedModel fixtures of tests/tensorflow.rs and the outputs
TensorFlow itself computes for them.

Run with the TensorFlow environment: .venv-tf/bin/python python/make_tf_models.py

Each model goes to tests/fixtures/tensorflow/<name>/1/ (saved_model.pb, variables/),
and tests/fixtures/tensorflow/<name>/expected.json holds, per signature, the inputs
sent and the outputs TensorFlow gave (run through the loaded SavedModel, as TF
Serving would).
"""
import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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


if __name__ == "__main__":
    mlp()
    cnn()
    multi()
    text()
    print("written to", os.path.normpath(OUT))
