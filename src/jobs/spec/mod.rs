//! Job specs: `{"kind": "score" | "train", "spec": {…}}` read into typed specs, with
//! every error naming the field (`spec.source.path: …`), so a client learns at once
//! what to fix. Paths are resolved against the data directory here, once: the rest
//! of the job only sees paths that are inside it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::manager::VersionRequest;

mod locations;

pub(super) use locations::check_url_scheme;
pub use locations::data_path;
pub(crate) use locations::parse_sink;
use locations::{check_sink_is_not_the_source, parse_source};

/// Why a spec cannot be used; the message starts with the field's path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

pub(super) fn err(field: &str, reason: impl std::fmt::Display) -> SpecError {
    SpecError(format!("{field}: {reason}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Score,
    Train,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Score => "score",
            JobKind::Train => "train",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        match s {
            "score" => Some(JobKind::Score),
            "train" => Some(JobKind::Train),
            _ => None,
        }
    }
}

/// A parsed job.
#[derive(Debug, Clone)]
pub enum JobSpec {
    Score(ScoreSpec),
    Train(TrainSpec),
}

impl JobSpec {
    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::Score(_) => JobKind::Score,
            JobSpec::Train(_) => JobKind::Train,
        }
    }

    /// The model it scores with or trains.
    pub fn model(&self) -> &str {
        match self {
            JobSpec::Score(s) => &s.model,
            JobSpec::Train(t) => &t.model,
        }
    }
}

/// File formats, from the extension or `"format"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    JsonLines,
    Parquet,
}

impl FileFormat {
    /// The format a file name's extension names, if any.
    pub fn from_extension(name: &str) -> Option<FileFormat> {
        let ext = Path::new(name).extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "tsv" | "txt" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(FileFormat::JsonLines),
            "parquet" | "pq" => Some(FileFormat::Parquet),
            _ => None,
        }
    }

    /// A `"format"` value.
    pub fn from_name(name: &str) -> Option<FileFormat> {
        match name {
            "csv" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(FileFormat::JsonLines),
            "parquet" => Some(FileFormat::Parquet),
            _ => None,
        }
    }
}

/// Where a job's paths resolve: `data_dir` for `{"path": …}`, and the job's own
/// upload directory (`<state dir>/job-uploads/<job id>/`, one file per multipart
/// part, named by the part) for `{"upload": "<part>"}`. A spec read without an
/// upload directory refuses `upload` sources.
#[derive(Debug, Clone, Copy)]
pub struct Roots<'a> {
    pub data_dir: &'a Path,
    pub uploads: Option<&'a Path>,
}

impl<'a> From<&'a Path> for Roots<'a> {
    fn from(data_dir: &'a Path) -> Roots<'a> {
        Roots {
            data_dir,
            uploads: None,
        }
    }
}

/// Whether `name` can name a multipart part that a spec refers to (and the file it
/// is saved as): 1 to 64 ASCII letters, digits, `_`, `-` and `.`, not starting
/// with `.`.
pub fn is_upload_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// CSV dialect: `"delimiter"` and `"quote"`, one ASCII character each. The first
/// line is the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: u8,
}

impl Default for CsvOptions {
    fn default() -> CsvOptions {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
        }
    }
}

/// A file in the data directory.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSpec {
    /// The resolved path, inside the data directory.
    pub path: PathBuf,
    /// The name as the client gave it (messages echo only this).
    pub name: String,
    pub format: FileFormat,
    pub csv: CsvOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    File(FileSpec),
    /// `{"url": "postgres://…", "query": "select …"}`: rows streamed.
    Sql {
        /// The URL connected to (a SQLite file's resolved in the data directory).
        url: String,
        /// The URL as the client gave it, password masked: messages show only this.
        name: String,
        query: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// The table is replaced by the job's rows.
    Overwrite,
    /// The job's rows are added.
    Append,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    File(FileSpec),
    /// `{"url": …, "table": …, "mode": "overwrite" | "append"}`.
    Sql {
        /// The URL connected to (a SQLite file's resolved in the data directory).
        url: String,
        /// The URL as the client gave it, password masked: messages show only this.
        name: String,
        table: String,
        mode: SinkMode,
    },
}

impl SinkSpec {
    /// What the result names as where the rows went.
    pub fn describe(&self) -> String {
        match self {
            SinkSpec::File(f) => f.name.clone(),
            SinkSpec::Sql { name, table, .. } => format!("{name} table {table}"),
        }
    }
}

/// A scoring job: every row of `source` through the model, into `sink`.
#[derive(Debug, Clone)]
pub struct ScoreSpec {
    pub model: String,
    pub version: VersionRequest,
    pub source: SourceSpec,
    pub sink: SinkSpec,
    /// Source columns copied to the output before the model's (ids).
    pub carry: Vec<String>,
    /// Rows per prediction request. Default [`DEFAULT_BATCH_SIZE`].
    pub batch_size: usize,
    /// Model outputs to write; default the prediction and class probabilities.
    pub outputs: Option<Vec<String>>,
}

pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Large enough for throughput, small enough that one job's batch never holds an
/// online request behind it for long.
pub const MAX_BATCH_SIZE: usize = 4096;

/// A training job, parsed so that its errors are reported at submission; running it
/// is the `Trainer`'s (see `jobs::train`).
#[derive(Debug, Clone)]
pub struct TrainSpec {
    pub model: String,
    pub source: SourceSpec,
    /// The label column (`schema.label.key`) and its optional value map.
    pub label: String,
    pub label_values: Option<serde_json::Map<String, Value>>,
    /// `schema.features[].key`.
    pub features: Vec<String>,
    /// `schema.categorical` and features carrying `values`.
    pub categorical: Vec<String>,
    /// `algorithm.name` and the whole `algorithm` object (its grid).
    pub algorithm: String,
    pub algorithm_spec: Value,
    /// `cv` as given (folds, seed, scoring).
    pub cv: Value,
    /// `schema` as given (value maps, missing-value policies: `jobs::train::data`).
    pub schema: Value,
}

/// Reads `{"kind": …, "spec": …}`. Paths are resolved inside `data_dir`; `upload`
/// sources are refused (see [`parse_job_in`]).
pub fn parse_job(body: &Value, data_dir: &Path) -> Result<JobSpec, SpecError> {
    parse_job_in(body, data_dir.into())
}

/// Reads `{"kind": …, "spec": …}` with paths resolved in `roots`.
pub fn parse_job_in(body: &Value, roots: Roots<'_>) -> Result<JobSpec, SpecError> {
    let Some(obj) = body.as_object() else {
        return Err(SpecError(
            "the body must be a JSON object {\"kind\": …, \"spec\": …}".into(),
        ));
    };
    if let Some(unknown) = obj.keys().find(|k| !matches!(k.as_str(), "kind" | "spec")) {
        return Err(err(unknown, "unknown field (known: kind, spec)"));
    }
    let kind = match obj.get("kind") {
        None => return Err(err("kind", "missing (score or train)")),
        Some(Value::String(k)) => JobKind::parse(k)
            .ok_or_else(|| err("kind", format!("unknown kind {k:?} (score or train)")))?,
        Some(_) => return Err(err("kind", "must be a string (score or train)")),
    };
    let spec = obj
        .get("spec")
        .ok_or_else(|| err("spec", "missing"))?
        .as_object()
        .ok_or_else(|| err("spec", "must be an object"))?;
    match kind {
        JobKind::Score => parse_score(spec, roots).map(JobSpec::Score),
        JobKind::Train => parse_train(spec, roots).map(JobSpec::Train),
    }
}

pub(super) type Obj = serde_json::Map<String, Value>;

fn check_fields(obj: &Obj, field: &str, known: &[&str]) -> Result<(), SpecError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(err(
            &format!("{field}.{k}"),
            format!("unknown field (known: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn string(obj: &Obj, field: &str, key: &str) -> Result<Option<String>, SpecError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(err(&format!("{field}.{key}"), "must not be empty")),
        Some(_) => Err(err(&format!("{field}.{key}"), "must be a string")),
    }
}

fn required(obj: &Obj, field: &str, key: &str) -> Result<String, SpecError> {
    string(obj, field, key)?.ok_or_else(|| err(&format!("{field}.{key}"), "missing"))
}

fn string_list(obj: &Obj, field: &str, key: &str) -> Result<Option<Vec<String>>, SpecError> {
    let name = format!("{field}.{key}");
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let mut names: Vec<String> = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                match v {
                    Value::String(s) if names.contains(s) => {
                        return Err(err(&format!("{name}[{i}]"), format!("names {s:?} twice")))
                    }
                    Value::String(s) if !s.is_empty() => names.push(s.clone()),
                    _ => return Err(err(&format!("{name}[{i}]"), "must be a non-empty string")),
                }
            }
            Ok(Some(names))
        }
        Some(_) => Err(err(&name, "must be a list of strings")),
    }
}

fn parse_score(spec: &Obj, roots: Roots<'_>) -> Result<ScoreSpec, SpecError> {
    let data_dir = roots.data_dir;
    check_fields(
        spec,
        "spec",
        &[
            "model",
            "version",
            "source",
            "sink",
            "carry",
            "batch_size",
            "outputs",
        ],
    )?;
    let model = required(spec, "spec", "model")?;
    let version = parse_version(spec.get("version"))?;
    let source = parse_source(spec.get("source"), "spec.source", roots)?;
    let sink = parse_sink(spec.get("sink"), "spec.sink", data_dir)?;
    check_sink_is_not_the_source(&source, &sink)?;
    let carry = string_list(spec, "spec", "carry")?.unwrap_or_default();
    let batch_size = match spec.get("batch_size") {
        None | Some(Value::Null) => DEFAULT_BATCH_SIZE,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_BATCH_SIZE as u64).contains(n))
            .ok_or_else(|| {
                err(
                    "spec.batch_size",
                    format!("must be a whole number from 1 to {MAX_BATCH_SIZE}"),
                )
            })? as usize,
    };
    let outputs = string_list(spec, "spec", "outputs")?;
    if outputs.as_ref().is_some_and(|o| o.is_empty()) {
        return Err(err("spec.outputs", "must name at least one output"));
    }
    Ok(ScoreSpec {
        model,
        version,
        source,
        sink,
        carry,
        batch_size,
        outputs,
    })
}

fn parse_version(v: Option<&Value>) -> Result<VersionRequest, SpecError> {
    match v {
        None | Some(Value::Null) => Ok(VersionRequest::Latest),
        Some(Value::String(s)) if s == "latest" => Ok(VersionRequest::Latest),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse()
            .map(VersionRequest::Specific)
            .map_err(|_| err("spec.version", "is too large")),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(VersionRequest::Label(s.clone())),
        Some(v) => v.as_u64().map(VersionRequest::Specific).ok_or_else(|| {
            err(
                "spec.version",
                "must be \"latest\", a version number or a label",
            )
        }),
    }
}

fn parse_train(spec: &Obj, roots: Roots<'_>) -> Result<TrainSpec, SpecError> {
    check_fields(
        spec,
        "spec",
        &["model", "source", "schema", "algorithm", "cv"],
    )?;
    let model = required(spec, "spec", "model")?;
    let source = parse_source(spec.get("source"), "spec.source", roots)?;
    let schema = spec
        .get("schema")
        .and_then(Value::as_object)
        .ok_or_else(|| err("spec.schema", "missing (an object with label and features)"))?;
    check_fields(schema, "spec.schema", &["label", "features", "categorical"])?;
    let label_obj = schema
        .get("label")
        .and_then(Value::as_object)
        .ok_or_else(|| err("spec.schema.label", "missing (an object with a key)"))?;
    check_fields(label_obj, "spec.schema.label", &["key", "values"])?;
    let label = required(label_obj, "spec.schema.label", "key")?;
    let label_values = match label_obj.get("values") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(err("spec.schema.label.values", "must be an object")),
    };
    let features_list = schema
        .get("features")
        .and_then(Value::as_array)
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            err(
                "spec.schema.features",
                "missing (a non-empty list of {\"key\": …})",
            )
        })?;
    let mut features = Vec::new();
    let mut categorical = string_list(schema, "spec.schema", "categorical")?.unwrap_or_default();
    for (i, f) in features_list.iter().enumerate() {
        let field = format!("spec.schema.features[{i}]");
        let o = f
            .as_object()
            .ok_or_else(|| err(&field, "must be an object with a key"))?;
        let key = required(o, &field, "key")?;
        if o.get("values").is_some_and(|v| !v.is_null()) {
            categorical.push(key.clone());
        }
        features.push(key);
    }
    if let Some(unknown) = categorical.iter().find(|c| !features.contains(c)) {
        return Err(err(
            "spec.schema.categorical",
            format!("{unknown:?} is not one of the features"),
        ));
    }
    let algorithm_spec = spec
        .get("algorithm")
        .cloned()
        .ok_or_else(|| err("spec.algorithm", "missing (an object with a name)"))?;
    let algorithm = algorithm_spec
        .as_object()
        .ok_or_else(|| err("spec.algorithm", "must be an object with a name"))
        .and_then(|o| required(o, "spec.algorithm", "name"))?;
    let cv = spec.get("cv").cloned().unwrap_or(Value::Null);
    let schema = Value::Object(schema.clone());
    Ok(TrainSpec {
        model,
        source,
        label,
        label_values,
        features,
        categorical,
        algorithm,
        algorithm_spec,
        cv,
        schema,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_stay_inside_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("in.csv"), "a\n1\n").unwrap();
        assert!(data_path("in.csv", "f", &data).is_ok());
        for bad in ["../x.csv", "/etc/passwd", "a/../../x.csv"] {
            let e = data_path(bad, "f", &data).unwrap_err().0;
            assert!(
                e.contains(bad) && !e.contains(&*data.to_string_lossy()),
                "{e}"
            );
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", data.join("escape")).unwrap();
            assert!(data_path("escape/passwd", "f", &data).is_err());
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_sink_never_writes_the_source_file_by_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(&real).unwrap();
        // The data directory as given is a link: the source resolves through it,
        // the sink is written with the real directory's absolute path.
        std::os::unix::fs::symlink(&real, dir.path().join("data")).unwrap();
        let data = dir.path().join("data");
        for f in ["in.csv", "in2.csv"] {
            std::fs::write(real.join(f), "a\n1\n").unwrap();
        }
        std::fs::copy(real.join("in.csv"), real.join("src.db")).unwrap();
        std::os::unix::fs::symlink("in2.csv", real.join("alias.csv")).unwrap();
        let e = |source: Value, sink: Value| {
            let body =
                json!({"kind": "score", "spec": {"model": "m", "source": source, "sink": sink}});
            parse_job(&body, &data).map(|_| ()).map_err(|e| e.0)
        };
        let absolute = real.join("in.csv").display().to_string();
        assert_eq!(
            e(json!({"path": "in.csv"}), json!({"path": absolute})),
            Err("spec.sink.path: is the source file".into())
        );
        assert_eq!(
            e(json!({"path": "alias.csv"}), json!({"path": "in2.csv"})),
            Err("spec.sink.path: is the source file".into())
        );
        let sql = json!({"url": "sqlite://src.db", "query": "select 1"});
        assert!(e(sql.clone(), json!({"path": "src.db", "format": "csv"}))
            .unwrap_err()
            .starts_with("spec.sink.path: is the source's database file (sqlite://src.db)"));
        assert!(e(
            json!({"path": "in.csv"}),
            json!({"url": "sqlite://in.csv", "table": "t"})
        )
        .unwrap_err()
        .starts_with("spec.sink.url: sqlite://in.csv is the source file (in.csv)"));
        let both = e(
            sql.clone(),
            json!({"url": "sqlite://src.db", "table": "t", "mode": "overwrite"}),
        )
        .unwrap_err();
        assert!(
            both.starts_with("spec.sink.url: sqlite://src.db is the database file spec.source.url sqlite://src.db reads"),
            "{both}"
        );
        // Another file, one not there yet, and another database are fine.
        assert_eq!(
            e(json!({"path": "in.csv"}), json!({"path": "in2.csv"})),
            Ok(())
        );
        assert_eq!(
            e(json!({"path": "alias.csv"}), json!({"path": "new.csv"})),
            Ok(())
        );
        assert_eq!(
            e(sql, json!({"url": "sqlite://out.db", "table": "t"})),
            Ok(())
        );
    }

    #[test]
    fn the_schema_and_its_label_refuse_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        std::fs::write(data.join("t.csv"), "x,y\n1,a\n").unwrap();
        let train = |schema: Value| {
            let body = json!({"kind": "train", "spec": {"model": "m", "source": {"path": "t.csv"},
                "schema": schema, "algorithm": {"name": "logistic_regression"}}});
            parse_job(&body, data).map(|_| ()).map_err(|e| e.0)
        };
        assert_eq!(
            train(json!({"label": {"key": "y"}, "features": [{"key": "x"}], "categorcal": ["x"]})),
            Err(
                "spec.schema.categorcal: unknown field (known: label, features, categorical)"
                    .into()
            )
        );
        assert_eq!(
            train(json!({"label": {"key": "y", "value": {"a": 1}}, "features": [{"key": "x"}]})),
            Err("spec.schema.label.value: unknown field (known: key, values)".into())
        );
        assert_eq!(
            train(
                json!({"label": {"key": "y", "values": {"a": 1}}, "features": [{"key": "x"}], "categorical": []})
            ),
            Ok(())
        );
    }

    #[test]
    fn errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        std::fs::write(data.join("in.csv"), "a\n1\n").unwrap();
        let e = |body: Value| parse_job(&body, data).unwrap_err().0;
        assert!(
            e(json!({"kind": "score", "spec": {"model": "m", "sink": {"path": "o.csv"}}}))
                .starts_with("spec.source: missing")
        );
        assert!(e(json!({"kind": "score", "spec": {"model": "m", "source": {"url": "mongodb://h/db", "query": "x"}, "sink": {"path": "o.csv"}}}))
            .contains("MongoDB is not supported"));
        assert!(e(json!({"kind": "score", "spec": {"model": "m", "source": {"path": "in.csv"}, "sink": {"path": "o.csv"}, "batch_size": 0}}))
            .starts_with("spec.batch_size"));
        assert!(e(json!({"kind": "score", "spec": {"model": "m", "source": {"path": "in.parquet"}, "sink": {"path": "o.csv"}}}))
            .starts_with("spec.source.path: no such file"));
        assert!(e(json!({"kind": "score", "spec": {"model": "m", "source": {"path": "in.csv"}, "sink": {"path": "o.xlsx"}}}))
            .contains(".parquet"));
        assert!(e(json!({"kind": "score", "spec": {"model": "m", "source": {"upload": "data"}, "sink": {"path": "o.csv"}}}))
            .starts_with("spec.source.upload: an uploaded file needs a multipart"));
        assert!(e(json!({"kind": "nope", "spec": {}})).starts_with("kind"));
        // A column carried twice would be written twice.
        assert_eq!(
            e(
                json!({"kind": "score", "spec": {"model": "m", "source": {"path": "in.csv"}, "sink": {"path": "o.csv"}, "carry": ["id", "a", "id"]}})
            ),
            "spec.carry[2]: names \"id\" twice"
        );
        let ok = parse_job(
            &json!({"kind": "score", "spec": {"model": "m", "version": 3, "source": {"path": "in.csv", "delimiter": ";"}, "sink": {"url": "sqlite://out.db", "table": "scores", "mode": "overwrite"}, "carry": ["id"]}}),
            data,
        )
        .unwrap();
        let JobSpec::Score(s) = ok else { panic!() };
        assert_eq!(s.version, VersionRequest::Specific(3));
        assert!(matches!(&s.source, SourceSpec::File(f) if f.csv.delimiter == b';'));
        // A tab given as a tab is a delimiter (it was "must not be empty").
        for tab in ["\t", "\\t"] {
            let spec = json!({"kind": "score", "spec": {"model": "m", "source": {"path": "in.csv", "delimiter": tab}, "sink": {"path": "o.csv"}}});
            let JobSpec::Score(s) = parse_job(&spec, data).unwrap() else {
                panic!()
            };
            assert!(
                matches!(&s.source, SourceSpec::File(f) if f.csv.delimiter == b'\t'),
                "{tab:?}"
            );
        }
        assert!(
            matches!(&s.sink, SinkSpec::Sql { url, mode: SinkMode::Overwrite, .. } if url.ends_with("/out.db"))
        );
    }

    /// A line break as the delimiter or the quote, or a delimiter that is also the
    /// quote, is refused at submission naming the field (the job failed later,
    /// listing a data row as a column name).
    #[test]
    fn csv_dialects_that_cannot_be_read_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        std::fs::write(data.join("in.csv"), "a;b\n1;2\n").unwrap();
        let spec = |source: Value, sink: Value| json!({"kind": "score", "spec": {"model": "m", "source": source, "sink": sink}});
        let e = |body: Value| parse_job(&body, data).unwrap_err().0;
        let out = json!({"path": "o.csv"});
        for (options, field) in [
            (
                json!({"delimiter": "\n"}),
                "spec.source.delimiter: '\\n' is a line break",
            ),
            (
                json!({"delimiter": "\r"}),
                "spec.source.delimiter: '\\r' is a line break",
            ),
            (
                json!({"quote": "\n"}),
                "spec.source.quote: '\\n' is a line break",
            ),
            (
                json!({"delimiter": "\""}),
                "spec.source.delimiter: '\"' is also the quote",
            ),
            (
                json!({"quote": ","}),
                "spec.source.quote: ',' is also the delimiter",
            ),
            (
                json!({"delimiter": ";", "quote": ";"}),
                "spec.source.quote: ';' is also the delimiter",
            ),
        ] {
            let mut source = json!({"path": "in.csv"});
            source
                .as_object_mut()
                .unwrap()
                .extend(options.as_object().unwrap().clone());
            let m = e(spec(source, out.clone()));
            assert!(m.starts_with(field), "{options}: {m}");
        }
        let m = e(spec(
            json!({"path": "in.csv"}),
            json!({"path": "o.csv", "delimiter": "\r"}),
        ));
        assert!(
            m.starts_with("spec.sink.delimiter: '\\r' is a line break"),
            "{m}"
        );
        // Any other pair is a dialect.
        let ok = spec(
            json!({"path": "in.csv", "delimiter": ";", "quote": "'"}),
            json!({"path": "o.csv", "delimiter": "|"}),
        );
        let JobSpec::Score(s) = parse_job(&ok, data).unwrap() else {
            panic!()
        };
        assert!(
            matches!(&s.source, SourceSpec::File(f) if f.csv.delimiter == b';' && f.csv.quote == b'\'')
        );
    }

    /// A file sink the job could never create is a 400 at submission naming only
    /// the path given (it failed the job when it ran, "entity already exists"): a
    /// directory on its way that is a file, a name longer than 255 bytes.
    #[test]
    fn a_sink_that_cannot_be_created_is_refused_at_submission() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        std::fs::write(data.join("small.csv"), "a\n1\n").unwrap();
        std::fs::create_dir(data.join("out")).unwrap();
        let e = |sink: &str| {
            let body = json!({"kind": "score", "spec": {"model": "m",
                "source": {"path": "small.csv"}, "sink": {"path": sink}}});
            parse_job(&body, data).map(|_| ()).map_err(|e| e.0)
        };
        let long = format!("{}.csv", "a".repeat(252));
        for (sink, want) in [
            (
                "small.csv/x.csv".to_string(),
                "spec.sink.path: \"small.csv/x.csv\" cannot be created: a directory on its way is a file",
            ),
            (
                "small.csv/deeper/x.csv".to_string(),
                "spec.sink.path: \"small.csv/deeper/x.csv\" cannot be created",
            ),
            (
                long.clone(),
                "a file or directory name may have at most 255 bytes",
            ),
            (
                format!("out/{long}"),
                "a file or directory name may have at most 255 bytes",
            ),
            (
                format!("{}/x.csv", "d".repeat(256)),
                "a file or directory name may have at most 255 bytes",
            ),
        ] {
            let m = e(&sink).unwrap_err();
            assert!(m.contains(want), "{sink}: {m}");
            assert!(m.starts_with("spec.sink.path: "), "{m}");
            assert!(!m.contains(&*data.to_string_lossy()), "{m}");
        }
        // 255 bytes is a name; new directories on the way are made by the job.
        assert_eq!(e(&format!("{}.csv", "a".repeat(251))), Ok(()));
        assert_eq!(e("out/new/deeper/x.csv"), Ok(()));
    }

    /// Two sinks clash when two jobs writing them at once would lose one's rows:
    /// one file by any name, one table that either overwrites.
    #[cfg(unix)]
    #[test]
    fn sinks_clash_when_they_write_one_output() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        std::fs::create_dir(data.join("o")).unwrap();
        std::os::unix::fs::symlink("o", data.join("alias")).unwrap();
        let sink = |v: Value| parse_sink(Some(&v), "spec.sink", data).unwrap();
        let file = sink(json!({"path": "o/same.csv"}));
        assert!(file.clashes_with(&sink(json!({"path": "o/same.csv"}))));
        assert!(file.clashes_with(&sink(json!({"path": "alias/same.csv"}))));
        let absolute = data.join("o/same.csv").display().to_string();
        assert!(file.clashes_with(&sink(json!({"path": absolute}))));
        assert!(!file.clashes_with(&sink(json!({"path": "o/other.csv"}))));
        let table = |url: &str, table: &str, mode: &str| {
            sink(json!({"url": url, "table": table, "mode": mode}))
        };
        let over = table("sqlite://out.db", "scores", "overwrite");
        assert!(over.clashes_with(&table("sqlite://out.db", "SCORES", "append")));
        assert!(table("sqlite://out.db", "scores", "append").clashes_with(&over));
        let absolute = format!("sqlite://{}", data.join("out.db").display());
        assert!(over.clashes_with(&table(&absolute, "scores", "overwrite")));
        // Appends keep both jobs' rows; other tables and databases are others.
        assert!(
            !table("sqlite://out.db", "scores", "append").clashes_with(&table(
                "sqlite://out.db",
                "scores",
                "append"
            ))
        );
        assert!(!over.clashes_with(&table("sqlite://out.db", "other", "overwrite")));
        assert!(!over.clashes_with(&table("sqlite://other.db", "scores", "overwrite")));
        let pg = table("postgres://h/db", "scores", "overwrite");
        assert!(pg.clashes_with(&table("postgres://h/db", "scores", "append")));
        assert!(!pg.clashes_with(&table("postgres://h/other", "scores", "overwrite")));
        assert!(!pg.clashes_with(&file));
    }

    /// A table named in its database's default schema is the table named alone:
    /// PostgreSQL's `public` (and the URL user's own schema, first on the default
    /// search path), SQLite's `main`, MySQL's database of the URL. Names compared
    /// without case, as before.
    #[test]
    fn sinks_clash_on_one_table_by_its_schema_qualified_name() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let sink = |url: &str, table: &str| {
            let v = json!({"url": url, "table": table, "mode": "overwrite"});
            parse_sink(Some(&v), "spec.sink", data).unwrap()
        };
        let clash = |a: (&str, &str), b: (&str, &str)| {
            let (a, b) = (sink(a.0, a.1), sink(b.0, b.1));
            assert_eq!(a.clashes_with(&b), b.clashes_with(&a));
            a.clashes_with(&b)
        };
        let pg = "postgres://u:p@h/db";
        assert!(clash((pg, "scores"), (pg, "public.scores")));
        assert!(clash((pg, "scores"), (pg, "PUBLIC.Scores")));
        assert!(clash((pg, "scores"), (pg, "u.scores")));
        assert!(clash((pg, "public.scores"), (pg, "public.scores")));
        assert!(!clash((pg, "scores"), (pg, "other.scores")));
        assert!(!clash((pg, "public.scores"), (pg, "u.scores")));
        assert!(!clash((pg, "public.scores"), (pg, "public.other")));
        assert!(clash(
            ("sqlite://bigt.db", "bigt"),
            ("sqlite://bigt.db", "main.bigt")
        ));
        assert!(clash(
            ("sqlite://bigt.db", "MAIN.bigt"),
            ("sqlite://bigt.db", "main.BIGT")
        ));
        assert!(!clash(
            ("sqlite://bigt.db", "main.bigt"),
            ("sqlite://bigt.db", "main.other")
        ));
        let my = "mysql://u:p@h:3306/db";
        assert!(clash((my, "scores"), (my, "db.scores")));
        assert!(clash(
            (my, "scores"),
            ("mariadb://u:p@h:3306/other", "db.scores")
        ));
        assert!(clash(
            (my, "other.scores"),
            ("mysql://u:p@h:3306/other", "scores")
        ));
        assert!(!clash((my, "scores"), (my, "other.scores")));
        assert!(!clash(
            (my, "scores"),
            ("mysql://u:p@h:3306/other", "scores")
        ));
        assert!(!clash(
            (my, "scores"),
            ("mysql://u:p@elsewhere:3306/other", "db.scores")
        ));
    }
}
