//! numpy dtypes and arrays, rebuilt from their pickled description without numpy.
//!
//! Arrays arrive as `_reconstruct` + `BUILD (version, shape, dtype, is_fortran, data)`,
//! as protocol 5 `_frombuffer(buffer, dtype, shape, order)`, or (joblib) as raw bytes after
//! a wrapper. All sizes are checked with overflow-checked arithmetic against the bytes
//! actually present, and the decoded size is charged to the budget before allocating.

use std::mem;

use super::heap::{Budget, Handle, Heap, Obj};
use super::LoadError;
use crate::value::{ArrayData, DType, NdArray, RecordField, Value};

/// A dtype as the decoder needs it: the public [`DType`] plus the byte layout that the
/// public type leaves out (element size, byte order, per-field layouts).
#[derive(Debug, Clone)]
pub(crate) struct Dt {
    pub(crate) dtype: DType,
    pub(crate) itemsize: usize,
    pub(crate) big_endian: bool,
    /// For records: the layout of each field, parallel to `DType::Record`'s fields.
    pub(crate) fields: Vec<Dt>,
}

fn err(offset: usize, message: impl Into<String>) -> LoadError {
    LoadError::Numpy {
        offset,
        message: message.into(),
    }
}

impl Dt {
    fn simple(dtype: DType, itemsize: usize, big_endian: bool) -> Dt {
        Dt {
            dtype,
            itemsize,
            big_endian,
            fields: Vec::new(),
        }
    }

    /// Parses the type code given to `numpy.dtype(code, align, copy)`, e.g. `f8`, `<i4`,
    /// `U5`, `V64`, `O8`, `b1`.
    pub(crate) fn from_code(code: &str, offset: usize) -> Result<Dt, LoadError> {
        if !code.is_ascii() {
            return Err(err(offset, format!("unsupported dtype code {code:?}")));
        }
        let (big_endian, rest) = match code.as_bytes().first() {
            Some(b'>') => (true, &code[1..]),
            Some(b'<' | b'|' | b'=') => (false, &code[1..]),
            _ => (false, code),
        };
        let (kind, digits) = rest.split_at(rest.len().min(1));
        let size: Option<usize> = if digits.is_empty() {
            None
        } else {
            Some(
                digits
                    .parse()
                    .map_err(|_| err(offset, format!("unsupported dtype code {code:?}")))?,
            )
        };
        let unsupported = || err(offset, format!("unsupported dtype code {code:?}"));
        let dt = match (kind, size) {
            ("b", Some(1) | None) | ("?", None) => Dt::simple(DType::Bool, 1, false),
            ("i", Some(1)) => Dt::simple(DType::I8, 1, false),
            ("i", Some(2)) => Dt::simple(DType::I16, 2, big_endian),
            ("i", Some(4)) => Dt::simple(DType::I32, 4, big_endian),
            ("i", Some(8)) => Dt::simple(DType::I64, 8, big_endian),
            ("u", Some(1)) => Dt::simple(DType::U8, 1, false),
            ("u", Some(2)) => Dt::simple(DType::U16, 2, big_endian),
            ("u", Some(4)) => Dt::simple(DType::U32, 4, big_endian),
            ("u", Some(8)) => Dt::simple(DType::U64, 8, big_endian),
            ("f", Some(4)) => Dt::simple(DType::F32, 4, big_endian),
            ("f", Some(8)) => Dt::simple(DType::F64, 8, big_endian),
            ("O", Some(8) | Some(4) | None) => Dt::simple(DType::Object, 8, false),
            ("U", n) => {
                let n = n.unwrap_or(0);
                let itemsize = n.checked_mul(4).ok_or_else(unsupported)?;
                Dt::simple(DType::Unicode(n), itemsize, big_endian)
            }
            ("S", n) => Dt::simple(DType::Bytes(n.unwrap_or(0)), n.unwrap_or(0), false),
            ("V", n) => Dt::simple(DType::Record(Vec::new()), n.unwrap_or(0), false),
            _ => return Err(unsupported()),
        };
        if dt.itemsize > MAX_ITEMSIZE {
            return Err(err(
                offset,
                format!("dtype {code:?} element size too large"),
            ));
        }
        Ok(dt)
    }

    /// Applies the `BUILD` state of a dtype:
    /// `(version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])`.
    pub(crate) fn apply_state(
        &mut self,
        heap: &Heap,
        state: Handle,
        offset: usize,
        budget: &mut Budget,
    ) -> Result<(), LoadError> {
        let items = heap
            .tuple(state)
            .ok_or_else(|| err(offset, "dtype state is not a tuple"))?;
        let [version, byteorder, subarray, names, fields, elsize, ..] = items else {
            return Err(err(offset, "dtype state tuple is too short"));
        };
        if !matches!(heap.int(*version), Some(3 | 4)) {
            return Err(err(offset, "unsupported dtype state version"));
        }
        match heap.str(*byteorder) {
            Some(">") => self.big_endian = true,
            Some("<" | "|" | "=") => self.big_endian = false,
            _ => return Err(err(offset, "invalid dtype byte order")),
        }
        if !heap.is_none(*subarray) {
            return Err(err(offset, "sub-array dtypes are not supported"));
        }
        let elsize = heap
            .int(*elsize)
            .ok_or_else(|| err(offset, "dtype element size is not an int"))?;
        // Flexible types (U, S, V) take their size from the state; -1 means "fixed".
        if elsize >= 0 {
            let elsize = usize::try_from(elsize)
                .ok()
                .filter(|&size| size <= MAX_ITEMSIZE)
                .ok_or_else(|| err(offset, "dtype element size too large"))?;
            match &mut self.dtype {
                DType::Unicode(n) => {
                    if elsize % 4 != 0 {
                        return Err(err(offset, "unicode dtype size is not a multiple of 4"));
                    }
                    *n = elsize / 4;
                    self.itemsize = elsize;
                }
                DType::Bytes(n) => {
                    *n = elsize;
                    self.itemsize = elsize;
                }
                DType::Record(_) => self.itemsize = elsize,
                _ if elsize != self.itemsize => {
                    return Err(err(offset, "dtype element size does not match its type"))
                }
                _ => {}
            }
        }
        if heap.is_none(*names) {
            return Ok(());
        }
        if !matches!(self.dtype, DType::Record(_)) {
            return Err(err(offset, "field names on a non-record dtype"));
        }
        let names = heap
            .tuple(*names)
            .ok_or_else(|| err(offset, "dtype names is not a tuple"))?;
        // A memoized state tuple can be applied again and again for a few bytes each.
        budget.charge_n(names.len(), FIELD_COST, offset)?;
        let fields = heap
            .str_dict(*fields)
            .ok_or_else(|| err(offset, "dtype fields is not a dict"))?;
        let mut public_fields = Vec::with_capacity(names.len());
        let mut layouts = Vec::with_capacity(names.len());
        for &name in names {
            let name = heap
                .str(name)
                .ok_or_else(|| err(offset, "dtype field name is not a str"))?;
            let field = fields
                .get(name)
                .and_then(|&h| heap.tuple(h))
                .ok_or_else(|| err(offset, format!("dtype field {name:?} is not described")))?;
            let (field_dt, field_offset) = match field {
                [dt, off, ..] => (*dt, *off),
                _ => return Err(err(offset, format!("dtype field {name:?} is malformed"))),
            };
            let field_dt = match heap.get(field_dt) {
                Obj::DType(dt) => dt.clone(),
                _ => return Err(err(offset, format!("dtype field {name:?} has no dtype"))),
            };
            if matches!(field_dt.dtype, DType::Record(_) | DType::Object) {
                return Err(err(
                    offset,
                    format!(
                        "dtype field {name:?}: nested record and object fields are not supported"
                    ),
                ));
            }
            let field_offset = heap
                .int(field_offset)
                .and_then(|o| usize::try_from(o).ok())
                .ok_or_else(|| err(offset, format!("dtype field {name:?} has a bad offset")))?;
            field_offset
                .checked_add(field_dt.itemsize)
                .filter(|&end| end <= self.itemsize)
                .ok_or_else(|| {
                    err(
                        offset,
                        format!("dtype field {name:?} lies outside the record"),
                    )
                })?;
            public_fields.push(RecordField {
                name: name.to_owned(),
                dtype: field_dt.dtype.clone(),
                offset: field_offset,
            });
            layouts.push(field_dt);
        }
        self.dtype = DType::Record(public_fields);
        self.fields = layouts;
        Ok(())
    }
}

/// Total element count of `shape`, overflow-checked.
pub(crate) fn element_count(shape: &[usize], offset: usize) -> Result<usize, LoadError> {
    shape.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| err(offset, "array shape overflows"))
    })
}

/// numpy stores element sizes in a C int, so no real dtype is larger.
const MAX_ITEMSIZE: usize = i32::MAX as usize;

/// numpy's own limit (`NPY_MAXDIMS` in numpy 2); it also keeps per-element index
/// arithmetic (Fortran reordering) linear in the element count.
const MAX_DIMS: usize = 64;

/// Reads a shape tuple of non-negative Python ints.
pub(crate) fn shape_of(
    heap: &Heap,
    handle: Handle,
    offset: usize,
) -> Result<Vec<usize>, LoadError> {
    let dims = heap
        .tuple(handle)
        .or_else(|| match heap.get(handle) {
            Obj::List(items) => Some(items.as_slice()),
            _ => None,
        })
        .ok_or_else(|| err(offset, "array shape is not a tuple"))?;
    if dims.len() > MAX_DIMS {
        return Err(err(
            offset,
            format!("array has more than {MAX_DIMS} dimensions"),
        ));
    }
    dims.iter()
        .map(|&d| {
            heap.int(d)
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| err(offset, "array dimension is not a non-negative int"))
        })
        .collect()
}

/// Approximate bytes of one record field description (name, dtype, offset, layout).
const FIELD_COST: usize = 128;

/// Decoded bytes per element, charged to the budget before decoding.
fn decoded_cost(dt: &Dt) -> usize {
    match &dt.dtype {
        DType::Bool => 1,
        DType::Unicode(_) | DType::Bytes(_) => mem::size_of::<String>().saturating_add(dt.itemsize),
        DType::Record(_) => dt
            .fields
            .iter()
            .fold(0usize, |sum, field| sum.saturating_add(decoded_cost(field))),
        _ => 8,
    }
}

/// Decodes a whole array from its raw bytes (C or Fortran order) into C order.
pub(crate) fn decode_array(
    dt: &Dt,
    shape: Vec<usize>,
    fortran: bool,
    raw: &[u8],
    budget: &mut Budget,
    offset: usize,
) -> Result<NdArray, LoadError> {
    if matches!(dt.dtype, DType::Object) {
        return Err(err(offset, "object array given as raw bytes"));
    }
    let count = element_count(&shape, offset)?;
    let expected = count
        .checked_mul(dt.itemsize)
        .ok_or_else(|| err(offset, "array byte size overflows"))?;
    if raw.len() != expected {
        return Err(err(
            offset,
            format!(
                "array data has {} bytes, shape {:?} × itemsize {} needs {}",
                raw.len(),
                shape,
                dt.itemsize,
                expected
            ),
        ));
    }
    // At least one byte per element, so zero-size dtypes cannot smuggle in a huge shape.
    budget.charge_n(count, decoded_cost(dt).max(1), offset)?;
    // The array keeps its own copy of a record dtype's field list.
    budget.charge_n(dt.fields.len(), FIELD_COST, offset)?;
    if fortran && shape.len() > 1 {
        // The Fortran-to-C index map.
        budget.charge_n(count, mem::size_of::<usize>(), offset)?;
    }
    let order = if fortran && shape.len() > 1 {
        Some(fortran_to_c_order(&shape, count))
    } else {
        None
    };
    let data = decode_elements(dt, raw, count, dt.itemsize, 0, order.as_deref(), offset)?;
    Ok(NdArray {
        dtype: dt.dtype.clone(),
        shape,
        data,
    })
}

/// For each C-order position, the index of that element in Fortran-order storage.
fn fortran_to_c_order(shape: &[usize], count: usize) -> Vec<usize> {
    let mut order = Vec::with_capacity(count);
    if count == 0 {
        return order;
    }
    let mut f_strides = Vec::with_capacity(shape.len());
    let mut stride = 1usize;
    for &d in shape {
        f_strides.push(stride);
        // Cannot overflow: the product of all dims is `count`, which fits usize.
        stride = stride.saturating_mul(d);
    }
    let mut index = vec![0usize; shape.len()];
    let mut f = 0usize;
    for _ in 0..count {
        order.push(f);
        // Advance the C-order multi-index (last axis fastest), tracking the F offset.
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            f += f_strides[axis];
            if index[axis] < shape[axis] {
                break;
            }
            f -= f_strides[axis] * shape[axis];
            index[axis] = 0;
        }
    }
    order
}

/// Decodes `count` elements of `dt`, element `i` starting at `i * stride + base` in `raw`
/// (storage order), emitted in the order given by `order` (or storage order).
fn decode_elements(
    dt: &Dt,
    raw: &[u8],
    count: usize,
    stride: usize,
    base: usize,
    order: Option<&[usize]>,
    offset: usize,
) -> Result<ArrayData, LoadError> {
    let element = |i: usize| -> Result<&[u8], LoadError> {
        let storage = order.map_or(Some(i), |o| o.get(i).copied());
        storage
            .and_then(|s| s.checked_mul(stride))
            .and_then(|start| start.checked_add(base))
            .and_then(|start| raw.get(start..start.checked_add(dt.itemsize)?))
            .ok_or_else(|| err(offset, "array element out of range"))
    };
    fn fixed<const N: usize>(bytes: &[u8]) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = bytes.get(..N) {
            out.copy_from_slice(src);
        }
        out
    }
    macro_rules! ints {
        ($t:ty, $n:literal) => {{
            let mut out = Vec::with_capacity(count);
            for i in 0..count {
                let b = fixed::<$n>(element(i)?);
                let v = if dt.big_endian {
                    <$t>::from_be_bytes(b)
                } else {
                    <$t>::from_le_bytes(b)
                };
                out.push(i64::from(v));
            }
            ArrayData::Int(out)
        }};
    }
    Ok(match &dt.dtype {
        DType::Bool => {
            let mut out = Vec::with_capacity(count);
            for i in 0..count {
                out.push(element(i)?.first().is_some_and(|&b| b != 0));
            }
            ArrayData::Bool(out)
        }
        DType::I8 => ints!(i8, 1),
        DType::I16 => ints!(i16, 2),
        DType::I32 => ints!(i32, 4),
        DType::I64 => ints!(i64, 8),
        DType::U8 => ints!(u8, 1),
        DType::U16 => ints!(u16, 2),
        DType::U32 => ints!(u32, 4),
        DType::U64 => {
            let mut out = Vec::with_capacity(count);
            for i in 0..count {
                let b = fixed::<8>(element(i)?);
                out.push(if dt.big_endian {
                    u64::from_be_bytes(b)
                } else {
                    u64::from_le_bytes(b)
                });
            }
            // u64 arrays whose values all fit i64 read as Int like every other integer
            // array; only arrays with larger values stay UInt.
            if out.iter().all(|&v| i64::try_from(v).is_ok()) {
                ArrayData::Int(out.into_iter().map(|v| v as i64).collect())
            } else {
                ArrayData::UInt(out)
            }
        }
        DType::F32 => {
            let mut out = Vec::with_capacity(count);
            for i in 0..count {
                let b = fixed::<4>(element(i)?);
                let v = if dt.big_endian {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                };
                out.push(f64::from(v));
            }
            ArrayData::Float(out)
        }
        DType::F64 => {
            let mut out = Vec::with_capacity(count);
            for i in 0..count {
                let b = fixed::<8>(element(i)?);
                out.push(if dt.big_endian {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                });
            }
            ArrayData::Float(out)
        }
        DType::Unicode(_) => {
            let mut out = Vec::with_capacity(count);
            for i in 0..count {
                out.push(decode_utf32(element(i)?, dt.big_endian, offset)?);
            }
            ArrayData::Str(out)
        }
        DType::Bytes(_) => {
            let mut out = Vec::with_capacity(count);
            for i in 0..count {
                let b = element(i)?;
                // numpy strips trailing NULs from fixed-width bytes.
                let len = b.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
                out.push(b[..len].to_vec());
            }
            ArrayData::Bytes(out)
        }
        DType::Record(fields) => {
            let mut columns = Vec::with_capacity(fields.len());
            for (field, layout) in fields.iter().zip(&dt.fields) {
                let field_base = base
                    .checked_add(field.offset)
                    .ok_or_else(|| err(offset, "record field offset overflows"))?;
                let column =
                    decode_elements(layout, raw, count, stride, field_base, order, offset)?;
                columns.push((field.name.clone(), column));
            }
            ArrayData::Record(columns)
        }
        DType::Object => return Err(err(offset, "object array given as raw bytes")),
    })
}

/// numpy `U` items: UTF-32 code units, trailing NULs stripped.
fn decode_utf32(bytes: &[u8], big_endian: bool, offset: usize) -> Result<String, LoadError> {
    let mut out = String::new();
    for unit in bytes.chunks_exact(4) {
        let b = [unit[0], unit[1], unit[2], unit[3]];
        let code = if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        };
        out.push(char::from_u32(code).ok_or_else(|| err(offset, "invalid UTF-32 in str array"))?);
    }
    let trimmed = out.trim_end_matches('\0').len();
    out.truncate(trimmed);
    Ok(out)
}

/// `numpy.core.multiarray.scalar(dtype, raw_bytes)` → a plain number.
pub(crate) fn scalar(dt: &Dt, raw: &[u8], offset: usize) -> Result<Value, LoadError> {
    let mut budget = Budget::new(raw.len().saturating_mul(64).saturating_add(1024));
    let array = decode_array(dt, Vec::new(), false, raw, &mut budget, offset)?;
    let value = match array.data {
        ArrayData::Bool(v) => v.first().map(|&b| Value::Bool(b)),
        ArrayData::Int(v) => v.first().map(|&i| Value::Int(i)),
        ArrayData::UInt(v) => v
            .first()
            .map(|&u| Value::BigInt(u.to_le_bytes().into_iter().chain([0]).collect())),
        ArrayData::Float(v) => v.first().map(|&f| Value::Float(f)),
        ArrayData::Str(mut v) => v.pop().map(Value::Str),
        ArrayData::Bytes(mut v) => v.pop().map(Value::Bytes),
        ArrayData::Object(_) | ArrayData::Record(_) => None,
    };
    value.ok_or_else(|| err(offset, "unsupported numpy scalar type"))
}
