#!/usr/bin/env python3
"""Models for benches/sklearn_native.rs, written to OUT_DIR (not committed).

Each model is saved as a pickle (read natively) and exported to ONNX with skl2onnx
(float inputs, no ZipMap), so both sides run the same fitted model:
  logreg       LogisticRegression on iris (4 features)
  forest       RandomForestClassifier(100 trees, depth 8) on iris
  pipeline     StandardScaler + LogisticRegression on iris
  big_forest   RandomForestClassifier grown on a noisy synthetic set, ~50 MB pickled
               (load time only)
usage: make_bench_models.py OUT_DIR
"""
import os
import pickle
import sys
import warnings

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
X, y = load_iris(return_X_y=True)
models = {
    "logreg": LogisticRegression(max_iter=1000).fit(X, y),
    "forest": RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0).fit(X, y),
    "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y),
}
for name, model in models.items():
    with open(os.path.join(out, f"{name}.pkl"), "wb") as f:
        pickle.dump(model, f, protocol=5)
    onx = to_onnx(model, X[:1].astype(np.float32), options={id(model): {"zipmap": False}} if name != "pipeline"
                  else {id(model.steps[-1][1]): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    with open(os.path.join(out, f"{name}.onnx"), "wb") as f:
        f.write(onx.SerializeToString())
np.savetxt(os.path.join(out, "rows.txt"), X[::4][:32])

Xb, yb = make_classification(n_samples=40000, n_features=20, n_informative=10, flip_y=0.2, random_state=0)
big = RandomForestClassifier(n_estimators=72, random_state=0, n_jobs=-1).fit(Xb, yb)
with open(os.path.join(out, "big_forest.pkl"), "wb") as f:
    pickle.dump(big, f, protocol=5)
print("bench models in", out, "big_forest.pkl:", os.path.getsize(os.path.join(out, "big_forest.pkl")) // 1_000_000, "MB")
