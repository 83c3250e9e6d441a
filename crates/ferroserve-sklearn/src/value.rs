//! The plain value tree a pickle stream is rebuilt into.
//!
//! Nothing in this tree can execute code: classes appear only as names
//! ([`Value::Object`]), and only names on the allowlist ever get that far.

use std::sync::Arc;

/// A numpy element type, as a dtype descriptor names it (`<f8`, `|b1`, `<U5`, …).
#[derive(Debug, Clone, PartialEq)]
pub enum DType {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    /// numpy `object` arrays (e.g. string class labels): elements are pickled values.
    Object,
    /// Fixed-width unicode (`<U{n}`), n characters of UTF-32 each.
    Unicode(usize),
    /// Fixed-width bytes (`|S{n}`).
    Bytes(usize),
    /// A structured dtype (e.g. the tree `nodes` array): named fields in order,
    /// each with its byte offset.
    Record(Vec<RecordField>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordField {
    pub name: String,
    pub dtype: DType,
    pub offset: usize,
}

/// Decoded elements of a numpy array, in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    Bool(Vec<bool>),
    Int(Vec<i64>),
    /// u64 values that do not fit i64 stay here unchanged.
    UInt(Vec<u64>),
    Float(Vec<f64>),
    Str(Vec<String>),
    Bytes(Vec<Vec<u8>>),
    Object(Vec<Value>),
    /// Structured arrays: one column per field, each `len = product(shape)`.
    Record(Vec<(String, ArrayData)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: ArrayData,
}

/// One node of a rebuilt pickle. Shared sub-trees (pickle memo references) are
/// `Arc`s, so a file that references one object many times costs one copy.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// Integers wider than i64, little-endian two's complement as pickle writes them.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Arc<Vec<Value>>),
    Tuple(Arc<Vec<Value>>),
    Dict(Arc<Vec<(Value, Value)>>),
    Set(Arc<Vec<Value>>),
    /// An allowlisted class, e.g. `("sklearn.linear_model._logistic", "LogisticRegression")`,
    /// with the state its `BUILD` / `__setstate__` received (usually a `Dict` of attributes).
    ///
    /// Also used for: `builtins.slice` (`args` = start, stop, step); Cython objects pickled
    /// through `newObj(cls)` or `__pyx_unpickle_<cls>` (named after `cls`, state = the Cython
    /// state); numpy random states (inert, by their pickling helper's name); and an
    /// allowlisted class passed as data rather than instantiated (empty `args`, no state).
    Object {
        module: String,
        name: String,
        args: Arc<Vec<Value>>,
        state: Option<Arc<Value>>,
    },
    /// A numpy array (from `numpy.core.multiarray._reconstruct`, joblib's
    /// `NumpyArrayWrapper`, or `numpy._core.numeric._frombuffer`).
    Array(Arc<NdArray>),
    /// A numpy dtype object on its own (e.g. `dtype` attributes of estimators).
    DType(DType),
}

/// Small read accessors for code that walks a rebuilt tree. Each returns `None` when the
/// value has another shape; none of them converts between types beyond what is noted.
impl Value {
    /// A `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A float, or an int widened to float (as Python arithmetic would).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// An int (a `bool` is not an int here).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of a list or a tuple.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) | Value::Tuple(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&NdArray> {
        match self {
            Value::Array(array) => Some(array),
            _ => None,
        }
    }

    /// The value under a string key of a dict (the last one, as Python keeps).
    pub fn dict_get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(pairs) => pairs
                .iter()
                .rev()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// An attribute of an object whose state is a dict of attributes (every estimator).
    pub fn attr(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object {
                state: Some(state), ..
            } => state.dict_get(name),
            _ => None,
        }
    }
}
