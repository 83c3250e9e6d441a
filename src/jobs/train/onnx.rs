//! The trained model as an ONNX graph over the raw named columns, as skl2onnx
//! writes a `ColumnTransformer` + classifier: one `[N, 1]` input per feature (float
//! for numeric, string for categorical); the numeric ones concatenated, imputed
//! (`Imputer`, when a policy imputes) and standardized (`Scaler`); each categorical
//! one one-hot encoded (`OneHotEncoder`, `zeros=1`: an unknown category is all
//! zeros; when its policy imputes, a `LabelEncoder` first maps `""`, a missing
//! value, to the category it imputes) and reshaped from `[N, 1, C]` to `[N, C]`; everything concatenated in the
//! design matrix's order; then the classifier, with outputs `label` and
//! `probabilities` (`[N, classes]`, no ZipMap). Opsets: ai.onnx 15, ai.onnx.ml 3.
//! Each input whose missing values the graph fills is named in the model's
//! metadata (`backends::onnx::IMPUTES_KEY`), so that the server
//! feeds it NaN or `""` for a missing value instead of refusing it.

use ferroserve_proto::onnx;
use ferroserve_proto::prost::Message;

use super::data::{Class, Encoding, Scaler};
use super::Fitted;

const FLOAT: i32 = onnx::tensor_proto::DataType::Float as i32;
const INT64: i32 = onnx::tensor_proto::DataType::Int64 as i32;
const STRING: i32 = onnx::tensor_proto::DataType::String as i32;

fn attr(name: &str, kind: onnx::attribute_proto::AttributeType) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.into()),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

pub fn floats(name: &str, v: Vec<f32>) -> onnx::AttributeProto {
    onnx::AttributeProto {
        floats: v,
        ..attr(name, onnx::attribute_proto::AttributeType::Floats)
    }
}

pub fn ints(name: &str, v: Vec<i64>) -> onnx::AttributeProto {
    onnx::AttributeProto {
        ints: v,
        ..attr(name, onnx::attribute_proto::AttributeType::Ints)
    }
}

pub fn int(name: &str, v: i64) -> onnx::AttributeProto {
    onnx::AttributeProto {
        i: Some(v),
        ..attr(name, onnx::attribute_proto::AttributeType::Int)
    }
}

pub fn string(name: &str, v: &str) -> onnx::AttributeProto {
    onnx::AttributeProto {
        s: Some(v.as_bytes().to_vec()),
        ..attr(name, onnx::attribute_proto::AttributeType::String)
    }
}

pub fn strings(name: &str, v: Vec<String>) -> onnx::AttributeProto {
    onnx::AttributeProto {
        strings: v.into_iter().map(String::into_bytes).collect(),
        ..attr(name, onnx::attribute_proto::AttributeType::Strings)
    }
}

pub fn node(
    op: &str,
    domain: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<onnx::AttributeProto>,
) -> onnx::NodeProto {
    onnx::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: Some(format!("{op}_{}", outputs.first().copied().unwrap_or(""))),
        op_type: Some(op.into()),
        domain: Some(domain.into()),
        attribute: attributes,
        ..Default::default()
    }
}

fn value_info(name: &str, elem: i32, dims: &[Option<i64>]) -> onnx::ValueInfoProto {
    use onnx::tensor_shape_proto::{dimension, Dimension};
    onnx::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(onnx::TypeProto {
            value: Some(onnx::type_proto::Value::TensorType(
                onnx::type_proto::Tensor {
                    elem_type: Some(elem),
                    shape: Some(onnx::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension {
                                value: Some(match d {
                                    Some(n) => dimension::Value::DimValue(*n),
                                    None => dimension::Value::DimParam("N".into()),
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The class labels attribute: ints when every class is an integer.
pub fn class_labels(classes: &[Class]) -> (onnx::AttributeProto, i32) {
    if classes.iter().all(|c| matches!(c, Class::Int(_))) {
        let v = classes
            .iter()
            .map(|c| match c {
                Class::Int(i) => *i,
                Class::Text(_) => 0,
            })
            .collect();
        (ints("classlabels_ints", v), INT64)
    } else {
        let v = classes
            .iter()
            .map(|c| match c {
                Class::Int(i) => i.to_string(),
                Class::Text(s) => s.clone(),
            })
            .collect();
        (strings("classlabels_strings", v), STRING)
    }
}

/// The outputs the saved graph answers under these names (the classifier node's).
pub const OUTPUTS: [&str; 2] = ["label", "probabilities"];

/// Names for the graph's own values (the numeric block, each one-hot block, the
/// design matrix), none of them a feature's (an input's), an output's or another
/// value's: ONNX refuses a graph that defines a name twice, and a feature may be
/// called anything, `numeric_scaled` or `job_onehot` too. A name stays what it
/// always was unless it is taken, then takes the first free `_<n>` suffix.
struct ValueNames {
    taken: std::collections::HashSet<String>,
}

impl ValueNames {
    fn new(features: &[(String, bool)]) -> ValueNames {
        ValueNames {
            taken: features
                .iter()
                .map(|(key, _)| key.clone())
                .chain(OUTPUTS.iter().map(|o| o.to_string()))
                .collect(),
        }
    }

    fn fresh(&mut self, wanted: &str) -> String {
        let mut name = wanted.to_string();
        let mut n = 1;
        while !self.taken.insert(name.clone()) {
            name = format!("{wanted}_{n}");
            n += 1;
        }
        name
    }
}

/// The whole model, serialized. `features` are the schema's keys in order (the
/// graph's inputs); `encodings` say which are numeric (first, in order) and the
/// categories of the others.
pub fn export(
    features: &[(String, bool)],
    encodings: &[Encoding],
    scaler: Option<&Scaler>,
    classes: &[Class],
    model: &dyn Fitted,
    doc: &str,
) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let mut names = ValueNames::new(features);
    let inputs: Vec<onnx::ValueInfoProto> = features
        .iter()
        .map(|(key, categorical)| {
            value_info(
                key,
                if *categorical { STRING } else { FLOAT },
                &[None, Some(1)],
            )
        })
        .collect();
    let mut parts: Vec<String> = Vec::new();
    let numeric: Vec<&str> = encodings
        .iter()
        .filter_map(|e| match e {
            Encoding::Numeric { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    if !numeric.is_empty() {
        let mut current = names.fresh("numeric_columns");
        nodes.push(node(
            "Concat",
            "",
            &numeric,
            &[&current],
            vec![int("axis", 1)],
        ));
        let imputes: Vec<Option<f32>> = encodings
            .iter()
            .filter_map(|e| match e {
                Encoding::Numeric { impute, .. } => Some(*impute),
                _ => None,
            })
            .collect();
        if imputes.iter().any(Option::is_some) {
            // A column whose policy is "error" keeps NaN (replaced by NaN).
            let values = imputes.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
            let imputed = names.fresh("numeric_imputed");
            nodes.push(node(
                "Imputer",
                "ai.onnx.ml",
                &[&current],
                &[&imputed],
                vec![
                    floats("imputed_value_floats", values),
                    onnx::AttributeProto {
                        f: Some(f32::NAN),
                        ..attr(
                            "replaced_value_float",
                            onnx::attribute_proto::AttributeType::Float,
                        )
                    },
                ],
            ));
            current = imputed;
        }
        if let Some(s) = scaler {
            let scaled = names.fresh("numeric_scaled");
            nodes.push(node(
                "Scaler",
                "ai.onnx.ml",
                &[&current],
                &[&scaled],
                vec![
                    floats("offset", s.offset.clone()),
                    floats("scale", s.scale.clone()),
                ],
            ));
            current = scaled;
        }
        parts.push(current);
    }
    for e in encodings {
        if let Encoding::Categorical {
            key,
            categories,
            impute,
            ..
        } = e
        {
            let onehot = names.fresh(&format!("{key}_onehot"));
            let flat = names.fresh(&format!("{key}_encoded"));
            let shape = names.fresh(&format!("{key}_shape"));
            let mut column = key.clone();
            if let Some(imputed) = impute
                .as_ref()
                .filter(|_| !categories.contains(&String::new()))
            {
                // "" (missing) becomes the imputed category; every category stays
                // itself; anything else becomes a text no category is (all zeros).
                let filled = names.fresh(&format!("{key}_imputed"));
                let mut unknown = String::from("\u{1}unknown");
                while categories.contains(&unknown) {
                    unknown.push('\u{1}');
                }
                let mut keys = categories.clone();
                keys.push(String::new());
                let mut values = categories.clone();
                values.push(imputed.clone());
                nodes.push(node(
                    "LabelEncoder",
                    "ai.onnx.ml",
                    &[key],
                    &[&filled],
                    vec![
                        strings("keys_strings", keys),
                        strings("values_strings", values),
                        string("default_string", &unknown),
                    ],
                ));
                column = filled;
            }
            nodes.push(node(
                "OneHotEncoder",
                "ai.onnx.ml",
                &[&column],
                &[&onehot],
                vec![strings("cats_strings", categories.clone()), int("zeros", 1)],
            ));
            initializers.push(onnx::TensorProto {
                name: Some(shape.clone()),
                dims: vec![2],
                data_type: Some(INT64),
                int64_data: vec![-1, categories.len() as i64],
                ..Default::default()
            });
            nodes.push(node("Reshape", "", &[&onehot, &shape], &[&flat], vec![]));
            parts.push(flat);
        }
    }
    let part_refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let design = names.fresh("features");
    nodes.push(node(
        "Concat",
        "",
        &part_refs,
        &[&design],
        vec![int("axis", 1)],
    ));
    let (labels, label_type) = class_labels(classes);
    nodes.push(model.onnx_node(&design, labels));
    let outputs = vec![
        value_info(OUTPUTS[0], label_type, &[None]),
        value_info(OUTPUTS[1], FLOAT, &[None, Some(classes.len() as i64)]),
    ];
    let graph = onnx::GraphProto {
        node: nodes,
        name: Some("ferroserve_trained".into()),
        initializer: initializers,
        input: inputs,
        output: outputs,
        ..Default::default()
    };
    let model = onnx::ModelProto {
        ir_version: Some(8),
        opset_import: vec![
            onnx::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(15),
            },
            onnx::OperatorSetIdProto {
                domain: Some("ai.onnx.ml".into()),
                version: Some(3),
            },
        ],
        metadata_props: encodings
            .iter()
            .filter_map(|e| match e {
                Encoding::Numeric {
                    key,
                    impute: Some(_),
                }
                | Encoding::Categorical {
                    key,
                    impute: Some(_),
                    ..
                } => Some(onnx::StringStringEntryProto {
                    key: Some(format!("{}{key}", crate::backends::onnx::IMPUTES_KEY)),
                    value: Some("1".into()),
                }),
                _ => None,
            })
            .chain(encodings.iter().filter_map(|e| match e {
                Encoding::Categorical {
                    key, numeric: true, ..
                } => Some(onnx::StringStringEntryProto {
                    key: Some(format!(
                        "{}{key}",
                        crate::backends::onnx::NUMERIC_CATEGORY_KEY
                    )),
                    value: Some("1".into()),
                }),
                _ => None,
            }))
            .chain(
                classes
                    .iter()
                    .enumerate()
                    .map(|(i, c)| onnx::StringStringEntryProto {
                        key: Some(format!("{}{i}", crate::backends::onnx::CLASS_KEY)),
                        value: Some(match c {
                            Class::Int(n) => n.to_string(),
                            Class::Text(s) => s.clone(),
                        }),
                    }),
            )
            .collect(),
        producer_name: Some("ferroserve".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(doc.into()),
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classifier node and nothing more: the graph around it is under test.
    struct Stub;

    impl Fitted for Stub {
        fn predict_proba(&self, _row: &[f64]) -> Vec<f64> {
            vec![0.5, 0.5]
        }
        fn onnx_node(&self, input: &str, labels: onnx::AttributeProto) -> onnx::NodeProto {
            node(
                "LinearClassifier",
                "ai.onnx.ml",
                &[input],
                &OUTPUTS,
                vec![labels],
            )
        }
        fn describe(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }

    #[test]
    fn no_value_of_the_graph_takes_a_features_name() {
        let numeric = [
            "features",
            "numeric_columns",
            "numeric_imputed",
            "numeric_scaled",
            "job_onehot",
            "job_encoded",
        ];
        let categorical = ["job", "job_shape", "job_imputed"];
        let features: Vec<(String, bool)> = numeric
            .iter()
            .map(|k| (k.to_string(), false))
            .chain(categorical.iter().map(|k| (k.to_string(), true)))
            .collect();
        let encodings: Vec<Encoding> = numeric
            .iter()
            .map(|k| Encoding::Numeric {
                key: k.to_string(),
                impute: Some(0.0),
            })
            .chain(categorical.iter().map(|k| Encoding::Categorical {
                key: k.to_string(),
                categories: vec!["a".into(), "b".into()],
                impute: Some("a".into()),
                numeric: false,
            }))
            .collect();
        let scaler = Scaler {
            offset: vec![0.0; numeric.len()],
            scale: vec![1.0; numeric.len()],
        };
        let bytes = export(
            &features,
            &encodings,
            Some(&scaler),
            &[Class::Text("no".into()), Class::Text("yes".into())],
            &Stub,
            "",
        );
        let graph = onnx::ModelProto::decode(bytes.as_slice())
            .unwrap()
            .graph
            .unwrap();
        // Each name is defined once: by an input, an initializer or a node's output.
        let mut defined: Vec<String> = graph
            .input
            .iter()
            .filter_map(|i| i.name.clone())
            .chain(graph.initializer.iter().filter_map(|t| t.name.clone()))
            .chain(graph.node.iter().flat_map(|n| n.output.clone()))
            .collect();
        let all = defined.len();
        defined.sort();
        defined.dedup();
        assert_eq!(defined.len(), all, "{defined:?}");
        // The inputs are the features, the outputs as they always were.
        let inputs: Vec<&str> = graph
            .input
            .iter()
            .filter_map(|i| i.name.as_deref())
            .collect();
        let keys: Vec<&str> = features.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(inputs, keys);
        let outputs: Vec<&str> = graph
            .output
            .iter()
            .filter_map(|o| o.name.as_deref())
            .collect();
        assert_eq!(outputs, OUTPUTS);
        // A name no feature takes stays what it was.
        let mut names = ValueNames::new(&[("x".into(), false)]);
        assert_eq!(names.fresh("features"), "features");
        assert_eq!(names.fresh("features"), "features_1");
    }
}
