#!/usr/bin/env python3
"""Builds tests/fixtures/preprocess/ppocr_cls/ (issue 15): the PP-OCR text direction
classifier and what rapidocr's own pipeline answers for real text-line images.

usage: make_ppocr_cls_fixture.py [REPO_ROOT]
  run with the python of a venv holding python/requirements-ocr.txt
  (rapidocr-onnxruntime 1.4.4 and its dependencies: opencv-python, onnxruntime, ...)

Writes:
  model.onnx     ch_ppocr_mobile_v2.0_cls_infer.onnx, copied out of the installed
                 rapidocr_onnxruntime package (x float32 [N,3,48,W] ->
                 softmax float32 [N,2])
  labels.txt     rapidocr's Cls.label_list, one per line ("0", "180")
  *.png *.jpg    text lines rendered with DejaVu Sans (the font Debian ships) on a
                 paper-grey background with a little noise, upright and turned 180
                 degrees: a short line exactly 48 px high (rapidocr pads it on the
                 right) and a long 40 px line saved as JPEG (rapidocr scales it up
                 and squeezes it to 192 px); and two words whose direction is
                 ambiguous ("suns", "mom wow"), where the answer depends on where the
                 padding goes
  expected.json  per image: the [label, score] rapidocr's own pipeline gives,
                 `RapidOCR()(path, use_det=False, use_cls=True, use_rec=False)`,
                 and the model's two probabilities for rapidocr's tensor
                 (`TextClassifier.resize_norm_img`: cv2.resize to height 48, width
                 min(ceil(48 * w / h), 192), (x / 255 - 0.5) / 0.5, zeros on the right)
Deterministic: the same inputs give the same files.
"""
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont
import rapidocr_onnxruntime
from rapidocr_onnxruntime import RapidOCR

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

# (file, text, font size, image height, turned 180 degrees)
LINES = [
    ("short_upright.png", "Total 42", 30, 48, False),
    ("short_turned.png", "Total 42", 30, 48, True),
    ("long_upright.jpg", "Invoice 2024-117 paid in full", 24, 40, False),
    ("long_turned.jpg", "Invoice 2024-117 paid in full", 24, 40, True),
    # Words that read almost the same turned: the model is unsure, and its answer
    # moves (even to the other class) if the padding is centred or black instead.
    ("suns.png", "suns", 30, 48, False),
    ("mom_wow.png", "mom wow", 30, 48, False),
]


def render(text, size, height, turned, seed):
    font = ImageFont.truetype(FONT, size)
    left, top, right, bottom = font.getbbox(text)
    width = right - left + 12
    img = Image.new("RGB", (width, height), (236, 232, 222))
    draw = ImageDraw.Draw(img)
    draw.text((6 - left, (height - (bottom - top)) // 2 - top), text, font=font, fill=(32, 30, 40))
    rng = np.random.default_rng(seed)
    a = np.asarray(img).astype(np.float64) + rng.normal(0, 6, (height, width, 3))
    img = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), "RGB")
    return img.rotate(180) if turned else img


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    out = os.path.join(root, "tests/fixtures/preprocess/ppocr_cls")
    os.makedirs(out, exist_ok=True)
    package = os.path.dirname(rapidocr_onnxruntime.__file__)
    shutil.copyfile(os.path.join(package, "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
                    os.path.join(out, "model.onnx"))
    engine = RapidOCR()
    labels = list(engine.text_cls.postprocess_op.label_list)
    with open(os.path.join(out, "labels.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    images = []
    for i, (name, text, size, height, turned) in enumerate(LINES):
        path = os.path.join(out, name)
        img = render(text, size, height, turned, seed=15 + i)
        if name.endswith(".jpg"):
            img.save(path, quality=92)
        else:
            img.save(path)
        result, _ = engine(path, use_det=False, use_cls=True, use_rec=False)
        [[label, score]] = result
        # The probabilities behind that answer, for the tensor rapidocr makes.
        bgr = engine.load_img(path)
        tensor = engine.text_cls.resize_norm_img(bgr)[np.newaxis].astype(np.float32)
        probs = engine.text_cls.infer(tensor)[0][0]
        assert labels[int(probs.argmax())] == label and abs(float(probs.max()) - float(score)) < 1e-6
        images.append({
            "image": name,
            "size": [img.width, img.height],
            "turned": turned,
            "label": label,
            "score": float(score),
            "probabilities": [float(p) for p in probs],
        })
        print(name, img.size, label, float(score))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"rapidocr": "rapidocr-onnxruntime 1.4.4", "labels": labels, "images": images}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
