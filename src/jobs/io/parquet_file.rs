//! Parquet files in the data directory (or uploaded), read and written through the
//! `parquet` crate's Arrow reader and writer.
//!
//! The source decodes one record batch at a time ([`READ_BATCH_ROWS`] rows), so a
//! file of any size costs one batch (and the pages it spans) in memory. The sink
//! learns its column types from the first rows it is given and writes row groups of
//! at most [`ROW_GROUP_ROWS`] rows as they fill, into a temporary file renamed over
//! the final name at commit, like the CSV sink.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{IoError, Sink, Source, Value};
use crate::jobs::spec::FileSpec;

/// Rows decoded at a time by the source.
const READ_BATCH_ROWS: usize = 1024;
/// Rows per row group the sink writes; a row group is buffered (encoded) in memory
/// until it is full, so this bounds the sink's memory.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Whether the source can turn a column of this type into [`Value`]s.
fn readable(data_type: &DataType) -> bool {
    match data_type {
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => matches!(
            values.as_ref(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        _ => false,
    }
}

/// One column of a record batch as cells. The type was checked by [`readable`].
fn column_values(array: &ArrayRef) -> Vec<Value> {
    let n = array.len();
    macro_rules! each {
        ($arr:expr, $f:expr) => {{
            let arr = $arr;
            (0..n)
                .map(|i| {
                    if arr.is_null(i) {
                        Value::Null
                    } else {
                        $f(arr.value(i))
                    }
                })
                .collect()
        }};
    }
    match array.data_type() {
        DataType::Null => vec![Value::Null; n],
        DataType::Boolean => each!(array.as_boolean(), Value::Bool),
        DataType::Int8 => each!(array.as_primitive::<Int8Type>(), |v: i8| Value::Int(
            v.into()
        )),
        DataType::Int16 => each!(array.as_primitive::<Int16Type>(), |v: i16| Value::Int(
            v.into()
        )),
        DataType::Int32 => each!(array.as_primitive::<Int32Type>(), |v: i32| Value::Int(
            v.into()
        )),
        DataType::Int64 => each!(array.as_primitive::<Int64Type>(), Value::Int),
        DataType::UInt8 => each!(array.as_primitive::<UInt8Type>(), |v: u8| Value::Int(
            v.into()
        )),
        DataType::UInt16 => each!(array.as_primitive::<UInt16Type>(), |v: u16| Value::Int(
            v.into()
        )),
        DataType::UInt32 => each!(array.as_primitive::<UInt32Type>(), |v: u32| Value::Int(
            v.into()
        )),
        DataType::UInt64 => each!(array.as_primitive::<UInt64Type>(), |v: u64| {
            i64::try_from(v).map_or(Value::Float(v as f64), Value::Int)
        }),
        DataType::Float16 => each!(array.as_primitive::<Float16Type>(), |v| Value::Float(
            f64::from(v)
        )),
        DataType::Float32 => each!(array.as_primitive::<Float32Type>(), |v: f32| {
            Value::Float(v.into())
        }),
        DataType::Float64 => each!(array.as_primitive::<Float64Type>(), Value::Float),
        DataType::Utf8 => each!(array.as_string::<i32>(), |v: &str| Value::Text(
            v.to_string()
        )),
        DataType::LargeUtf8 => each!(array.as_string::<i64>(), |v: &str| Value::Text(
            v.to_string()
        )),
        DataType::Utf8View => each!(array.as_string_view(), |v: &str| Value::Text(v.to_string())),
        DataType::Dictionary(_, _) => {
            let dict = array.as_any_dictionary();
            let values = column_values(dict.values());
            let keys = dict.normalized_keys();
            (0..n)
                .map(|i| {
                    if array.is_null(i) {
                        Value::Null
                    } else {
                        values.get(keys[i]).cloned().unwrap_or(Value::Null)
                    }
                })
                .collect()
        }
        // `readable` refused every other type when the file was opened.
        _ => vec![Value::Null; n],
    }
}

/// A Parquet file, read a record batch at a time.
pub struct ParquetSource {
    reader: ParquetRecordBatchReader,
    columns: Vec<String>,
    /// Rows decoded but not yet handed out (at most one record batch).
    pending: VecDeque<Vec<Value>>,
    total_rows: u64,
    rows_out: u64,
    name: String,
}

impl ParquetSource {
    pub fn open(spec: &FileSpec) -> Result<ParquetSource, IoError> {
        let file = File::open(&spec.path)
            .map_err(|e| IoError(format!("cannot open {:?}: {}", spec.name, e.kind())))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
            IoError(format!(
                "{:?} is not a readable Parquet file: {e}",
                spec.name
            ))
        })?;
        let schema = builder.schema().clone();
        if let Some(field) = schema.fields().iter().find(|f| !readable(f.data_type())) {
            return Err(IoError(format!(
                "{:?}: column {:?} has type {} which jobs cannot read (use integers, \
                 floats, booleans or strings)",
                spec.name,
                field.name(),
                field.data_type()
            )));
        }
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        if columns.is_empty() {
            return Err(IoError(format!(
                "{:?} has no columns (empty data)",
                spec.name
            )));
        }
        let total_rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
        let reader = builder
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|e| IoError(format!("{:?}: {e}", spec.name)))?;
        Ok(ParquetSource {
            reader,
            columns,
            pending: VecDeque::new(),
            total_rows,
            rows_out: 0,
            name: spec.name.clone(),
        })
    }

    /// Decodes the next record batch into `pending`; false at the end.
    fn fill(&mut self) -> Result<bool, IoError> {
        let Some(batch) = self.reader.next() else {
            return Ok(false);
        };
        let batch = batch.map_err(|e| {
            IoError(format!(
                "{:?} near row {}: {e}",
                self.name,
                self.rows_out + self.pending.len() as u64 + 1
            ))
        })?;
        let columns: Vec<Vec<Value>> = batch.columns().iter().map(column_values).collect();
        for r in 0..batch.num_rows() {
            self.pending
                .push_back(columns.iter().map(|c| c[r].clone()).collect());
        }
        Ok(true)
    }
}

impl Source for ParquetSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>, IoError> {
        while self.pending.len() < max {
            if !self.fill()? {
                break;
            }
        }
        let take = self.pending.len().min(max);
        let rows: Vec<Vec<Value>> = self.pending.drain(..take).collect();
        self.rows_out += rows.len() as u64;
        Ok((!rows.is_empty()).then_some(rows))
    }

    fn fraction(&self) -> Option<f64> {
        (self.total_rows > 0).then(|| (self.rows_out as f64 / self.total_rows as f64).min(1.0))
    }

    fn describe_position(&self) -> String {
        format!("{:?} row {}", self.name, self.rows_out)
    }
}

/// The Arrow type a column is written as: from its first non-null cell in the
/// first rows written; a column with no value there is text.
/// A column's type from the first batch's cells: text if any is text, else floats
/// if any is a float (integers widen), else integers if any is one (booleans
/// widen), else booleans; text when every cell is null.
fn column_type(rows: &[Vec<Value>], c: usize) -> DataType {
    let (mut bools, mut ints, mut floats) = (false, false, false);
    for row in rows {
        match &row[c] {
            Value::Null => {}
            Value::Bool(_) => bools = true,
            Value::Int(_) => ints = true,
            Value::Float(_) => floats = true,
            Value::Text(_) => return DataType::Utf8,
        }
    }
    if floats {
        DataType::Float64
    } else if ints {
        DataType::Int64
    } else if bools {
        DataType::Boolean
    } else {
        DataType::Utf8
    }
}

/// A cell as a message shows it: its text and its kind.
fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Text(_) => "text",
    };
    format!("{:?} ({kind})", v.to_text())
}

/// A Parquet file written as `.<name>.<tag>.tmp` beside its final name and renamed
/// over it at commit; dropped before that, the temporary file is removed.
pub struct ParquetSink {
    /// Opened at the first write, once the column types are known.
    writer: Option<ArrowWriter<File>>,
    schema: Option<SchemaRef>,
    columns: Vec<String>,
    temp: PathBuf,
    path: PathBuf,
    name: String,
    committed: bool,
}

impl ParquetSink {
    pub fn create(
        spec: &FileSpec,
        columns: Vec<String>,
        tag: &str,
    ) -> Result<ParquetSink, IoError> {
        let io = |e: std::io::Error| IoError(format!("cannot write {:?}: {}", spec.name, e.kind()));
        let named_no_file = || IoError(format!("{:?} names no file", spec.name));
        let dir = spec.path.parent().ok_or_else(named_no_file)?;
        std::fs::create_dir_all(dir).map_err(io)?;
        let temp = super::temp_path(&spec.path, tag).ok_or_else(named_no_file)?;
        // Created now, so that a sink that cannot write fails before any scoring.
        File::create(&temp).map_err(io)?;
        Ok(ParquetSink {
            writer: None,
            schema: None,
            columns,
            temp,
            path: spec.path.clone(),
            name: spec.name.clone(),
            committed: false,
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> IoError {
        IoError(format!("cannot write {:?}: {e}", self.name))
    }

    fn open_writer(&mut self, rows: &[Vec<Value>]) -> Result<(), IoError> {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .enumerate()
            .map(|(c, name)| Field::new(name, column_type(rows, c), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let file = File::create(&self.temp).map_err(|e| self.error(e.kind()))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))
            .map_err(|e| self.error(e))?;
        self.writer = Some(writer);
        self.schema = Some(schema);
        Ok(())
    }

    /// One column of `rows` as an Arrow array of the column's type.
    fn array(
        &self,
        rows: &[Vec<Value>],
        c: usize,
        data_type: &DataType,
    ) -> Result<ArrayRef, IoError> {
        let mismatch = |v: &Value| {
            self.error(format!(
                "column {:?} holds {} where the first rows written hold {data_type} values \
                 (a Parquet column keeps the type of the job's first batch)",
                self.columns[c],
                describe(v)
            ))
        };
        let cells = rows.iter().map(|r| &r[c]);
        Ok(match data_type {
            DataType::Boolean => Arc::new(
                cells
                    .map(|v| match v {
                        Value::Null => Ok(None),
                        Value::Bool(b) => Ok(Some(*b)),
                        other => Err(mismatch(other)),
                    })
                    .collect::<Result<BooleanArray, _>>()?,
            ),
            DataType::Int64 => Arc::new(
                cells
                    .map(|v| match v {
                        Value::Null => Ok(None),
                        Value::Int(i) => Ok(Some(*i)),
                        Value::Bool(b) => Ok(Some(i64::from(*b))),
                        other => Err(mismatch(other)),
                    })
                    .collect::<Result<Int64Array, _>>()?,
            ),
            DataType::Float64 => Arc::new(
                cells
                    .map(|v| match v {
                        Value::Null => Ok(None),
                        Value::Float(f) => Ok(Some(*f)),
                        Value::Int(i) => Ok(Some(*i as f64)),
                        Value::Bool(b) => Ok(Some(f64::from(u8::from(*b)))),
                        other => Err(mismatch(other)),
                    })
                    .collect::<Result<Float64Array, _>>()?,
            ),
            _ => Arc::new(
                cells
                    .map(|v| match v {
                        Value::Null => None,
                        other => Some(other.to_text()),
                    })
                    .collect::<StringArray>(),
            ),
        })
    }
}

impl Sink for ParquetSink {
    fn write(&mut self, rows: &[Vec<Value>]) -> Result<(), IoError> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            self.open_writer(rows)?;
        }
        let schema = self.schema.clone().expect("opened with the writer");
        let arrays = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, f)| self.array(rows, c, f.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(schema, arrays).map_err(|e| self.error(e))?;
        let writer = self.writer.as_mut().expect("opened above");
        writer
            .write(&batch)
            .map_err(|e| IoError(format!("cannot write {:?}: {e}", self.name)))
    }

    fn commit(mut self: Box<Self>) -> Result<(), IoError> {
        if self.writer.is_none() {
            // No rows: an empty file still needs a schema.
            let rows: Vec<Vec<Value>> = Vec::new();
            self.open_writer(&rows)?;
        }
        let writer = self.writer.take().expect("opened above");
        // Flushes the last row group and writes the footer.
        let file = writer.into_inner().map_err(|e| self.error(e))?;
        file.sync_all().map_err(|e| self.error(e))?;
        drop(file);
        std::fs::rename(&self.temp, &self.path).map_err(|e| self.error(e))?;
        if let Some(dir) = self.path.parent().and_then(|d| File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for ParquetSink {
    fn drop(&mut self) {
        self.writer = None;
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
