"""ferroserve in-process: models read and run by the ferroserve server's own code.

    import ferroserve
    model = ferroserve.Model.load("model.joblib")   # nothing in the file is executed
    df["prediction"] = model.predict(df)["predict"]

``Model.load`` recognises the file from its first bytes as the server does:

* a scikit-learn pickle or joblib file, read by ferroserve's safe reader (only
  allowlisted classes are rebuilt; nothing in the file runs). ``predict`` takes a numpy
  2-D array, a pandas DataFrame, or any Arrow record batch / table (pyarrow or another
  library implementing the Arrow PyCapsule interface) and gives back the same kind: a
  numpy array of labels/values, a DataFrame with one column ``predict`` (same index),
  or a RecordBatch / Table with one column ``predict``. A model that knows its
  feature names takes DataFrame and Arrow columns by name (in any order; other columns
  are left out), and refuses named columns that lack one of its features; columns go
  by position only when they have no names (numpy, non-string pandas labels such as a
  ``RangeIndex``, Arrow columns named ``"0"``, ``"1"``, ...).
* an ONNX model, run by the server's ONNX backend on ONNX Runtime, whose library is
  taken from the installed ``onnxruntime`` wheel (``pip install onnxruntime``) or from
  ``ORT_DYLIB_PATH``. ``predict`` takes a numpy array (a model with one input) or a
  dict of input name to array, and gives a dict of output name to array; a DataFrame
  or Arrow data gives one column per output, each input read from the column of its
  name (a one-input model takes every column as its matrix; a column of equal-length
  arrays is an [n, k] input; bool, nullable and number-categorical columns, and
  object columns or arrays of numbers, are numbers, and a missing value is NaN for a
  float input and refused for another).
  Values are cast to the model's dtypes as the server casts them; a dict that lacks one of the model's inputs
  or names one it does not have is refused before anything runs, as the server does.
* a TensorFlow SavedModel: the directory holding ``saved_model.pb`` and
  ``variables/``, run by the server's TensorFlow backend through TensorFlow's C API,
  whose libraries are taken from the installed ``tensorflow`` (or ``tensorflow-cpu``)
  wheel's package directory (``pip install tensorflow-cpu``) or from
  ``FERROSERVE_TENSORFLOW_PATH`` (that directory). ``signature`` describes the default
  signature (``serving_default``, else the first by name); ``signatures`` lists them
  all, and ``Model.load(path, signature_name=...)``, ``model.with_signature(name)`` or
  ``predict(data, signature_name=...)`` run another. ``predict`` takes and gives what
  it does for ONNX models. Importing ferroserve sets ``TF_ENABLE_ONEDNN_OPTS=0`` unless
  it is set, as the server does: the wheel's oneDNN kernels abort the whole process on
  some inputs TensorFlow's own kernels refuse with an error (a convolution fed a
  tensor that is not of rank 4). It takes effect only if TensorFlow has not run in the
  process yet: import ferroserve before tensorflow, or set the variable yourself.
* a fastText model (``.bin``, quantized ``.ftz``): ``predict(texts, k=1,
  threshold=0.0)`` gives each text's most probable labels and their probabilities, as
  the fasttext package's ``predict`` does; a DataFrame or Arrow data gives the columns
  ``labels`` and ``probabilities`` (lists).

The GIL is released while a model loads and predicts, so threads score in parallel.
A model cannot be pickled: load it where it runs (``load_cached(path)`` in a Spark
``mapInArrow`` function, ``Model.load`` in a Ray actor's ``__init__``).
"""

import glob as _glob
import math as _math
import os as _os
from collections.abc import Mapping as _Mapping

# Before TensorFlow loads (it reads the variable once): see the module's docs.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from ._native import ArrowArray, ArrowStream, ModelError, PredictError
from ._native import FastTextModel as _NativeFastText
from ._native import Model as _NativeModel
from ._native import TensorModel as _NativeTensor
from ._native import format_of as _format_of

__all__ = [
    "Model",
    "ModelError",
    "PredictError",
    "PREDICT_OUTPUT",
    "ONNXRUNTIME_LIBRARY",
    "TENSORFLOW_LIBRARY",
    "MAX_THREADS",
    "MAX_SESSIONS",
    "ArrowArray",
    "ArrowStream",
    "load_cached",
]

#: The name of the prediction column in DataFrame and Arrow results.
PREDICT_OUTPUT = "predict"

#: The ONNX Runtime library the server's ONNX backend is built for.
ONNXRUNTIME_LIBRARY = "libonnxruntime.so.1.31.1"

#: The TensorFlow C API library the TensorFlow backend opens (beside
#: ``libtensorflow_framework.so.2``) in the tensorflow wheel's package directory.
TENSORFLOW_LIBRARY = "libtensorflow_cc.so.2"

#: The most ONNX Runtime intra-op (or TensorFlow intra- and inter-op) threads
#: ``Model.load`` takes per session.
MAX_THREADS = 1024

#: The most sessions of one ONNX model ``Model.load`` makes.
MAX_SESSIONS = 256

#: The formats whose models take and give named tensors.
_TENSOR_FORMATS = ("onnx", "tensorflow")


def _onnxruntime_library():
    """The ONNX Runtime library to open: None when ``ORT_DYLIB_PATH`` names a file (the
    native side reads it), else ``libonnxruntime.so*`` in the installed onnxruntime
    wheel's ``capi/`` directory, found without importing onnxruntime. An
    ``ORT_DYLIB_PATH`` that names no file is an error that says so (the native side's
    message names the server's flags and its setup script)."""
    configured = _os.environ.get("ORT_DYLIB_PATH")
    if configured:
        if _os.path.isfile(configured):
            return None
        raise ModelError(
            "ORT_DYLIB_PATH is %r, which is not a file: set it to ONNX Runtime's %s, "
            "or unset it to use the installed onnxruntime wheel's (pip install "
            "onnxruntime==1.31.1)" % (configured, ONNXRUNTIME_LIBRARY)
        )
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime")
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        capi = _os.path.join(location, "capi")
        exact = _os.path.join(capi, ONNXRUNTIME_LIBRARY)
        if _os.path.isfile(exact):
            return exact
        found = sorted(_glob.glob(_os.path.join(capi, "libonnxruntime.so*")), key=len)
        if found:
            return found[-1]
    raise ModelError(
        "ONNX Runtime not found: install the onnxruntime wheel (pip install "
        "onnxruntime==1.31.1), whose %s ferroserve opens, or set ORT_DYLIB_PATH to that "
        "library" % ONNXRUNTIME_LIBRARY
    )


def _tensorflow_library():
    """The directory of TensorFlow's libraries: None when ``FERROSERVE_TENSORFLOW_PATH``
    is set (the native side reads it), else the installed tensorflow (or
    tensorflow-cpu) wheel's ``tensorflow/`` package directory, found without importing
    tensorflow."""
    if _os.environ.get("FERROSERVE_TENSORFLOW_PATH"):
        return None
    import importlib.util

    try:
        spec = importlib.util.find_spec("tensorflow")
    except (ImportError, ValueError):
        spec = None
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        if _os.path.isfile(_os.path.join(location, TENSORFLOW_LIBRARY)):
            return location
    raise ModelError(
        "TensorFlow not found: install the tensorflow or tensorflow-cpu wheel (pip install "
        "tensorflow-cpu), whose %s ferroserve opens, or set FERROSERVE_TENSORFLOW_PATH to "
        "the directory holding it" % TENSORFLOW_LIBRARY
    )


def _number_matrix(data):
    """`data` (an array or nested lists) as contiguous float64, or a PredictError: ragged
    rows, text, and numbers float64 cannot hold whole (complex, dates, times) are
    refused rather than cast (numpy's cast would drop an imaginary part silently)."""
    import numpy as np

    if data is None:
        raise PredictError("expected a 2-D array of numbers (one row per sample), got None")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as e:
        raise PredictError("the rows are not a rectangular array: %s" % e) from None
    if array.ndim == 0:
        raise PredictError(
            "expected a 2-D array of numbers (one row per sample), got a scalar (%r): "
            "pass one row as [[...]]" % (data,)
        )
    if array.dtype.kind not in "biufO":
        raise PredictError(
            "expected numbers, got an array of %s (dtype %s)"
            % (_DTYPE_KINDS.get(array.dtype.kind, "values"), array.dtype)
        )
    if array.dtype.kind == "O":
        return np.ascontiguousarray(_object_numbers(array, "the array", "float64"))
    try:
        return np.ascontiguousarray(array, dtype=np.float64)
    except (ValueError, TypeError) as e:
        raise PredictError("expected numbers: %s" % e) from None


_DTYPE_KINDS = {
    "c": "complex numbers",
    "M": "dates",
    "m": "time spans",
    "U": "text",
    "S": "bytes",
    "V": "records",
}


def _labels_to_numpy(result):
    import numpy as np

    dtype, payload = result
    if dtype == "str":
        # The distinct labels and each row's index into them (see the native side).
        distinct, codes = payload
        labels = np.empty(len(distinct), dtype=object)
        labels[:] = distinct
        return labels[np.frombuffer(codes, dtype=np.int32)]
    return np.frombuffer(payload, dtype=dtype).copy()


class Model:
    """A model loaded with ferroserve's safe reader (see ``Model.load``)."""

    __slots__ = ("_native", "path")

    def __init__(self, native, path):
        self._native = native
        self.path = path

    @classmethod
    def load(cls, path, *, threads=1, sessions=1, signature_name=None, tags=("serve",)):
        """Loads a scikit-learn pickle or joblib file (without executing anything in
        it), an ONNX model or a fastText model, recognised from the file's content, or
        a TensorFlow SavedModel directory.

        ``threads`` (ONNX Runtime's intra-op threads per session) and ``sessions`` (how
        many threads can run the model at once) apply to ONNX models; for a SavedModel
        ``threads`` is TensorFlow's intra- and inter-op threads (0: TensorFlow chooses),
        ``tags`` the MetaGraph to load (a str is one tag) and ``signature_name`` the signature to run
        (default ``serving_default``, else the first by name).

        ``threads`` is from 0 to ``MAX_THREADS`` (1024) and ``sessions`` from 1 to
        ``MAX_SESSIONS`` (256); other values raise ``ValueError`` before anything loads.

        Raises ``ferroserve.ModelError`` with the reader's message when the file is
        refused (a class that is not allowlisted, a code-running payload), malformed or
        holds an estimator ferroserve does not reproduce exactly.
        """
        threads = _bounded("threads", threads, 0, MAX_THREADS)
        sessions = _bounded("sessions", sessions, 1, MAX_SESSIONS)
        tags = _tags(tags)
        path = _os.fsdecode(_os.fspath(path))
        kind = _format_of(path)
        if kind != "tensorflow" and signature_name not in (None, "", "serving_default"):
            raise ModelError(
                "signature_name applies to TensorFlow SavedModels; a %s model has one "
                "signature, serving_default" % kind
            )
        if kind == "onnx":
            native = _NativeTensor.load(path, _onnxruntime_library(), threads, sessions)
        elif kind == "tensorflow":
            if _os.path.basename(path) == "saved_model.pb":
                path = _os.path.dirname(path) or "."
            native = _NativeTensor.load_saved_model(
                path, _tensorflow_library(), tags, threads, signature_name
            )
        elif kind == "fasttext":
            native = _NativeFastText.load(path)
        else:
            native = _NativeModel.load(path)
        return cls(native, path)

    @property
    def format(self):
        """``"sklearn"``, ``"onnx"``, ``"tensorflow"`` or ``"fasttext"``."""
        native = self._native
        if isinstance(native, _NativeTensor):
            return native.format
        if isinstance(native, _NativeFastText):
            return "fasttext"
        return "sklearn"

    @property
    def signature_name(self):
        """The name of the signature ``signature`` describes and ``predict`` runs."""
        if isinstance(self._native, _NativeTensor):
            return self._native.signature_name
        return "serving_default"

    @property
    def signatures(self):
        """Every signature by name, each ``{"inputs", "outputs", "method_name"}``
        (several for a SavedModel; one, ``serving_default``, for other formats)."""
        if isinstance(self._native, _NativeTensor):
            return self._native.signatures
        signature = dict(self._native.signature)
        signature.pop("description", None)
        signature["method_name"] = ""
        return {"serving_default": signature}

    def with_signature(self, name):
        """This model (the same loaded session) running the signature ``name``."""
        if isinstance(self._native, _NativeTensor):
            return type(self)(self._native.with_signature(str(name)), self.path)
        if name in ("", "serving_default"):
            return self
        raise ModelError(
            "the model has no signature %r (its signatures: serving_default)" % (name,)
        )

    @property
    def signature(self):
        """``{"inputs": [...], "outputs": [...], "description": str}``; each input and
        output is ``{"name", "dtype", "shape"}`` with -1 for any number of rows, and
        a shape of None for a tensor of any shape (a SavedModel's ``tf.TensorSpec(None)``)."""
        return self._native.signature

    def __repr__(self):
        return "ferroserve.Model(%r, %s)" % (self.path, self._native.signature["description"])

    def __reduce_ex__(self, protocol):
        # A loaded model holds native sessions, which do not travel: say what works.
        raise TypeError(
            "ferroserve.Model cannot be pickled (nor copied): load it where it runs, e.g. "
            "ferroserve.load_cached(path) inside a Spark mapInArrow function, or "
            "ferroserve.Model.load(path) in a Ray actor's __init__"
        )

    def predict(self, data, *, k=None, threshold=None, signature_name=None):
        """Predicts every row of ``data`` and returns the same kind (see the module's
        docs for each format). ``k`` (labels per text, -1 for all; default 1) and
        ``threshold`` (default 0.0) apply to fastText models; ``signature_name`` runs
        another signature of a SavedModel. Raises ``ferroserve.PredictError`` (a
        ``ValueError``) when the data does not fit."""
        if signature_name is not None and signature_name != self.signature_name:
            try:
                other = self.with_signature(signature_name)
            except ModelError as e:
                raise PredictError(str(e)) from None
            return other.predict(data, k=k, threshold=threshold)
        fmt = self.format
        if fmt == "fasttext":
            if isinstance(data, _Mapping):
                data = _text_column(data, ("text",), "a fastText model")
            return self._predict_fasttext(data, _fasttext_k(k), _fasttext_threshold(threshold))
        if k is not None or threshold is not None:
            raise PredictError(
                "k and threshold apply to fastText models; this is a %s model" % fmt
            )
        module = type(data).__module__.split(".")[0]
        if module == "pandas":
            import pandas as pd

            if not isinstance(data, (pd.DataFrame, pd.Series)):
                # An array of pandas' own (a string column's `.values`, a
                # Categorical, an Index): read as the Series it makes.
                data = pd.Series(data)
        if fmt in _TENSOR_FORMATS and module != "pandas" and not _is_arrow(data):
            return self._predict_tensors_numpy(data)
        # Arrow first: pandas DataFrames gained __arrow_c_stream__ too, and keeping
        # them pandas in, pandas out matters more than the route taken.
        if module == "pandas":
            if fmt in _TENSOR_FORMATS:
                return self._predict_tensors_pandas(data)
            return self._predict_pandas(data)
        if _is_arrow(data):
            return self._predict_arrow(data, module, ())
        if isinstance(data, _Mapping):
            return self._predict_mapping(data)
        return self._predict_numpy(data)

    def _predict_mapping(self, data):
        """A dict of column name to array (Ray Data's ``batch_format="numpy"``): a text
        model reads its one text column, other models the columns by name, as from a
        DataFrame; the answer is what a numpy array gives."""
        if self._native.input_kind == "text":
            return self._predict_numpy(_text_column(data, ("input",), "this model"))
        import numpy as np
        import pandas as pd

        try:
            frame = pd.DataFrame({name: np.asarray(values) for name, values in data.items()})
        except ValueError as e:
            raise PredictError("a dict of columns must hold 1-D arrays of one length: %s" % e) from None
        return self._predict_pandas(frame)[PREDICT_OUTPUT].to_numpy()

    def _predict_arrow(self, data, module, extra):
        if module == "pyarrow":
            data = _numeric_dictionaries_decoded(data)
        if hasattr(data, "__arrow_c_array__"):
            schema, array = data.__arrow_c_array__()
            out = self._native._predict_arrow_array(schema, array, *extra)
            if module == "pyarrow":
                import pyarrow as pa

                return pa.record_batch(out)
            return out
        out = self._native._predict_arrow_stream(data.__arrow_c_stream__(), *extra)
        if module == "pyarrow":
            import pyarrow as pa

            return pa.table(out)
        return out

    def _predict_tensors_numpy(self, data):
        if isinstance(data, _Mapping):
            import numpy as np

            names = {i["name"] for i in self._native.signature["inputs"]}
            columns = (
                len(names) == 1
                and len(data) > 0
                and all(
                    str(key) not in names and np.ndim(values) == 1
                    for key, values in data.items()
                )
            )
            if not columns:
                inputs = data
            else:
                # For a one-input model, 1-D arrays none named as its input:
                # columns (Ray Data's batch_format="numpy"), its features, read as
                # a DataFrame's are; the answer as numpy's.
                import pandas as pd

                try:
                    frame = pd.DataFrame({key: np.asarray(values) for key, values in data.items()})
                except ValueError as e:
                    raise PredictError(
                        "a dict of columns must hold 1-D arrays of one length: %s" % e
                    ) from None
                tensors = self._frame_tensors(frame)
                return {
                    name: array
                    for name, array in _tensors_to_numpy(self._native._predict_tensors(tensors))
                }
        else:
            names = [i["name"] for i in self._native.signature["inputs"]]
            if len(names) != 1:
                raise PredictError(
                    "this model has %d inputs (%s): pass a dict of input name to array"
                    % (len(names), ", ".join(names))
                )
            inputs = {names[0]: data}
        for name, value in inputs.items():
            if value is None:
                raise PredictError("input %r: got None; give an array" % (name,))
        dtypes = {i["name"]: i["dtype"] for i in self._native.signature["inputs"]}
        tensors = [
            _tensor_payload(str(name), value, dtypes.get(str(name)))
            for name, value in inputs.items()
        ]
        return {name: array for name, array in _tensors_to_numpy(self._native._predict_tensors(tensors))}

    def _predict_tensors_pandas(self, frame):
        import numpy as np
        import pandas as pd

        if isinstance(frame, pd.Series):
            frame = frame.to_frame()
        tensors = self._frame_tensors(frame)
        n = len(frame)
        columns = {}
        for name, array in _tensors_to_numpy(self._native._predict_tensors(tensors)):
            if array.ndim == 0 or array.shape[0] != n:
                raise PredictError(
                    "output %r has shape %s, not one row per input row (%d); pass numpy "
                    "arrays to get it whole" % (name, list(array.shape), n)
                )
            if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1):
                columns[name] = array.reshape(n)
            else:
                cells = np.empty(n, dtype=object)
                cells[:] = list(array)
                columns[name] = cells
        return pd.DataFrame(columns, index=frame.index)

    def _frame_tensors(self, frame):
        """The model's input tensors from a DataFrame's columns: by input name, or, for
        a one-input model, its columns as the input's features (or one text column,
        or one column of arrays)."""
        import numpy as np

        specs = self._native.signature["inputs"]
        if all(spec["name"] in frame.columns for spec in specs):
            tensors = [
                _tensor_payload(
                    spec["name"], _column_values(frame[spec["name"]], spec), spec["dtype"]
                )
                for spec in specs
            ]
        elif len(specs) == 1:
            spec = specs[0]
            if spec["dtype"] == "string":
                if frame.shape[1] != 1:
                    raise PredictError(
                        "input %r takes text; give one string column (the DataFrame has %d)"
                        % (spec["name"], frame.shape[1])
                    )
                values = _column_values(frame.iloc[:, 0], spec)
            elif frame.shape[1] == 1 and (rows := _pandas_rows(frame.iloc[:, 0])) is not None:
                # One column of arrays (as predict gives an [n, k] output): its rows.
                values = rows
            elif frame.shape[1] == 0:
                values = frame.to_numpy()
            else:
                # The matrix numpy would make of the columns (float32 and bool: float32;
                # float32 and int64: float64), which the native side casts to the
                # input's dtype as it casts any array.
                columns = []
                for position in range(frame.shape[1]):
                    column = frame.iloc[:, position]
                    numbers = _pandas_numbers(column, spec)
                    if numbers is None and column.dtype == object and not _holds_arrays(column):
                        numbers = _object_numbers(
                            column.to_numpy(), "column %r" % (column.name,), spec["dtype"]
                        )
                    if numbers is None:
                        raise PredictError(
                            "input %r is a matrix of numbers, one column per feature; column "
                            "%r is non-numeric (%s); give an [n, k] input as one number "
                            "column per feature, or as one column of arrays"
                            % (spec["name"], column.name, column.dtype)
                        )
                    columns.append(numbers)
                values = np.column_stack(columns)
            tensors = [_tensor_payload(spec["name"], values, spec["dtype"])]
        else:
            missing = [spec["name"] for spec in specs if spec["name"] not in frame.columns]
            raise PredictError("the DataFrame has no column %s" % ", ".join(map(repr, missing)))
        return tensors

    def _predict_fasttext(self, data, k, threshold):
        import numpy as np

        if isinstance(data, str):
            labels, probabilities = self._native._predict_texts([data], k, threshold)[0]
            return labels, np.asarray(probabilities, dtype=np.float32)
        module = type(data).__module__.split(".")[0]
        if module == "pandas":
            import pandas as pd

            frame = data.to_frame() if isinstance(data, pd.Series) else data
            if "text" in frame.columns:
                column = frame["text"]
            elif frame.shape[1] == 1:
                column = frame.iloc[:, 0]
            else:
                raise PredictError(
                    "a fastText model reads one text column (or a column named \"text\"); "
                    "the DataFrame has %d columns" % frame.shape[1]
                )
            answers = self._native._predict_texts(_texts(column), k, threshold)
            labels = np.empty(len(answers), dtype=object)
            labels[:] = [a[0] for a in answers]
            probabilities = np.empty(len(answers), dtype=object)
            probabilities[:] = [np.asarray(a[1], dtype=np.float32) for a in answers]
            return pd.DataFrame(
                {"labels": labels, "probabilities": probabilities}, index=frame.index
            )
        if _is_arrow(data):
            return self._predict_arrow(data, module, (k, threshold))
        answers = self._native._predict_texts(_texts(data), k, threshold)
        return (
            [a[0] for a in answers],
            [np.asarray(a[1], dtype=np.float32) for a in answers],
        )

    def _predict_numpy(self, data):
        import numpy as np

        kind = self._native.input_kind
        # A regressor fitted on a target of one column answers (n_rows, 1), as
        # scikit-learn's predict does.
        width = getattr(self._native, "predict_width", None)
        shaped = (lambda a: a.reshape(-1, width)) if width else (lambda a: a)
        if kind == "text":
            return shaped(_labels_to_numpy(self._native._predict_text(_documents(data))))
        if kind != "dense":
            raise PredictError(
                "this model selects its input columns by name: pass a pandas DataFrame "
                "or an Arrow record batch / table"
            )
        matrix = _number_matrix(data)
        if matrix.ndim != 2:
            raise PredictError("expected a 2-D array, got %d dimensions" % matrix.ndim)
        rows, cols = matrix.shape
        return shaped(_labels_to_numpy(self._native._predict_dense(matrix.tobytes(), rows, cols)))

    def _predict_pandas(self, frame):
        import numpy as np
        import pandas as pd

        if isinstance(frame, pd.Series):
            frame = frame.to_frame()
        kind = self._native.input_kind
        matrix = _dense_matrix(self._native, frame) if kind == "dense" else None
        if matrix is not None:
            rows, cols = matrix.shape
            labels = self._native._predict_dense(matrix.tobytes(), rows, cols)
        elif kind == "text":
            if frame.shape[1] != 1:
                raise PredictError(
                    "this model reads one text column; the DataFrame has %d" % frame.shape[1]
                )
            labels = self._native._predict_text(_documents(frame.iloc[:, 0].to_numpy(dtype=object)))
        else:
            if kind == "columns":
                selected = []
                for spec in self._native.signature["inputs"]:
                    if not spec["used"]:
                        # Fitted with but never read (any dtype): scikit-learn only
                        # asks that the frame has it.
                        continue
                    name = spec["name"]
                    if name not in frame.columns:
                        raise PredictError("the DataFrame has no column %r" % name)
                    selected.append((name, spec["dtype"], frame[name]))
            else:
                # A dense model given text columns: every column goes, by position
                # (a label need not be a str: a RangeIndex's 0 is not "0"), typed as
                # pandas has it, for the native side to select the model's features
                # and name a text column it needs as numbers.
                # A frame whose columns have no names (a RangeIndex) is read by
                # position, as _dense_matrix reads it: its columns take the model's
                # feature names, so the native side names the text column it needs as
                # numbers rather than a feature it cannot find.
                labels = [str(label) for label in frame.columns]
                features = self._native.feature_names
                if features and not any(isinstance(c, str) for c in frame.columns):
                    if len(features) != frame.shape[1]:
                        raise PredictError(
                            "expected %d columns, got %d" % (len(features), frame.shape[1])
                        )
                    labels = list(features)
                selected = []
                for position, label in enumerate(labels):
                    column = frame.iloc[:, position]
                    numbers = _is_number_dtype(column.dtype) or _object_numbers_column(column)
                    selected.append((label, "float64" if numbers else "string", column))
            columns = []
            for name, dtype, column in selected:
                if dtype == "float64":
                    values = _float_column(column)
                    columns.append((name, "float64", np.ascontiguousarray(values).tobytes()))
                else:
                    values = [None if pd.isna(v) else str(v) for v in column]
                    columns.append((name, "string", values))
            labels = self._native._predict_columns(columns)
        return pd.DataFrame({PREDICT_OUTPUT: _labels_to_numpy(labels)}, index=frame.index)


def _bounded(name, value, low, high):
    """``value`` as an int from ``low`` to ``high``, else ``TypeError`` / ``ValueError``."""
    import operator

    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError("%s must be an integer, not %s" % (name, type(value).__name__)) from None
    if not low <= number <= high:
        raise ValueError("%s=%d is out of range: from %d to %d" % (name, number, low, high))
    return number


def _tags(tags):
    """A SavedModel's MetaGraph tags as a list of str: one str is one tag."""
    if isinstance(tags, str):
        return [tags]
    try:
        tags = list(tags)
    except TypeError:
        raise TypeError("tags must be a str or a sequence of str, not %s" % type(tags).__name__) from None
    if not all(isinstance(t, str) for t in tags):
        raise TypeError("tags must be a str or a sequence of str, got %r" % (tags,))
    return tags


def _fasttext_k(k):
    """fastText's ``k``: an integer (-1: every label); a float is refused, never truncated."""
    if k is None:
        return 1
    import operator

    try:
        return operator.index(k)
    except TypeError:
        raise PredictError("k must be an integer, not %r" % (k,)) from None


def _fasttext_threshold(threshold):
    if threshold is None:
        return 0.0
    value = float(threshold)
    if _math.isnan(value):
        raise PredictError("threshold must be a number, not NaN")
    return value


def _text_column(data, names, what):
    """The text column of a dict of columns: its only one, else the one named as the
    model's input (one of ``names``); never the dict's keys."""
    if len(data) == 1:
        return next(iter(data.values()))
    for name in names:
        if name in data:
            return data[name]
    raise PredictError(
        "%s reads one text column (or a column named %s); the dict has columns %s"
        % (what, " or ".join(repr(n) for n in names), ", ".join(repr(k) for k in data) or "none")
    )


def _documents(values):
    """A scikit-learn text model's documents, one per row, as its vectorizers take them:
    ``str`` as is, ``bytes`` decoded as UTF-8 (their ``encoding="utf-8"``,
    ``decode_error="strict"``); a missing document (None, NaN) or anything else is
    refused naming its row, and so is anything but a 1-D sequence."""
    import numpy as np

    if isinstance(values, (str, bytes)):
        raise PredictError(
            "expected a 1-D sequence of documents, got one %s: pass a list of them"
            % type(values).__name__
        )
    array = np.asarray(values, dtype=object)
    if array.ndim != 1:
        raise PredictError(
            "a text model takes a 1-D sequence of documents (one per row); got an array "
            "of %d dimensions" % array.ndim
        )
    out = []
    for row, value in enumerate(array):
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, bytes):
            try:
                out.append(value.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise PredictError("document %d is not valid UTF-8: %s" % (row, e)) from None
        elif value is None or (isinstance(value, float) and _math.isnan(value)) or (
            type(value).__name__ in ("NAType", "NaTType")
        ):
            raise PredictError("document %d is missing (%r): give a text for every row" % (row, value))
        else:
            raise PredictError("document %d is %s, not text" % (row, type(value).__name__))
    return out


def _is_arrow(data):
    return hasattr(data, "__arrow_c_array__") or hasattr(data, "__arrow_c_stream__")


def _texts(values):
    """One ``str`` per row: a text, or UTF-8 bytes."""
    out = []
    for row, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PredictError("text %d is not valid UTF-8: %s" % (row, e)) from None
        elif not isinstance(value, str):
            raise PredictError("expected texts; got %s" % type(value).__name__)
        out.append(value)
    return out


def _strings(name, values):
    """The elements of a string input as ``bytes``: ``bytes`` unchanged (a serialized
    tf.train.Example is not UTF-8), ``str`` in UTF-8."""
    out = []
    for value in values:
        if isinstance(value, bytes):
            out.append(bytes(value))
        elif isinstance(value, str):
            try:
                out.append(value.encode("utf-8"))
            except UnicodeEncodeError as e:
                raise PredictError("input %r: %s" % (name, e)) from None
        else:
            raise PredictError(
                "input %r takes str or bytes; got %s" % (name, type(value).__name__)
            )
    return out


def _column_values(column, spec):
    """A pandas column as a numpy array for the input ``spec``: numbers as
    ``_pandas_numbers`` gives them, a column of equal-length arrays as their [n, k]
    matrix, text as an object array of its str or bytes (a missing text is refused)."""
    numbers = _pandas_numbers(column, spec)
    if numbers is not None:
        return numbers
    rows = _pandas_rows(column)
    if rows is not None:
        return rows
    if column.dtype == object and spec["dtype"] != "string":
        return _object_numbers(column.to_numpy(), "column %r" % (column.name,), spec["dtype"])
    if column.isna().any():
        raise PredictError("column %r has missing values" % column.name)
    return column.to_numpy(dtype=object)


def _dense_matrix(native, frame):
    """A dense scikit-learn model's float64 matrix of ``frame``: the model's features by
    name when it has them and the columns have names, else every column by position;
    None when a column it reads holds text (the native side then names it, or leaves
    it out when the model does not read it). Number columns of any pandas dtype, and
    object columns that hold numbers (see ``_object_numbers``), are numbers."""
    import numpy as np
    import pandas as pd

    # A feature the named columns lack is an error, never a fall back to column order.
    positions = native._feature_columns(
        [c if isinstance(c, str) else None for c in frame.columns], "DataFrame"
    )
    frame_in = frame if positions is None else frame.iloc[:, positions]
    dtypes = list(frame_in.dtypes)
    if all(_is_number_dtype(t) and not isinstance(t, pd.CategoricalDtype) for t in dtypes):
        matrix = frame_in.to_numpy(dtype=np.float64, na_value=np.nan)
        return np.ascontiguousarray(matrix, dtype=np.float64)
    columns = []
    for position in range(frame_in.shape[1]):
        column = frame_in.iloc[:, position]
        if _is_number_dtype(column.dtype):
            columns.append(_float_column(column))
        elif _object_numbers_column(column):
            columns.append(_float_column(column))
        else:
            return None
    return np.ascontiguousarray(np.column_stack(columns), dtype=np.float64)


def _is_missing(value):
    """Whether one value of an object array is missing: None, NaN, ``pd.NA``, ``pd.NaT``."""
    if value is None:
        return True
    if isinstance(value, float) or type(value).__module__ == "numpy":
        try:
            return value != value
        except (TypeError, ValueError):
            return False
    return type(value).__name__ in ("NAType", "NaTType")


def _object_numbers_column(column):
    """Whether a pandas object column is numbers for a dense model: anything but a
    column of text (with or without missing values), which stays text as a column of
    the ``str`` dtype does, or of arrays. A column of only missing values is NaN."""
    if column.dtype != object or _holds_arrays(column):
        return False
    present = [v for v in column.to_numpy() if not _is_missing(v)]
    return not present or not all(isinstance(v, (str, bytes)) for v in present)


def _holds_arrays(column):
    """Whether a pandas object column holds arrays, lists or tuples (an [n, k] input)."""
    import numpy as np

    return any(isinstance(cell, (list, tuple, np.ndarray)) for cell in column.to_numpy())


def _object_numbers(values, what, dtype):
    """A numpy object array (or a pandas object column's values) of numbers as a numpy
    array of numbers, for an input of ``dtype``: converted as numpy converts it,
    ``np.asarray(values, dtype=float64)`` (numbers, numbers written as text; None, NaN,
    ``pd.NA`` are NaN), except that integers and booleans alone keep the dtype numpy
    gives them (int64 or bool) for an integer or boolean input, so a large int64 stays
    exact. A value numpy cannot convert (text that is not a number, a date) is refused
    naming ``what``, the value and where it is; so is a missing value for an input
    that is not a float, which has no NaN."""
    import numpy as np

    array = np.asarray(values, dtype=object)
    flat = array.reshape(-1)
    missing = np.fromiter((_is_missing(v) for v in flat), dtype=bool, count=flat.size)

    def where(index):
        if array.ndim == 2:
            return "row %d, column %d" % np.unravel_index(index, array.shape)
        if array.ndim == 1:
            return "row %d" % index
        return "index %s" % (list(np.unravel_index(index, array.shape)),)

    if missing.any() and "float" not in dtype:
        index = int(np.argmax(missing))
        raise PredictError(
            "%s has a missing value (%s): %r, for an input of %s, which has no NaN: "
            "fill or drop the missing values" % (what, where(index), flat[index], dtype)
        )
    integers = (bool, int, np.bool_, np.integer)
    if "float" not in dtype and all(isinstance(v, integers) for v in flat):
        inferred = np.asarray(flat.tolist())
        if inferred.dtype.kind in "biu":
            return inferred.reshape(array.shape)
    filled = flat.copy()
    filled[missing] = np.nan
    try:
        return filled.astype(np.float64).reshape(array.shape)
    except (TypeError, ValueError):
        pass
    for index, value in enumerate(filled):
        try:
            np.asarray([value], dtype=object).astype(np.float64)
        except (TypeError, ValueError):
            raise PredictError(
                "expected numbers: %s holds %r (%s), which is not a number"
                % (what, value, where(index))
            ) from None
    raise PredictError("expected numbers: %s does not hold numbers" % what)


def _is_number_dtype(dtype):
    """Whether a pandas column of ``dtype`` holds numbers (booleans and nullable types
    included, and categoricals whose categories are numbers, as scikit-learn reads them)."""
    import pandas as pd

    if isinstance(dtype, pd.CategoricalDtype):
        return _is_number_dtype(dtype.categories.dtype)
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def _float_column(column):
    """A pandas column of numbers (see ``_is_number_dtype``) as float64, missing values NaN."""
    import numpy as np
    import pandas as pd

    if isinstance(column.dtype, pd.CategoricalDtype):
        return _pandas_numbers(column, {"name": column.name, "dtype": "float64"}).astype(np.float64)
    if column.dtype == object:
        return _object_numbers(column.to_numpy(), "column %r" % (column.name,), "float64")
    return column.to_numpy(dtype=np.float64, na_value=np.nan)


def _pandas_numbers(column, spec):
    """A pandas column of numbers or booleans as the numpy array numpy would hold it in,
    or None when it holds something else: numpy dtypes as they are; nullable (``Int64``,
    ``Float64``, ``boolean``) and pyarrow-backed ones in their numpy dtype; a categorical
    whose categories are numbers as its values. A missing value (``pd.NA``, a missing
    category) becomes NaN, the array float64, when the input ``spec`` is a float, as
    NaN in a numpy array is taken; for another input it is refused naming the column,
    as NaN in a numpy array is refused for an integer or boolean input."""
    import numpy as np
    import pandas as pd

    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        if not _is_number_dtype(dtype.categories.dtype):
            return None
        categories = _pandas_numbers(pd.Series(dtype.categories, name=column.name), spec)
        codes = column.cat.codes.to_numpy()
        missing = codes < 0
        if len(categories):
            values = categories[np.where(missing, 0, codes)]
        else:
            values = np.zeros(len(codes), dtype=categories.dtype)
    elif _is_number_dtype(dtype):
        if isinstance(dtype, np.dtype):
            return column.to_numpy()
        missing = column.isna().to_numpy(dtype=bool)
        if not missing.any():
            return column.to_numpy(dtype=getattr(dtype, "numpy_dtype", None))
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        return None
    if missing.any():
        if "float" not in spec["dtype"]:
            raise PredictError(
                "column %r has a missing value (row %d); input %r takes %s, which has no "
                "NaN: fill or drop the missing values"
                % (column.name, int(np.argmax(missing)), spec["name"], spec["dtype"])
            )
        values = values.astype(np.float64)
        values[missing] = np.nan
    return values


def _pandas_rows(column):
    """A pandas column whose cells are arrays, lists or tuples as their stacked
    ``[n, k]`` array, as an Arrow list column is read; None when no cell is one. Rows
    of different lengths, and a missing or scalar cell among them, are refused."""
    import numpy as np

    if column.dtype != object:
        return None
    cells = column.to_numpy()
    sequences = (list, tuple, np.ndarray)
    if not any(isinstance(cell, sequences) for cell in cells):
        return None
    rows = []
    for row, cell in enumerate(cells):
        if not isinstance(cell, sequences):
            raise PredictError(
                "column %r: row %d is %r, not an array like the other rows"
                % (column.name, row, cell)
            )
        values = np.asarray(cell)
        if rows and values.shape != rows[0].shape:
            if values.ndim == 1 and rows[0].ndim == 1:
                raise PredictError(
                    "column %r: row %d has %d values, row 0 has %d; every row of a column "
                    "of arrays must be as long" % (column.name, row, len(values), len(rows[0]))
                )
            raise PredictError(
                "column %r: row %d has shape %s, row 0 has %s; every row of a column of "
                "arrays must have the same shape"
                % (column.name, row, list(values.shape), list(rows[0].shape))
            )
        if values.dtype == object and any(v is None for v in values.reshape(-1)):
            raise PredictError(
                "column %r: row %d holds a missing value (None); fill it or drop the row"
                % (column.name, row)
            )
        rows.append(values)
    return np.stack(rows)


def _numeric_dictionaries_decoded(data):
    """A pyarrow RecordBatch or Table whose dictionary-encoded columns of numbers or
    booleans are decoded to their values (the native reader takes plain columns)."""
    import pyarrow as pa

    if not isinstance(data, (pa.RecordBatch, pa.Table)):
        return data
    for position, field in enumerate(data.schema):
        if not pa.types.is_dictionary(field.type):
            continue
        value_type = field.type.value_type
        if not (
            pa.types.is_integer(value_type)
            or pa.types.is_floating(value_type)
            or pa.types.is_boolean(value_type)
        ):
            continue
        decoded = data.column(position).cast(value_type)
        data = data.set_column(position, field.with_type(value_type), decoded)
    return data


def _tensor_payload(name, value, dtype=None):
    """``(name, dtype, shape, payload)`` for the native side: native-endian bytes for
    numbers and booleans, a list of str for text. An object array for an input of
    numbers (``dtype``, the input's) is its numbers (see ``_object_numbers``)."""
    import numpy as np

    array = np.asarray(value)
    if array.dtype.kind == "O" and dtype not in (None, "string"):
        array = _object_numbers(array, "input %r" % (name,), dtype)
    shape = list(array.shape)
    if array.dtype.kind in "OUS":
        return (name, "string", shape, _strings(name, array.reshape(-1)))
    if array.dtype.kind not in "biuf":
        raise PredictError("input %r: arrays of %s are not supported" % (name, array.dtype))
    array = np.ascontiguousarray(array)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return (name, array.dtype.name, shape, array.tobytes())


def _tensors_to_numpy(tensors):
    """``(name, ndarray)`` for each ``(name, dtype, shape, payload)`` the native side gives."""
    import numpy as np

    out = []
    for name, dtype, shape, payload in tensors:
        if dtype == "string":
            array = np.empty(len(payload), dtype=object)
            array[:] = payload
        else:
            array = np.frombuffer(payload, dtype=dtype).copy()
        out.append((name, array.reshape(shape)))
    return out


_CACHE = {}
_CACHE_LOCK = __import__("threading").Lock()


def load_cached(path):
    """``Model.load(path)`` once per process: later calls with the same file (same path,
    size and modification time) get the same model; a file replaced is loaded again
    and the model of the old one dropped. For Spark's ``mapInArrow`` and similar,
    whose function runs many times in one long-lived Python worker."""
    import os

    path = os.path.abspath(os.fsdecode(os.fspath(path)))
    try:
        stat = os.stat(path)
    except OSError as e:
        # As Model.load says it, so that both raise the same error.
        raise ModelError("cannot read %s: %s" % (path, e.strerror or e)) from None
    # One model per path: a file replaced (another size or modification time) is
    # loaded again and the old model dropped, so a model republished under the same
    # path for the life of a worker does not keep every version in memory.
    stamp = (stat.st_size, stat.st_mtime_ns)
    with _CACHE_LOCK:
        cached = _CACHE.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        model = Model.load(path)
        _CACHE[path] = (stamp, model)
        return model
