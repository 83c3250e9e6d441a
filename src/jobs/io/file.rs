//! CSV and JSON-lines files in the data directory.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use super::{IoError, Sink, Source, Value};
use crate::jobs::spec::{FileFormat, FileSpec};

fn open(spec: &FileSpec) -> Result<(File, u64), IoError> {
    let file = File::open(&spec.path)
        .map_err(|e| IoError(format!("cannot open {:?}: {}", spec.name, e.kind())))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, size))
}

/// The line (from 1) that byte `offset` of the file at `path` is on, for messages:
/// lines end with `\n`, `\r\n` or a lone `\r`, as the CSV reader ends records (its
/// own count took a `\r\n` for two lines). Read again from the start: only an
/// error or a failed job's message asks.
fn line_at(path: &std::path::Path, offset: u64) -> Option<u64> {
    use std::io::Read;
    let mut reader = File::open(path).ok()?.take(offset);
    let (mut line, mut after_cr) = (1u64, false);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut buf).ok()?;
        if n == 0 {
            return Some(line);
        }
        for &b in &buf[..n] {
            if b == b'\r' || (b == b'\n' && !after_cr) {
                line += 1;
            }
            after_cr = b == b'\r';
        }
    }
}

/// Longest CSV record (the header included). A quote left open reads everything
/// after it into one cell: without a bound, a stray quote near the start of a large
/// file held the whole rest of the file in memory at once.
const MAX_RECORD_BYTES: u64 = MAX_LINE_BYTES;

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

/// One JSON object per line; the columns are the first object's keys, a key missing
/// from a later line is null.
pub struct JsonLinesSource {
    reader: BufReader<File>,
    columns: Vec<String>,
    /// The first row, read to learn the columns.
    first: Option<Vec<Value>>,
    /// The first row's line.
    first_line: u64,
    line: u64,
    /// The line of each row of the last batch, for a message naming it.
    batch_lines: Vec<u64>,
    read: u64,
    size: u64,
    name: String,
    buf: String,
}

/// Longest line read; a longer one is an error (bounded memory).
const MAX_LINE_BYTES: u64 = 16 * 1024 * 1024;

/// How far the CSV reader's own buffer may have read past the record it returned.
const BOUND_SLACK: u64 = 64 * 1024;

impl JsonLinesSource {
    pub fn open(spec: &FileSpec) -> Result<JsonLinesSource, IoError> {
        let (file, size) = open(spec)?;
        let mut source = JsonLinesSource {
            reader: BufReader::new(file),
            columns: Vec::new(),
            first: None,
            first_line: 0,
            line: 0,
            batch_lines: Vec::new(),
            read: 0,
            size,
            name: spec.name.clone(),
            buf: String::new(),
        };
        if let Some(object) = source.next_object()? {
            source.columns = object.keys().cloned().collect();
            source.first = Some(source.row(object)?);
            source.first_line = source.line;
        }
        if source.columns.is_empty() {
            return Err(IoError(format!("{:?} has no rows (empty data)", spec.name)));
        }
        Ok(source)
    }

    fn next_object(
        &mut self,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, IoError> {
        loop {
            self.buf.clear();
            let n = std::io::Read::take(&mut self.reader, MAX_LINE_BYTES + 1)
                .read_line(&mut self.buf)
                .map_err(|e| IoError(format!("{:?} line {}: {e}", self.name, self.line + 1)))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            self.read += n as u64;
            if n as u64 > MAX_LINE_BYTES {
                return Err(IoError(format!(
                    "{:?} line {}: longer than {MAX_LINE_BYTES} bytes",
                    self.name, self.line
                )));
            }
            let text = self.line_text();
            if text.is_empty() {
                continue;
            }
            return match serde_json::from_str::<JsonLine>(text) {
                Ok(JsonLine::Object(o)) => Ok(Some(o)),
                Ok(JsonLine::Repeated(key)) => Err(IoError(format!(
                    "{:?} line {}: key {key:?} appears twice in the object (a row has one \
                     value per column)",
                    self.name, self.line
                ))),
                Ok(JsonLine::Other) => Err(IoError(format!(
                    "{:?} line {}: not a JSON object",
                    self.name, self.line
                ))),
                Err(e) => Err(IoError(format!(
                    "{:?} line {}: not JSON ({e})",
                    self.name, self.line
                ))),
            };
        }
    }

    /// The line last read (in `buf`), trimmed. A byte-order mark before the first
    /// line (as some Windows tools write UTF-8) is no part of the JSON: skipped, as
    /// the CSV source skips it.
    fn line_text(&self) -> &str {
        match self.line {
            1 => self.buf.strip_prefix('\u{feff}').unwrap_or(&self.buf),
            _ => &self.buf,
        }
        .trim()
    }

    /// The cells of `object`, the line last read (still in `buf`), in column order.
    fn row(
        &self,
        mut object: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<Value>, IoError> {
        // The line's values as written, parsed again only for a row with an
        // integer beyond i64 that serde_json could only read as a float.
        let mut raw: Option<Option<RawObject>> = None;
        self.columns
            .iter()
            .map(|c| match object.remove(c) {
                None | Some(serde_json::Value::Null) => Ok(Value::Null),
                Some(serde_json::Value::Bool(b)) => Ok(Value::Bool(b)),
                Some(serde_json::Value::Number(n)) => Ok(if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    // Past i64: its digits, as text (a cell has no wider integer).
                    Value::Text(u.to_string())
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    let mut digits = None;
                    if f.fract() == 0.0 && f.abs() >= BEYOND_INTEGERS {
                        // Past u64 (or below i64): its digits when it is written
                        // as an integer, rather than a float's 17 of them.
                        digits = raw
                            .get_or_insert_with(|| serde_json::from_str(self.line_text()).ok())
                            .as_ref()
                            .and_then(|o| o.get(c))
                            .map(|v| v.get())
                            .filter(|text| is_integer_literal(text));
                    }
                    match digits {
                        Some(text) => Value::Text(text.to_string()),
                        None => Value::Float(f),
                    }
                }),
                Some(serde_json::Value::String(s)) => Ok(Value::Text(s)),
                Some(_) => Err(IoError(format!(
                    "{:?} line {}: column {c:?} holds a list or an object, not a value",
                    self.name, self.line
                ))),
            })
            .collect()
    }
}

/// A JSON line as read: an object whose keys are all different, one that gives
/// a key twice (serde_json's map would keep the last value without a word, where a
/// CSV header naming a column twice is refused), or another value.
enum JsonLine {
    Object(serde_json::Map<String, serde_json::Value>),
    Repeated(String),
    Other,
}

impl<'de> serde::Deserialize<'de> for JsonLine {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<JsonLine, D::Error> {
        struct LineVisitor;
        impl<'de> serde::de::Visitor<'de> for LineVisitor {
            type Value = JsonLine;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonLine, A::Error> {
                let mut object = serde_json::Map::new();
                let mut repeated = None;
                // Read to the end even past a repeated key: the rest must be JSON.
                while let Some(key) = map.next_key::<String>()? {
                    let value: serde_json::Value = map.next_value()?;
                    if object.contains_key(&key) {
                        repeated.get_or_insert(key);
                    } else {
                        object.insert(key, value);
                    }
                }
                Ok(match repeated {
                    Some(key) => JsonLine::Repeated(key),
                    None => JsonLine::Object(object),
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<JsonLine, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(JsonLine::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
            fn visit_unit<E>(self) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
        }
        deserializer.deserialize_any(LineVisitor)
    }
}

/// A JSON line's members as written (`serde_json`'s `raw_value`).
type RawObject<'a> = std::collections::BTreeMap<String, &'a serde_json::value::RawValue>;

/// Magnitude from which serde_json, which reads integers up to u64 exactly, reads
/// one as a float: 2^63 (a negative one past i64) and more.
const BEYOND_INTEGERS: f64 = 9_223_372_036_854_775_808.0;

/// Whether a JSON number is written as an integer (`-123`), not with a fraction or
/// an exponent: such a number past u64 is kept as its digits, not rounded.
fn is_integer_literal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

impl Source for JsonLinesSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>, IoError> {
        let mut rows = Vec::with_capacity(max);
        self.batch_lines.clear();
        if let Some(first) = self.first.take() {
            rows.push(first);
            self.batch_lines.push(self.first_line);
        }
        while rows.len() < max {
            match self.next_object()? {
                Some(object) => {
                    rows.push(self.row(object)?);
                    self.batch_lines.push(self.line);
                }
                None => break,
            }
        }
        Ok((!rows.is_empty()).then_some(rows))
    }

    fn fraction(&self) -> Option<f64> {
        (self.size > 0).then(|| (self.read as f64 / self.size as f64).min(1.0))
    }

    fn describe_position(&self) -> String {
        format!("{:?} line {}", self.name, self.line)
    }

    fn describe_batch_row(&self, i: usize) -> Option<String> {
        Some(format!("{:?} line {}", self.name, self.batch_lines.get(i)?))
    }
}

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
        let temp = super::temp_path(&spec.path, tag)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::spec::{CsvOptions, FileFormat};

    /// A CSV source over `text`, written to `in.csv` in `dir`.
    fn csv_source(dir: &std::path::Path, text: &str) -> CsvSource {
        let path = dir.join("in.csv");
        std::fs::write(&path, text).unwrap();
        CsvSource::open(&FileSpec {
            path,
            name: "in.csv".into(),
            format: FileFormat::Csv,
            csv: CsvOptions::default(),
        })
        .unwrap()
    }

    #[test]
    fn a_csv_source_names_the_line_its_last_row_began_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = csv_source(dir.path(), "id,text\n1,a\n2,\"two\nlines\"\n3,c\n");
        let mut rows = Vec::new();
        assert_eq!(source.next_batch_into(1, &mut rows).unwrap(), 1);
        assert_eq!(source.describe_position(), "\"in.csv\" line 2");
        assert_eq!(source.next_batch_into(1, &mut rows).unwrap(), 1);
        assert_eq!(source.describe_position(), "\"in.csv\" line 3");
        // The last row, then the end: still the last row's line.
        assert_eq!(source.next_batch_into(5, &mut rows).unwrap(), 1);
        assert_eq!(source.describe_position(), "\"in.csv\" line 5");
    }

    /// A JSON-lines file that begins with a UTF-8 byte-order mark reads as the same
    /// file without it (it was "not JSON"), as a CSV file does; a mark later in the
    /// file is no line's start and stays an error.
    #[test]
    fn a_json_lines_file_may_begin_with_a_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            JsonLinesSource::open(&FileSpec {
                path,
                name: name.into(),
                format: FileFormat::JsonLines,
                csv: CsvOptions::default(),
            })
        };
        const BOM: char = '\u{feff}';
        let big = "123456789012345678901234567890";
        let text = format!("{{\"id\": {big}, \"x\": 1.5}}\n{{\"id\": 2, \"x\": 2}}\n");
        let mut source = open("bom.jsonl", &format!("{BOM}{text}")).unwrap();
        assert_eq!(source.columns(), ["id", "x"]);
        let rows = source.next_batch(10).unwrap().unwrap();
        // The first line's integer past u64 is read from its text, BOM and all.
        assert_eq!(
            rows,
            [
                vec![Value::Text(big.into()), Value::Float(1.5)],
                vec![Value::Int(2), Value::Int(2)]
            ]
        );
        // A mark on a line of its own before the rows is skipped too.
        let mut source = open("alone.jsonl", &format!("{BOM}\n{text}")).unwrap();
        assert_eq!(source.next_batch(10).unwrap().unwrap().len(), 2);
        let e = open("later.jsonl", &format!("{text}{BOM}{{\"id\": 3}}\n"))
            .unwrap()
            .next_batch(10)
            .unwrap_err();
        assert!(e.0.contains("line 3: not JSON"), "{}", e.0);
    }

    /// A key given twice in one JSON line kept its last value without a word (a CSV
    /// header naming a column twice is refused): an error naming the line and key,
    /// in the first row (which names the columns) as in a later one.
    #[test]
    fn a_json_line_giving_a_key_twice_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let spec = FileSpec {
            path: path.clone(),
            name: "in.jsonl".into(),
            format: FileFormat::JsonLines,
            csv: CsvOptions::default(),
        };
        let first_error = |text: &str| -> String {
            std::fs::write(&path, text).unwrap();
            let mut source = match JsonLinesSource::open(&spec) {
                Ok(source) => source,
                Err(e) => return e.0,
            };
            loop {
                match source.next_batch(2) {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{text:?} was read"),
                    Err(e) => return e.0,
                }
            }
        };
        for (text, line, key) in [
            ("{\"a\": 1, \"b\": 2, \"a\": 3}\n", 1, "a"),
            (
                "{\"a\": 1, \"b\": 2}\n\n{\"a\": 1, \"b\": 2}\n{\"b\": 2, \"a\": 1, \"b\": 2}\n",
                4,
                "b",
            ),
            // The same key however it is written.
            ("{\"a\": 1, \"b\": 2}\n{\"a\": 1, \"\\u0061\": 2}\n", 2, "a"),
        ] {
            let m = first_error(text);
            assert_eq!(
                m,
                format!(
                    "\"in.jsonl\" line {line}: key {key:?} appears twice in the object (a row \
                     has one value per column)"
                ),
                "{text:?}"
            );
        }
        // Broken JSON after a repeated key is still broken JSON; the same key in
        // nested objects or other rows is no repeat.
        assert!(first_error("{\"a\": 1, \"a\": 2, }\n").contains("not JSON"));
        std::fs::write(&path, "{\"a\": 1, \"b\": {\"a\": 1}}\n").unwrap();
        let e = JsonLinesSource::open(&spec).err().map(|e| e.0);
        assert!(e.unwrap_or_default().contains("holds a list or an object"));
        std::fs::write(&path, "{\"a\": 1, \"b\": 2}\n{\"a\": 3, \"b\": 4}\n[1]\n").unwrap();
        let mut source = JsonLinesSource::open(&spec).unwrap();
        assert_eq!(source.columns(), ["a", "b"]);
        let e = source.next_batch(5).unwrap_err().0;
        assert_eq!(e, "\"in.jsonl\" line 3: not a JSON object");
    }

    /// Integers past i64 were read as floats and written as `12345678901234567000`
    /// (CSV) or `1.2345678901234567e19` (JSON lines): they are kept as their digits,
    /// and written back as read by a CSV sink.
    #[test]
    fn json_integers_past_i64_keep_their_digits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let lines = [
            r#"{"id": 12345678901234567890, "x": 1}"#,
            r#"{"id": 18446744073709551615, "x": 2}"#,
            r#"{"x": 3, "id": 123456789012345678901234567890}"#,
            r#"{"id": -9223372036854775809, "x": 4}"#,
            r#"{"id": 9223372036854775807, "x": 1e20}"#,
            r#"{"id": 1.5e300, "x": 12345678901234567890.0}"#,
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let mut source = JsonLinesSource::open(&FileSpec {
            path,
            name: "in.jsonl".into(),
            format: FileFormat::JsonLines,
            csv: CsvOptions::default(),
        })
        .unwrap();
        assert_eq!(source.columns(), ["id", "x"]);
        let rows = source.next_batch(10).unwrap().unwrap();
        let text = |s: &str| Value::Text(s.into());
        assert_eq!(
            rows,
            [
                vec![text("12345678901234567890"), Value::Int(1)],
                vec![text("18446744073709551615"), Value::Int(2)],
                vec![text("123456789012345678901234567890"), Value::Int(3)],
                vec![text("-9223372036854775809"), Value::Int(4)],
                vec![Value::Int(i64::MAX), Value::Float(1e20)],
                // Written with a fraction or an exponent: a float, as before.
                vec![Value::Float(1.5e300), Value::Float(12345678901234567890.0)],
            ]
        );
        let out = dir.path().join("out.csv");
        let spec = FileSpec {
            path: out.clone(),
            name: "out.csv".into(),
            format: FileFormat::Csv,
            csv: CsvOptions::default(),
        };
        let mut sink = Box::new(FileSink::create(&spec, vec!["id".into()], "t").unwrap());
        sink.write(
            &rows[..4]
                .iter()
                .map(|r| vec![r[0].clone()])
                .collect::<Vec<_>>(),
        )
        .unwrap();
        sink.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "id\n12345678901234567890\n18446744073709551615\n\
             123456789012345678901234567890\n-9223372036854775809\n"
        );
    }

    /// Every row of `text`, or the first error.
    fn read_all(dir: &std::path::Path, text: &str) -> Result<Vec<Vec<Value>>, IoError> {
        let path = dir.join("in.csv");
        std::fs::write(&path, text).unwrap();
        let mut source = CsvSource::open(&FileSpec {
            path,
            name: "in.csv".into(),
            format: FileFormat::Csv,
            csv: CsvOptions::default(),
        })?;
        let mut all = Vec::new();
        while let Some(rows) = source.next_batch(2)? {
            all.extend(rows);
        }
        Ok(all)
    }

    /// A quote left open took the rest of the file for one cell, silently (a file
    /// of any length was one row short of its end, or the header one column).
    #[test]
    fn a_quote_left_open_to_the_end_of_the_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for (text, line) in [
            ("id,text\n1,\"abc\n2,x\n3,y\n", 2),
            ("id,text\n1,a\n2,b\n3,\"c", 4),
            ("id,text\r\n1,a\r\n2,\"b\"\"\r\n", 3),
            ("id,\"text\n1,a\n", 1),
            // Open in a record's first cell: the record is one cell, not a row
            // short of fields.
            (
                "id,a,b,c,d\n1,5.1,3.5,1.4,0.2\n\"b,5.1,3.5,1.4,0.2\n3,4.9,3.0,1.4,0.2\n",
                3,
            ),
            ("id,text\n1,a\n\"b,c\n", 3),
        ] {
            let e = read_all(dir.path(), text).expect_err(text);
            assert!(
                e.0.contains(&format!("line {line}: a quoted cell is not closed")),
                "{text:?}: {}",
                e.0
            );
        }
        // A header whose quote runs to the end is refused at open, before its
        // "columns" (the rest of the file) reach a message.
        std::fs::write(dir.path().join("in.csv"), "id,\"text\n1,a\n2,b\n").unwrap();
        let opened = CsvSource::open(&FileSpec {
            path: dir.path().join("in.csv"),
            name: "in.csv".into(),
            format: FileFormat::Csv,
            csv: CsvOptions::default(),
        });
        match opened {
            Ok(_) => panic!("a header with an open quote opened"),
            Err(e) => assert!(
                e.0.contains("line 1: a quoted cell is not closed"),
                "{}",
                e.0
            ),
        }
        // A record short of fields is that, at the end of the file too.
        for (text, line) in [("id,text\n1\n2,b\n", 2), ("id,text\n1,a\n2\n", 3)] {
            let e = read_all(dir.path(), text).expect_err(text);
            assert!(
                e.0.contains(&format!("line {line}: 1 fields where the header has 2")),
                "{text:?}: {}",
                e.0
            );
        }
        // Closed quotes, doubled quotes, a quote inside an unquoted cell, a quoted
        // cell over two lines at the end, blank lines after it: all read.
        for (text, last) in [
            ("id,text\n1,\"a\nb\"\n", "a\nb"),
            ("id,text\n1,\"a\"\"b\"\n\n\n", "a\"b"),
            ("id,text\n1,ab\"c\n", "ab\"c"),
            ("id,text\n1,\"\"\n2,\"x,y\"", "x,y"),
        ] {
            let rows = read_all(dir.path(), text).expect(text);
            assert_eq!(
                rows.last().unwrap()[1],
                Value::Text(last.into()),
                "{text:?}"
            );
        }
    }

    /// A quote left open near the start of a large file read all the rest into
    /// memory at once: records are bounded as JSON lines are.
    #[test]
    fn a_csv_record_past_the_bound_is_an_error_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        // Past the bound and the reader's slack (the bound is checked on what the
        // CSV reader has taken in, which may run ahead of the record by its buffer).
        let cell = "x".repeat((MAX_RECORD_BYTES + BOUND_SLACK) as usize + 1);
        let first_error = |text: String| match read_all(dir.path(), &text) {
            Ok(rows) => panic!("no error: {} rows", rows.len()),
            Err(e) => e,
        };
        let e = first_error(format!("id,text\n1,a\n2,\"{cell}\"\n3,b\n"));
        assert!(
            e.0.contains(&format!(
                "line 3: a record longer than {MAX_RECORD_BYTES} bytes"
            )),
            "{}",
            e.0
        );
        let e = first_error(format!("id,\"{cell}\"\n1,a\n"));
        assert!(e.0.contains("the header is a record longer"), "{}", e.0);
        // One just under the bound is read.
        let cell = "x".repeat(MAX_RECORD_BYTES as usize - 16);
        let rows = read_all(dir.path(), &format!("id,text\n1,\"{cell}\"\n2,b\n")).unwrap();
        assert_eq!(rows.len(), 2);
    }

    /// CRLF and CR line ends count one line each (a CRLF file's errors named the
    /// line before the bad row, a CR file's line 1).
    #[test]
    fn a_csv_source_counts_lines_whatever_ends_them() {
        let dir = tempfile::tempdir().unwrap();
        for (text, line) in [
            ("a,b,c,d\r\n1,1,1,1\r\n1,1,1,1\r\n1,1,1,1,X\r\n", 4),
            ("a,b,c,d\r\n1,1,1,\"1\nz\"\r\n1,1,1,1,X\r\n", 4),
            ("a,b,c,d\r1,1,1,1\r1,1,1,1,X\r", 3),
            ("a,b,c,d\n1,1,1,1\n1,1,1,1,X\n", 3),
        ] {
            let mut source = csv_source(dir.path(), text);
            let mut rows = Vec::new();
            let e = loop {
                match source.next_batch_into(1, &mut rows) {
                    Ok(0) => panic!("{text:?}: no error"),
                    Ok(_) => {}
                    Err(e) => break e,
                }
            };
            assert!(
                e.0.contains(&format!("line {line}: 5 fields")),
                "{text:?}: {}",
                e.0
            );
        }
    }
}
