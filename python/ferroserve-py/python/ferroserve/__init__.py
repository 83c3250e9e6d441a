"""ferroserve in-process: scikit-learn pickles read by ferroserve's safe reader.

    import ferroserve
    model = ferroserve.Model.load("model.joblib")   # nothing in the file is executed
    df["prediction"] = model.predict(df)["predict"]

``Model.predict`` takes a numpy 2-D array, a pandas DataFrame, or any Arrow record
batch / table (pyarrow or another library implementing the Arrow PyCapsule interface)
and gives back the same kind: a numpy array of labels/values, a DataFrame with one
column ``predict`` (same index), or a RecordBatch / Table with one column ``predict``.
The GIL is released while the model predicts, so threads score in parallel.
"""

from ._native import ArrowArray, ArrowStream, ModelError, PredictError
from ._native import Model as _NativeModel

__all__ = [
    "Model",
    "ModelError",
    "PredictError",
    "PREDICT_OUTPUT",
    "ArrowArray",
    "ArrowStream",
    "load_cached",
]

#: The name of the prediction column in DataFrame and Arrow results.
PREDICT_OUTPUT = "predict"


def _labels_to_numpy(result):
    import numpy as np

    dtype, payload = result
    if dtype == "str":
        out = np.empty(len(payload), dtype=object)
        out[:] = payload
        return out
    return np.frombuffer(payload, dtype=dtype).copy()


class Model:
    """A model loaded with ferroserve's safe reader (see ``Model.load``)."""

    __slots__ = ("_native", "path")

    def __init__(self, native, path):
        self._native = native
        self.path = path

    @classmethod
    def load(cls, path):
        """Loads a scikit-learn pickle or joblib file without executing anything in it.

        Raises ``ferroserve.ModelError`` with the reader's message when the file is
        refused (a class that is not allowlisted, a code-running payload), malformed or
        holds an estimator ferroserve does not reproduce exactly.
        """
        import os

        path = os.fspath(path)
        return cls(_NativeModel.load(path), path)

    @property
    def signature(self):
        """``{"inputs": [...], "outputs": [...], "description": str}``; each input and
        output is ``{"name", "dtype", "shape"}`` with -1 for any number of rows."""
        return self._native.signature

    def __repr__(self):
        return "ferroserve.Model(%r, %s)" % (self.path, self._native.signature["description"])

    def predict(self, data):
        """Predicts every row of ``data`` (numpy 2-D array, pandas DataFrame, Arrow
        record batch or table); returns the same kind. Raises
        ``ferroserve.PredictError`` (a ``ValueError``) when the data does not fit."""
        # Arrow first: pandas DataFrames gained __arrow_c_stream__ too, and keeping
        # them pandas in, pandas out matters more than the route taken.
        module = type(data).__module__.split(".")[0]
        if module == "pandas":
            return self._predict_pandas(data)
        if hasattr(data, "__arrow_c_array__"):
            schema, array = data.__arrow_c_array__()
            out = self._native._predict_arrow_array(schema, array)
            if module == "pyarrow":
                import pyarrow as pa

                return pa.record_batch(out)
            return out
        if hasattr(data, "__arrow_c_stream__"):
            out = self._native._predict_arrow_stream(data.__arrow_c_stream__())
            if module == "pyarrow":
                import pyarrow as pa

                return pa.table(out)
            return out
        return self._predict_numpy(data)

    def _predict_numpy(self, data):
        import numpy as np

        kind = self._native.input_kind
        if kind == "text":
            texts = [str(t) for t in np.asarray(data, dtype=object).reshape(-1)]
            return _labels_to_numpy(self._native._predict_text(texts))
        if kind != "dense":
            raise PredictError(
                "this model selects its input columns by name: pass a pandas DataFrame "
                "or an Arrow record batch / table"
            )
        matrix = np.ascontiguousarray(data, dtype=np.float64)
        if matrix.ndim != 2:
            raise PredictError("expected a 2-D array, got %d dimensions" % matrix.ndim)
        rows, cols = matrix.shape
        return _labels_to_numpy(self._native._predict_dense(matrix.tobytes(), rows, cols))

    def _predict_pandas(self, frame):
        import numpy as np
        import pandas as pd

        if isinstance(frame, pd.Series):
            frame = frame.to_frame()
        kind = self._native.input_kind
        numeric = all(pd.api.types.is_numeric_dtype(t) for t in frame.dtypes)
        if kind == "dense" and numeric:
            names = self._native.feature_names
            if names is not None and all(n in frame.columns for n in names):
                frame_in = frame[names]
            else:
                frame_in = frame
            matrix = np.ascontiguousarray(frame_in.to_numpy(dtype=np.float64, na_value=np.nan))
            rows, cols = matrix.shape
            labels = self._native._predict_dense(matrix.tobytes(), rows, cols)
        elif kind == "text":
            if frame.shape[1] != 1:
                raise PredictError(
                    "this model reads one text column; the DataFrame has %d" % frame.shape[1]
                )
            labels = self._native._predict_text([str(t) for t in frame.iloc[:, 0]])
        else:
            if kind == "columns":
                specs = self._native.signature["inputs"]
            else:
                # A dense model given string columns (a ColumnTransformer selecting by
                # position): every column goes, typed as pandas has it.
                specs = [
                    {
                        "name": str(name),
                        "used": True,
                        "dtype": "float64" if pd.api.types.is_numeric_dtype(t) else "string",
                    }
                    for name, t in frame.dtypes.items()
                ]
            columns = []
            for spec in specs:
                name = spec["name"]
                if name not in frame.columns:
                    if spec["used"]:
                        raise PredictError("the DataFrame has no column %r" % name)
                    continue
                column = frame[name]
                if spec["dtype"] == "float64":
                    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
                    columns.append((name, "float64", np.ascontiguousarray(values).tobytes()))
                else:
                    values = [None if pd.isna(v) else str(v) for v in column]
                    columns.append((name, "string", values))
            labels = self._native._predict_columns(columns)
        return pd.DataFrame({PREDICT_OUTPUT: _labels_to_numpy(labels)}, index=frame.index)


_CACHE = {}
_CACHE_LOCK = __import__("threading").Lock()


def load_cached(path):
    """``Model.load(path)`` once per process: later calls with the same file (same path,
    size and modification time) get the same model. For Spark's ``mapInArrow`` and
    similar, whose function runs many times in one long-lived Python worker."""
    import os

    path = os.path.abspath(os.fspath(path))
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = Model.load(path)
            _CACHE[key] = model
        return model
