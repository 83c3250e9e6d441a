//! Reading fitted attributes out of a [`Value`] tree, with errors that name the
//! estimator and the attribute.
//!
//! Every estimator rebuild goes through [`Obj`]: it never indexes the tree by hand, so
//! a malformed or unexpected file becomes a [`ModelError`], never a panic.

use crate::estimators::ClassLabels;
use crate::model::ModelError;
use crate::value::{ArrayData, NdArray, Value};

/// The scikit-learn version a model was saved with (`_sklearn_version`), as
/// (major, minor). Behaviour that changed between versions follows the saving
/// version, because that is what the user saw when the model was trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SkVersion(pub u32, pub u32);

impl SkVersion {
    fn parse(text: &str) -> Option<SkVersion> {
        let mut parts = text.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor_text: String = parts
            .next()?
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        Some(SkVersion(major, minor_text.parse().ok()?))
    }
}

/// An allowlisted object with a dict state: `module.name` plus fitted attributes.
#[derive(Clone, Copy)]
pub struct Obj<'a> {
    pub module: &'a str,
    pub name: &'a str,
    /// Constructor arguments (`Tree` records `(n_features, n_classes, n_outputs)` here).
    pub args: &'a [Value],
    state: &'a [(Value, Value)],
}

impl<'a> Obj<'a> {
    pub fn new(value: &'a Value) -> Result<Obj<'a>, ModelError> {
        match value {
            Value::Object {
                module,
                name,
                args,
                state,
            } => {
                let state: &[(Value, Value)] = match state.as_deref() {
                    Some(Value::Dict(items)) => items,
                    None => &[],
                    Some(other) => {
                        return Err(ModelError::Malformed(format!(
                            "{name}: expected a dict of fitted attributes, found {}",
                            kind_of(other)
                        )))
                    }
                };
                Ok(Obj {
                    module,
                    name,
                    args,
                    state,
                })
            }
            other => Err(ModelError::Unsupported(format!(
                "expected a scikit-learn estimator, found {}",
                describe(other)
            ))),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.state
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v)
    }

    /// An attribute that is present and not `None`.
    pub fn some(&self, key: &str) -> Option<&'a Value> {
        self.get(key).filter(|v| !matches!(v, Value::None))
    }

    pub fn req(&self, key: &str) -> Result<&'a Value, ModelError> {
        self.get(key)
            .ok_or_else(|| self.malformed(format!("missing attribute `{key}`")))
    }

    pub fn malformed(&self, message: impl std::fmt::Display) -> ModelError {
        ModelError::Malformed(format!("{}: {message}", self.name))
    }

    pub fn unsupported(&self, message: impl std::fmt::Display) -> ModelError {
        ModelError::Unsupported(format!("{}: {message}", self.name))
    }

    pub fn version(&self) -> Result<SkVersion, ModelError> {
        let text = self.str("_sklearn_version")?;
        SkVersion::parse(text)
            .ok_or_else(|| self.malformed(format!("unreadable _sklearn_version {text:?}")))
    }

    pub fn f64(&self, key: &str) -> Result<f64, ModelError> {
        as_f64(self.req(key)?).ok_or_else(|| self.malformed(format!("`{key}` is not a number")))
    }

    pub fn i64(&self, key: &str) -> Result<i64, ModelError> {
        as_i64(self.req(key)?).ok_or_else(|| self.malformed(format!("`{key}` is not an integer")))
    }

    pub fn usize(&self, key: &str) -> Result<usize, ModelError> {
        usize::try_from(self.i64(key)?).map_err(|_| self.malformed(format!("`{key}` is negative")))
    }

    pub fn bool(&self, key: &str) -> Result<bool, ModelError> {
        match self.req(key)? {
            Value::Bool(b) => Ok(*b),
            v => match as_i64(v) {
                Some(0) => Ok(false),
                Some(1) => Ok(true),
                _ => Err(self.malformed(format!("`{key}` is not a boolean"))),
            },
        }
    }

    /// A boolean attribute that older versions may lack.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.some(key) {
            None => Ok(default),
            Some(_) => self.bool(key),
        }
    }

    pub fn str(&self, key: &str) -> Result<&'a str, ModelError> {
        as_str(self.req(key)?).ok_or_else(|| self.malformed(format!("`{key}` is not a string")))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ModelError> {
        match self.some(key) {
            None => Ok(None),
            Some(v) => as_str(v)
                .map(Some)
                .ok_or_else(|| self.malformed(format!("`{key}` is not a string"))),
        }
    }

    pub fn array(&self, key: &str) -> Result<&'a NdArray, ModelError> {
        match self.req(key)? {
            Value::Array(a) => Ok(a),
            other => Err(self.malformed(format!("`{key}` is not an array ({})", kind_of(other)))),
        }
    }

    /// A float array flattened in C order, with its shape.
    pub fn f64s(&self, key: &str) -> Result<(Vec<f64>, Vec<usize>), ModelError> {
        let a = self.array(key)?;
        let v = array_f64(a).ok_or_else(|| self.malformed(format!("`{key}` is not numeric")))?;
        // Every estimator indexes by the shape: a buffer that disagrees with it is refused
        // here rather than trusted.
        if v.len() != a.shape.iter().product::<usize>() {
            return Err(self.malformed(format!(
                "`{key}` holds {} values for shape {:?}",
                v.len(),
                a.shape
            )));
        }
        Ok((v, a.shape.clone()))
    }

    pub fn list(&self, key: &str) -> Result<&'a [Value], ModelError> {
        as_list(self.req(key)?).ok_or_else(|| self.malformed(format!("`{key}` is not a list")))
    }

    pub fn obj(&self, key: &str) -> Result<Obj<'a>, ModelError> {
        Obj::new(self.req(key)?)
    }

    pub fn labels(&self, key: &str) -> Result<ClassLabels, ModelError> {
        let a = self.array(key)?;
        array_labels(a)
            .ok_or_else(|| self.unsupported(format!("class labels `{key}` of dtype {:?}", a.dtype)))
    }

    /// `feature_names_in_`, when the model was fitted on a DataFrame.
    pub fn feature_names(&self) -> Result<Option<Vec<String>>, ModelError> {
        match self.some("feature_names_in_") {
            None => Ok(None),
            Some(Value::Array(a)) => match array_labels(a) {
                Some(ClassLabels::Str(names)) => Ok(Some(names)),
                _ => Err(self.malformed("`feature_names_in_` is not a string array")),
            },
            Some(_) => Err(self.malformed("`feature_names_in_` is not an array")),
        }
    }

    /// `n_features_in_`, or `None` for models saved before it existed.
    pub fn n_features_in(&self) -> Result<Option<usize>, ModelError> {
        match self.some("n_features_in_") {
            None => Ok(None),
            Some(_) => self.usize("n_features_in_").map(Some),
        }
    }
}

pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Array(a) if a.shape.iter().product::<usize>() == 1 => {
            array_f64(a).and_then(|v| v.first().copied())
        }
        _ => None,
    }
}

pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Array(a) if a.shape.iter().product::<usize>() == 1 => match &a.data {
            ArrayData::Int(v) => v.first().copied(),
            ArrayData::UInt(v) => v.first().and_then(|&u| i64::try_from(u).ok()),
            ArrayData::Bool(v) => v.first().map(|&b| i64::from(b)),
            _ => None,
        },
        _ => None,
    }
}

pub fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::Str(s) => Some(s),
        Value::Array(a) if a.shape.iter().product::<usize>() == 1 => match &a.data {
            ArrayData::Str(v) => v.first().map(String::as_str),
            _ => None,
        },
        _ => None,
    }
}

pub fn as_list(v: &Value) -> Option<&[Value]> {
    match v {
        Value::List(items) | Value::Tuple(items) => Some(items),
        Value::Array(a) => match &a.data {
            ArrayData::Object(items) => Some(items),
            _ => None,
        },
        _ => None,
    }
}

/// Numeric array elements as f64 (floats, integers and booleans).
pub fn array_f64(a: &NdArray) -> Option<Vec<f64>> {
    match &a.data {
        ArrayData::Float(v) => Some(v.clone()),
        ArrayData::Int(v) => Some(v.iter().map(|&x| x as f64).collect()),
        ArrayData::UInt(v) => Some(v.iter().map(|&x| x as f64).collect()),
        ArrayData::Bool(v) => Some(v.iter().map(|&b| f64::from(u8::from(b))).collect()),
        ArrayData::Object(items) => items.iter().map(as_f64).collect(),
        _ => None,
    }
}

pub fn array_i64(data: &ArrayData) -> Option<Vec<i64>> {
    match data {
        ArrayData::Int(v) => Some(v.clone()),
        ArrayData::UInt(v) => v.iter().map(|&u| i64::try_from(u).ok()).collect(),
        ArrayData::Bool(v) => Some(v.iter().map(|&b| i64::from(b)).collect()),
        _ => None,
    }
}

/// Class labels or category values: strings, integers, or floats.
pub fn array_labels(a: &NdArray) -> Option<ClassLabels> {
    match &a.data {
        ArrayData::Str(v) => Some(ClassLabels::Str(v.clone())),
        ArrayData::Int(v) => Some(ClassLabels::Int(v.clone())),
        ArrayData::UInt(v) => v
            .iter()
            .map(|&u| i64::try_from(u).ok())
            .collect::<Option<Vec<_>>>()
            .map(ClassLabels::Int),
        ArrayData::Float(v) => Some(ClassLabels::Float(v.clone())),
        ArrayData::Object(items) => {
            if items.iter().all(|v| matches!(v, Value::Str(_))) {
                Some(ClassLabels::Str(
                    items.iter().filter_map(as_str).map(str::to_owned).collect(),
                ))
            } else if items.iter().all(|v| matches!(v, Value::Int(_))) {
                Some(ClassLabels::Int(items.iter().filter_map(as_i64).collect()))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A column of a record (structured) array, by field name.
pub fn record_field<'a>(a: &'a NdArray, field: &str) -> Option<&'a ArrayData> {
    match &a.data {
        ArrayData::Record(fields) => fields.iter().find(|(n, _)| n == field).map(|(_, d)| d),
        _ => None,
    }
}

pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) | Value::BigInt(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "list",
        Value::Tuple(_) => "tuple",
        Value::Dict(_) => "dict",
        Value::Set(_) => "set",
        Value::Object { .. } => "object",
        Value::Array(_) => "array",
        Value::DType(_) => "dtype",
    }
}

/// A short description for error messages: the class name for objects.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Object { module, name, .. } => format!("{module}.{name}"),
        Value::Str(s) => format!("{s:?}"),
        other => kind_of(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(SkVersion::parse("1.2.2"), Some(SkVersion(1, 2)));
        assert_eq!(SkVersion::parse("1.10rc1"), Some(SkVersion(1, 10)));
        assert_eq!(SkVersion::parse("1.9.dev0"), Some(SkVersion(1, 9)));
        assert!(SkVersion(1, 4) > SkVersion(1, 3));
        assert!(SkVersion(1, 10) > SkVersion(1, 9));
    }
}
