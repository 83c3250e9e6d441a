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
//! What waits on a database (connecting, a query running, rows being inserted)
//! asks the job's [`StopCheck`] every [`STOP_POLL`], so that a cancel stops it
//! within a fraction of a second however slow the database is.

mod file;
mod parquet_file;
mod sql;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
            Value::Int(i) => buf.write_all(itoa::Buffer::new().format(*i).as_bytes()),
            Value::Float(f) => {
                write_float(*f, buf);
                Ok(())
            }
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

/// Appends `f` as Rust's `Display` writes it (the shortest digits that read back as
/// `f`, in plain decimal notation, never with an exponent: `0.000000018265677199363828`,
/// `100000000000000000000`, `1`, `-0`, `NaN`, `inf`), several times faster: ryu finds
/// the shortest digits, and only their placement is done here. When two shortest
/// digit strings are equally near (the exact value ends in a 5 just past the last
/// digit, as 0.94788360595703125, an f32 widened, does), ryu takes the even one, as
/// Python's `repr` does (`0.9478836059570312`), where `Display` may take the other
/// (`...313`); both read back as `f`.
pub fn write_float(f: f64, buf: &mut Vec<u8>) {
    if !f.is_finite() {
        buf.extend_from_slice(if f.is_nan() {
            b"NaN"
        } else if f > 0.0 {
            b"inf"
        } else {
            b"-inf"
        });
        return;
    }
    let mut ryu = ryu::Buffer::new();
    let text = ryu.format_finite(f).as_bytes();
    // Most numbers (every one from 1e-5 to 1e16): ryu writes them in plain notation
    // already, the shortest digits, with `.0` after a whole number where `Display`
    // writes none.
    if !text.contains(&b'e') {
        buf.extend_from_slice(text.strip_suffix(b".0").unwrap_or(text));
        return;
    }
    // The rest ryu writes as `d.ddde-x` or `de16`: the shortest digits (the first
    // not 0, the last not 0), a point after the first, and a decimal exponent.
    let (sign, text) = match text.split_first() {
        Some((b'-', rest)) => (&b"-"[..], rest),
        _ => (&b""[..], text),
    };
    let e = text
        .iter()
        .position(|&b| b == b'e')
        .expect("ryu writes an exponent outside 1e-5..1e16");
    let exponent: i32 = std::str::from_utf8(&text[e + 1..])
        .ok()
        .and_then(|x| x.parse().ok())
        .expect("ryu writes a decimal exponent");
    let (first, rest) = text[..e].split_at(1);
    let rest = rest.strip_prefix(b".").unwrap_or(rest);
    buf.extend_from_slice(sign);
    if exponent < 0 {
        // 0.000ddd: the point before -exponent - 1 zeros and the digits.
        buf.extend_from_slice(b"0.");
        buf.extend(std::iter::repeat_n(b'0', (-exponent - 1) as usize));
        buf.extend_from_slice(first);
        buf.extend_from_slice(rest);
    } else {
        // ddd000 (an exponent of 16 or more, at most 17 digits): zeros after them.
        debug_assert!(exponent as usize >= rest.len());
        buf.extend_from_slice(first);
        buf.extend_from_slice(rest);
        buf.extend(std::iter::repeat_n(
            b'0',
            (exponent as usize).saturating_sub(rest.len()),
        ));
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
    /// Where row `i` of the last batch came from (`"in.csv" line 4`), when the
    /// source can tell (a CSV or JSON-lines file); messages about one row name it.
    fn describe_batch_row(&self, _i: usize) -> Option<String> {
        None
    }
}

/// Where rows go. Nothing is visible until `commit`; dropping without committing
/// discards what was written.
pub trait Sink: Send {
    fn write(&mut self, rows: &[Vec<Value>]) -> Result<(), IoError>;
    /// Makes every row written visible at once.
    fn commit(self: Box<Self>) -> Result<(), IoError>;
}

/// Whether the job a source or sink works for is to stop (cancelled, or the server
/// shutting down). Asked from the job's thread, never inside the runtime, while a
/// source or sink waits on a database: at most every [`STOP_POLL`]. It may block
/// briefly (a job's check also records its progress, which is how a cancel asked
/// through another server is learnt).
pub type StopCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// How often a wait on a database asks its [`StopCheck`].
pub const STOP_POLL: Duration = Duration::from_millis(100);

/// The error of a source or sink that stopped waiting because its job is to stop.
/// The job runner records such a job cancelled (or interrupted), not failed.
pub const STOPPED: &str = "stopped: the job was cancelled";

/// A [`StopCheck`] that never stops: for callers that are not a running job.
pub fn never_stop() -> StopCheck {
    Arc::new(|| false)
}

/// [`open_source_until`] for a caller with nothing to stop it.
pub fn open_source(spec: &SourceSpec, runtime: &Handle) -> Result<Box<dyn Source>, IoError> {
    open_source_until(spec, runtime, never_stop())
}

/// The source `spec` names. A SQL source gives up waiting for its database
/// (connecting, the query running, the next rows) with [`STOPPED`] once `stop`
/// says so.
pub fn open_source_until(
    spec: &SourceSpec,
    runtime: &Handle,
    stop: StopCheck,
) -> Result<Box<dyn Source>, IoError> {
    let source: Box<dyn Source> = match spec {
        SourceSpec::File(f) => match f.format {
            FileFormat::Csv => Box::new(file::CsvSource::open(f)?),
            FileFormat::JsonLines => Box::new(file::JsonLinesSource::open(f)?),
            FileFormat::Parquet => Box::new(parquet_file::ParquetSource::open(f)?),
        },
        SourceSpec::Sql { url, name, query } => {
            Box::new(sql::SqlSource::open(url, name, query, runtime, stop)?)
        }
    };
    check_unique_columns(source.columns())?;
    Ok(source)
}

/// A column named twice would be read as its first and the other left out
/// unseen: refused, naming it. (Unnamed columns, `""`, may repeat.)
fn check_unique_columns(columns: &[String]) -> Result<(), IoError> {
    let mut seen = std::collections::HashSet::new();
    match columns
        .iter()
        .find(|c| !c.is_empty() && !seen.insert(c.as_str()))
    {
        Some(twice) => Err(IoError(format!(
            "the source has two columns named {twice:?}: rename one"
        ))),
        None => Ok(()),
    }
}

/// Where a file sink writes before its commit renames it over `path`:
/// `.<name>.<tag>.tmp` beside it, the name cut (at a character) so that the whole
/// stays within the 255 bytes a file name may have. `None` when `path` names no
/// file in a directory.
pub fn temp_path(path: &Path, tag: &str) -> Option<PathBuf> {
    const NAME_MAX: usize = 255;
    let dir = path.parent()?;
    let name = path.file_name()?.to_string_lossy();
    // `.` name `.` tag `.tmp`
    let room = NAME_MAX.saturating_sub(tag.len() + 6);
    let mut end = name.len().min(room);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    Some(dir.join(format!(".{}.{tag}.tmp", &name[..end])))
}

/// A sink for rows of `columns`. `tag` makes temporary names unique (the job id).
/// A SQL sink gives up waiting for its database with [`STOPPED`] once `stop` says
/// so, except at commit, which is never left half done.
pub fn open_sink(
    spec: &SinkSpec,
    columns: Vec<String>,
    tag: &str,
    runtime: &Handle,
    stop: StopCheck,
) -> Result<Box<dyn Sink>, IoError> {
    match spec {
        SinkSpec::File(f) if f.format == FileFormat::Parquet => Ok(Box::new(
            parquet_file::ParquetSink::create(f, columns, tag)?,
        )),
        SinkSpec::File(f) => Ok(Box::new(file::FileSink::create(f, columns, tag)?)),
        SinkSpec::Sql {
            url,
            name,
            table,
            mode,
        } => Ok(Box::new(sql::SqlSink::open(
            url, name, table, *mode, columns, runtime, stop,
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_named_twice_is_refused() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_unique_columns(&names(&["a", "b", "", ""])).is_ok());
        let e = check_unique_columns(&names(&["sl", "sl", "sw"])).unwrap_err();
        assert!(e.0.contains("\"sl\""), "{}", e.0);
    }

    #[test]
    fn temporary_names_fit_a_file_name() {
        let tag = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            temp_path(Path::new("/d/out.csv"), tag).unwrap(),
            Path::new("/d/.out.csv.0123456789abcdef0123456789abcdef.tmp")
        );
        // A long name (255 bytes is allowed) is cut, at a character boundary.
        for name in ["b".repeat(250), "é".repeat(120)] {
            let temp = temp_path(&Path::new("/d").join(&name), tag).unwrap();
            let temp_name = temp.file_name().unwrap().to_str().unwrap();
            assert!(temp_name.len() <= 255, "{}", temp_name.len());
            assert!(temp_name.ends_with(&format!(".{tag}.tmp")));
        }
        assert_eq!(temp_path(Path::new("/"), tag), None);
    }

    fn ours(f: f64) -> String {
        let mut buf = b"kept ".to_vec();
        write_float(f, &mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn floats_are_written_as_display_writes_them() {
        let mut cases = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            0.5,
            100.0,
            1e15,
            1e16,
            1e17,
            1e20,
            1.5e300,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            1e-5,
            1e-7,
            0.000000018265677199363828,
            0.975533188356523,
            123456.789,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        // Every kind of bit pattern, and numbers like a model's outputs.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut model_like = Vec::new();
        for i in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(f64::from_bits(x));
            let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
            cases.push(unit * 10f64.powi(i % 40 - 20));
            model_like.push(unit);
            model_like.push(f64::from(unit as f32));
        }
        cases.extend(model_like);
        let mut ties = 0;
        for f in cases {
            let (ours, display) = (ours(f), format!("kept {f}"));
            if ours == display {
                continue;
            }
            // Only a tie between two shortest strings may differ: same length, and
            // reading back as the same number.
            let back: f64 = ours["kept ".len()..].parse().unwrap();
            assert!(
                ours.len() == display.len() && back.to_bits() == f.to_bits(),
                "{f:e} ({:#x}): {ours} against {display}",
                f.to_bits()
            );
            ties += 1;
        }
        // Ties are rare but not negligible: an f32 widened to f64 has a short exact
        // decimal expansion, whose 17th digit is often a 5.
        assert!(ties < 60_000, "{ties} ties");
    }

    #[test]
    fn cells_are_written_as_text() {
        let mut buf = b"old".to_vec();
        Value::Int(-42).write_text(&mut buf);
        assert_eq!(buf, b"-42");
        Value::Float(0.25).write_text(&mut buf);
        assert_eq!(buf, b"0.25");
        Value::Null.write_text(&mut buf);
        assert_eq!(buf, b"");
        Value::Bool(true).write_text(&mut buf);
        assert_eq!(buf, b"true");
    }
}
