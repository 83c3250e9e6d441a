//! Where a job reads and writes: sources and sinks (files in the data directory,
//! uploads, SQL URLs) read from a spec, checked before the job is queued (inside the
//! data directory, a sink that can be created, never the source's file by any name),
//! and whether two sinks write one output.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::{
    check_fields, err, is_upload_name, required, string, CsvOptions, FileFormat, FileSpec, Obj,
    Roots, SinkMode, SinkSpec, SourceSpec, SpecError,
};

/// Refuses a sink that would write the file the source reads: the same file by
/// another name (absolute, through a symbolic link, a hard link) included, and a
/// SQLite database file on either side. A file sink replaces the source at commit;
/// a SQLite sink on the source's database waits for the source query's lock (a
/// spilling transaction for ever). Judged on the files the names resolve to, at
/// submission and again when the job starts (the spec is read again then), so a
/// link swapped in between is caught too.
pub(super) fn check_sink_is_not_the_source(
    source: &SourceSpec,
    sink: &SinkSpec,
) -> Result<(), SpecError> {
    let source_file = match source {
        SourceSpec::File(f) => Some((f.path.clone(), false)),
        SourceSpec::Sql { url, .. } => crate::store::pool::sqlite_path(url).map(|p| (p, true)),
    };
    let Some((source_path, source_is_db)) = source_file else {
        return Ok(());
    };
    let sink_file = match sink {
        SinkSpec::File(f) => Some(f.path.clone()),
        SinkSpec::Sql { url, .. } => crate::store::pool::sqlite_path(url),
    };
    let Some(sink_path) = sink_file else {
        return Ok(());
    };
    if !same_file(&source_path, &sink_path) {
        return Ok(());
    }
    let source_name = match source {
        SourceSpec::File(f) => f.name.as_str(),
        SourceSpec::Sql { name, .. } => name.as_str(),
    };
    Err(match (sink, source_is_db) {
        (SinkSpec::File(_), false) => err("spec.sink.path", "is the source file"),
        (SinkSpec::File(_), true) => err(
            "spec.sink.path",
            format!("is the source's database file ({source_name}): write the scores to another file"),
        ),
        (SinkSpec::Sql { name, .. }, false) => err(
            "spec.sink.url",
            format!("{name} is the source file ({source_name}): write the scores to another database file"),
        ),
        (SinkSpec::Sql { name, .. }, true) => err(
            "spec.sink.url",
            format!(
                "{name} is the database file spec.source.url {source_name} reads: a job cannot \
                 write the SQLite file its query reads (the writes would wait for the query's \
                 lock); write the scores to another database file"
            ),
        ),
    })
}

/// Whether `a` and `b` name one file: their symbolic links resolved (a file not
/// there yet by its resolved directory and name), or, both existing, one inode.
pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            if x.dev() == y.dev() && x.ino() == y.ino() {
                return true;
            }
        }
    }
    let resolved = |p: &Path| crate::paths::resolve(p).unwrap_or_else(|| p.to_path_buf());
    resolved(a) == resolved(b)
}

/// Refuses what no module reads, with a message saying so.
pub(in crate::jobs) fn check_url_scheme(url: &str, field: &str) -> Result<(), SpecError> {
    let scheme = url
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    match scheme.as_str() {
        "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb" => Ok(()),
        "mongodb" | "mongodb+srv" => Err(err(field, "MongoDB is not supported")),
        _ => Err(err(
            field,
            "use sqlite://FILE (in the data directory), postgres://… or mysql://…",
        )),
    }
}

/// A database URL as messages and results show it: as the client gave it (a SQLite
/// file by the name given, never the server's path to it), its password masked as
/// in the job's record.
pub(super) fn shown_url(given: &str) -> String {
    if crate::store::pool::has_secret(given) {
        crate::store::pool::redact(given)
    } else {
        given.to_string()
    }
}

/// A `sqlite:` URL's file must be in the data directory like any other file: the
/// URL is rewritten to the resolved path.
pub(super) fn check_sql_url(url: &str, field: &str, data_dir: &Path) -> Result<String, SpecError> {
    check_url_scheme(url, field)?;
    if !url.to_ascii_lowercase().starts_with("sqlite:") {
        return Ok(url.to_string());
    }
    let Some(file) = crate::store::pool::sqlite_path(url) else {
        return Err(err(field, "a sqlite URL must name a file"));
    };
    let given = file.display().to_string();
    let path = data_path(&given, field, data_dir)?;
    Ok(format!("sqlite://{}", path.display()))
}

/// A location given as one string (the old job.json's `inputCollection` and
/// `outputCollection`): `{"url": …}` when it has a scheme, else `{"path": …}`.
fn location_object(s: &str) -> Value {
    let key = if s.contains("://") { "url" } else { "path" };
    let mut o = Obj::new();
    o.insert(key.into(), Value::String(s.to_string()));
    Value::Object(o)
}

pub(super) fn parse_source(
    v: Option<&Value>,
    field: &str,
    roots: Roots<'_>,
) -> Result<SourceSpec, SpecError> {
    let data_dir = roots.data_dir;
    let obj = match v {
        None | Some(Value::Null) => return Err(err(field, "missing")),
        Some(Value::String(s)) if !s.is_empty() => {
            // The old job.json's inputCollection: a path or a URL.
            return parse_source(Some(&location_object(s)), field, roots);
        }
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(err(
                field,
                "must be an object with a path, or a url and a query",
            ))
        }
    };
    if let Some(given) = string(obj, field, "url")? {
        check_fields(obj, field, &["url", "query"])?;
        let url = check_sql_url(&given, &format!("{field}.url"), data_dir)?;
        if let Some(path) = crate::store::pool::sqlite_path(&url) {
            if !path.is_file() {
                return Err(err(&format!("{field}.url"), "no such database file"));
            }
        }
        let query = required(obj, field, "query")?;
        return Ok(SourceSpec::Sql {
            url,
            name: shown_url(&given),
            query,
        });
    }
    if obj.contains_key("upload") {
        return parse_upload(obj, field, roots.uploads).map(SourceSpec::File);
    }
    let file = parse_file(obj, field, data_dir)?;
    if !file.path.is_file() {
        return Err(err(
            &format!("{field}.path"),
            format!("no such file {:?} in the data directory", file.name),
        ));
    }
    Ok(SourceSpec::File(file))
}

pub(crate) fn parse_sink(
    v: Option<&Value>,
    field: &str,
    data_dir: &Path,
) -> Result<SinkSpec, SpecError> {
    let obj = match v {
        None | Some(Value::Null) => return Err(err(field, "missing")),
        Some(Value::String(s)) if !s.is_empty() => {
            return parse_sink(Some(&location_object(s)), field, data_dir);
        }
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(err(
                field,
                "must be an object with a path, or a url and a table",
            ))
        }
    };
    if let Some(given) = string(obj, field, "url")? {
        check_fields(obj, field, &["url", "table", "mode"])?;
        let url = check_sql_url(&given, &format!("{field}.url"), data_dir)?;
        let table = required(obj, field, "table")?;
        if !is_identifier(&table) {
            return Err(err(
                &format!("{field}.table"),
                "must be a table name of letters, digits and underscores (optionally schema.table)",
            ));
        }
        if let Some((schema, _)) = table.split_once('.') {
            let schema = schema.to_ascii_lowercase();
            if schema == "temp" || schema == "temporary" || schema.starts_with("pg_temp") {
                return Err(err(
                    &format!("{field}.table"),
                    "a temporary table goes when the job's connection closes: name a table that stays",
                ));
            }
        }
        let mode = match string(obj, field, "mode")?.as_deref() {
            None | Some("append") => SinkMode::Append,
            Some("overwrite") => SinkMode::Overwrite,
            Some(other) => {
                return Err(err(
                    &format!("{field}.mode"),
                    format!("unknown mode {other:?} (overwrite or append)"),
                ))
            }
        };
        return Ok(SinkSpec::Sql {
            url,
            name: shown_url(&given),
            table,
            mode,
        });
    }
    let file = parse_file(obj, field, data_dir)?;
    if file.path.is_dir() {
        return Err(err(&format!("{field}.path"), "is a directory"));
    }
    check_sink_path_can_be_made(&file, &format!("{field}.path"))?;
    Ok(SinkSpec::File(file))
}

/// The most bytes a file or directory name may have (Linux's `NAME_MAX`).
pub(super) const NAME_MAX: usize = 255;

/// Refuses a file sink the job could never create, so that the client learns it
/// at submission rather than from a failed job: a name in the path longer than
/// [`NAME_MAX`] bytes, or a directory on its way that exists as something else (a
/// file). The message names only the path as given.
pub(super) fn check_sink_path_can_be_made(file: &FileSpec, field: &str) -> Result<(), SpecError> {
    let given = &file.name;
    if Path::new(given)
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n.len() > NAME_MAX))
    {
        return Err(err(
            field,
            format!("{given:?}: a file or directory name may have at most {NAME_MAX} bytes"),
        ));
    }
    // The nearest directory on the way that exists decides: one that is a file
    // (or anything but a directory) cannot hold the sink. The data directory and
    // those above it exist as directories, so the walk ends there at the latest.
    for dir in file.path.ancestors().skip(1) {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(err(
                    field,
                    format!("{given:?} cannot be created: a directory on its way is a file"),
                ))
            }
            Err(_) => {}
        }
    }
    Ok(())
}

impl SinkSpec {
    /// Whether this sink and `other` would write the same output, so that two jobs
    /// writing them at once would lose one's rows (both reporting success): one
    /// file, by any name (see [`same_file`]), or one table of one database, by any
    /// of its names (see [`same_table`]), that either job overwrites. Two jobs
    /// appending to one table keep both's rows, and are not a clash.
    pub fn clashes_with(&self, other: &SinkSpec) -> bool {
        match (self, other) {
            (SinkSpec::File(a), SinkSpec::File(b)) => same_file(&a.path, &b.path),
            (
                SinkSpec::Sql {
                    url: url_a,
                    table: table_a,
                    mode: mode_a,
                    ..
                },
                SinkSpec::Sql {
                    url: url_b,
                    table: table_b,
                    mode: mode_b,
                    ..
                },
            ) => {
                (*mode_a == SinkMode::Overwrite || *mode_b == SinkMode::Overwrite)
                    && same_table((url_a, table_a), (url_b, table_b))
            }
            _ => false,
        }
    }

    /// The field a message about this sink names (`spec.sink.path` or
    /// `spec.sink.table`).
    pub fn field(&self) -> &'static str {
        match self {
            SinkSpec::File(_) => "spec.sink.path",
            SinkSpec::Sql { .. } => "spec.sink.table",
        }
    }
}

/// Whether two sinks' `(url, table)` name one table: a SQLite file by any name
/// (see [`same_file`]), a PostgreSQL database by its URL as written, a MySQL or
/// MariaDB server by its URL less the database. A table named alone is the one in
/// the default schema, so that each database's two names of one table meet:
/// SQLite's `main.x`; PostgreSQL's `public.x`, and `<user>.x` for the URL's user
/// (first on the default search path, where such a schema exists); MySQL's
/// `<database of the URL>.x`. Names are compared without case, which is what
/// PostgreSQL's unquoted names and MySQL on some servers do, and errs on the side
/// of a clash otherwise (the sink quotes names, and table names are plain
/// identifiers, so a name has no other spelling).
fn same_table(a: (&str, &str), b: (&str, &str)) -> bool {
    use crate::store::pool::sqlite_path;
    let same = |x: &str, y: &str| x.eq_ignore_ascii_case(y);
    let scheme = |url: &str| {
        let scheme = url
            .split_once(':')
            .map_or("", |(s, _)| s)
            .to_ascii_lowercase();
        match scheme.as_str() {
            "postgresql" => "postgres".to_string(),
            "mariadb" => "mysql".to_string(),
            _ => scheme,
        }
    };
    // Every name the table goes by in its database, given its URL.
    let names = |(url, table): (&str, &str)| -> Vec<String> {
        if table.contains('.') {
            return vec![table.to_string()];
        }
        match scheme(url).as_str() {
            "sqlite" => vec![format!("main.{table}")],
            "postgres" => {
                let user = url::Url::parse(url)
                    .map(|u| percent_decode(u.username()))
                    .unwrap_or_default();
                let mut names = vec![format!("public.{table}")];
                if !user.is_empty() {
                    names.push(format!("{user}.{table}"));
                }
                names
            }
            "mysql" => {
                let database = url::Url::parse(url)
                    .map(|u| percent_decode(u.path().trim_start_matches('/')))
                    .unwrap_or_default();
                vec![format!("{database}.{table}")]
            }
            _ => vec![table.to_string()],
        }
    };
    let same_database = match (sqlite_path(a.0), sqlite_path(b.0)) {
        (Some(x), Some(y)) => same_file(&x, &y),
        (None, None) if scheme(a.0) == "mysql" && scheme(b.0) == "mysql" => {
            mysql_server(a.0) == mysql_server(b.0)
        }
        (None, None) => a.0 == b.0,
        _ => false,
    };
    let (names_a, names_b) = (names(a), names(b));
    same_database && names_a.iter().any(|x| names_b.iter().any(|y| same(x, y)))
}

/// A MySQL URL less its scheme and database: the server and the connection's
/// options, which a table named with its database is found by whatever database
/// the URL names. `None` for a URL that does not parse.
fn mysql_server(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(format!(
        "{}?{}",
        &u[url::Position::AfterScheme..url::Position::BeforePath],
        u.query().unwrap_or_default()
    ))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `name` or `schema.name`, each part a plain SQL identifier.
pub(super) fn is_identifier(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| part(p))
}

pub(super) fn parse_file(obj: &Obj, field: &str, data_dir: &Path) -> Result<FileSpec, SpecError> {
    check_fields(obj, field, &["path", "format", "delimiter", "quote"])?;
    let name = required(obj, field, "path")?;
    let path = data_path(&name, &format!("{field}.path"), data_dir)?;
    let format = file_format(obj, field, "path", &name)?;
    let csv = csv_options(obj, field, &name)?;
    Ok(FileSpec {
        path,
        name,
        format,
        csv,
    })
}

/// The format: `"format"`, else from `name`'s extension (`key` is the field named
/// when neither tells).
pub(super) fn file_format(
    obj: &Obj,
    field: &str,
    key: &str,
    name: &str,
) -> Result<FileFormat, SpecError> {
    match string(obj, field, "format")? {
        Some(f) => FileFormat::from_name(&f).ok_or_else(|| {
            err(
                &format!("{field}.format"),
                format!("unknown format {f:?} (csv, jsonl or parquet)"),
            )
        }),
        None => FileFormat::from_extension(name).ok_or_else(|| {
            err(
                &format!("{field}.{key}"),
                "cannot tell the format from the extension: name it .csv, .jsonl or .parquet, \
                 or give \"format\"",
            )
        }),
    }
}

/// `{"upload": "<part>", "format"?, "delimiter"?, "quote"?}`: a file uploaded with
/// the request, saved under the part's name in the job's upload directory. The
/// multipart handler adds `format` from the part's file name when the spec gives
/// none.
pub(super) fn parse_upload(
    obj: &Obj,
    field: &str,
    uploads: Option<&Path>,
) -> Result<FileSpec, SpecError> {
    check_fields(obj, field, &["upload", "format", "delimiter", "quote"])?;
    let part = required(obj, field, "upload")?;
    let key = format!("{field}.upload");
    if !is_upload_name(&part) {
        return Err(err(
            &key,
            "a part name is 1 to 64 letters, digits, '_', '-' or '.' (not starting with '.')",
        ));
    }
    let Some(uploads) = uploads else {
        return Err(err(
            &key,
            "an uploaded file needs a multipart/form-data request with a part of that name",
        ));
    };
    let path = uploads.join(&part);
    if !path.is_file() {
        return Err(err(&key, format!("no part {part:?} was uploaded")));
    }
    let format = file_format(obj, field, "upload", &part)?;
    let csv = csv_options(obj, field, &part)?;
    Ok(FileSpec {
        path,
        name: format!("upload {part}"),
        format,
        csv,
    })
}

/// `"delimiter"` and `"quote"` (a `.tsv` name defaults to tabs).
pub(super) fn csv_options(obj: &Obj, field: &str, name: &str) -> Result<CsvOptions, SpecError> {
    let tsv = Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    let one_char = |key: &str, default: u8| -> Result<u8, SpecError> {
        // A tab (or a space) is a delimiter, not an empty string.
        if let Some(Value::String(s)) = obj.get(key) {
            if s.len() == 1 && s.is_ascii() {
                return Ok(s.as_bytes()[0]);
            }
        }
        match string(obj, field, key)? {
            None => Ok(default),
            Some(s) if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
            Some(s) if s == "\\t" => Ok(b'\t'),
            Some(_) => Err(err(
                &format!("{field}.{key}"),
                "must be one ASCII character",
            )),
        }
    };
    let options = CsvOptions {
        delimiter: one_char("delimiter", if tsv { b'\t' } else { b',' })?,
        quote: one_char("quote", b'"')?,
    };
    // A line break ends a record whatever the dialect says: as a delimiter or a
    // quote it would split rows into columns or run one cell into the next rows.
    for (key, c) in [("delimiter", options.delimiter), ("quote", options.quote)] {
        if c == b'\n' || c == b'\r' {
            return Err(err(
                &format!("{field}.{key}"),
                format!("{:?} is a line break, which ends a record", c as char),
            ));
        }
    }
    if options.delimiter == options.quote {
        // Named by the one given (the other is its default), or the quote.
        let key = if obj.contains_key("quote") {
            "quote"
        } else {
            "delimiter"
        };
        let other = if key == "quote" { "delimiter" } else { "quote" };
        return Err(err(
            &format!("{field}.{key}"),
            format!(
                "{:?} is also the {other}: a cell could not be told from a separator",
                options.quote as char
            ),
        ));
    }
    Ok(options)
}

/// `given` resolved inside `data_dir`: relative to it (an absolute path must already
/// lie in it), no `..`, and no symbolic link leading out. The error echoes only the
/// name given.
pub fn data_path(given: &str, field: &str, data_dir: &Path) -> Result<PathBuf, SpecError> {
    let outside = || err(field, format!("{given:?} is not inside the data directory"));
    let p = Path::new(given);
    if given.contains('\0') || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(outside());
    }
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        data_dir.join(p)
    };
    if !crate::paths::is_under_roots(&joined, &[data_dir.to_path_buf()]) {
        return Err(outside());
    }
    Ok(joined)
}
