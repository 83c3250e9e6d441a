//! Sources and sinks of rows, shared by every job kind.
//!
//! A [`Source`] hands out rows in batches of at most the size asked, so a job holds
//! one batch at a time whatever the size of the data. A [`Sink`] takes rows and
//! makes them visible only at [`Sink::commit`]: files are written under a temporary
//! name and renamed, tables in one transaction; dropping a sink without committing
//! leaves nothing behind. Adding a kind of storage (MongoDB) is one new
//! module implementing these two traits and one arm in [`open_source`] /
//! [`open_sink`].
//!
//! Sources and sinks are used from the job's own thread: they may block (file IO),
//! and the SQL ones drive their async driver on the runtime through channels.

mod file;
mod parquet_file;
mod sql;

use tokio::runtime::Handle;

use super::spec::{FileFormat, SinkSpec, SourceSpec};

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    /// As JSON, for JSON-lines sinks.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Text(s) => s.clone().into(),
        }
    }

    /// As CSV text (empty for null) into `buf`, which is cleared first.
    pub fn write_text(&self, buf: &mut Vec<u8>) {
        use std::io::Write;
        buf.clear();
        // Writing to a vector cannot fail.
        let _ = match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(buf, "{b}"),
            Value::Int(i) => write!(buf, "{i}"),
            Value::Float(f) => write!(buf, "{f}"),
            Value::Text(s) => buf.write_all(s.as_bytes()),
        };
    }

    /// As CSV text (empty for null).
    pub fn to_text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            other => {
                let mut buf = Vec::new();
                other.write_text(&mut buf);
                String::from_utf8(buf).expect("numbers and booleans are ASCII")
            }
        }
    }
}

/// A source, sink or data error, in words for the job's `error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct IoError(pub String);

/// Rows to read.
pub trait Source: Send {
    /// Column names, in row order.
    fn columns(&self) -> &[String];
    /// The next rows, at most `max`; `None` at the end.
    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>, IoError>;
    /// The next rows, at most `max`, into `rows`; how many were read (0 at the end).
    /// Only `rows[..n]` are this batch's. A source that can overwrites the rows and
    /// text cells left from the last batch in place, so that reading millions of
    /// rows (a scoring job) does not allocate per cell.
    fn next_batch_into(
        &mut self,
        max: usize,
        rows: &mut Vec<Vec<Value>>,
    ) -> Result<usize, IoError> {
        match self.next_batch(max)? {
            Some(batch) => {
                *rows = batch;
                Ok(rows.len())
            }
            None => Ok(0),
        }
    }
    /// How much of the source has been read, from 0 to 1, when it is known.
    fn fraction(&self) -> Option<f64>;
    /// Where the last row read came from, for messages ("line 12").
    fn describe_position(&self) -> String;
}

/// Where rows go. Nothing is visible until `commit`; dropping without committing
/// discards what was written.
pub trait Sink: Send {
    fn write(&mut self, rows: &[Vec<Value>]) -> Result<(), IoError>;
    /// Makes every row written visible at once.
    fn commit(self: Box<Self>) -> Result<(), IoError>;
}

pub fn open_source(spec: &SourceSpec, runtime: &Handle) -> Result<Box<dyn Source>, IoError> {
    match spec {
        SourceSpec::File(f) => match f.format {
            FileFormat::Csv => Ok(Box::new(file::CsvSource::open(f)?)),
            FileFormat::JsonLines => Ok(Box::new(file::JsonLinesSource::open(f)?)),
            FileFormat::Parquet => Ok(Box::new(parquet_file::ParquetSource::open(f)?)),
        },
        SourceSpec::Sql { url, query } => Ok(Box::new(sql::SqlSource::open(url, query, runtime)?)),
    }
}

/// A sink for rows of `columns`. `tag` makes temporary names unique (the job id).
pub fn open_sink(
    spec: &SinkSpec,
    columns: Vec<String>,
    tag: &str,
    runtime: &Handle,
) -> Result<Box<dyn Sink>, IoError> {
    match spec {
        SinkSpec::File(f) if f.format == FileFormat::Parquet => Ok(Box::new(
            parquet_file::ParquetSink::create(f, columns, tag)?,
        )),
        SinkSpec::File(f) => Ok(Box::new(file::FileSink::create(f, columns, tag)?)),
        SinkSpec::Sql { url, table, mode } => Ok(Box::new(sql::SqlSink::open(
            url, table, *mode, columns, runtime,
        )?)),
    }
}
