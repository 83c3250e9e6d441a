//! Arrow columns and the tensors of a [`crate::tensor_model::TensorModel`]: an input
//! column (plain, or lists of equal length per row) read as a tensor, and the
//! outputs written as a record batch (a list per dimension after the batch).

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, BooleanBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, ListArray, PrimitiveArray, RecordBatch};
use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType as ArrowType, Field, Schema};
use ferroserve_core::tensor::{DataType, NamedTensor, Tensor, TensorData};

use crate::arrow_io;
use crate::tensor_model::all_utf8;

/// The Arrow type of an output column whose rows have `inner` dimensions: a plain
/// column for `[n]` and `[n, 1]`, a (variable-size) list per further dimension, as the
/// fastText columns are: Spark's `mapInArrow` takes lists (`array<float>`) but refuses
/// fixed-size lists. String outputs are `Utf8`, or `Binary` when an element is not
/// UTF-8 (see [`all_utf8`]).
pub(crate) fn column_type(dtype: DataType, inner: &[usize]) -> ArrowType {
    let inner = match inner {
        [1] => &[][..],
        other => other,
    };
    let scalar = match dtype {
        DataType::Bool => ArrowType::Boolean,
        DataType::U8 => ArrowType::UInt8,
        DataType::U16 => ArrowType::UInt16,
        DataType::U32 => ArrowType::UInt32,
        DataType::U64 => ArrowType::UInt64,
        DataType::I8 => ArrowType::Int8,
        DataType::I16 => ArrowType::Int16,
        DataType::I32 => ArrowType::Int32,
        DataType::I64 => ArrowType::Int64,
        DataType::F16 => ArrowType::Float16,
        DataType::F32 => ArrowType::Float32,
        DataType::F64 => ArrowType::Float64,
        DataType::Bytes => ArrowType::Utf8,
    };
    inner.iter().fold(scalar, |child, _| list_type(child))
}

/// A list of `child`, its items nullable as pyarrow's `pa.list_` and Spark's
/// `array<...>` declare them (no item is ever null).
fn list_type(child: ArrowType) -> ArrowType {
    ArrowType::List(Arc::new(Field::new("item", child, true)))
}

/// The flat Arrow array of a tensor's elements.
fn flat_array(data: TensorData) -> ArrayRef {
    fn primitive<T: ArrowPrimitiveType>(v: Vec<T::Native>) -> ArrayRef {
        Arc::new(PrimitiveArray::<T>::new(ScalarBuffer::from(v), None))
    }
    match data {
        TensorData::Bool(v) => {
            let mut b = BooleanBuilder::with_capacity(v.len());
            b.append_slice(&v);
            Arc::new(b.finish())
        }
        TensorData::U8(v) => primitive::<UInt8Type>(v),
        TensorData::U16(v) => primitive::<UInt16Type>(v),
        TensorData::U32(v) => primitive::<UInt32Type>(v),
        TensorData::U64(v) => primitive::<UInt64Type>(v),
        TensorData::I8(v) => primitive::<Int8Type>(v),
        TensorData::I16(v) => primitive::<Int16Type>(v),
        TensorData::I32(v) => primitive::<Int32Type>(v),
        TensorData::I64(v) => primitive::<Int64Type>(v),
        TensorData::F16(v) => {
            let len = v.len();
            Arc::new(PrimitiveArray::<Float16Type>::new(
                ScalarBuffer::new(Buffer::from_vec(v), 0, len),
                None,
            ))
        }
        TensorData::F32(v) => primitive::<Float32Type>(v),
        TensorData::F64(v) => primitive::<Float64Type>(v),
        TensorData::Bytes(v) => {
            let capacity = v.iter().map(Vec::len).sum();
            if all_utf8(&v) {
                let mut b = StringBuilder::with_capacity(v.len(), capacity);
                for s in &v {
                    b.append_value(std::str::from_utf8(s).unwrap_or_default());
                }
                Arc::new(b.finish())
            } else {
                let mut b = BinaryBuilder::with_capacity(v.len(), capacity);
                for s in &v {
                    b.append_value(s);
                }
                Arc::new(b.finish())
            }
        }
    }
}

/// The model's outputs as one record batch of `n_rows` rows.
pub(crate) fn outputs_batch(
    outputs: Vec<NamedTensor>,
    n_rows: usize,
) -> Result<RecordBatch, String> {
    let mut fields = Vec::with_capacity(outputs.len());
    let mut columns = Vec::with_capacity(outputs.len());
    for (name, tensor) in outputs {
        let (shape, data) = tensor.into_parts();
        if shape.first() != Some(&n_rows) {
            return Err(format!(
                "output {name:?} has shape {shape:?}, not one row per input row ({n_rows}); \
                 pass numpy arrays to get it whole"
            ));
        }
        let inner: Vec<usize> = match &shape[1..] {
            [1] => Vec::new(),
            other => other.to_vec(),
        };
        let mut array = flat_array(data);
        for depth in (0..inner.len()).rev() {
            // As many lists as the dimensions outside this one make, each `size` long.
            let size = inner[depth];
            let lists = shape[..=depth].iter().product::<usize>();
            let too_long = || format!("output {name:?} has too many elements for an Arrow list");
            let offsets = (0..=lists)
                .map(|i| {
                    i.checked_mul(size)
                        .and_then(|o| i32::try_from(o).ok())
                        .ok_or_else(too_long)
                })
                .collect::<Result<Vec<i32>, String>>()?;
            let field = Arc::new(Field::new("item", array.data_type().clone(), true));
            array = Arc::new(
                ListArray::try_new(field, OffsetBuffer::new(offsets.into()), array, None)
                    .map_err(|e| format!("output {name:?}: {e}"))?,
            );
        }
        fields.push(Field::new(&name, array.data_type().clone(), false));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// A column (and, for fixed-size list columns, the dimensions of each row) as a tensor
/// of the column's own element type. Nulls in float columns become NaN; nulls elsewhere
/// are refused, as no other type has a value meaning "missing".
pub(crate) fn column_tensor(name: &str, array: &ArrayRef) -> Result<Tensor, String> {
    let mut shape = vec![array.len()];
    let mut values = array.clone();
    loop {
        if values.null_count() > 0 && is_list(values.data_type()) {
            return Err(format!("column {name:?} has null rows"));
        }
        values = match values.data_type() {
            ArrowType::FixedSizeList(_, size) => {
                let size = usize::try_from(*size).map_err(|e| format!("column {name:?}: {e}"))?;
                let list = values.as_fixed_size_list();
                shape.push(size);
                list.values().slice(0, list.len() * size)
            }
            // Lists (what the package gives for `[n, k]` outputs, and Spark's `array<...>`)
            // whose rows are all as long.
            ArrowType::List(_) => {
                let list = values.as_list::<i32>();
                let offsets: Vec<usize> = list.offsets().iter().map(|&o| o as usize).collect();
                let (size, values) = equal_lists(name, &offsets, list.values())?;
                shape.push(size);
                values
            }
            ArrowType::LargeList(_) => {
                let list = values.as_list::<i64>();
                let offsets: Vec<usize> = list.offsets().iter().map(|&o| o as usize).collect();
                let (size, values) = equal_lists(name, &offsets, list.values())?;
                shape.push(size);
                values
            }
            _ => break,
        };
    }
    let no_nulls = |values: &ArrayRef| {
        if values.null_count() > 0 {
            Err(format!(
                "column {name:?} has nulls; only float columns may (as NaN)"
            ))
        } else {
            Ok(())
        }
    };
    macro_rules! ints {
        ($t:ty, $variant:ident) => {{
            no_nulls(&values)?;
            TensorData::$variant(values.as_primitive::<$t>().values().to_vec())
        }};
    }
    macro_rules! floats {
        ($t:ty, $variant:ident, $nan:expr) => {{
            let a = values.as_primitive::<$t>();
            TensorData::$variant(
                (0..a.len())
                    .map(|i| if a.is_null(i) { $nan } else { a.value(i) })
                    .collect(),
            )
        }};
    }
    let data = match values.data_type() {
        ArrowType::Boolean => {
            no_nulls(&values)?;
            let a = values.as_boolean();
            TensorData::Bool((0..a.len()).map(|i| a.value(i)).collect())
        }
        ArrowType::UInt8 => ints!(UInt8Type, U8),
        ArrowType::UInt16 => ints!(UInt16Type, U16),
        ArrowType::UInt32 => ints!(UInt32Type, U32),
        ArrowType::UInt64 => ints!(UInt64Type, U64),
        ArrowType::Int8 => ints!(Int8Type, I8),
        ArrowType::Int16 => ints!(Int16Type, I16),
        ArrowType::Int32 => ints!(Int32Type, I32),
        ArrowType::Int64 => ints!(Int64Type, I64),
        ArrowType::Float32 => floats!(Float32Type, F32, f32::NAN),
        ArrowType::Float64 => floats!(Float64Type, F64, f64::NAN),
        // As Python's float(Decimal) reads each (a null: NaN), then cast to the input's
        // dtype as a float64 column is.
        ArrowType::Decimal128(..) | ArrowType::Decimal256(..) => {
            TensorData::F64(arrow_io::numeric_values(name, &values)?)
        }
        // Binary columns pass their bytes through unchanged (a serialized tf.train.Example
        // for a TensorFlow string input is not UTF-8).
        ArrowType::Binary => TensorData::Bytes(binary_values(name, values.as_binary::<i32>())?),
        ArrowType::LargeBinary => {
            TensorData::Bytes(binary_values(name, values.as_binary::<i64>())?)
        }
        ArrowType::BinaryView => {
            let a = values.as_binary_view();
            no_nulls(&values)?;
            TensorData::Bytes((0..a.len()).map(|i| a.value(i).to_vec()).collect())
        }
        ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => {
            let strings = arrow_io::string_values(name, &values)?;
            TensorData::Bytes(
                strings
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| {
                        s.map(String::into_bytes)
                            .ok_or_else(|| format!("row {i} of column {name:?} is null"))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        other => {
            return Err(format!(
                "column {name:?} is {other}; inputs take numbers, booleans, strings, binary \
                 or lists of them"
            ))
        }
    };
    Tensor::new(shape, data).map_err(|e| format!("column {name:?}: {e}"))
}

fn is_list(dtype: &ArrowType) -> bool {
    matches!(
        dtype,
        ArrowType::FixedSizeList(..) | ArrowType::List(_) | ArrowType::LargeList(_)
    )
}

/// The length every row of a list column has (`offsets` its row offsets) and the
/// values of those rows; rows of different lengths make no tensor and are refused.
fn equal_lists(
    name: &str,
    offsets: &[usize],
    values: &ArrayRef,
) -> Result<(usize, ArrayRef), String> {
    let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
        return Ok((0, values.slice(0, 0)));
    };
    let size = offsets.get(1).map_or(0, |&o| o.saturating_sub(first));
    if let Some(row) = offsets
        .windows(2)
        .position(|w| w[1].checked_sub(w[0]) != Some(size))
    {
        return Err(format!(
            "column {name:?}: row {row} has {} values, row 0 has {size}; every row of a list \
             column must be as long",
            offsets[row + 1].saturating_sub(offsets[row])
        ));
    }
    if last > values.len() || first > last {
        return Err(format!("column {name:?}: list offsets out of range"));
    }
    Ok((size, values.slice(first, last - first)))
}

fn binary_values<O: arrow_array::OffsetSizeTrait>(
    name: &str,
    array: &arrow_array::GenericBinaryArray<O>,
) -> Result<Vec<Vec<u8>>, String> {
    (0..array.len())
        .map(|i| match array.is_valid(i) {
            true => Ok(array.value(i).to_vec()),
            false => Err(format!("row {i} of column {name:?} is null")),
        })
        .collect()
}
