//! `tensorflow.TensorProto` ↔ [`Tensor`], as TF Serving reads and writes them.
//!
//! Reading accepts both encodings TensorFlow clients send: `tensor_content` (the
//! elements as little-endian bytes, what `tf.make_tensor_proto` produces for numeric
//! arrays) and the typed `*_val` field of the dtype (what hand-written clients fill).
//! As in TensorFlow, a typed field with fewer values than the shape holds is padded
//! with its last value, so `float_val: [0]` with shape `[2, 3]` is six zeros.
//! Padding is bounded by [`DecodeLimits`]: the padding of all of one request's
//! tensors together may not take more memory than the message size limit would
//! have let the client send, nor give a tensor more rows than the model takes. A tensor that fills both `tensor_content` and a typed field is
//! refused, since one of the two would be silently ignored.
//! Writing uses the typed fields, as TF Serving's Predict does by default.

use ferroserve_proto::tensorflow::{
    tensor_shape_proto, DataType as TfDataType, TensorProto, TensorShapeProto,
};

use crate::api::ApiError;
use crate::tensor::{DataType, Tensor, TensorData};

/// What decoding one request's tensors may allocate beyond the message itself.
/// Without it a few bytes (`float_val: [0]`, shape `[16777216, 4]`) could ask for
/// gigabytes. One value serves every tensor of a request: the budget is shared.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// The most bytes the request's padded tensors may still take in memory: at
    /// first the largest request message, so padding never gives more than the
    /// client could have sent; each padded tensor spends its size.
    pub max_bytes: usize,
    /// The most rows (dimension 0) a padded tensor may have: the model's
    /// `max_request_rows`.
    pub max_rows: usize,
}

fn invalid(name: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidArgument(format!("input {name:?}: {message}"))
}

/// The ferroserve element type of a TF dtype; `None` for types no model takes
/// (complex, quantized, bfloat16, resource, variant, references).
pub fn from_tf_dtype(dtype: i32) -> Option<DataType> {
    Some(match TfDataType::try_from(dtype).ok()? {
        TfDataType::DtFloat => DataType::F32,
        TfDataType::DtDouble => DataType::F64,
        TfDataType::DtInt32 => DataType::I32,
        TfDataType::DtUint8 => DataType::U8,
        TfDataType::DtInt16 => DataType::I16,
        TfDataType::DtInt8 => DataType::I8,
        TfDataType::DtString => DataType::Bytes,
        TfDataType::DtInt64 => DataType::I64,
        TfDataType::DtBool => DataType::Bool,
        TfDataType::DtUint16 => DataType::U16,
        TfDataType::DtHalf => DataType::F16,
        TfDataType::DtUint32 => DataType::U32,
        TfDataType::DtUint64 => DataType::U64,
        _ => return None,
    })
}

pub fn to_tf_dtype(dtype: DataType) -> TfDataType {
    match dtype {
        DataType::Bool => TfDataType::DtBool,
        DataType::U8 => TfDataType::DtUint8,
        DataType::U16 => TfDataType::DtUint16,
        DataType::U32 => TfDataType::DtUint32,
        DataType::U64 => TfDataType::DtUint64,
        DataType::I8 => TfDataType::DtInt8,
        DataType::I16 => TfDataType::DtInt16,
        DataType::I32 => TfDataType::DtInt32,
        DataType::I64 => TfDataType::DtInt64,
        DataType::F16 => TfDataType::DtHalf,
        DataType::F32 => TfDataType::DtFloat,
        DataType::F64 => TfDataType::DtDouble,
        DataType::Bytes => TfDataType::DtString,
    }
}

/// A signature shape as TF Serving's `TensorShapeProto` (-1: any size).
pub fn to_tf_shape(dims: impl IntoIterator<Item = i64>) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims
            .into_iter()
            .map(|size| tensor_shape_proto::Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    }
}

/// A signature tensor's shape as TensorFlow writes it: no dimensions and
/// `unknown_rank` for a tensor of any rank.
pub fn spec_shape(spec: &crate::tensor::TensorSpec) -> TensorShapeProto {
    if spec.any_rank() {
        return TensorShapeProto {
            dim: Vec::new(),
            unknown_rank: true,
        };
    }
    to_tf_shape(spec.shape.iter().copied())
}

/// Decodes the TensorProto the client sent as input `name` (the name is for messages),
/// taking its typed values (no copy) where the dtype matches the field's element type.
/// Its dtype is the client's declaration ([`Tensor::declared`]): a DT_BOOL tensor is
/// refused for a numeric input, as TF Serving refuses it; numbers of another numeric
/// type than the input's are converted, as for KServe V2.
pub fn tensor_from_proto(
    name: &str,
    mut proto: TensorProto,
    limits: &mut DecodeLimits,
) -> Result<Tensor, ApiError> {
    let dtype = from_tf_dtype(proto.dtype).ok_or_else(|| {
        let tf_name = TfDataType::try_from(proto.dtype)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| format!("dtype {}", proto.dtype));
        invalid(name, format_args!("{tf_name} is not supported"))
    })?;
    let shape_proto = proto.tensor_shape.clone().unwrap_or_default();
    if shape_proto.unknown_rank {
        return Err(invalid(name, "a tensor of unknown rank cannot be an input"));
    }
    let shape = shape_proto
        .dim
        .iter()
        .map(|d| {
            usize::try_from(d.size)
                .map_err(|_| invalid(name, format_args!("dimension {} is negative", d.size)))
        })
        .collect::<Result<Vec<usize>, ApiError>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| invalid(name, format_args!("shape {shape:?} is too large")))?;

    if !proto.tensor_content.is_empty() {
        if let Some(field) = filled_typed_field(&proto) {
            return Err(invalid(
                name,
                format_args!("gives both tensor_content and {field}; give the values once"),
            ));
        }
    }
    if !proto.tensor_content.is_empty() && dtype == DataType::Bytes {
        return Err(invalid(
            name,
            "DT_STRING values in tensor_content are not supported: send them in string_val",
        ));
    }
    let data = if !proto.tensor_content.is_empty() {
        decode_content(name, dtype, &proto.tensor_content, count)?
    } else {
        let data = typed_values(name, dtype, &mut proto)?;
        pad_to(name, data, &shape, count, limits)?
    };
    Tensor::new(shape, data)
        .map(Tensor::declared)
        .map_err(|e| invalid(name, e))
}

/// Elements from `tensor_content`: `count` little-endian values, nothing more or less.
fn decode_content(
    name: &str,
    dtype: DataType,
    bytes: &[u8],
    count: usize,
) -> Result<TensorData, ApiError> {
    let size = dtype.fixed_size().unwrap_or(1);
    if Some(bytes.len()) != count.checked_mul(size) {
        return Err(invalid(
            name,
            format_args!(
                "tensor_content has {} bytes, but {count} {} elements take {}",
                bytes.len(),
                to_tf_dtype(dtype).as_str_name(),
                count as u128 * size as u128
            ),
        ));
    }
    crate::raw_tensor::decode(dtype, count, bytes).map_err(|e| invalid(name, e))
}

/// The name of a typed value field that holds values, if any does.
fn filled_typed_field(p: &TensorProto) -> Option<&'static str> {
    [
        ("float_val", p.float_val.is_empty()),
        ("double_val", p.double_val.is_empty()),
        ("int_val", p.int_val.is_empty()),
        ("string_val", p.string_val.is_empty()),
        ("scomplex_val", p.scomplex_val.is_empty()),
        ("int64_val", p.int64_val.is_empty()),
        ("bool_val", p.bool_val.is_empty()),
        ("dcomplex_val", p.dcomplex_val.is_empty()),
        ("half_val", p.half_val.is_empty()),
        ("uint32_val", p.uint32_val.is_empty()),
        ("uint64_val", p.uint64_val.is_empty()),
        ("resource_handle_val", p.resource_handle_val.is_empty()),
        ("variant_val", p.variant_val.is_empty()),
    ]
    .into_iter()
    .find(|(_, empty)| !empty)
    .map(|(field, _)| field)
}

/// Elements from the typed field of `dtype`, as given (see [`pad_to`]).
fn typed_values(name: &str, dtype: DataType, p: &mut TensorProto) -> Result<TensorData, ApiError> {
    use std::mem::take;
    fn narrow<T: TryFrom<i32>>(
        name: &str,
        dtype: DataType,
        values: &[i32],
    ) -> Result<Vec<T>, ApiError> {
        values
            .iter()
            .map(|&v| {
                T::try_from(v)
                    .map_err(|_| invalid(name, format_args!("int_val {v} does not fit {dtype}")))
            })
            .collect()
    }
    let data = match dtype {
        DataType::F32 => TensorData::F32(take(&mut p.float_val)),
        DataType::F64 => TensorData::F64(take(&mut p.double_val)),
        DataType::I32 => TensorData::I32(take(&mut p.int_val)),
        DataType::I16 => TensorData::I16(narrow(name, dtype, &p.int_val)?),
        DataType::I8 => TensorData::I8(narrow(name, dtype, &p.int_val)?),
        DataType::U8 => TensorData::U8(narrow(name, dtype, &p.int_val)?),
        DataType::U16 => TensorData::U16(narrow(name, dtype, &p.int_val)?),
        // DT_HALF travels as its 16 bits in each int32 of half_val.
        DataType::F16 => TensorData::F16(
            p.half_val
                .iter()
                .map(|&v| {
                    u16::try_from(v)
                        .map_err(|_| invalid(name, format_args!("half_val {v} is not 16 bits")))
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::I64 => TensorData::I64(take(&mut p.int64_val)),
        DataType::U32 => TensorData::U32(take(&mut p.uint32_val)),
        DataType::U64 => TensorData::U64(take(&mut p.uint64_val)),
        DataType::Bool => TensorData::Bool(take(&mut p.bool_val)),
        DataType::Bytes => TensorData::Bytes(take(&mut p.string_val)),
    };
    Ok(data)
}

// One body for every element type: `clone` is a copy for all but byte strings.
#[allow(clippy::clone_on_copy)]
fn pad_to(
    name: &str,
    mut data: TensorData,
    shape: &[usize],
    count: usize,
    limits: &mut DecodeLimits,
) -> Result<TensorData, ApiError> {
    let given = data.len();
    if given == count {
        return Ok(data);
    }
    if given > count {
        return Err(invalid(
            name,
            format_args!("{given} values given, but the shape holds {count}"),
        ));
    }
    if given == 0 {
        return Err(invalid(
            name,
            format_args!("no values given for a shape that holds {count}"),
        ));
    }
    // Checked before anything is allocated: the padded tensor must be one the
    // client could have sent in full.
    if let Some(&rows) = shape.first() {
        if rows > limits.max_rows {
            return Err(ApiError::PayloadTooLarge(format!(
                "input {name:?}: shape {shape:?} has {rows} rows, more than the {} the model \
                 takes in one request (max_request_rows)",
                limits.max_rows
            )));
        }
    }
    let element_bytes = match &data {
        TensorData::Bytes(v) => v[given - 1].len() + std::mem::size_of::<Vec<u8>>(),
        other => other.dtype().fixed_size().unwrap_or(1),
    };
    let padded_bytes = count.saturating_mul(element_bytes);
    if padded_bytes > limits.max_bytes {
        let bytes = if padded_bytes == usize::MAX {
            "more bytes than memory holds".to_string()
        } else {
            format!("{padded_bytes} bytes")
        };
        return Err(ApiError::PayloadTooLarge(format!(
            "input {name:?}: padding {given} values to shape {shape:?} would take {bytes}, \
             more than the {} bytes the request's padded tensors may still take (the \
             request size limit)",
            limits.max_bytes
        )));
    }
    limits.max_bytes -= padded_bytes;
    crate::with_tensor_data!(&mut data, v => {
        let last = v[given - 1].clone();
        v.resize(count, last);
    });
    Ok(data)
}

/// Encodes an output tensor in the typed field of its dtype.
pub fn tensor_to_proto(tensor: &Tensor) -> TensorProto {
    let mut p = TensorProto {
        dtype: to_tf_dtype(tensor.dtype()) as i32,
        tensor_shape: Some(to_tf_shape(tensor.shape().iter().map(|&d| d as i64))),
        ..Default::default()
    };
    match tensor.data() {
        TensorData::Bool(v) => p.bool_val = v.clone(),
        TensorData::U8(v) => p.int_val = v.iter().map(|&x| x as i32).collect(),
        TensorData::U16(v) => p.int_val = v.iter().map(|&x| x as i32).collect(),
        TensorData::I8(v) => p.int_val = v.iter().map(|&x| x as i32).collect(),
        TensorData::I16(v) => p.int_val = v.iter().map(|&x| x as i32).collect(),
        TensorData::I32(v) => p.int_val = v.clone(),
        TensorData::U32(v) => p.uint32_val = v.clone(),
        TensorData::U64(v) => p.uint64_val = v.clone(),
        TensorData::I64(v) => p.int64_val = v.clone(),
        TensorData::F16(v) => p.half_val = v.iter().map(|&x| x as i32).collect(),
        TensorData::F32(v) => p.float_val = v.clone(),
        TensorData::F64(v) => p.double_val = v.clone(),
        TensorData::Bytes(v) => p.string_val = v.clone(),
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_bytes: 64 << 20,
        max_rows: 65_536,
    };

    fn tensor_from_proto(name: &str, p: &TensorProto) -> Result<Tensor, ApiError> {
        super::tensor_from_proto(name, p.clone(), &mut LIMITS.clone())
    }

    fn proto(dtype: TfDataType, shape: &[i64]) -> TensorProto {
        TensorProto {
            dtype: dtype as i32,
            tensor_shape: Some(to_tf_shape(shape.iter().copied())),
            ..Default::default()
        }
    }

    #[test]
    fn every_dtype_round_trips_through_typed_fields() {
        let tensors = [
            TensorData::Bool(vec![true, false]),
            TensorData::U8(vec![0, 255]),
            TensorData::U16(vec![0, 65535]),
            TensorData::U32(vec![0, u32::MAX]),
            TensorData::U64(vec![0, u64::MAX]),
            TensorData::I8(vec![-128, 127]),
            TensorData::I16(vec![-32768, 32767]),
            TensorData::I32(vec![i32::MIN, i32::MAX]),
            TensorData::I64(vec![i64::MIN, i64::MAX]),
            TensorData::F16(vec![0x3c00, 0xc000]),
            TensorData::F32(vec![1.5, -2.25]),
            TensorData::F64(vec![1e300, -0.5]),
            TensorData::Bytes(vec![b"a".to_vec(), vec![0, 255]]),
        ];
        for data in tensors {
            let t = Tensor::new(vec![2, 1], data).unwrap();
            let back = tensor_from_proto("x", &tensor_to_proto(&t)).unwrap();
            assert_eq!(back, t);
            // The client declared the dtype: a DT_BOOL tensor is no number.
            assert!(back.is_declared() && !t.is_declared());
        }
    }

    #[test]
    fn tensor_content_is_little_endian() {
        let mut p = proto(TfDataType::DtFloat, &[1, 2]);
        p.tensor_content = [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()]
            .concat()
            .into();
        assert_eq!(
            tensor_from_proto("x", &p).unwrap().data(),
            &TensorData::F32(vec![1.0, -2.5])
        );
        let mut p = proto(TfDataType::DtInt64, &[2]);
        p.tensor_content = [7i64.to_le_bytes(), (-1i64).to_le_bytes()].concat().into();
        assert_eq!(
            tensor_from_proto("x", &p).unwrap().data(),
            &TensorData::I64(vec![7, -1])
        );
        p.tensor_content.truncate(p.tensor_content.len() - 1);
        assert!(tensor_from_proto("x", &p)
            .unwrap_err()
            .to_string()
            .contains("15 bytes"));
    }

    #[test]
    fn short_typed_field_is_padded_with_its_last_value() {
        let mut p = proto(TfDataType::DtFloat, &[2, 3]);
        p.float_val = vec![1.0, 2.0];
        assert_eq!(
            tensor_from_proto("x", &p).unwrap().data(),
            &TensorData::F32(vec![1.0, 2.0, 2.0, 2.0, 2.0, 2.0])
        );
        let mut huge = proto(TfDataType::DtFloat, &[1 << 40]);
        huge.float_val = vec![0.0];
        assert!(tensor_from_proto("x", &huge).is_err());
        let mut overflow = proto(TfDataType::DtFloat, &[i64::MAX, i64::MAX]);
        overflow.float_val = vec![0.0];
        assert!(tensor_from_proto("x", &overflow)
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }

    #[test]
    fn padding_stays_within_the_request_and_row_limits() {
        // 50 bytes on the wire, 256 MiB in memory before the bound.
        let mut broadcast = proto(TfDataType::DtFloat, &[16_777_216, 4]);
        broadcast.float_val = vec![1.0];
        let err = tensor_from_proto("x", &broadcast).unwrap_err();
        assert!(
            matches!(&err, ApiError::PayloadTooLarge(m) if m.contains("max_request_rows")),
            "{err}"
        );
        let mut wide = proto(TfDataType::DtFloat, &[2, 1 << 24]);
        wide.float_val = vec![1.0];
        let err = tensor_from_proto("x", &wide).unwrap_err();
        assert!(
            matches!(&err, ApiError::PayloadTooLarge(m) if m.contains("request size limit")),
            "{err}"
        );
        let mut strings = proto(TfDataType::DtString, &[1000]);
        strings.string_val = vec![vec![b'x'; 1 << 20]];
        assert!(matches!(
            tensor_from_proto("x", &strings),
            Err(ApiError::PayloadTooLarge(_))
        ));
        let mut fits = proto(TfDataType::DtFloat, &[65_536, 4]);
        fits.float_val = vec![0.5];
        assert_eq!(tensor_from_proto("x", &fits).unwrap().len(), 65_536 * 4);
    }

    #[test]
    fn the_padding_budget_is_shared_by_the_request_tensors() {
        // Each of these fits the limit alone; a request of many must not take many
        // times the limit (a 600-byte request once took a gigabyte).
        let mut limits = DecodeLimits {
            max_bytes: 1 << 20,
            max_rows: 65_536,
        };
        let mut quarter = proto(TfDataType::DtDouble, &[256, 128]);
        quarter.double_val = vec![1.0];
        for _ in 0..4 {
            assert!(super::tensor_from_proto("x", quarter.clone(), &mut limits).is_ok());
        }
        assert_eq!(limits.max_bytes, 0);
        let err = super::tensor_from_proto("x", quarter.clone(), &mut limits).unwrap_err();
        assert!(
            matches!(&err, ApiError::PayloadTooLarge(m) if m.contains("may still take")),
            "{err}"
        );
        // Tensors given whole spend nothing: the message carried them.
        let mut whole = proto(TfDataType::DtFloat, &[2]);
        whole.float_val = vec![1.0, 2.0];
        assert!(super::tensor_from_proto("y", whole, &mut limits).is_ok());
    }

    #[test]
    fn tensor_content_with_a_typed_field_is_refused() {
        let mut both = proto(TfDataType::DtFloat, &[2]);
        both.tensor_content = [1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat().into();
        both.float_val = vec![3.0, 4.0];
        let err = tensor_from_proto("x", &both).unwrap_err();
        assert!(
            matches!(&err, ApiError::InvalidArgument(m) if m.contains("tensor_content and float_val")),
            "{err}"
        );
        both.float_val.clear();
        both.int64_val = vec![1];
        assert!(tensor_from_proto("x", &both)
            .unwrap_err()
            .to_string()
            .contains("int64_val"));
    }

    #[test]
    fn bad_tensors_are_invalid_arguments() {
        let err = |p: &TensorProto| tensor_from_proto("x", p).unwrap_err().to_string();
        assert!(
            err(&proto(TfDataType::DtComplex64, &[1])).contains("DT_COMPLEX64 is not supported")
        );
        assert!(err(&TensorProto {
            dtype: 999,
            ..Default::default()
        })
        .contains("dtype 999"));
        assert!(err(&proto(TfDataType::DtFloat, &[-1, 4])).contains("negative"));
        assert!(err(&proto(TfDataType::DtFloat, &[1, 4])).contains("no values"));
        let mut many = proto(TfDataType::DtFloat, &[1]);
        many.float_val = vec![1.0, 2.0];
        assert!(err(&many).contains("2 values given"));
        let mut big = proto(TfDataType::DtUint8, &[1]);
        big.int_val = vec![256];
        assert!(err(&big).contains("does not fit"));
        let mut unknown = proto(TfDataType::DtFloat, &[1]);
        unknown.tensor_shape.as_mut().unwrap().unknown_rank = true;
        assert!(err(&unknown).contains("unknown rank"));
        let mut strings = proto(TfDataType::DtString, &[1]);
        strings.tensor_content = b"abc".to_vec().into();
        assert!(err(&strings).contains("send them in string_val"));
        // A count whose size overflows is shown exactly, not as usize::MAX.
        let mut huge = proto(TfDataType::DtFloat, &[1 << 61, 4]);
        huge.tensor_content = vec![0u8; 8].into();
        assert!(
            err(&huge).contains("elements take 36893488147419103232"),
            "{}",
            err(&huge)
        );
    }

    #[test]
    fn empty_shape_gives_an_empty_tensor_and_scalar_one_element() {
        let t = tensor_from_proto("x", &proto(TfDataType::DtFloat, &[0, 4])).unwrap();
        assert!(t.is_empty());
        let mut scalar = proto(TfDataType::DtInt64, &[]);
        scalar.int64_val = vec![3];
        assert_eq!(
            tensor_from_proto("x", &scalar).unwrap().shape(),
            &[] as &[usize]
        );
    }
}
