//! The only place a module/name pair from a pickle turns into something the reader
//! acts on.
//!
//! Invariant: `GLOBAL`, `STACK_GLOBAL` and `INST` resolve names through [`resolve`] and
//! nothing else. Nothing resolved here is ever called: each [`Global`] variant tells the
//! VM which plain-data rebuild to perform (decode a numpy array, record an object's
//! constructor arguments and state), and anything not listed is refused by name.

use crate::pickle::LoadError;
use crate::value::DType;

/// scikit-learn classes (and the Cython/loss helper classes they pickle) that may be
/// rebuilt as [`crate::value::Value::Object`]. A name is accepted only when its module
/// also starts with `sklearn.`.
///
/// Estimator authors: extend this list when a new estimator is supported. Adding a name
/// here is safe in itself (the reader only records the name, its arguments and its state;
/// it never runs the class), but every name added is one more shape of data the estimator
/// code must validate.
pub const SKLEARN_CLASSES: &[&str] = &[
    // Linear models.
    "LogisticRegression",
    "LinearRegression",
    "Ridge",
    "RidgeClassifier",
    "Lasso",
    "ElasticNet",
    "SGDClassifier",
    "SGDRegressor",
    "LinearSVC",
    "LinearSVR",
    // SGD loss objects (`sklearn.linear_model._sgd_fast`), pickled via `__reduce__`.
    "Hinge",
    "SquaredHinge",
    "ModifiedHuber",
    "Log",
    "SquaredLoss",
    "Huber",
    "EpsilonInsensitive",
    "SquaredEpsilonInsensitive",
    // Trees and forests.
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "Tree",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "ExtraTreeClassifier",
    "ExtraTreeRegressor",
    // Gradient boosting.
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "TreePredictor",
    "_BinMapper",
    // Loss and link objects pickled inside gradient boosting models
    // (`sklearn._loss.loss`, `sklearn._loss._loss` Cython twins, `sklearn._loss.link`,
    // and the pre-1.1 `sklearn.ensemble._gb_losses`).
    "HalfBinomialLoss",
    "HalfMultinomialLoss",
    "HalfSquaredError",
    "AbsoluteError",
    "PinballLoss",
    "HuberLoss",
    "ExponentialLoss",
    "HalfPoissonLoss",
    "HalfGammaLoss",
    "CyHalfBinomialLoss",
    "CyHalfMultinomialLoss",
    "CyHalfSquaredError",
    "CyAbsoluteError",
    "CyPinballLoss",
    "CyHuberLoss",
    "CyExponentialLoss",
    "CyHalfPoissonLoss",
    "CyHalfGammaLoss",
    "IdentityLink",
    "LogitLink",
    "LogLink",
    "MultinomialLogit",
    "HalfLogitLink",
    "Interval",
    "BinomialDeviance",
    "MultinomialDeviance",
    "LeastSquaresError",
    "LeastAbsoluteError",
    "HuberLossFunction",
    "QuantileLossFunction",
    // Naive Bayes and neighbours (with the search trees and distance metrics they pickle).
    "GaussianNB",
    "MultinomialNB",
    "ComplementNB",
    "KNeighborsClassifier",
    "KNeighborsRegressor",
    "KDTree",
    "BallTree",
    "EuclideanDistance64",
    "ManhattanDistance64",
    "MinkowskiDistance64",
    "ChebyshevDistance64",
    // Preprocessing.
    "StandardScaler",
    "MinMaxScaler",
    "RobustScaler",
    "OneHotEncoder",
    "OrdinalEncoder",
    "SimpleImputer",
    "MissingIndicator",
    "LabelEncoder",
    "LabelBinarizer",
    "FunctionTransformer",
    // Text vectorizers.
    "CountVectorizer",
    "TfidfVectorizer",
    "TfidfTransformer",
    "HashingVectorizer",
    // Support vector machines, and probability calibration.
    "SVC",
    "NuSVC",
    "SVR",
    "NuSVR",
    "CalibratedClassifierCV",
    "_CalibratedClassifier",
    "_SigmoidCalibration",
    "IsotonicRegression",
    // scikit-learn 1.6+: `CalibratedClassifierCV(FrozenEstimator(fitted))` replaces
    // `cv="prefit"`; a transparent wrapper around the fitted estimator.
    "FrozenEstimator",
    // Composition.
    "Pipeline",
    "ColumnTransformer",
    // scikit-learn 1.5-1.6 keep the remainder's columns in this list subclass.
    "_RemainderColsList",
    // Baselines.
    "DummyClassifier",
    "DummyRegressor",
];

/// numpy random-state classes and their pickling helpers. Gradient boosting models keep
/// their `RandomState` / `Generator` (`_rng`) after fitting, so refusing these would refuse
/// every such model. They are recorded as inert [`crate::value::Value::Object`]s (name,
/// arguments, state) exactly like sklearn classes; no generator is ever created.
const NUMPY_RANDOM_NAMES: &[(&str, &str)] = &[
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._philox", "Philox"),
    ("numpy.random._sfc64", "SFC64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random.mtrand", "RandomState"),
    ("numpy.random._generator", "Generator"),
];

/// scipy sparse matrices that fitted estimators keep: an SVM fitted on sparse data
/// (text) keeps its support vectors as a CSR matrix, and `TfidfTransformer` before
/// scikit-learn 1.5 kept its idf vector as a diagonal matrix. They pickle as plain
/// objects whose state is a dict of numpy arrays, and are recorded as inert
/// [`crate::value::Value::Object`]s like sklearn classes.
const SCIPY_SPARSE_NAMES: &[(&str, &str)] = &[
    ("scipy.sparse._csr", "csr_matrix"),
    ("scipy.sparse.csr", "csr_matrix"),
    ("scipy.sparse._csr", "csr_array"),
    ("scipy.sparse._dia", "dia_matrix"),
    ("scipy.sparse.dia", "dia_matrix"),
    ("scipy.sparse._dia", "dia_array"),
];

/// What an allowlisted global stands for. Each variant is a recipe the VM follows with
/// plain data; none of them runs code.
#[derive(Debug, Clone, PartialEq)]
pub enum Global {
    /// `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`: an empty array that the
    /// following `BUILD` fills from `(version, shape, dtype, is_fortran, data)`.
    NumpyReconstruct,
    /// `numpy.ndarray`: only valid as the first argument of `_reconstruct` or as joblib's
    /// wrapper `subclass`.
    NumpyNdarray,
    /// `numpy.dtype(code, align, copy)`, completed by `BUILD` with the dtype state tuple.
    NumpyDType,
    /// `numpy.core.multiarray.scalar(dtype, raw_bytes)`: a numpy scalar.
    NumpyScalar,
    /// `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)` (protocol 5 arrays).
    NumpyFromBuffer,
    /// A numpy scalar type used as data, e.g. `OneHotEncoder(dtype=numpy.float64)`.
    /// Becomes [`crate::value::Value::DType`]; calling it is refused.
    NumpyScalarType(DType),
    /// `copyreg._reconstructor(cls, object, None)`: protocol 0/1 object creation.
    CopyregReconstructor,
    /// `builtins.object`: only valid as the base argument of `copyreg._reconstructor`.
    BuiltinsObject,
    /// `collections.OrderedDict`: rebuilt as a plain dict (order is kept anyway).
    OrderedDict,
    /// `builtins.set(items)` / `builtins.frozenset(items)`: how protocols 0–3 write sets.
    Set,
    /// `builtins.slice(start, stop, step)` (ColumnTransformer column selections).
    Slice,
    /// `_codecs.encode(text, 'latin1')`: how protocol 2 writes `bytes`.
    CodecsEncode,
    /// `builtins.bytes()`: how protocol 2 writes empty `bytes`.
    Bytes,
    /// `builtins.bytearray(data[, 'latin-1'])`: protocols 2–4 `bytearray`.
    ByteArray,
    /// joblib's `NumpyArrayWrapper`: the array bytes follow its `BUILD` in the file.
    JoblibArrayWrapper,
    /// An allowlisted class (sklearn, or numpy random state): `REDUCE` / `NEWOBJ` record
    /// the arguments, `BUILD` records the state.
    Class { module: String, name: String },
    /// A Cython `newObj(cls)` helper (`sklearn.neighbors._kd_tree.newObj`): rebuilds as
    /// the class given as its argument, which must itself be allowlisted.
    NewObjHelper { module: String, name: String },
    /// `module.__pyx_unpickle_X(X, checksum, state)`: Cython's pickling of class `X`.
    CythonUnpickle { module: String, class_name: String },
    /// A class that is on no list, accepted only when the caller opted in to wrapper
    /// objects ([`crate::ReadOptions::wrapper_objects`]): `NEWOBJ` without arguments or
    /// `copyreg._reconstructor(cls, object, None)` makes an inert
    /// [`crate::value::Value::Object`] that `BUILD` fills with its attributes. Calling
    /// it (`REDUCE`, `INST`, `OBJ`) or passing it arguments is refused.
    Inert { module: String, name: String },
}

impl Global {
    /// The dotted name this global was resolved from, for error messages.
    pub fn dotted_name(&self) -> String {
        match self {
            Global::NumpyReconstruct => "numpy.core.multiarray._reconstruct".into(),
            Global::NumpyNdarray => "numpy.ndarray".into(),
            Global::NumpyDType => "numpy.dtype".into(),
            Global::NumpyScalar => "numpy.core.multiarray.scalar".into(),
            Global::NumpyFromBuffer => "numpy.core.numeric._frombuffer".into(),
            Global::NumpyScalarType(dtype) => format!("numpy.{}", numpy_type_name(dtype)),
            Global::CopyregReconstructor => "copyreg._reconstructor".into(),
            Global::BuiltinsObject => "builtins.object".into(),
            Global::OrderedDict => "collections.OrderedDict".into(),
            Global::Slice => "builtins.slice".into(),
            Global::Set => "builtins.set".into(),
            Global::CodecsEncode => "_codecs.encode".into(),
            Global::Bytes => "builtins.bytes".into(),
            Global::ByteArray => "builtins.bytearray".into(),
            Global::JoblibArrayWrapper => "joblib.numpy_pickle.NumpyArrayWrapper".into(),
            Global::Class { module, name }
            | Global::NewObjHelper { module, name }
            | Global::Inert { module, name } => {
                format!("{module}.{name}")
            }
            Global::CythonUnpickle { module, class_name } => {
                format!("{module}.__pyx_unpickle_{class_name}")
            }
        }
    }
}

/// Resolves a pickled `module`, `name` pair, or refuses it by name.
pub fn resolve(module: &str, name: &str) -> Result<Global, LoadError> {
    // Protocols 0–2 spell Python 3 modules by their Python 2 names; map them the way
    // CPython's unpickler does (`fix_imports`), so refusals name the module users know.
    let module = match module {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        other => other,
    };
    let global = match (module, name) {
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
            Some(Global::NumpyReconstruct)
        }
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Some(Global::NumpyScalar),
        ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => {
            Some(Global::NumpyFromBuffer)
        }
        ("numpy", "ndarray") => Some(Global::NumpyNdarray),
        ("numpy", "dtype") => Some(Global::NumpyDType),
        ("numpy", _) => numpy_scalar_type(name).map(Global::NumpyScalarType),
        ("copyreg", "_reconstructor") => Some(Global::CopyregReconstructor),
        ("builtins", "object") => Some(Global::BuiltinsObject),
        ("builtins", "slice") => Some(Global::Slice),
        ("builtins", "set" | "frozenset") => Some(Global::Set),
        ("builtins", "bytes") => Some(Global::Bytes),
        ("builtins", "bytearray") => Some(Global::ByteArray),
        ("_codecs", "encode") => Some(Global::CodecsEncode),
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("joblib.numpy_pickle" | "sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper") => {
            Some(Global::JoblibArrayWrapper)
        }
        _ if NUMPY_RANDOM_NAMES.contains(&(module, name))
            || SCIPY_SPARSE_NAMES.contains(&(module, name)) =>
        {
            Some(Global::Class {
                module: module.to_owned(),
                name: name.to_owned(),
            })
        }
        _ if module.starts_with("sklearn.") => resolve_sklearn(module, name),
        // scikit-learn 1.4-1.5 builds name their Cython loss module plain `_loss` in
        // pickles (`_loss.__pyx_unpickle_CyHalfBinomialLoss`); only allowlisted names pass.
        ("_loss", _) => resolve_sklearn(module, name),
        _ => None,
    };
    global.ok_or_else(|| LoadError::Refused {
        module: module.to_owned(),
        name: name.to_owned(),
    })
}

fn resolve_sklearn(module: &str, name: &str) -> Option<Global> {
    if SKLEARN_CLASSES.contains(&name) {
        return Some(Global::Class {
            module: module.to_owned(),
            name: name.to_owned(),
        });
    }
    if name == "newObj" {
        // Cython extension types in sklearn.neighbors / sklearn.metrics pickle as
        // `newObj(cls)`; the class argument is checked against the allowlist in turn.
        return Some(Global::NewObjHelper {
            module: module.to_owned(),
            name: name.to_owned(),
        });
    }
    let class_name = name.strip_prefix("__pyx_unpickle_")?;
    SKLEARN_CLASSES
        .contains(&class_name)
        .then(|| Global::CythonUnpickle {
            module: module.to_owned(),
            class_name: class_name.to_owned(),
        })
}

fn numpy_type_name(dtype: &DType) -> &'static str {
    match dtype {
        DType::Bool => "bool_",
        DType::I8 => "int8",
        DType::I16 => "int16",
        DType::I32 => "int32",
        DType::I64 => "int64",
        DType::U8 => "uint8",
        DType::U16 => "uint16",
        DType::U32 => "uint32",
        DType::U64 => "uint64",
        DType::F32 => "float32",
        DType::F64 => "float64",
        DType::Object => "object_",
        DType::Unicode(_) => "str_",
        DType::Bytes(_) => "bytes_",
        DType::Record(_) => "void",
    }
}

/// numpy scalar types that estimators store as parameters (e.g. `dtype=np.float64`).
fn numpy_scalar_type(name: &str) -> Option<DType> {
    Some(match name {
        "bool_" | "bool" => DType::Bool,
        "int8" => DType::I8,
        "int16" => DType::I16,
        "int32" => DType::I32,
        "int64" | "int_" | "intp" => DType::I64,
        "uint8" => DType::U8,
        "uint16" => DType::U16,
        "uint32" => DType::U32,
        "uint64" | "uintp" => DType::U64,
        "float32" => DType::F32,
        "float64" | "float_" | "double" => DType::F64,
        "object_" => DType::Object,
        "str_" | "unicode_" => DType::Unicode(0),
        "bytes_" | "string_" => DType::Bytes(0),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_dangerous_names_by_name() {
        for (module, name) in [
            ("os", "system"),
            ("posix", "system"),
            ("nt", "system"),
            ("subprocess", "Popen"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("builtins", "getattr"),
            ("builtins", "__import__"),
            ("sklearn.utils", "Popen"),
            ("numpy", "load"),
            ("numpy.random", "RandomState"),
            ("joblib.numpy_pickle", "load"),
        ] {
            let err = resolve(module, name).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("refused to load \"{module}.{name}\": not an allowlisted class")
            );
        }
    }

    #[test]
    fn sklearn_needs_both_module_prefix_and_listed_name() {
        assert!(resolve("sklearn.linear_model._logistic", "LogisticRegression").is_ok());
        assert!(resolve("notsklearn", "LogisticRegression").is_err());
        assert!(resolve("sklearnx.foo", "LogisticRegression").is_err());
        assert!(resolve("sklearn.foo", "__pyx_unpickle_Evil").is_err());
        assert!(matches!(
            resolve("sklearn._loss._loss", "__pyx_unpickle_CyHalfBinomialLoss"),
            Ok(Global::CythonUnpickle { .. })
        ));
    }
}
