//! Transport-neutral tensors: what every adapter decodes into and every backend takes.
//!
//! A tensor is a flat, row-major buffer plus a shape. The element type is the
//! buffer's variant, so a tensor can never disagree with its own dtype.

use std::fmt;

/// Element types a model can take or give. Names follow KServe V2 (`FP32`, `BYTES`, …);
/// [`DataType::tf_name`] gives TF Serving's (`DT_FLOAT`, `DT_STRING`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    /// Byte strings (ONNX `string`, V2 `BYTES`, TF `DT_STRING`): class labels, text.
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::U8,
        DataType::U16,
        DataType::U32,
        DataType::U64,
        DataType::I8,
        DataType::I16,
        DataType::I32,
        DataType::I64,
        DataType::F16,
        DataType::F32,
        DataType::F64,
        DataType::Bytes,
    ];

    /// The KServe V2 datatype name.
    pub fn v2_name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    pub fn from_v2_name(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.v2_name() == name)
    }

    /// TF Serving's `tensorflow.DataType` enum name.
    pub fn tf_name(self) -> &'static str {
        match self {
            DataType::Bool => "DT_BOOL",
            DataType::U8 => "DT_UINT8",
            DataType::U16 => "DT_UINT16",
            DataType::U32 => "DT_UINT32",
            DataType::U64 => "DT_UINT64",
            DataType::I8 => "DT_INT8",
            DataType::I16 => "DT_INT16",
            DataType::I32 => "DT_INT32",
            DataType::I64 => "DT_INT64",
            DataType::F16 => "DT_HALF",
            DataType::F32 => "DT_FLOAT",
            DataType::F64 => "DT_DOUBLE",
            DataType::Bytes => "DT_STRING",
        }
    }

    /// Size of one element in the V2 binary tensor format; `None` for BYTES,
    /// whose elements are length-prefixed.
    pub fn fixed_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::U8 | DataType::I8 => Some(1),
            DataType::U16 | DataType::I16 | DataType::F16 => Some(2),
            DataType::U32 | DataType::I32 | DataType::F32 => Some(4),
            DataType::U64 | DataType::I64 | DataType::F64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v2_name())
    }
}

/// The elements of a tensor, row-major. FP16 is kept as raw `u16` bits: no backend
/// computes in it, adapters only pass it through.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<u16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any [`TensorData`] variant.
#[macro_export]
macro_rules! with_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::tensor::TensorData::Bool($v) => $body,
            $crate::tensor::TensorData::U8($v) => $body,
            $crate::tensor::TensorData::U16($v) => $body,
            $crate::tensor::TensorData::U32($v) => $body,
            $crate::tensor::TensorData::U64($v) => $body,
            $crate::tensor::TensorData::I8($v) => $body,
            $crate::tensor::TensorData::I16($v) => $body,
            $crate::tensor::TensorData::I32($v) => $body,
            $crate::tensor::TensorData::I64($v) => $body,
            $crate::tensor::TensorData::F16($v) => $body,
            $crate::tensor::TensorData::F32($v) => $body,
            $crate::tensor::TensorData::F64($v) => $body,
            $crate::tensor::TensorData::Bytes($v) => $body,
        }
    };
}

impl TensorData {
    pub fn dtype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::U8(_) => DataType::U8,
            TensorData::U16(_) => DataType::U16,
            TensorData::U32(_) => DataType::U32,
            TensorData::U64(_) => DataType::U64,
            TensorData::I8(_) => DataType::I8,
            TensorData::I16(_) => DataType::I16,
            TensorData::I32(_) => DataType::I32,
            TensorData::I64(_) => DataType::I64,
            TensorData::F16(_) => DataType::F16,
            TensorData::F32(_) => DataType::F32,
            TensorData::F64(_) => DataType::F64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        with_tensor_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty buffer of the given type with room for `capacity` elements.
    pub fn with_capacity(dtype: DataType, capacity: usize) -> TensorData {
        match dtype {
            DataType::Bool => TensorData::Bool(Vec::with_capacity(capacity)),
            DataType::U8 => TensorData::U8(Vec::with_capacity(capacity)),
            DataType::U16 => TensorData::U16(Vec::with_capacity(capacity)),
            DataType::U32 => TensorData::U32(Vec::with_capacity(capacity)),
            DataType::U64 => TensorData::U64(Vec::with_capacity(capacity)),
            DataType::I8 => TensorData::I8(Vec::with_capacity(capacity)),
            DataType::I16 => TensorData::I16(Vec::with_capacity(capacity)),
            DataType::I32 => TensorData::I32(Vec::with_capacity(capacity)),
            DataType::I64 => TensorData::I64(Vec::with_capacity(capacity)),
            DataType::F16 => TensorData::F16(Vec::with_capacity(capacity)),
            DataType::F32 => TensorData::F32(Vec::with_capacity(capacity)),
            DataType::F64 => TensorData::F64(Vec::with_capacity(capacity)),
            DataType::Bytes => TensorData::Bytes(Vec::with_capacity(capacity)),
        }
    }
}

/// Why a tensor could not be built or converted. Becomes a 400 / INVALID_ARGUMENT.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} elements but {actual} were given")]
    ShapeMismatch {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("cannot convert {from} to {to}")]
    Conversion { from: DataType, to: DataType },
    /// A tensor the client declared BOOL ([`Tensor::declared`]) for a numeric
    /// input: Triton and TF Serving refuse it, and a boolean is no number.
    #[error(
        "the input takes {to}, and BOOL values are not numbers: send {to} values, \
         not BOOL"
    )]
    BoolIsNoNumber { to: DataType },
    #[error("value {value} does not fit {to}")]
    OutOfRange { value: String, to: DataType },
    /// A whole float past 2^53: floats there no longer hold every integer, so the
    /// integer meant may not be the one that arrived.
    #[error(
        "value {value} is a float past 2^53, where floats skip integers, so it may not \
         be the integer meant: send {to} values as integers"
    )]
    InexactInteger { value: String, to: DataType },
}

#[derive(Debug, Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
    /// Whether the client declared the dtype (KServe V2's `datatype`, a TF
    /// `TensorProto`'s `dtype`) rather than it being inferred from JSON values.
    /// Only [`Tensor::cast`] reads it: a declared BOOL tensor is no number, while
    /// JSON true and false, which carry no dtype, stay 1 and 0 for a numeric input.
    /// False unless a decoder says so, so a tensor rebuilt on the way (a reshape
    /// keeps it) converts as before.
    declared: bool,
}

/// Tensors are equal when their shapes and elements are: how a dtype came to be
/// is no part of the values.
impl PartialEq for Tensor {
    fn eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape && self.data == other.data
    }
}

impl Tensor {
    /// Builds a tensor, checking that the shape matches the number of elements.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, TensorError> {
        let expected = element_count(&shape);
        if expected != data.len() {
            return Err(TensorError::ShapeMismatch {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Tensor {
            shape,
            data,
            declared: false,
        })
    }

    /// The tensor, its dtype marked as the client's declaration (a typed tensor:
    /// KServe V2, a TF `TensorProto`), not one inferred from JSON values:
    /// [`Tensor::cast`] then refuses a BOOL tensor for a numeric type.
    pub fn declared(self) -> Tensor {
        Tensor {
            declared: true,
            ..self
        }
    }

    /// Whether the client declared the dtype ([`Tensor::declared`]).
    pub fn is_declared(&self) -> bool {
        self.declared
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    pub fn dtype(&self) -> DataType {
        self.data.dtype()
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let declared = self.declared;
        Tensor::new(shape, self.data).map(|t| Tensor { declared, ..t })
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The first dimension, the batch size for models with a batch dimension.
    pub fn batch_size(&self) -> Option<usize> {
        self.shape.first().copied()
    }

    /// Converts numeric and boolean tensors between element types, as a client's
    /// JSON numbers must become the model's FP32 or INT64. Refuses lossy
    /// conversions of integers out of range; float narrowing rounds as numpy does.
    /// A BOOL tensor the client declared ([`Tensor::declared`]) is not converted to
    /// numbers (as Triton and TF Serving hold); an undeclared one (JSON true and
    /// false) is 1 and 0.
    pub fn cast(self, to: DataType) -> Result<Tensor, TensorError> {
        if self.dtype() == to {
            return Ok(self);
        }
        let from = self.dtype();
        if self.declared && from == DataType::Bool && to != DataType::Bytes {
            return Err(TensorError::BoolIsNoNumber { to });
        }
        let data = cast_data(self.data, to).ok_or(TensorError::Conversion { from, to })??;
        Ok(Tensor {
            shape: self.shape,
            data,
            declared: self.declared,
        })
    }
}

/// `f` as an FP32 value; `None` for a finite value past FP32's range, which would
/// silently become an infinity (and a model's answer NaN). NaN and infinities stay
/// what they are.
pub fn f32_of(f: f64) -> Option<f32> {
    let single = f as f32;
    (!(f.is_finite() && single.is_infinite())).then_some(single)
}

/// `f` as an FP16 value's bits, as [`f32_of`] (past 65504 is `None`).
pub fn f16_bits_of(f: f64) -> Option<u16> {
    let half = half::f16::from_f64(f);
    (!(f.is_finite() && half.is_infinite())).then_some(half.to_bits())
}

/// The number of elements a tensor of `shape` holds: 0 when a dimension is 0, else
/// the product, saturated at `usize::MAX` (a count no tensor's data reaches, so a
/// shape whose product overflows never matches its data; the product wrapped, and
/// `[2^62, 4]` took an empty buffer to TensorFlow, which aborted the process).
pub fn element_count(shape: &[usize]) -> usize {
    if shape.contains(&0) {
        return 0;
    }
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .unwrap_or(usize::MAX)
}

/// A value every numeric element type can be read as, to convert between them.
#[derive(Clone, Copy)]
enum Num {
    I(i64),
    U(u64),
    F(f64),
}

fn to_nums(data: TensorData) -> Option<Vec<Num>> {
    Some(match data {
        TensorData::Bool(v) => v.into_iter().map(|x| Num::I(x as i64)).collect(),
        TensorData::U8(v) => v.into_iter().map(|x| Num::U(x as u64)).collect(),
        TensorData::U16(v) => v.into_iter().map(|x| Num::U(x as u64)).collect(),
        TensorData::U32(v) => v.into_iter().map(|x| Num::U(x as u64)).collect(),
        TensorData::U64(v) => v.into_iter().map(Num::U).collect(),
        TensorData::I8(v) => v.into_iter().map(|x| Num::I(x as i64)).collect(),
        TensorData::I16(v) => v.into_iter().map(|x| Num::I(x as i64)).collect(),
        TensorData::I32(v) => v.into_iter().map(|x| Num::I(x as i64)).collect(),
        TensorData::I64(v) => v.into_iter().map(Num::I).collect(),
        TensorData::F32(v) => v.into_iter().map(|x| Num::F(x as f64)).collect(),
        TensorData::F64(v) => v.into_iter().map(Num::F).collect(),
        TensorData::F16(v) => v
            .into_iter()
            .map(|x| Num::F(half::f16::from_bits(x).to_f64()))
            .collect(),
        TensorData::Bytes(_) => return None,
    })
}

fn num_to_int<T: TryFrom<i64> + TryFrom<u64>>(n: Num, to: DataType) -> Result<T, TensorError> {
    let out_of_range = |value: String| TensorError::OutOfRange { value, to };
    match n {
        Num::I(i) => T::try_from(i).map_err(|_| out_of_range(i.to_string())),
        Num::U(u) => T::try_from(u).map_err(|_| out_of_range(u.to_string())),
        Num::F(f) => {
            // A float becomes an integer only when it is one: 2.0 -> 2, 2.5 -> error.
            if f.fract() != 0.0 || !f.is_finite() {
                return Err(out_of_range(f.to_string()));
            }
            if f.abs() > 9.007_199_254_740_992e15 {
                // Out of the type's range it cannot fit however it was written.
                let fits = if !(i64::MIN as f64..u64::MAX as f64).contains(&f) {
                    false
                } else if f >= 0.0 {
                    T::try_from(f as u64).is_ok()
                } else {
                    T::try_from(f as i64).is_ok()
                };
                if !fits {
                    return Err(out_of_range(f.to_string()));
                }
                return Err(TensorError::InexactInteger {
                    value: f.to_string(),
                    to,
                });
            }
            T::try_from(f as i64).map_err(|_| out_of_range(f.to_string()))
        }
    }
}

fn num_to_f64(n: Num) -> f64 {
    match n {
        Num::I(i) => i as f64,
        Num::U(u) => u as f64,
        Num::F(f) => f,
    }
}

fn cast_data(data: TensorData, to: DataType) -> Option<Result<TensorData, TensorError>> {
    let nums = to_nums(data)?;
    macro_rules! ints {
        ($variant:ident, $t:ty) => {
            nums.into_iter()
                .map(|n| num_to_int::<$t>(n, to))
                .collect::<Result<Vec<$t>, _>>()
                .map(TensorData::$variant)
        };
    }
    Some(match to {
        DataType::Bool => nums
            .into_iter()
            .map(|n| match n {
                Num::I(0) | Num::U(0) => Ok(false),
                Num::I(1) | Num::U(1) => Ok(true),
                Num::F(0.0) => Ok(false),
                Num::F(1.0) => Ok(true),
                other => Err(TensorError::OutOfRange {
                    value: num_to_f64(other).to_string(),
                    to,
                }),
            })
            .collect::<Result<Vec<bool>, _>>()
            .map(TensorData::Bool),
        DataType::U8 => ints!(U8, u8),
        DataType::U16 => ints!(U16, u16),
        DataType::U32 => ints!(U32, u32),
        DataType::U64 => ints!(U64, u64),
        DataType::I8 => ints!(I8, i8),
        DataType::I16 => ints!(I16, i16),
        DataType::I32 => ints!(I32, i32),
        DataType::I64 => ints!(I64, i64),
        DataType::F32 => nums
            .into_iter()
            .map(|n| {
                let f = num_to_f64(n);
                f32_of(f).ok_or_else(|| TensorError::OutOfRange {
                    value: format!("{f:e}"),
                    to,
                })
            })
            .collect::<Result<Vec<f32>, _>>()
            .map(TensorData::F32),
        DataType::F64 => Ok(TensorData::F64(nums.into_iter().map(num_to_f64).collect())),
        DataType::F16 => nums
            .into_iter()
            .map(|n| {
                let f = num_to_f64(n);
                f16_bits_of(f).ok_or_else(|| TensorError::OutOfRange {
                    value: format!("{f:e}"),
                    to,
                })
            })
            .collect::<Result<Vec<u16>, _>>()
            .map(TensorData::F16),
        DataType::Bytes => return None,
    })
}

/// A tensor a model takes or gives, as its signature describes it.
/// `shape` uses -1 for a dimension of any size (the batch dimension), and is
/// [`ANY_RANK`] alone for a tensor of any shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
}

/// The one dimension of a [`TensorSpec::shape`] that leaves the rank open: a
/// TensorFlow signature tensor without a shape (`tf.TensorSpec(None)`, a TF1
/// placeholder given none), which TF Serving feeds whatever shape a request has.
/// Negative, so code that reads a negative dimension as "any size" sees one
/// dimension of any size; [`TensorSpec::any_rank`] tells it apart.
pub const ANY_RANK: i64 = i64::MIN;

impl TensorSpec {
    /// Whether a tensor of this shape fits the spec (same rank; fixed dimensions equal;
    /// any shape for a spec of [`ANY_RANK`]).
    pub fn accepts_shape(&self, shape: &[usize]) -> bool {
        self.any_rank()
            || (self.shape.len() == shape.len()
                && self
                    .shape
                    .iter()
                    .zip(shape)
                    .all(|(&want, &got)| want < 0 || want as usize == got))
    }

    /// Whether the first dimension is a variable batch dimension. Not for a tensor of
    /// any rank: nothing says its first dimension is the batch (a request's may be
    /// a scalar, an answer's need not follow the request's rows).
    pub fn has_batch_dim(&self) -> bool {
        !self.any_rank() && self.shape.first().is_some_and(|&d| d < 0)
    }

    /// Whether the model takes or gives this tensor in any shape ([`ANY_RANK`]).
    pub fn any_rank(&self) -> bool {
        self.shape == [ANY_RANK]
    }

    /// The shape as KServe V2 metadata writes it: `[-1]` for a tensor of any rank
    /// (V2 has no way to say so; Triton writes `[-1]` too).
    pub fn v2_shape(&self) -> Vec<i64> {
        if self.any_rank() {
            vec![-1]
        } else {
            self.shape.clone()
        }
    }
}

/// A tensor with the name it has in a request or a response.
pub type NamedTensor = (String, Tensor);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_must_match_element_count() {
        assert!(Tensor::new(vec![2, 2], TensorData::F32(vec![1.0; 4])).is_ok());
        let err = Tensor::new(vec![2, 3], TensorData::F32(vec![1.0; 4])).unwrap_err();
        assert!(err.to_string().contains("6 elements but 4"));
        // A product that overflows matches no data (it wrapped to 0: [2^62, 4]).
        assert!(Tensor::new(vec![1 << 62, 4], TensorData::F32(vec![])).is_err());
        assert!(Tensor::new(vec![usize::MAX, 2, 0], TensorData::F32(vec![])).is_ok());
        assert_eq!(element_count(&[1 << 62, 4]), usize::MAX);
        assert_eq!(element_count(&[]), 1);
    }

    /// A whole float past 2^53 that the integer type holds is refused as inexact
    /// (it said "does not fit INT64" of 2^62, which fits); one past the type's
    /// range still does not fit.
    #[test]
    fn a_float_past_2_53_is_refused_as_inexact_not_as_out_of_range() {
        let cast = |v: f64, to: DataType| {
            Tensor::new(vec![1], TensorData::F64(vec![v]))
                .unwrap()
                .cast(to)
                .unwrap_err()
        };
        for (v, to) in [
            (2f64.powi(62), DataType::I64),
            (-(2f64.powi(63)), DataType::I64),
            (2f64.powi(63), DataType::U64),
        ] {
            let e = cast(v, to);
            assert!(
                matches!(e, TensorError::InexactInteger { .. }),
                "{v} {to}: {e}"
            );
            assert!(e.to_string().contains("send"), "{e}");
        }
        for (v, to) in [
            (2f64.powi(63), DataType::I64),
            (2f64.powi(64), DataType::U64),
            (2f64.powi(60), DataType::I32),
            (-(2f64.powi(60)), DataType::U64),
        ] {
            let e = cast(v, to);
            assert!(matches!(e, TensorError::OutOfRange { .. }), "{v} {to}: {e}");
        }
        let ok = Tensor::new(vec![1], TensorData::F64(vec![2f64.powi(53)]))
            .unwrap()
            .cast(DataType::I64)
            .unwrap();
        assert_eq!(ok.data(), &TensorData::I64(vec![1 << 53]));
    }

    #[test]
    fn cast_between_numeric_types() {
        let t = Tensor::new(vec![3], TensorData::F64(vec![1.0, 2.0, -3.0])).unwrap();
        assert_eq!(
            t.clone().cast(DataType::I64).unwrap().data(),
            &TensorData::I64(vec![1, 2, -3])
        );
        assert_eq!(
            t.clone().cast(DataType::F32).unwrap().data(),
            &TensorData::F32(vec![1.0, 2.0, -3.0])
        );
        assert!(t.cast(DataType::U8).is_err(), "-3 does not fit u8");
        // Past FP32's range is an error, not an infinity; infinities stay.
        let big = Tensor::new(vec![2], TensorData::F64(vec![1.0, -1e39])).unwrap();
        assert_eq!(
            big.cast(DataType::F32).unwrap_err(),
            TensorError::OutOfRange {
                value: "-1e39".into(),
                to: DataType::F32
            }
        );
        let inf = Tensor::new(vec![2], TensorData::F64(vec![f64::INFINITY, 3.4e38])).unwrap();
        assert_eq!(
            inf.cast(DataType::F32).unwrap().data(),
            &TensorData::F32(vec![f32::INFINITY, 3.4e38])
        );
        let frac = Tensor::new(vec![1], TensorData::F64(vec![2.5])).unwrap();
        assert!(frac.cast(DataType::I32).is_err());
        let s = Tensor::new(vec![1], TensorData::Bytes(vec![b"a".to_vec()])).unwrap();
        assert_eq!(
            s.cast(DataType::F32).unwrap_err(),
            TensorError::Conversion {
                from: DataType::Bytes,
                to: DataType::F32
            }
        );
    }

    /// A declared BOOL tensor is no number; JSON's undeclared booleans are 1 and 0.
    /// The mark survives a reshape and does not make tensors unequal.
    #[test]
    fn a_declared_bool_tensor_is_not_cast_to_numbers() {
        let bools = Tensor::new(vec![2], TensorData::Bool(vec![true, false])).unwrap();
        assert_eq!(
            bools.clone().cast(DataType::F32).unwrap().data(),
            &TensorData::F32(vec![1.0, 0.0])
        );
        let declared = bools.clone().declared().reshape(vec![2, 1]).unwrap();
        assert!(declared.is_declared());
        for to in [DataType::F32, DataType::I64, DataType::U8] {
            let e = declared.clone().cast(to).unwrap_err();
            assert_eq!(e, TensorError::BoolIsNoNumber { to });
            assert!(e.to_string().contains(&format!("takes {to}")), "{e}");
        }
        assert_eq!(declared.clone().cast(DataType::Bool).unwrap(), declared);
        assert_eq!(bools.reshape(vec![2, 1]).unwrap(), declared);
        // Declared numbers still convert between numeric types.
        let ints = Tensor::new(vec![1], TensorData::I64(vec![3]))
            .unwrap()
            .declared();
        assert_eq!(
            ints.cast(DataType::F32).unwrap().data(),
            &TensorData::F32(vec![3.0])
        );
    }

    #[test]
    fn spec_accepts_batch_dimension() {
        let spec = TensorSpec {
            name: "x".into(),
            dtype: DataType::F32,
            shape: vec![-1, 4],
        };
        assert!(spec.accepts_shape(&[7, 4]));
        assert!(!spec.accepts_shape(&[7, 3]));
        assert!(!spec.accepts_shape(&[4]));
        let any = TensorSpec {
            shape: vec![ANY_RANK],
            ..spec.clone()
        };
        assert!(any.any_rank() && !spec.any_rank());
        for shape in [&[][..], &[3], &[2, 2], &[1, 2, 3]] {
            assert!(any.accepts_shape(shape), "{shape:?}");
        }
        assert!(!any.has_batch_dim());
        assert_eq!(any.v2_shape(), vec![-1]);
        assert!(spec.has_batch_dim());
    }
}
