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
        // Past i64: its digits, as text (a cell has no wider integer; a float
        // would round it).
        DataType::UInt64 => each!(array.as_primitive::<UInt64Type>(), |v: u64| {
            i64::try_from(v).map_or_else(|_| Value::Text(v.to_string()), Value::Int)
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

/// The Arrow type a column is written as, from the first batch's cells: integers
/// as `Int64`, floats as `Float64`, a column of both as `Float64` (integers
/// widen), booleans as `Boolean`, and everything else as text: a column with text
/// in it, one of booleans and numbers (a boolean is no number: written as one it
/// would read back as 1 or 0), one where every cell is null.
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
    match (bools, ints, floats) {
        (true, false, false) => DataType::Boolean,
        (false, true, false) => DataType::Int64,
        (false, _, true) => DataType::Float64,
        _ => DataType::Utf8,
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
        // A file replaced keeps its permissions.
        if let Ok(m) = std::fs::metadata(&self.path) {
            let _ = file.set_permissions(m.permissions());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::spec::{CsvOptions, FileFormat};

    fn spec(dir: &std::path::Path, name: &str) -> FileSpec {
        FileSpec {
            path: dir.join(name),
            name: name.into(),
            format: FileFormat::Parquet,
            csv: CsvOptions::default(),
        }
    }

    /// Writes `batches` of one column `id`: the file's column type and cells (as
    /// text), or the error of the write that failed.
    fn write(batches: &[Vec<Value>]) -> Result<(DataType, Vec<Value>), IoError> {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "out.parquet");
        let mut sink = Box::new(ParquetSink::create(&spec, vec!["id".into()], "t")?);
        for batch in batches {
            let rows: Vec<Vec<Value>> = batch.iter().map(|v| vec![v.clone()]).collect();
            sink.write(&rows)?;
        }
        sink.commit()?;
        let mut source = ParquetSource::open(&spec)?;
        let data_type = ParquetRecordBatchReaderBuilder::try_new(File::open(&spec.path).unwrap())
            .unwrap()
            .schema()
            .field(0)
            .data_type()
            .clone();
        let mut cells = Vec::new();
        while let Some(rows) = source.next_batch(100)? {
            cells.extend(rows.into_iter().map(|mut r| r.remove(0)));
        }
        Ok((data_type, cells))
    }

    /// Booleans were written as 1 and 0 in a number column, silently: when the first
    /// batch mixed them with numbers, or a later batch held them in a column of
    /// numbers. A column of both is text; a later boolean fails, naming the column.
    #[test]
    fn booleans_are_never_written_as_numbers() {
        let (t, f) = (Value::Bool(true), Value::Bool(false));
        let text = |s: &str| Value::Text(s.into());
        assert_eq!(
            write(&[vec![t.clone(), Value::Int(2)]]).unwrap(),
            (DataType::Utf8, vec![text("true"), text("2")])
        );
        assert_eq!(
            write(&[vec![Value::Float(1.5), f.clone(), Value::Null]]).unwrap(),
            (
                DataType::Utf8,
                vec![text("1.5"), text("false"), Value::Null]
            )
        );
        for first in [
            vec![Value::Float(1.5), Value::Int(2)],
            vec![Value::Int(1), Value::Int(2)],
        ] {
            let e = write(&[first.clone(), vec![t.clone(), f.clone()]]).unwrap_err();
            assert!(
                e.0.contains("column \"id\"") && e.0.contains("\"true\" (a boolean)"),
                "{first:?}: {}",
                e.0
            );
        }
        let e = write(&[vec![t.clone()], vec![Value::Int(2)]]).unwrap_err();
        assert!(e.0.contains("column \"id\""), "{}", e.0);
        // Each kind alone keeps its type; integers widen into a float column.
        assert_eq!(
            write(&[vec![t.clone()], vec![f.clone()]]).unwrap(),
            (DataType::Boolean, vec![t, f])
        );
        assert_eq!(
            write(&[vec![Value::Float(0.5)], vec![Value::Int(3)]]).unwrap(),
            (
                DataType::Float64,
                vec![Value::Float(0.5), Value::Float(3.0)]
            )
        );
        assert_eq!(
            write(&[vec![Value::Int(7)]]).unwrap(),
            (DataType::Int64, vec![Value::Int(7)])
        );
    }

    /// An unsigned 64-bit integer past i64 was read as a float (rounded): its
    /// digits are kept, as text.
    #[test]
    fn uint64_past_i64_keeps_its_digits() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "in.parquet");
        let ids = arrow_array::UInt64Array::from(vec![Some(7), Some(u64::MAX), None]);
        let batch = RecordBatch::try_from_iter([("id", Arc::new(ids) as ArrayRef)]).unwrap();
        let mut w =
            ArrowWriter::try_new(File::create(&spec.path).unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let rows = ParquetSource::open(&spec)
            .unwrap()
            .next_batch(10)
            .unwrap()
            .unwrap();
        assert_eq!(
            rows,
            [
                vec![Value::Int(7)],
                vec![Value::Text("18446744073709551615".into())],
                vec![Value::Null]
            ]
        );
    }
}
