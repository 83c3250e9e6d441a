//! CSV and JSON-lines files in the data directory: `csv_source.rs` and
//! `jsonl_source.rs` read them, `sink.rs` writes them.

mod csv_source;
mod jsonl_source;
mod sink;

pub use csv_source::CsvSource;
pub use jsonl_source::JsonLinesSource;
pub use sink::FileSink;

use std::fs::File;

use super::IoError;
use crate::jobs::spec::FileSpec;

pub(super) fn open(spec: &FileSpec) -> Result<(File, u64), IoError> {
    let file = File::open(&spec.path)
        .map_err(|e| IoError(format!("cannot open {:?}: {}", spec.name, e.kind())))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, size))
}

/// The line (from 1) that byte `offset` of the file at `path` is on, for messages:
/// lines end with `\n`, `\r\n` or a lone `\r`, as the CSV reader ends records (its
/// own count took a `\r\n` for two lines). Read again from the start: only an
/// error or a failed job's message asks.
pub(super) fn line_at(path: &std::path::Path, offset: u64) -> Option<u64> {
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

/// Longest line read; a longer one is an error (bounded memory).
pub(super) const MAX_LINE_BYTES: u64 = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::super::{Sink, Source, Value};
    use super::csv_source::{BOUND_SLACK, MAX_RECORD_BYTES};
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
