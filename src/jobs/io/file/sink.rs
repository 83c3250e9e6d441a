//! CSV and JSON-lines files written as a sink, under a temporary name until commit.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::super::{IoError, Sink, Value};
use crate::jobs::spec::{FileFormat, FileSpec};

enum Writer {
    Csv(Box<csv::Writer<BufWriter<File>>>),
    JsonLines(BufWriter<File>),
}

/// A CSV or JSON-lines file written as `.<name>.<tag>.tmp` beside its final name and
/// renamed over it at commit; dropped before that, the temporary file is removed.
pub struct FileSink {
    writer: Option<Writer>,
    columns: Vec<String>,
    temp: PathBuf,
    path: PathBuf,
    name: String,
    /// One CSV cell's text, reused from cell to cell.
    cell: Vec<u8>,
}

impl FileSink {
    pub fn create(spec: &FileSpec, columns: Vec<String>, tag: &str) -> Result<FileSink, IoError> {
        let io = |e: std::io::Error| IoError(format!("cannot write {:?}: {}", spec.name, e.kind()));
        let dir = spec
            .path
            .parent()
            .ok_or_else(|| IoError(format!("{:?} names no file", spec.name)))?;
        std::fs::create_dir_all(dir).map_err(io)?;
        let temp = super::super::temp_path(&spec.path, tag)
            .ok_or_else(|| IoError(format!("{:?} names no file", spec.name)))?;
        let file = File::create(&temp).map_err(io)?;
        let buffered = BufWriter::with_capacity(256 * 1024, file);
        let writer = match spec.format {
            FileFormat::Csv => {
                let mut w = csv::WriterBuilder::new()
                    .delimiter(spec.csv.delimiter)
                    .quote(spec.csv.quote)
                    .from_writer(buffered);
                w.write_record(&columns)
                    .map_err(|e| IoError(format!("cannot write {:?}: {e}", spec.name)))?;
                Writer::Csv(Box::new(w))
            }
            FileFormat::JsonLines => Writer::JsonLines(buffered),
            // `open_sink` gives Parquet files to `parquet_file::ParquetSink`.
            FileFormat::Parquet => {
                return Err(IoError(format!(
                    "{:?}: Parquet is not written by the text sink",
                    spec.name
                )))
            }
        };
        Ok(FileSink {
            writer: Some(writer),
            columns,
            temp,
            path: spec.path.clone(),
            name: spec.name.clone(),
            cell: Vec::new(),
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> IoError {
        IoError(format!("cannot write {:?}: {e}", self.name))
    }
}

impl Sink for FileSink {
    fn write(&mut self, rows: &[Vec<Value>]) -> Result<(), IoError> {
        let result = match self.writer.as_mut() {
            // Cell by cell through one reused buffer: no string per cell.
            Some(Writer::Csv(w)) => rows.iter().try_for_each(|row| {
                for cell in row {
                    cell.write_text(&mut self.cell);
                    w.write_field(&self.cell).map_err(|e| e.to_string())?;
                }
                w.write_record(None::<&[u8]>).map_err(|e| e.to_string())
            }),
            Some(Writer::JsonLines(w)) => rows.iter().try_for_each(|row| {
                let object: serde_json::Map<String, serde_json::Value> = self
                    .columns
                    .iter()
                    .cloned()
                    .zip(row.iter().map(Value::to_json))
                    .collect();
                serde_json::to_writer(&mut *w, &object)
                    .map_err(|e| e.to_string())
                    .and_then(|_| w.write_all(b"\n").map_err(|e| e.to_string()))
            }),
            None => Ok(()),
        };
        result.map_err(|e| self.error(e))
    }

    fn commit(mut self: Box<Self>) -> Result<(), IoError> {
        let file = match self.writer.take() {
            Some(Writer::Csv(w)) => w
                .into_inner()
                .map_err(|e| self.error(e.error().to_string()))?
                .into_inner()
                .map_err(|e| self.error(e.error().to_string()))?,
            Some(Writer::JsonLines(w)) => w
                .into_inner()
                .map_err(|e| self.error(e.error().to_string()))?,
            None => return Ok(()),
        };
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
        // Renamed: nothing left for drop to remove.
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.writer = None;
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
