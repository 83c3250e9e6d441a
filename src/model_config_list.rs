//! The multi-model config file: a list of models, each with its base path, version
//! policy and labels, in ferroserve's TOML or in TF Serving's `model_config_list`
//! protobuf text format (a TF Serving `models.config`).
//!
//! ```toml
//! [[models]]
//! name = "iris"
//! base_path = "/models/iris"        # relative paths are relative to this file
//! version_policy = { latest = 2 }   # optional, as in a model's config.toml
//! labels = { stable = 1 }           # optional
//! ```
//! ```text
//! model_config_list {
//!   config {
//!     name: "iris"
//!     base_path: "/models/iris"
//!     model_platform: "tensorflow"
//!     model_version_policy { specific { versions: 1 versions: 2 } }
//!     version_labels { key: "stable" value: 1 }
//!   }
//! }
//! ```
//! A file that holds no list at all (empty, or only comments and blank lines) is no
//! config: [`ModelConfigList::read`] answers `None` and the watcher takes no action,
//! as TF Serving's `ServerCore::ReloadConfig` does for an empty `ModelServerConfig`
//! ("Taking no action for empty config"). An explicit empty list, `model_config_list
//! { }` or TOML's `models = []`, is a list of no models and unloads every model.
//!
//! [`ModelConfigList`] is also what the gRPC `HandleReloadConfigRequest` builds from its
//! protobuf message, so a reload from the file and one over gRPC take the same path
//! (`crate::sources::Sources::apply_config_list`).
//!
//! Invariant: parsing never panics and a file that does not parse is refused whole,
//! so the list in force is never replaced by half of a new one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model_config::VersionPolicy;
use crate::pbtext::{integer, message, once, parse_text_fields, string, unknown, Field};
use crate::repository::MAX_VERSION;

/// Models to serve besides those found in the repository root.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelConfigList {
    pub models: Vec<ModelListEntry>,
}

/// One model of the list. Policy and labels, when given, override those of the
/// model's own `config.toml`; everything else (timeouts, feature names) stays there.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelListEntry {
    pub name: String,
    /// The model's directory, holding `<version>/` subdirectories.
    pub base_path: PathBuf,
    /// TF Serving's `model_platform`, kept for status; the artifact decides the backend.
    pub model_platform: Option<String>,
    pub version_policy: Option<VersionPolicy>,
    /// Label name → version; empty means "use the labels of config.toml".
    pub labels: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelConfigListError {
    #[error("cannot read model config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("model config file {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
}

/// Whether a name can be a model directory name: `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn is_valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ModelConfigList {
    /// The largest model config file read (64 MiB: thousands of models).
    pub const MAX_FILE_BYTES: u64 = 64 << 20;

    /// Reads a config file: TOML when its name ends in `.toml`, TF Serving text format
    /// otherwise. Relative base paths are resolved against the file's directory. A
    /// file with no list in it (see [`ModelConfigList::read`]) is an empty list: at
    /// start-up nothing is in force that it could leave in force.
    pub fn load(path: &Path) -> Result<ModelConfigList, ModelConfigListError> {
        Ok(Self::read(path)?.unwrap_or_default())
    }

    /// Reads a config file as [`ModelConfigList::load`] does, but answers `None`
    /// when the file holds no list at all: it is empty or holds only comments and
    /// blank lines. The watcher then takes no action (TF Serving's "Taking no
    /// action for empty config"), where an explicit `model_config_list { }` (TOML:
    /// `models = []`) is a list of no models.
    pub fn read(path: &Path) -> Result<Option<ModelConfigList>, ModelConfigListError> {
        let bytes = crate::regular_file::read(path, Self::MAX_FILE_BYTES).map_err(|e| {
            ModelConfigListError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        Self::from_file_bytes(path, &bytes)
    }

    /// [`ModelConfigList::read`] of the file at `path` whose contents are `bytes`
    /// (the watcher reads them itself, to tell one bad file from another).
    pub fn from_file_bytes(
        path: &Path,
        bytes: &[u8],
    ) -> Result<Option<ModelConfigList>, ModelConfigListError> {
        let invalid = |reason: String| ModelConfigListError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| invalid(format!("the file is not UTF-8 text: {e}")))?;
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let parsed = if is_toml {
            toml_contents(text)
        } else {
            text_format_contents(text)
        };
        let Some(mut list) = parsed.map_err(invalid)? else {
            return Ok(None);
        };
        let base = path.parent().unwrap_or(Path::new("."));
        for m in &mut list.models {
            if m.base_path.is_relative() {
                m.base_path = base.join(&m.base_path);
            }
        }
        Ok(Some(list))
    }

    /// Parses ferroserve's TOML form (`[[models]]` tables); a text with no `models`
    /// is an empty list.
    pub fn parse_toml(text: &str) -> Result<ModelConfigList, String> {
        Ok(toml_contents(text)?.unwrap_or_default())
    }

    /// Parses TF Serving's `ModelServerConfig` text format (`model_config_list { … }`);
    /// a text with no field is an empty list.
    /// (Other TF Serving text-format files read through [`crate::pbtext`].)
    pub fn parse_text_format(text: &str) -> Result<ModelConfigList, String> {
        Ok(text_format_contents(text)?.unwrap_or_default())
    }

    /// Checks that every base path lies under one of `roots` (after resolving
    /// symbolic links), so a config file or a gRPC `HandleReloadConfigRequest`
    /// cannot serve arbitrary server directories.
    pub fn check_roots(&self, roots: &[PathBuf]) -> Result<(), String> {
        for m in &self.models {
            if !crate::paths::is_under_roots(&m.base_path, roots) {
                return Err(format!(
                    "model {:?}: base path {} is outside the allowed model roots \
                     (the repository, and the config file's directory or --allowed-model-roots)",
                    m.name,
                    m.base_path.display()
                ));
            }
        }
        Ok(())
    }

    /// Checks names, paths, policies and labels; every problem is an error, so a
    /// list is used whole or not at all.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for m in &self.models {
            if !is_valid_model_name(&m.name) {
                return Err(format!(
                    "model name {:?} is not valid: use letters, digits, '.', '_' and '-', \
                     not starting with '.'",
                    m.name
                ));
            }
            if !seen.insert(m.name.as_str()) {
                return Err(format!("model {:?} is listed twice", m.name));
            }
            if m.base_path.as_os_str().is_empty() {
                return Err(format!("model {:?} has an empty base_path", m.name));
            }
            // A NUL cannot be in a path the system opens, and no model directory
            // sensibly holds another control character; said escaped (`{:?}`), so a
            // log line never carries one raw.
            if let Some(c) = m
                .base_path
                .to_string_lossy()
                .chars()
                .find(|c| c.is_control())
            {
                return Err(format!(
                    "model {:?}: base_path {:?} holds the control character U+{:04X}, \
                     which no model directory's path may hold",
                    m.name,
                    m.base_path,
                    u32::from(c)
                ));
            }
            // (An empty `specific` list serves no version, as in TF Serving; the
            // manager says so in the model's status, `policy_warning`, not at
            // every poll of this file.)
            match &m.version_policy {
                Some(VersionPolicy::Latest(0)) => {
                    return Err(format!(
                        "model {:?}: latest num_versions must be at least 1",
                        m.name
                    ))
                }
                Some(VersionPolicy::Specific(versions)) => {
                    if let Some(v) = versions.iter().find(|v| !is_version_number(**v)) {
                        return Err(format!(
                            "model {:?}: the specific policy names version {v}; versions \
                             are from 1 to {MAX_VERSION} (no directory is version {v})",
                            m.name
                        ));
                    }
                }
                _ => {}
            }
            // One rule for labels wherever they are declared (`config.toml` too):
            // a name a REST path carries as it is, a version that can exist.
            for (label, &version) in &m.labels {
                crate::model_config::check_label(label, version)
                    .map_err(|e| format!("model {:?}: {e}", m.name))?;
            }
        }
        Ok(())
    }
}

/// Whether a version can exist: a version directory's number is 1 or more, and at
/// most [`MAX_VERSION`] (`crate::repository::version_of_dir`).
fn is_version_number(v: u64) -> bool {
    (1..=MAX_VERSION).contains(&v)
}

/// ferroserve's TOML form: `None` when the text sets no `models` (it is empty or
/// only comments), `models = []` an empty list.
fn toml_contents(text: &str) -> Result<Option<ModelConfigList>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        models: Option<Vec<Entry>>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        name: String,
        base_path: PathBuf,
        model_platform: Option<String>,
        version_policy: Option<VersionPolicy>,
        #[serde(default)]
        labels: BTreeMap<String, u64>,
    }
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    let Some(models) = file.models else {
        return Ok(None);
    };
    let list = ModelConfigList {
        models: models
            .into_iter()
            .map(|e| ModelListEntry {
                name: e.name,
                base_path: e.base_path,
                model_platform: e.model_platform,
                version_policy: e.version_policy,
                labels: e.labels,
            })
            .collect(),
    };
    list.validate()?;
    Ok(Some(list))
}

/// TF Serving's text format: `None` when the text has no field at all (it is
/// empty or only comments), as TF Serving reads it to a `ModelServerConfig` with
/// no config set.
fn text_format_contents(text: &str) -> Result<Option<ModelConfigList>, String> {
    let root = parse_text_fields(text)?;
    let Some(list) = interpret_server_config(&root)? else {
        return Ok(None);
    };
    list.validate()?;
    Ok(Some(list))
}

// ---- TF Serving's ModelServerConfig ----

fn interpret_server_config(root: &[Field]) -> Result<Option<ModelConfigList>, String> {
    let mut list = ModelConfigList::default();
    let mut found = false;
    let mut seen = Vec::new();
    for f in root {
        match f.name.as_str() {
            "model_config_list" => {
                once(&mut seen, f)?;
                found = true;
                for c in message(f)? {
                    match c.name.as_str() {
                        "config" => list
                            .models
                            .push(interpret_model_config(message(c)?, c.line)?),
                        _ => return Err(unknown(c, "model_config_list", &["config"])),
                    }
                }
            }
            "custom_model_config" => {
                return Err(format!(
                    "line {}: custom_model_config is not supported; use model_config_list",
                    f.line
                ))
            }
            _ => {
                return Err(unknown(
                    f,
                    "the model server config",
                    &["model_config_list"],
                ))
            }
        }
    }
    // Every other field was refused above: a root without the list has no field.
    Ok(found.then_some(list))
}

fn interpret_model_config(fields: &[Field], line: usize) -> Result<ModelListEntry, String> {
    const KNOWN: [&str; 7] = [
        "name",
        "base_path",
        "model_platform",
        "model_version_policy",
        "version_labels",
        "model_type",
        "logging_config",
    ];
    let mut name = None;
    let mut base_path = None;
    let mut model_platform = None;
    let mut version_policy = None;
    let mut labels = BTreeMap::new();
    let mut seen = Vec::new();
    for f in fields {
        if f.name != "version_labels" {
            once(&mut seen, f)?;
        }
        match f.name.as_str() {
            "name" => name = Some(string(f)?),
            "base_path" => base_path = Some(PathBuf::from(string(f)?)),
            "model_platform" => model_platform = Some(string(f)?),
            "model_version_policy" => version_policy = Some(interpret_policy(f)?),
            "version_labels" => {
                let (mut key, mut value) = (None, None);
                let mut seen = Vec::new();
                for kv in message(f)? {
                    once(&mut seen, kv)?;
                    match kv.name.as_str() {
                        "key" => key = Some(string(kv)?),
                        "value" => value = Some(integer(kv)?),
                        _ => return Err(unknown(kv, "version_labels", &["key", "value"])),
                    }
                }
                let (Some(key), Some(value)) = (key, value) else {
                    return Err(format!(
                        "line {}: version_labels needs a key and a value",
                        f.line
                    ));
                };
                // A map's entry: a key given again replaces the earlier one, as
                // protobuf's text format (and so TF Serving) reads it.
                labels.insert(key, value);
            }
            // Known to TF Serving but without effect here: accepted, with a warning,
            // so that a TF Serving file works unchanged.
            "model_type" | "logging_config" => {
                tracing::warn!("model config file line {}: {} is ignored", f.line, f.name)
            }
            _ => return Err(unknown(f, "config", &KNOWN)),
        }
    }
    let name = name.ok_or_else(|| format!("line {line}: a config has no name"))?;
    let base_path =
        base_path.ok_or_else(|| format!("line {line}: config {name:?} has no base_path"))?;
    Ok(ModelListEntry {
        name,
        base_path,
        model_platform,
        version_policy,
        labels,
    })
}

/// TF Serving's `ServableVersionPolicy`: an empty one is `latest` (its default);
/// `latest` serves at least one version (`num_versions: 0` is 1, as
/// `std::max(num_versions, 1)` there); an empty `specific` serves none.
fn interpret_policy(f: &Field) -> Result<VersionPolicy, String> {
    let fields = message(f)?;
    if fields.is_empty() {
        return Ok(VersionPolicy::Latest(1));
    }
    let [choice] = fields else {
        return Err(format!(
            "line {}: model_version_policy must hold exactly one of latest, all, specific",
            f.line
        ));
    };
    let inner = message(choice)?;
    match choice.name.as_str() {
        "latest" => {
            let mut n = 1;
            let mut seen = Vec::new();
            for x in inner {
                once(&mut seen, x)?;
                match x.name.as_str() {
                    "num_versions" => n = integer(x)?,
                    _ => return Err(unknown(x, "latest", &["num_versions"])),
                }
            }
            let n =
                usize::try_from(n).map_err(|_| format!("line {}: too many versions", f.line))?;
            Ok(VersionPolicy::Latest(n.max(1)))
        }
        "all" => match inner.first() {
            Some(x) => Err(unknown(x, "all", &[])),
            None => Ok(VersionPolicy::All),
        },
        "specific" => {
            let mut versions = Vec::new();
            for x in inner {
                match x.name.as_str() {
                    "versions" => versions.push(integer(x)?),
                    _ => return Err(unknown(x, "specific", &["versions"])),
                }
            }
            Ok(VersionPolicy::Specific(versions))
        }
        _ => Err(unknown(
            choice,
            "model_version_policy",
            &["latest", "all", "specific"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TFS: &str = r#"
# A TF Serving models.config
model_config_list {
  config {
    name: 'iris'
    base_path: "/models/iris"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config: {
    name: "other", base_path: "/models/" "other";
    model_version_policy: { latest: { num_versions: 2 } }
  }
  config { name: "all" base_path: "rel" model_version_policy { all {} } }
  config { name: "list" base_path: "/l" model_version_policy { specific { versions: [3, 4] } } }
}
"#;

    #[test]
    fn parses_tf_serving_text_format() {
        let list = ModelConfigList::parse_text_format(TFS).unwrap();
        assert_eq!(list.models.len(), 4);
        let iris = &list.models[0];
        assert_eq!(iris.name, "iris");
        assert_eq!(iris.base_path, PathBuf::from("/models/iris"));
        assert_eq!(iris.model_platform.as_deref(), Some("tensorflow"));
        assert_eq!(
            iris.version_policy,
            Some(VersionPolicy::Specific(vec![1, 2]))
        );
        assert_eq!(iris.labels["stable"], 1);
        assert_eq!(iris.labels["canary"], 2);
        let other = &list.models[1];
        assert_eq!(other.base_path, PathBuf::from("/models/other"));
        assert_eq!(other.version_policy, Some(VersionPolicy::Latest(2)));
        assert_eq!(list.models[2].version_policy, Some(VersionPolicy::All));
        assert_eq!(
            list.models[3].version_policy,
            Some(VersionPolicy::Specific(vec![3, 4]))
        );
        assert_eq!(
            ModelConfigList::parse_text_format("").unwrap(),
            ModelConfigList::default()
        );
    }

    /// Protobuf's text format lets a message field drop the colon and gives a
    /// repeated field its values as a list: TF Serving reads these forms too.
    #[test]
    fn message_lists_without_a_colon_parse() {
        let list = ModelConfigList::parse_text_format(
            "model_config_list { config [{ name: \"a\" base_path: \"/a\"\n\
               version_labels [{ key: \"stable\" value: 1 }, < key: \"canary\" value: 2 >] },\n\
             { name: \"b\" base_path: \"/b\" version_labels: [{ key: \"s\", value: 3 }] }] }",
        )
        .unwrap();
        let names: Vec<&str> = list.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(list.models[0].labels["stable"], 1);
        assert_eq!(list.models[0].labels["canary"], 2);
        assert_eq!(list.models[1].labels["s"], 3);
        // Scalars still need the colon: `name ["a"]` is not a message list.
        let err = ModelConfigList::parse_text_format(
            "model_config_list { config { name [\"a\"] base_path: \"/a\" } }",
        )
        .unwrap_err();
        assert!(err.contains("expected ':'"), "{err}");
    }

    /// No path the system opens holds a NUL; a control character in a base path is
    /// a mistake. Either form of the file, and a list built any other way (gRPC),
    /// is refused naming the model, the character escaped.
    #[test]
    fn a_base_path_with_a_control_character_is_refused() {
        for (text, toml) in [
            (
                r#"model_config_list { config { name: "x" base_path: "models/x\000y" } }"#,
                false,
            ),
            (
                r#"model_config_list { config { name: "x" base_path: "models/x\ny" } }"#,
                false,
            ),
            (
                "[[models]]\nname = \"x\"\nbase_path = \"models/x\\u0000y\"\n",
                true,
            ),
        ] {
            let err = if toml {
                ModelConfigList::parse_toml(text).unwrap_err()
            } else {
                ModelConfigList::parse_text_format(text).unwrap_err()
            };
            assert!(
                err.contains("model \"x\"") && err.contains("control character"),
                "{err}"
            );
            assert!(!err.chars().any(char::is_control), "said escaped: {err:?}");
        }
        let list = ModelConfigList {
            models: vec![ModelListEntry {
                name: "x".into(),
                base_path: "/m/x\u{7f}".into(),
                model_platform: None,
                version_policy: None,
                labels: BTreeMap::new(),
            }],
        };
        assert!(list.validate().unwrap_err().contains("U+007F"));
    }

    #[test]
    fn refuses_unknown_fields_and_malformed_text_with_a_line_number() {
        let cases = [
            ("model_config_list { config { name: \"a\" base_path: \"/a\" colour: \"red\" } }", "unknown field \"colour\""),
            ("model_config_list { config { name: \"a\" } }", "no base_path"),
            ("model_config_list { config { base_path: \"/a\" } }", "no name"),
            ("model_config_list { config { name: \"a\" base_path: \"/a\"", "end of file"),
            ("model_config_list { config { name: a base_path: \"/a\" } }", "quoted string"),
            ("model_config_list {\n config { name: \"a\" base_path: \"/a\"\n model_version_policy { newest {} } } }", "line 3"),
            ("model_config_list { config { name: \"a\" base_path: \"/a\" model_version_policy { latest { num_versions: -1 } } } }", "non-negative"),
            ("model_config_list { config { name: \"../x\" base_path: \"/a\" } }", "not valid"),
            ("model_config_list { config { name: \"a\" base_path: \"/a\" } config { name: \"a\" base_path: \"/b\" } }", "twice"),
            ("model_config_list { config { name: \"a\" base_path: \"/a\" version_labels { key: \"s\" } } }", "key and a value"),
            ("custom_model_config { }", "not supported"),
            ("model_config_list { config { name: \"a\" name: \"b\" base_path: \"/a\" } }", "line 1: non-repeated field \"name\" is specified multiple times"),
            ("model_config_list { }\nmodel_config_list { config { name: \"a\" base_path: \"/a\" } }", "line 2: non-repeated field \"model_config_list\""),
            ("model_config_list { config { name: \"a\" base_path: \"/a\" model_version_policy { all {} } model_version_policy { all {} } } }", "multiple times"),
            ("model_config_list { config { name: \"a\" base_path: \"/a\" version_labels { key: \"s\" key: \"t\" value: 1 } } }", "multiple times"),
            ("model_config_list { config { name: \"unterminated } }", "unterminated"),
            ("model_config_list { config { name: \"a\" base_path: \"/a\" model_version_policy { latest {} all {} } } }", "exactly one"),
        ];
        for (text, want) in cases {
            let err = ModelConfigList::parse_text_format(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }

    /// TF Serving's readings of policies ferroserve refused before: an empty
    /// policy is `latest` 1, `num_versions: 0` is 1, an empty `specific` serves
    /// none (with a warning).
    #[test]
    fn empty_policies_read_as_tf_serving_reads_them() {
        let policy = |p: &str| {
            ModelConfigList::parse_text_format(&format!(
                "model_config_list {{ config {{ name: \"a\" base_path: \"/a\" model_version_policy {p} }} }}"
            ))
            .map(|l| l.models[0].version_policy.clone())
        };
        assert_eq!(policy("{ }"), Ok(Some(VersionPolicy::Latest(1))));
        assert_eq!(
            policy("{ latest { num_versions: 0 } }"),
            Ok(Some(VersionPolicy::Latest(1)))
        );
        assert_eq!(
            policy("{ specific { } }"),
            Ok(Some(VersionPolicy::Specific(vec![])))
        );
        assert_eq!(
            VersionPolicy::Specific(vec![]).select(&[1, 2]),
            Vec::<u64>::new()
        );
    }

    /// `version_labels` is a map: a key given again keeps its last value, as in
    /// protobuf's text format (TF Serving).
    #[test]
    fn a_label_given_again_keeps_its_last_version() {
        let list = ModelConfigList::parse_text_format(
            "model_config_list { config { name: \"a\" base_path: \"/a\"\n\
             version_labels { key: \"stable\" value: 1 }\n\
             version_labels { key: \"stable\" value: 2 } } }",
        )
        .unwrap();
        assert_eq!(list.models[0].labels["stable"], 2);
        assert_eq!(list.models[0].labels.len(), 1);
    }

    #[test]
    fn hostile_nesting_is_refused_not_overflowed() {
        let text = format!(
            "model_config_list {}{}",
            "{ x ".repeat(10_000),
            "}".repeat(10_000)
        );
        assert!(ModelConfigList::parse_text_format(&text).is_err());
    }

    #[test]
    fn parses_toml_form_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.toml");
        std::fs::write(
            &path,
            "[[models]]\nname = \"iris\"\nbase_path = \"iris_dir\"\nversion_policy = \"all\"\nlabels = { stable = 1 }\n",
        )
        .unwrap();
        let list = ModelConfigList::load(&path).unwrap();
        assert_eq!(list.models[0].base_path, dir.path().join("iris_dir"));
        assert_eq!(list.models[0].version_policy, Some(VersionPolicy::All));
        assert_eq!(list.models[0].labels["stable"], 1);
        assert!(ModelConfigList::parse_toml(
            "[[models]]\nname = \"a\"\nbase_path = \"/a\"\ncolour = 1"
        )
        .is_err());
        let tf = dir.path().join("models.config");
        std::fs::write(
            &tf,
            "model_config_list { config { name: \"x\" base_path: \"x\" } }",
        )
        .unwrap();
        assert_eq!(
            ModelConfigList::load(&tf).unwrap().models[0].base_path,
            dir.path().join("x")
        );
    }

    /// A file with no list at all is no config (the watcher takes no action); an
    /// explicit empty list is a list of no models. At start-up both are empty.
    #[test]
    fn an_empty_or_comment_only_file_holds_no_list() {
        let dir = tempfile::tempdir().unwrap();
        let read = |name: &str, text: &str| {
            ModelConfigList::from_file_bytes(&dir.path().join(name), text.as_bytes())
        };
        for name in ["models.config", "list.toml"] {
            for text in ["", "\n  \n", "# a comment\n# another\n"] {
                assert_eq!(read(name, text), Ok(None), "{name} {text:?}");
            }
        }
        let empty = Some(ModelConfigList::default());
        assert_eq!(
            read("models.config", "model_config_list { }"),
            Ok(empty.clone())
        );
        assert_eq!(
            read("models.config", "# c\nmodel_config_list: {}"),
            Ok(empty.clone())
        );
        assert_eq!(read("list.toml", "# c\nmodels = []"), Ok(empty));
        let path = dir.path().join("models.config");
        std::fs::write(&path, "# nothing yet\n").unwrap();
        assert_eq!(ModelConfigList::read(&path), Ok(None));
        assert_eq!(ModelConfigList::load(&path), Ok(ModelConfigList::default()));
        let err = read("models.config", "model_config_list {")
            .unwrap_err()
            .to_string();
        assert!(err.contains("models.config"), "{err}");
        let err = ModelConfigList::from_file_bytes(&path, b"\xff\xfe").unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    /// Version 0 can be no version directory, and a label name with `/`, `:`, a
    /// space (or none at all) cannot be put in `/v1/models/M/labels/L`: refused in
    /// both forms, naming the model, as `[labels]` in `config.toml` is.
    #[test]
    fn versions_and_labels_no_request_can_reach_are_refused() {
        let text = |inner: &str| {
            ModelConfigList::parse_text_format(&format!(
                "model_config_list {{ config {{ name: \"m\" base_path: \"/m\" {inner} }} }}"
            ))
        };
        let toml = |inner: &str| {
            ModelConfigList::parse_toml(&format!(
                "[[models]]\nname = \"m\"\nbase_path = \"/m\"\n{inner}\n"
            ))
        };
        let cases = [
            (
                text("model_version_policy { specific { versions: 1 versions: 0 } }"),
                "version 0",
            ),
            (
                text("model_version_policy { specific { versions: 9007199254740992 } }"),
                "version 9007199254740992",
            ),
            (toml("version_policy = { specific = [0] }"), "version 0"),
            (text("version_labels { key: \"x/y\" value: 1 }"), "\"x/y\""),
            (text("version_labels { key: \"\" value: 1 }"), "\"\""),
            (text("version_labels { key: \"a b\" value: 1 }"), "\"a b\""),
            (text("version_labels { key: \"a:b\" value: 1 }"), "\"a:b\""),
            (
                text("version_labels { key: \"stable\" value: 0 }"),
                "version 0",
            ),
            (toml("labels = { \"x/y\" = 1 }"), "\"x/y\""),
            (toml("labels = { \"\" = 1 }"), "\"\""),
            (toml("labels = { stable = 0 }"), "version 0"),
        ];
        for (parsed, want) in cases {
            let err = parsed.unwrap_err();
            assert!(
                err.contains("model \"m\"") && err.contains(want),
                "{err:?} lacks {want:?}"
            );
        }
        // What a REST path carries is accepted.
        let list = text(
            "model_version_policy { specific { versions: 9007199254740991 } }\n\
             version_labels { key: \"v1.2_rc-3\" value: 1 }",
        )
        .unwrap();
        assert_eq!(list.models[0].labels["v1.2_rc-3"], 1);
    }

    #[test]
    fn model_names() {
        for ok in ["iris", "iris_lr", "a.b-c", "V2"] {
            assert!(is_valid_model_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a b", "a\\b", "é"] {
            assert!(!is_valid_model_name(bad), "{bad}");
        }
    }
}
