//! The rows `ferroserve predict` reads: JSON lines or CSV, a batch at a time, each
//! row's line kept for the errors (`line N of FILE`), a name given twice refused.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

/// One input row: named features, or values in the model's order.
pub(super) fn parse_json_row(line: &str, n: usize, file: &Path) -> anyhow::Result<Value> {
    let file = file.display();
    let v: Value =
        serde_json::from_str(line).with_context(|| format!("line {n} of {file} is not JSON"))?;
    // serde_json keeps the last of two values of a key without a word: the row
    // would be predicted on one the user may not have meant.
    if let Err(e) = serde_json::from_str::<crate::http::UniqueKeys>(line) {
        // serde_json's message ends with the place in the line: the line's is told.
        let e = e.to_string();
        let what = e
            .rsplit_once(" at line ")
            .map_or(e.as_str(), |(what, _)| what);
        bail!("line {n} of {file}: {what}");
    }
    match v {
        Value::Object(_) | Value::Array(_) => Ok(v),
        _ => bail!("line {n} of {file} is neither an object of features nor a list of values"),
    }
}

/// A batch's error with the file's lines in it: the server counts rows from the
/// start of each request, so its `row N` becomes `row N (line L of FILE)`; a
/// message that names no row but quotes a value (`feature value "abc" is not a
/// number`) gets the line of the first row holding that text; and the message ends
/// with the lines the request held.
pub(super) fn in_file(
    e: super::client::ClientError,
    batch: &[Value],
    lines: &[usize],
    file: &Path,
) -> super::client::ClientError {
    use super::client::ClientError;
    let place = |message: String| {
        let file = file.display();
        let quoted_row = || {
            let quoted: Vec<&str> = message.split('"').skip(1).step_by(2).collect();
            batch.iter().zip(lines).find_map(|(row, line)| {
                let cells: Vec<&Value> = match row {
                    Value::Object(m) => m.values().collect(),
                    Value::Array(a) => a.iter().collect(),
                    _ => Vec::new(),
                };
                cells
                    .iter()
                    .filter_map(|c| c.as_str())
                    .any(|c| quoted.contains(&c))
                    .then_some(*line)
            })
        };
        if !message.contains("row ") {
            if let Some(line) = quoted_row() {
                return format!("line {line} of {file}: {message}");
            }
        }
        let mut out = String::new();
        let mut rest = message.as_str();
        while let Some(at) = rest.find("row ") {
            let after = &rest[at + "row ".len()..];
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            out.push_str(&rest[..at + "row ".len() + digits]);
            if let Some(line) = after[..digits]
                .parse::<usize>()
                .ok()
                .and_then(|n| lines.get(n))
            {
                out.push_str(&format!(" (line {line} of {file})"));
            }
            rest = &after[digits..];
        }
        out.push_str(rest);
        match (lines.first(), lines.last()) {
            (Some(first), Some(last)) => {
                format!("{out} [in the request of lines {first} to {last} of {file}]")
            }
            _ => out,
        }
    };
    match e {
        ClientError::Rejected { status, message } => ClientError::Rejected {
            status,
            message: place(message),
        },
        ClientError::Server { status, message } => ClientError::Server {
            status,
            message: place(message),
        },
        other => other,
    }
}

/// The rows of `predict --input`, read a batch at a time so that memory holds one
/// batch, not the file: JSON lines (from a file or stdin), or CSV with a header
/// of names. Each row comes with the line of the file it starts on, for messages.
///
/// A CSV cell goes as text, whatever it looks like: CSV has no types, and the
/// server reads a text that is a number as that number for a numeric input, and
/// keeps it as written for a text input (a zip code "02134" read here as the
/// number 2134 was a category the model never saw). An empty cell is the empty
/// text, which the server takes as a missing value where the model fills them,
/// as batch jobs read a CSV. A name given twice (a CSV column, a key of a JSON
/// line) is refused: a row can hold only one of the values.
pub(super) struct InputRows {
    path: PathBuf,
    kind: InputKind,
}

pub(super) enum InputKind {
    Csv {
        reader: csv::Reader<LineBreaks<std::fs::File>>,
        header: Vec<String>,
        /// Records read so far, for a record the csv crate cannot read.
        records: usize,
    },
    JsonLines {
        lines: std::io::Lines<Box<dyn BufRead>>,
        /// The line last read.
        line: usize,
    },
}

impl InputRows {
    pub(super) fn open(path: &Path) -> anyhow::Result<InputRows> {
        // As a scoring job reads a file (`FileFormat::from_extension`): `.csv`,
        // `.tsv` (tab-separated) and `.txt` are CSV, anything else JSON lines.
        use crate::jobs::spec::FileFormat;
        let name = path.to_string_lossy();
        let is_csv = FileFormat::from_extension(&name) == Some(FileFormat::Csv);
        let kind = if is_csv {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let tsv = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
            let delimiter = if tsv { b'\t' } else { b',' };
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .from_reader(LineBreaks::new(file));
            let header: Vec<String> = reader
                .headers()
                .with_context(|| format!("cannot read the header of {}", path.display()))?
                .iter()
                .map(str::to_string)
                .collect();
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = header.iter().find(|name| !seen.insert(name.as_str())) {
                bail!(
                    "line 1 of {}: the header has two columns named {twice:?}: rename one",
                    path.display()
                );
            }
            InputKind::Csv {
                reader,
                header,
                records: 0,
            }
        } else {
            let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
                Box::new(std::io::BufReader::new(std::io::stdin()))
            } else {
                Box::new(std::io::BufReader::new(
                    std::fs::File::open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?,
                ))
            };
            InputKind::JsonLines {
                lines: reader.lines(),
                line: 0,
            }
        };
        Ok(InputRows {
            path: path.to_path_buf(),
            kind,
        })
    }

    /// Up to `n` more rows and their lines; none at the end of the input.
    pub(super) fn next_batch(&mut self, n: usize) -> anyhow::Result<(Vec<Value>, Vec<usize>)> {
        let path = self.path.as_path();
        let mut rows = Vec::new();
        let mut lines = Vec::new();
        match &mut self.kind {
            InputKind::Csv {
                reader,
                header,
                records,
            } => {
                let mut record = csv::StringRecord::new();
                while rows.len() < n {
                    *records += 1;
                    let more = reader
                        .read_record(&mut record)
                        .with_context(|| format!("{} row {}", path.display(), records))?;
                    if !more {
                        break;
                    }
                    let at = record.position().map_or(0, csv::Position::byte);
                    lines.push(reader.get_mut().line_at(at));
                    let row: serde_json::Map<String, Value> = header
                        .iter()
                        .zip(record.iter())
                        .map(|(name, cell)| (name.clone(), Value::String(cell.to_string())))
                        .collect();
                    rows.push(Value::Object(row));
                }
            }
            InputKind::JsonLines { lines: input, line } => {
                while rows.len() < n {
                    let Some(text) = input.next() else { break };
                    *line += 1;
                    let text = text
                        .with_context(|| format!("cannot read {} line {}", path.display(), line))?;
                    // A UTF-8 byte-order mark (an editor's on Windows) is no value.
                    let text = match *line {
                        1 => text.strip_prefix('\u{feff}').unwrap_or(&text),
                        _ => &text,
                    };
                    if text.trim().is_empty() {
                        continue;
                    }
                    rows.push(parse_json_row(text, *line, path).map_err(|e| {
                        // A CSV file under another name: say how the file was read.
                        if *line == 1
                            && text
                                .trim_start()
                                .starts_with(|c: char| c != '{' && c != '[')
                        {
                            let what = if path.as_os_str() == "-" {
                                "the standard input".to_string()
                            } else {
                                path.display().to_string()
                            };
                            e.context(format!(
                                "{what} is read as JSON lines: only files named .csv, .tsv \
                                 or .txt are read as CSV"
                            ))
                        } else {
                            e
                        }
                    })?);
                    lines.push(*line);
                }
            }
        }
        Ok((rows, lines))
    }
}

/// A reader that notes where the line breaks it passes on lie, so that a CSV
/// record's line can be told from its byte offset without keeping the file: it
/// keeps only the breaks read ahead of the last record asked about (the csv
/// reader's buffer holds a few kilobytes).
pub(super) struct LineBreaks<R> {
    inner: R,
    /// Bytes read so far.
    read: u64,
    /// Offsets of the `\r` and `\n` bytes read and not yet counted, with whether
    /// each is a `\n`.
    breaks: std::collections::VecDeque<(u64, bool)>,
    /// The `\n` bytes counted (those before the last record asked about).
    newlines: usize,
}

impl<R> LineBreaks<R> {
    fn new(inner: R) -> LineBreaks<R> {
        LineBreaks {
            inner,
            read: 0,
            breaks: std::collections::VecDeque::new(),
            newlines: 0,
        }
    }

    /// The line (from 1) of a record at byte `at`, asked in order. The csv crate's
    /// own line count is one short after a `\r\n`, and a record's position is
    /// that of the `\n` after a `\r` (blank lines may also precede the record):
    /// its first line is the one after those breaks.
    fn line_at(&mut self, mut at: u64) -> usize {
        while let Some(&(offset, newline)) = self.breaks.front() {
            if offset > at {
                break;
            }
            if offset == at {
                at += 1;
            }
            self.newlines += usize::from(newline);
            self.breaks.pop_front();
        }
        self.newlines + 1
    }
}

impl<R: std::io::Read> std::io::Read for LineBreaks<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                self.breaks.push_back((self.read + i as u64, b == b'\n'));
            }
        }
        self.read += n as u64;
        Ok(n)
    }
}
