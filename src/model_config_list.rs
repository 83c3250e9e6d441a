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
    /// Reads a config file: TOML when its name ends in `.toml`, TF Serving text format
    /// otherwise. Relative base paths are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<ModelConfigList, ModelConfigListError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelConfigListError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let parsed = if is_toml {
            Self::parse_toml(&text)
        } else {
            Self::parse_text_format(&text)
        };
        let mut list = parsed.map_err(|reason| ModelConfigListError::Invalid {
            path: path.display().to_string(),
            reason,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for m in &mut list.models {
            if m.base_path.is_relative() {
                m.base_path = base.join(&m.base_path);
            }
        }
        Ok(list)
    }

    /// Parses ferroserve's TOML form (`[[models]]` tables).
    pub fn parse_toml(text: &str) -> Result<ModelConfigList, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            models: Vec<Entry>,
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
        let list = ModelConfigList {
            models: file
                .models
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
        Ok(list)
    }

    /// Parses TF Serving's `ModelServerConfig` text format (`model_config_list { … }`).
    /// (Other TF Serving text-format files read through [`crate::pbtext`].)
    pub fn parse_text_format(text: &str) -> Result<ModelConfigList, String> {
        let root = parse_text_fields(text)?;
        let list = interpret_server_config(&root)?;
        list.validate()?;
        Ok(list)
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
            // (An empty `specific` list serves no version, as in TF Serving; the
            // manager says so in the model's status, `policy_warning`, not at
            // every poll of this file.)
            if let Some(VersionPolicy::Latest(0)) = &m.version_policy {
                return Err(format!(
                    "model {:?}: latest num_versions must be at least 1",
                    m.name
                ));
            }
        }
        Ok(())
    }
}

// ---- TF Serving's ModelServerConfig ----

fn interpret_server_config(root: &[Field]) -> Result<ModelConfigList, String> {
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
    if !found && !root.is_empty() {
        return Err("no model_config_list found".into());
    }
    Ok(list)
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
