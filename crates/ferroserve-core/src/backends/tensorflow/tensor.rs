//! TensorFlow's tensors (`TF_Tensor`) made from and read into ferroserve tensors,
//! and the dtype codes between them.

use std::ffi::c_int;

use super::ffi::{self, Api};
use crate::backends::BackendError;
use crate::tensor::{DataType, Tensor, TensorData};

pub(super) fn dtype_from_tf(code: i32) -> Option<DataType> {
    Some(match code {
        ffi::TF_FLOAT => DataType::F32,
        ffi::TF_DOUBLE => DataType::F64,
        ffi::TF_INT32 => DataType::I32,
        ffi::TF_INT64 => DataType::I64,
        ffi::TF_UINT8 => DataType::U8,
        ffi::TF_INT8 => DataType::I8,
        ffi::TF_INT16 => DataType::I16,
        ffi::TF_UINT16 => DataType::U16,
        ffi::TF_UINT32 => DataType::U32,
        ffi::TF_UINT64 => DataType::U64,
        ffi::TF_BOOL => DataType::Bool,
        ffi::TF_STRING => DataType::Bytes,
        _ => return None,
    })
}

pub(super) fn dtype_to_tf(dtype: DataType) -> Option<c_int> {
    Some(match dtype {
        DataType::F32 => ffi::TF_FLOAT,
        DataType::F64 => ffi::TF_DOUBLE,
        DataType::I32 => ffi::TF_INT32,
        DataType::I64 => ffi::TF_INT64,
        DataType::U8 => ffi::TF_UINT8,
        DataType::I8 => ffi::TF_INT8,
        DataType::I16 => ffi::TF_INT16,
        DataType::U16 => ffi::TF_UINT16,
        DataType::U32 => ffi::TF_UINT32,
        DataType::U64 => ffi::TF_UINT64,
        DataType::Bool => ffi::TF_BOOL,
        DataType::Bytes => ffi::TF_STRING,
        DataType::F16 => return None,
    })
}

/// A `TF_Tensor` deleted on drop. Strings this process wrote into an input tensor
/// are freed first: TensorFlow's deallocator for `TF_AllocateTensor` frees only the
/// buffer.
pub(super) struct OwnedTensor {
    api: &'static Api,
    pub(super) raw: *mut ffi::TF_Tensor,
    owns_strings: bool,
}

impl Drop for OwnedTensor {
    fn drop(&mut self) {
        // SAFETY: `raw` is a live tensor owned here; for strings, its buffer holds
        // that many initialised TF_TStrings.
        unsafe {
            if self.owns_strings {
                let n =
                    (self.api.TF_TensorByteSize)(self.raw) / std::mem::size_of::<ffi::TF_TString>();
                let data = (self.api.TF_TensorData)(self.raw).cast::<ffi::TF_TString>();
                for i in 0..n {
                    (self.api.TF_StringDealloc)(data.add(i));
                }
            }
            (self.api.TF_DeleteTensor)(self.raw);
        }
    }
}

impl OwnedTensor {
    /// An output tensor `TF_SessionRun` gave back, owned (and deleted) here.
    pub(super) fn output(api: &'static Api, raw: *mut ffi::TF_Tensor) -> OwnedTensor {
        OwnedTensor {
            api,
            raw,
            owns_strings: false,
        }
    }

    pub(super) fn from_tensor(
        api: &'static Api,
        tensor: &Tensor,
    ) -> Result<OwnedTensor, BackendError> {
        let dims: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
        let code = dtype_to_tf(tensor.dtype()).ok_or_else(|| {
            BackendError::InvalidInput(format!(
                "{} inputs are not supported by the TensorFlow backend",
                tensor.dtype()
            ))
        })?;
        let n = tensor.len();
        let element = tensor
            .dtype()
            .fixed_size()
            .unwrap_or(std::mem::size_of::<ffi::TF_TString>());
        // SAFETY: the tensor is allocated with room for `n` elements and written
        // within it; it is owned by the returned value.
        unsafe {
            let raw =
                (api.TF_AllocateTensor)(code, dims.as_ptr(), dims.len() as c_int, n * element);
            if raw.is_null() {
                return Err(BackendError::Inference(
                    "TensorFlow could not allocate an input tensor".into(),
                ));
            }
            let data = (api.TF_TensorData)(raw);
            let mut owned = OwnedTensor {
                api,
                raw,
                owns_strings: false,
            };
            macro_rules! copy {
                ($v:expr) => {
                    if n > 0 {
                        std::ptr::copy_nonoverlapping($v.as_ptr(), data.cast(), n)
                    }
                };
            }
            match tensor.data() {
                TensorData::F32(v) => copy!(v),
                TensorData::F64(v) => copy!(v),
                TensorData::I32(v) => copy!(v),
                TensorData::I64(v) => copy!(v),
                TensorData::U8(v) => copy!(v),
                TensorData::I8(v) => copy!(v),
                TensorData::I16(v) => copy!(v),
                TensorData::U16(v) => copy!(v),
                TensorData::U32(v) => copy!(v),
                TensorData::U64(v) => copy!(v),
                TensorData::Bool(v) => {
                    let bytes: Vec<u8> = v.iter().map(|&b| b as u8).collect();
                    copy!(bytes)
                }
                TensorData::Bytes(v) => {
                    let strings = data.cast::<ffi::TF_TString>();
                    for i in 0..v.len() {
                        (api.TF_StringInit)(strings.add(i));
                    }
                    owned.owns_strings = true;
                    for (i, s) in v.iter().enumerate() {
                        (api.TF_StringCopy)(strings.add(i), s.as_ptr().cast(), s.len());
                    }
                }
                TensorData::F16(_) => unreachable!("refused above"),
            }
            Ok(owned)
        }
    }

    pub(super) fn to_tensor(&self, name: &str) -> Result<Tensor, BackendError> {
        let api = self.api;
        // SAFETY: reads a live output tensor within its byte size.
        unsafe {
            let code = (api.TF_TensorType)(self.raw);
            let dtype = dtype_from_tf(code).ok_or_else(|| {
                BackendError::Inference(format!("output {name:?} has unsupported dtype {code}"))
            })?;
            let ndims = (api.TF_NumDims)(self.raw);
            let shape: Vec<usize> = (0..ndims)
                .map(|i| (api.TF_Dim)(self.raw, i).max(0) as usize)
                .collect();
            let n: usize = shape.iter().product();
            let data = (api.TF_TensorData)(self.raw);
            let bytes = (api.TF_TensorByteSize)(self.raw);
            let element = dtype
                .fixed_size()
                .unwrap_or(std::mem::size_of::<ffi::TF_TString>());
            if n > 0 && (data.is_null() || bytes < n * element) {
                return Err(BackendError::Inference(format!(
                    "output {name:?} holds {bytes} bytes for {n} elements"
                )));
            }
            macro_rules! read {
                ($t:ty) => {
                    if n == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(data.cast::<$t>(), n).to_vec()
                    }
                };
            }
            let values = match dtype {
                DataType::F32 => TensorData::F32(read!(f32)),
                DataType::F64 => TensorData::F64(read!(f64)),
                DataType::I32 => TensorData::I32(read!(i32)),
                DataType::I64 => TensorData::I64(read!(i64)),
                DataType::U8 => TensorData::U8(read!(u8)),
                DataType::I8 => TensorData::I8(read!(i8)),
                DataType::I16 => TensorData::I16(read!(i16)),
                DataType::U16 => TensorData::U16(read!(u16)),
                DataType::U32 => TensorData::U32(read!(u32)),
                DataType::U64 => TensorData::U64(read!(u64)),
                DataType::Bool => TensorData::Bool(read!(u8).into_iter().map(|b| b != 0).collect()),
                DataType::Bytes => {
                    let strings = data.cast::<ffi::TF_TString>();
                    TensorData::Bytes(
                        (0..n)
                            .map(|i| {
                                let s = strings.add(i);
                                let len = (api.TF_StringGetSize)(s);
                                let ptr = (api.TF_StringGetDataPointer)(s);
                                if len == 0 {
                                    Vec::new()
                                } else {
                                    std::slice::from_raw_parts(ptr.cast::<u8>(), len).to_vec()
                                }
                            })
                            .collect(),
                    )
                }
                DataType::F16 => unreachable!("never mapped from TensorFlow"),
            };
            Tensor::new(shape, values).map_err(|e| BackendError::Inference(e.to_string()))
        }
    }
}
