//! A training job's schema, read from its spec and checked: the label and its
//! value map, each feature (numeric or categorical, its index map, what a missing
//! value becomes), and the columns the source must have.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;

use crate::jobs::spec::TrainSpec;

/// What to do with a missing value (an empty CSV cell, SQL NULL, JSON null).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    Error,
    Mean,
    MostFrequent,
}

/// One feature as the schema gives it.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureSpec {
    pub key: String,
    pub categorical: bool,
    /// A categorical feature's index map, as categories in index order.
    pub categories: Option<Vec<String>>,
    pub missing: Missing,
}

/// The schema of a training spec, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Schema {
    pub label: String,
    /// `schema.label.values`: source value → class.
    pub label_map: Option<BTreeMap<String, Class>>,
    pub features: Vec<FeatureSpec>,
}

/// A class label: an integer when the label map (or the data) gives integers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum Class {
    Int(i64),
    Text(String),
}

impl Class {
    pub fn to_json(&self) -> Json {
        match self {
            Class::Int(i) => (*i).into(),
            Class::Text(s) => s.clone().into(),
        }
    }
}

fn err(field: &str, reason: impl std::fmt::Display) -> String {
    format!("{field}: {reason}")
}

/// Reads `spec.schema` (already checked for shape by `spec::parse_train`): value
/// maps and missing-value policies. Errors name the field.
pub fn parse_schema(spec: &TrainSpec) -> Result<Schema, String> {
    let label_map = match &spec.label_values {
        None => None,
        Some(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let class = match v {
                    Json::Number(n) if n.as_i64().is_some() => Class::Int(n.as_i64().unwrap_or(0)),
                    Json::String(s) if !s.is_empty() => Class::Text(s.clone()),
                    _ => {
                        return Err(err(
                            &format!("spec.schema.label.values.{k}"),
                            "must be an integer or a non-empty string",
                        ))
                    }
                };
                out.insert(k.clone(), class);
            }
            if out.is_empty() {
                return Err(err("spec.schema.label.values", "must not be empty"));
            }
            let ints = out.values().filter(|c| matches!(c, Class::Int(_))).count();
            if ints != 0 && ints != out.len() {
                return Err(err(
                    "spec.schema.label.values",
                    "must map to integers or to strings, not both",
                ));
            }
            check_one_value_a_class(&out)?;
            Some(out)
        }
    };
    let list = spec
        .schema
        .get("features")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let mut features = Vec::new();
    for (i, (f, key)) in list.iter().zip(&spec.features).enumerate() {
        let field = format!("spec.schema.features[{i}]");
        let obj = f.as_object().cloned().unwrap_or_default();
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "key" | "values" | "missing"))
        {
            return Err(err(
                &format!("{field}.{k}"),
                "unknown field (known: key, values, missing)",
            ));
        }
        if key == &spec.label {
            return Err(err(&format!("{field}.key"), "is the label column"));
        }
        if super::onnx::OUTPUTS.contains(&key.as_str()) {
            return Err(err(
                &format!("{field}.key"),
                format!(
                    "{key:?} is the name of one of the saved model's outputs ({}), which no \
                     input may have: rename the column in the source",
                    super::onnx::OUTPUTS.join(", ")
                ),
            ));
        }
        if features.iter().any(|g: &FeatureSpec| &g.key == key) {
            return Err(err(
                &format!("{field}.key"),
                format!("{key:?} is listed twice"),
            ));
        }
        let categorical = spec.categorical.contains(key);
        let categories = match obj.get("values") {
            None | Some(Json::Null) => None,
            Some(Json::Object(m)) => {
                let mut by_index: Vec<(i64, String)> = Vec::new();
                for (cat, idx) in m {
                    let idx = idx.as_i64().filter(|i| *i >= 0).ok_or_else(|| {
                        err(
                            &format!("{field}.values.{cat}"),
                            "must be a non-negative integer index",
                        )
                    })?;
                    by_index.push((idx, cat.clone()));
                }
                by_index.sort();
                if by_index.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(err(
                        &format!("{field}.values"),
                        "two categories share an index",
                    ));
                }
                if by_index.is_empty() {
                    return Err(err(&format!("{field}.values"), "must not be empty"));
                }
                Some(by_index.into_iter().map(|(_, c)| c).collect())
            }
            Some(_) => {
                return Err(err(
                    &format!("{field}.values"),
                    "must be an object mapping each category to its index",
                ))
            }
        };
        let missing = match obj.get("missing") {
            None | Some(Json::Null) => Missing::Error,
            Some(Json::String(s)) => match s.as_str() {
                "error" => Missing::Error,
                "mean" if !categorical => Missing::Mean,
                "mean" => {
                    return Err(err(
                        &format!("{field}.missing"),
                        "mean is for numeric features (use most_frequent)",
                    ))
                }
                "most_frequent" => Missing::MostFrequent,
                other => {
                    return Err(err(
                        &format!("{field}.missing"),
                        format!("unknown policy {other:?} (error, mean or most_frequent)"),
                    ))
                }
            },
            Some(_) => {
                return Err(err(
                    &format!("{field}.missing"),
                    "must be error, mean or most_frequent",
                ))
            }
        };
        features.push(FeatureSpec {
            key: key.clone(),
            categorical,
            categories,
            missing,
        });
    }
    Ok(Schema {
        label: spec.label.clone(),
        label_map,
        features,
    })
}

/// Refuses a label `values` map that sends two values to one class, as a feature's
/// map with two categories on one index is refused: the model answers each class
/// by one value of the map (the old service's `/predict/` names it so), and which
/// of two it would be is no choice the client made.
fn check_one_value_a_class(map: &BTreeMap<String, Class>) -> Result<(), String> {
    let mut by_class: BTreeMap<&Class, &String> = BTreeMap::new();
    for (value, class) in map {
        if let Some(first) = by_class.insert(class, value) {
            return Err(err(
                "spec.schema.label.values",
                format!(
                    "{first:?} and {value:?} both map to the class {}: give each class one \
                     value",
                    class.to_json()
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a categorical feature whose `values` map gives more categories than a
/// training job learns (`max_categories`, `--max-categories`): each category is a
/// column of the design matrix, as a learned one is. The message names the field.
pub fn check_categories(schema: &Schema, max_categories: usize) -> Result<(), String> {
    for (i, f) in schema.features.iter().enumerate() {
        let given = f.categories.as_ref().map_or(0, Vec::len);
        if given > max_categories {
            return Err(err(
                &format!("spec.schema.features[{i}].values"),
                format!(
                    "feature {:?} has {given} categories, more than {max_categories}, the \
                     most a training job encodes (--max-categories)",
                    f.key
                ),
            ));
        }
    }
    Ok(())
}

/// The columns a training job reads: the label, then the features in order.
pub fn needed_columns(schema: &Schema) -> Vec<String> {
    std::iter::once(schema.label.clone())
        .chain(schema.features.iter().map(|f| f.key.clone()))
        .collect()
}

/// The first needed column the source does not have, as a message.
pub fn missing_column(schema: &Schema, have: &[String]) -> Option<String> {
    needed_columns(schema)
        .into_iter()
        .find(|c| !have.contains(c))
        .map(|c| {
            let shown: Vec<&str> = have.iter().take(20).map(String::as_str).collect();
            format!("no column {c:?} in the source (its columns: {shown:?})")
        })
}
