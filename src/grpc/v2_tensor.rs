//! KServe V2 gRPC tensors ↔ [`Tensor`]: the typed `InferTensorContents` fields and the
//! raw form (`raw_input_contents` / `raw_output_contents`).
//!
//! Raw elements are little-endian; a BYTES element is a 4-byte little-endian length
//! followed by that many bytes. FP16 has no typed field, so it travels raw only.

use std::mem::take;

use ferroserve_proto::inference::InferTensorContents;

use crate::api::ApiError;
use crate::raw_tensor;
use crate::tensor::{DataType, Tensor, TensorData};

fn invalid(name: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidArgument(format!("input {name:?}: {message}"))
}

/// A V2 shape (`int64` dimensions) as a tensor shape; refuses negative dimensions and
/// shapes whose element count overflows.
pub fn shape_from_v2(name: &str, dims: &[i64]) -> Result<Vec<usize>, ApiError> {
    let shape = dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| invalid(name, format_args!("dimension {d} is negative")))
        })
        .collect::<Result<Vec<usize>, ApiError>>()?;
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| invalid(name, format_args!("shape {dims:?} is too large")))?;
    Ok(shape)
}

pub fn dtype_from_v2(name: &str, datatype: &str) -> Result<DataType, ApiError> {
    DataType::from_v2_name(datatype)
        .ok_or_else(|| invalid(name, format_args!("unknown datatype {datatype:?}")))
}

/// Decodes one entry of `raw_input_contents`: a tensor of a declared dtype
/// ([`Tensor::declared`]), so a BOOL one is refused for a numeric input.
pub fn tensor_from_raw(
    name: &str,
    dtype: DataType,
    shape: Vec<usize>,
    bytes: &[u8],
) -> Result<Tensor, ApiError> {
    let count: usize = shape.iter().product();
    let data = raw_tensor::decode(dtype, count, bytes).map_err(|e| invalid(name, e))?;
    Tensor::new(shape, data)
        .map(Tensor::declared)
        .map_err(|e| invalid(name, e))
}

/// Encodes a tensor's elements in the raw form.
pub fn tensor_to_raw(data: &TensorData) -> Vec<u8> {
    let mut out = Vec::new();
    raw_tensor::encode(data, &mut out);
    out
}

/// Decodes an input given in the typed `contents` field of its datatype, taking the
/// field's values (no copy) where the dtype matches the field's element type. The
/// dtype is the client's declaration ([`Tensor::declared`]).
pub fn tensor_from_contents(
    name: &str,
    dtype: DataType,
    shape: Vec<usize>,
    mut c: InferTensorContents,
) -> Result<Tensor, ApiError> {
    fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
        name: &str,
        dtype: DataType,
        v: &[S],
    ) -> Result<Vec<T>, ApiError> {
        v.iter()
            .map(|&x| {
                T::try_from(x)
                    .map_err(|_| invalid(name, format_args!("value {x} does not fit {dtype}")))
            })
            .collect()
    }
    let data = match dtype {
        DataType::Bool => TensorData::Bool(take(&mut c.bool_contents)),
        DataType::I8 => TensorData::I8(narrow(name, dtype, &c.int_contents)?),
        DataType::I16 => TensorData::I16(narrow(name, dtype, &c.int_contents)?),
        DataType::I32 => TensorData::I32(take(&mut c.int_contents)),
        DataType::I64 => TensorData::I64(take(&mut c.int64_contents)),
        DataType::U8 => TensorData::U8(narrow(name, dtype, &c.uint_contents)?),
        DataType::U16 => TensorData::U16(narrow(name, dtype, &c.uint_contents)?),
        DataType::U32 => TensorData::U32(take(&mut c.uint_contents)),
        DataType::U64 => TensorData::U64(take(&mut c.uint64_contents)),
        DataType::F32 => TensorData::F32(take(&mut c.fp32_contents)),
        DataType::F64 => TensorData::F64(take(&mut c.fp64_contents)),
        DataType::Bytes => TensorData::Bytes(take(&mut c.bytes_contents)),
        DataType::F16 => {
            return Err(invalid(
                name,
                "FP16 has no typed contents field; send it in raw_input_contents",
            ))
        }
    };
    Tensor::new(shape, data)
        .map(Tensor::declared)
        .map_err(|e| invalid(name, e))
}

/// Encodes an output in the typed field of its dtype; `None` for FP16, which has none.
pub fn tensor_to_contents(data: &TensorData) -> Option<InferTensorContents> {
    let mut c = InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v.clone(),
        TensorData::I8(v) => c.int_contents = v.iter().map(|&x| x as i32).collect(),
        TensorData::I16(v) => c.int_contents = v.iter().map(|&x| x as i32).collect(),
        TensorData::I32(v) => c.int_contents = v.clone(),
        TensorData::I64(v) => c.int64_contents = v.clone(),
        TensorData::U8(v) => c.uint_contents = v.iter().map(|&x| x as u32).collect(),
        TensorData::U16(v) => c.uint_contents = v.iter().map(|&x| x as u32).collect(),
        TensorData::U32(v) => c.uint_contents = v.clone(),
        TensorData::U64(v) => c.uint64_contents = v.clone(),
        TensorData::F32(v) => c.fp32_contents = v.clone(),
        TensorData::F64(v) => c.fp64_contents = v.clone(),
        TensorData::Bytes(v) => c.bytes_contents = v.clone(),
        TensorData::F16(_) => return None,
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_types() -> Vec<TensorData> {
        vec![
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
            TensorData::Bytes(vec![b"setosa".to_vec(), vec![]]),
        ]
    }

    #[test]
    fn every_dtype_round_trips_raw_and_typed() {
        for data in all_types() {
            let dtype = data.dtype();
            let raw = tensor_to_raw(&data);
            let t = tensor_from_raw("x", dtype, vec![1, 2], &raw).unwrap();
            assert_eq!(t.data(), &data, "raw {dtype}");
            // The client declared the dtype: a BOOL tensor is no number.
            assert!(t.is_declared(), "raw {dtype}");
            match tensor_to_contents(&data) {
                Some(c) => {
                    let t = tensor_from_contents("x", dtype, vec![2], c).unwrap();
                    assert_eq!(t.data(), &data, "typed {dtype}");
                    assert!(t.is_declared(), "typed {dtype}");
                }
                None => assert_eq!(dtype, DataType::F16),
            }
        }
    }

    #[test]
    fn raw_bytes_are_length_prefixed_little_endian() {
        let raw = tensor_to_raw(&TensorData::Bytes(vec![b"ab".to_vec()]));
        assert_eq!(raw, vec![2, 0, 0, 0, b'a', b'b']);
        let err = |bytes: &[u8]| {
            tensor_from_raw("x", DataType::Bytes, vec![1], bytes)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[2, 0, 0]).contains("inside a length prefix"));
        assert!(err(&[9, 0, 0, 0, 1]).contains("runs past the end"));
        assert!(err(&[]).contains("holds 0 BYTES elements"));
    }

    #[test]
    fn raw_fixed_size_must_match_the_shape() {
        let err = tensor_from_raw("x", DataType::F32, vec![1, 4], &[0; 15])
            .unwrap_err()
            .to_string();
        assert!(err.contains("15 bytes"), "{err}");
        assert!(tensor_from_raw("x", DataType::F32, vec![1, 4], &[0; 16]).is_ok());
    }

    #[test]
    fn typed_contents_are_checked() {
        let c = InferTensorContents {
            fp32_contents: vec![1.0; 3],
            ..Default::default()
        };
        assert!(tensor_from_contents("x", DataType::F32, vec![1, 4], c.clone()).is_err());
        // Values in the wrong field for the datatype are as good as none.
        assert!(tensor_from_contents("x", DataType::I64, vec![3], c.clone()).is_err());
        let c = InferTensorContents {
            uint_contents: vec![256],
            ..Default::default()
        };
        assert!(tensor_from_contents("x", DataType::U8, vec![1], c.clone())
            .unwrap_err()
            .to_string()
            .contains("does not fit"));
        assert!(shape_from_v2("x", &[-1, 4]).is_err());
        assert!(shape_from_v2("x", &[i64::MAX, i64::MAX])
            .unwrap_err()
            .to_string()
            .contains("too large"));
        assert!(dtype_from_v2("x", "FLOAT32").is_err());
    }
}
