//! CSV files read as a source: records bounded in length, lines named in messages.

use std::fs::File;
use std::io::BufReader;

use super::super::{IoError, Source, Value};
use super::{line_at, open, MAX_LINE_BYTES};
use crate::jobs::spec::FileSpec;

/// Longest CSV record (the header included). A quote left open reads everything
/// after it into one cell: without a bound, a stray quote near the start of a large
/// file held the whole rest of the file in memory at once.
pub(super) const MAX_RECORD_BYTES: u64 = MAX_LINE_BYTES;

/// The CSV reader's input: it refuses to give bytes past `limit`, which the source
/// moves to [`MAX_RECORD_BYTES`] past the start of each record before reading it.
struct BoundedReader {
    inner: BufReader<File>,
    read: u64,
    limit: u64,
}

/// What [`BoundedReader`] answers past its limit, recognised in the CSV reader's error.
#[derive(Debug)]
struct RecordTooLong;

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a record longer than {MAX_RECORD_BYTES} bytes")
    }
}

impl std::error::Error for RecordTooLong {}

impl std::io::Read for BoundedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.limit.saturating_sub(self.read);
        if left == 0 {
            return Err(std::io::Error::other(RecordTooLong));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Whether `bytes`, the file from the start of its last record to its end, end
/// inside a quoted cell, read as the CSV reader reads (a quote opens a cell only at
/// its start; two quotes inside one stand for one). The CSV reader takes the end of
/// the file for the end of such a cell; Python's pandas refuses it ("EOF inside
/// string"), and so does a job: the rest of the file would be one cell.
fn ends_inside_quotes(bytes: &[u8], delimiter: u8, quote: u8) -> bool {
    let (mut quoted, mut at_start) = (false, true);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            if b == quote {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 1;
                } else {
                    quoted = false;
                }
            }
        } else if b == quote && at_start {
            quoted = true;
        }
        at_start = !quoted && (b == delimiter || b == b'\n' || b == b'\r');
        i += 1;
    }
    quoted
}

/// A CSV file with a header line. Every cell is text: the model's input types
/// decide how it is read (as `/predict` does).
pub struct CsvSource {
    reader: csv::Reader<BoundedReader>,
    columns: Vec<String>,
    size: u64,
    record: csv::StringRecord,
    /// Where the last record read began (a quoted cell may span lines).
    last_byte: u64,
    /// Where each record of the last batch began, for a message naming its line.
    batch_starts: Vec<u64>,
    path: std::path::PathBuf,
    name: String,
    csv: crate::jobs::spec::CsvOptions,
}

impl CsvSource {
    pub fn open(spec: &FileSpec) -> Result<CsvSource, IoError> {
        let (file, size) = open(spec)?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(spec.csv.delimiter)
            .quote(spec.csv.quote)
            .has_headers(true)
            .from_reader(BoundedReader {
                inner: BufReader::new(file),
                read: 0,
                limit: MAX_RECORD_BYTES,
            });
        let columns: Vec<String> = reader
            .headers()
            .map_err(|e| match too_long(&e) {
                true => IoError(format!("{:?}: the header is {RecordTooLong}", spec.name)),
                false => IoError(format!("{:?}: cannot read the header: {e}", spec.name)),
            })?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        if columns.is_empty() || columns.iter().all(|c| c.is_empty()) {
            return Err(IoError(format!(
                "{:?} is empty: no header line (empty data)",
                spec.name
            )));
        }
        let source = CsvSource {
            reader,
            columns,
            size,
            record: csv::StringRecord::new(),
            last_byte: 0,
            batch_starts: Vec::new(),
            path: spec.path.clone(),
            name: spec.name.clone(),
            csv: spec.csv,
        };
        // A header that ran to the end of the file may be a quote left open in it:
        // told now, before its columns (the rest of the file) reach any message.
        if source.reader.position().byte() >= source.size {
            source.check_end()?;
        }
        Ok(source)
    }

    /// At the end of the file: an error when its last record (or the header, when
    /// there is no record) leaves a quoted cell open. Reads that record again, at
    /// most [`MAX_RECORD_BYTES`].
    fn check_end(&self) -> Result<(), IoError> {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        let read = File::open(&self.path).and_then(|mut f| {
            f.seek(std::io::SeekFrom::Start(self.last_byte))?;
            f.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes)
        });
        if read.is_ok() && ends_inside_quotes(&bytes, self.csv.delimiter, self.csv.quote) {
            return Err(IoError(format!(
                "{:?}: line {}: a quoted cell is not closed before the end of the file",
                self.name,
                line_at(&self.path, self.last_byte).unwrap_or(1)
            )));
        }
        Ok(())
    }
}

/// Whether the CSV reader stopped at [`BoundedReader`]'s limit.
fn too_long(e: &csv::Error) -> bool {
    matches!(e.kind(), csv::ErrorKind::Io(io)
        if io.get_ref().is_some_and(|inner| inner.is::<RecordTooLong>()))
}

impl Source for CsvSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>, IoError> {
        let mut rows = Vec::with_capacity(max);
        let n = self.next_batch_into(max, &mut rows)?;
        Ok((n > 0).then_some(rows))
    }

    fn next_batch_into(
        &mut self,
        max: usize,
        rows: &mut Vec<Vec<Value>>,
    ) -> Result<usize, IoError> {
        let mut n = 0;
        self.batch_starts.clear();
        while n < max {
            let start = self.reader.position().byte();
            self.reader.get_mut().limit = start + MAX_RECORD_BYTES + BOUND_SLACK;
            match self.reader.read_record(&mut self.record) {
                Ok(false) => {
                    self.check_end()?;
                    break;
                }
                Ok(true) => {
                    if let Some(p) = self.record.position() {
                        self.last_byte = p.byte();
                    }
                    self.batch_starts.push(self.last_byte);
                    if rows.len() == n {
                        rows.push(Vec::with_capacity(self.record.len()));
                    }
                    let row = &mut rows[n];
                    row.truncate(self.record.len());
                    for (j, cell) in self.record.iter().enumerate() {
                        match row.get_mut(j) {
                            Some(Value::Text(text)) => {
                                text.clear();
                                text.push_str(cell);
                            }
                            Some(other) => *other = Value::Text(cell.to_string()),
                            None => row.push(Value::Text(cell.to_string())),
                        }
                    }
                    n += 1;
                }
                Err(e) if too_long(&e) => {
                    return Err(IoError(format!(
                        "{:?}: line {}: {RecordTooLong} (a quote left open?)",
                        self.name,
                        line_at(&self.path, start).unwrap_or(1)
                    )));
                }
                Err(e) => {
                    // A quote left open that ran to the end of the file took the rest
                    // for one cell: the record then has too few fields, but the open
                    // quote is what to tell (as for one in a record's last cell).
                    if let (csv::ErrorKind::UnequalLengths { pos: Some(p), .. }, true) =
                        (e.kind(), self.reader.position().byte() >= self.size)
                    {
                        self.last_byte = p.byte();
                        self.check_end()?;
                    }
                    let line = e
                        .position()
                        .map(|p| {
                            format!(
                                "line {}: ",
                                line_at(&self.path, p.byte()).unwrap_or(p.line())
                            )
                        })
                        .unwrap_or_default();
                    let what = match e.kind() {
                        csv::ErrorKind::UnequalLengths {
                            expected_len, len, ..
                        } => format!("{len} fields where the header has {expected_len}"),
                        csv::ErrorKind::Utf8 { .. } => "text that is not UTF-8".to_string(),
                        _ => e.to_string(),
                    };
                    return Err(IoError(format!("{:?}: {line}{what}", self.name)));
                }
            }
        }
        Ok(n)
    }

    fn fraction(&self) -> Option<f64> {
        (self.size > 0).then(|| (self.reader.position().byte() as f64 / self.size as f64).min(1.0))
    }

    fn describe_position(&self) -> String {
        format!(
            "{:?} line {}",
            self.name,
            line_at(&self.path, self.last_byte).unwrap_or(1)
        )
    }

    fn describe_batch_row(&self, i: usize) -> Option<String> {
        let start = *self.batch_starts.get(i)?;
        Some(format!(
            "{:?} line {}",
            self.name,
            line_at(&self.path, start).unwrap_or(1)
        ))
    }
}

/// How far the CSV reader's own buffer may have read past the record it returned.
pub(super) const BOUND_SLACK: u64 = 64 * 1024;
