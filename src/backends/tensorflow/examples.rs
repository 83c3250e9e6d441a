//! TF Serving's Classify and Regress on a SavedModel, as its
//! `servables/tensorflow/{classifier,regressor}.cc` do them: the signature takes one
//! string tensor of serialized `tf.Example` protos (its key does not matter, TF
//! Estimators call it `inputs`); a classify signature gives `classes` (strings) and/or
//! `scores` (floats), each `[batch, num_classes]`; a regress signature gives `outputs`
//! (floats, `[batch]` or `[batch, 1]`). Method names are not checked, as TF Serving
//! does not by default (`--enable_signature_method_name_check=false`).
//!
//! Transport-neutral: `crate::api::classify` (client requests) and `crate::warmup`
//! (TF Serving's warm-up records) both use it.

use std::collections::BTreeMap;

use ferroserve_proto::tensorflow::serving::{input, Input};
use ferroserve_proto::tensorflow::Feature;
use prost::Message;

use crate::backends::NamedSignature;
use crate::tensor::{DataType, Tensor, TensorData};

/// The output keys TF Serving reads (`signature_constants.h`); Classify's are the
/// backend's, which tells a classification signature by them.
pub use crate::backends::tensorflow::{CLASSIFY_OUTPUT_CLASSES, CLASSIFY_OUTPUT_SCORES};
pub const REGRESS_OUTPUTS: &str = "outputs";

/// The tensors of a signature Classify uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifySignature {
    /// The key of the serialized-examples input.
    pub input: String,
    pub classes: Option<String>,
    pub scores: Option<String>,
}

impl ClassifySignature {
    pub fn of(named: &NamedSignature) -> Result<ClassifySignature, String> {
        let input = examples_input(named, "classification")?;
        let outputs = &named.signature.outputs;
        if outputs.len() != 1 && outputs.len() != 2 {
            return Err(format!(
                "signature {:?} cannot classify: expected one or two output tensors, found {}",
                named.name,
                outputs.len()
            ));
        }
        let has = |key: &str| {
            outputs
                .iter()
                .any(|o| o.name == key)
                .then(|| key.to_string())
        };
        let (classes, scores) = (has(CLASSIFY_OUTPUT_CLASSES), has(CLASSIFY_OUTPUT_SCORES));
        if classes.is_none() && scores.is_none() {
            return Err(format!(
                "signature {:?} cannot classify: expected its outputs to contain at least one of \
                 {CLASSIFY_OUTPUT_CLASSES:?} or {CLASSIFY_OUTPUT_SCORES:?}; it has {:?}",
                named.name,
                outputs.iter().map(|o| &o.name).collect::<Vec<_>>()
            ));
        }
        Ok(ClassifySignature {
            input,
            classes,
            scores,
        })
    }

    /// The outputs to fetch.
    pub fn outputs(&self) -> Vec<String> {
        self.classes.iter().chain(&self.scores).cloned().collect()
    }
}

/// The tensors of a signature Regress uses.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressSignature {
    pub input: String,
    pub output: String,
}

impl RegressSignature {
    pub fn of(named: &NamedSignature) -> Result<RegressSignature, String> {
        let input = examples_input(named, "regression")?;
        let outputs = &named.signature.outputs;
        if outputs.len() != 1 {
            return Err(format!(
                "signature {:?} cannot regress: expected one output tensor ({REGRESS_OUTPUTS:?}), found {}",
                named.name,
                outputs.len()
            ));
        }
        if outputs[0].name != REGRESS_OUTPUTS {
            return Err(format!(
                "signature {:?} cannot regress: its output is {:?}, not {REGRESS_OUTPUTS:?}",
                named.name, outputs[0].name
            ));
        }
        Ok(RegressSignature {
            input,
            output: REGRESS_OUTPUTS.to_string(),
        })
    }
}

/// The one string input of serialized examples a classify or regress signature has.
fn examples_input(named: &NamedSignature, what: &str) -> Result<String, String> {
    match named.signature.inputs.as_slice() {
        [only] if only.dtype == DataType::Bytes => Ok(only.name.clone()),
        [only] => Err(format!(
            "signature {:?} cannot run {what}: its input {:?} is {}, not a string tensor of \
             serialized tf.Example protos",
            named.name, only.name, only.dtype
        )),
        inputs => Err(format!(
            "signature {:?} cannot run {what}: expected one input tensor (serialized tf.Example \
             protos), found {}",
            named.name,
            inputs.len()
        )),
    }
}

/// `tensorflow.Example` with its features in name order, so that the same features
/// always serialize to the same bytes (the generated type keeps a `HashMap`).
#[derive(Clone, PartialEq, prost::Message)]
struct SortedExample {
    #[prost(message, optional, tag = "1")]
    features: Option<SortedFeatures>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SortedFeatures {
    #[prost(btree_map = "string, message", tag = "1")]
    feature: BTreeMap<String, Feature>,
}

/// One serialized `tensorflow.Example` with these features.
pub fn serialize_example(features: BTreeMap<String, Feature>) -> Vec<u8> {
    SortedExample {
        features: Some(SortedFeatures { feature: features }),
    }
    .encode_to_vec()
}

/// The serialized examples of a TF Serving `Input`, as TF Serving feeds them: with a
/// context, each is the context's bytes followed by the example's (protobuf merges
/// them, the example's features winning).
pub fn serialized_input(input: Option<&Input>) -> Result<Vec<Vec<u8>>, String> {
    let kind = input
        .and_then(|i| i.kind.as_ref())
        .ok_or("input.example_list is required")?;
    let serialized: Vec<Vec<u8>> = match kind {
        input::Kind::ExampleList(list) => list.examples.iter().map(|e| e.encode_to_vec()).collect(),
        input::Kind::ExampleListWithContext(list) => {
            let context = list
                .context
                .as_ref()
                .map(|c| c.encode_to_vec())
                .unwrap_or_default();
            list.examples
                .iter()
                .map(|e| [context.as_slice(), &e.encode_to_vec()].concat())
                .collect()
        }
    };
    if serialized.is_empty() {
        return Err("input has no examples".into());
    }
    Ok(serialized)
}

/// The input tensor of serialized examples: `[n]` strings.
pub fn examples_tensor(serialized: Vec<Vec<u8>>) -> Tensor {
    let n = serialized.len();
    Tensor::new(vec![n], TensorData::Bytes(serialized)).expect("n strings fill [n]")
}

/// Classes of one example: each label (empty without `classes`) with its score (0
/// without `scores`), in the model's class order.
pub type Classes = Vec<(String, f32)>;

/// Reads a classification result for `n` examples, checked as TF Serving checks it.
pub fn read_classifications(
    n: usize,
    classes: Option<&Tensor>,
    scores: Option<&Tensor>,
) -> Result<Vec<Classes>, String> {
    let columns = |t: &Tensor, what: &str, dtype: DataType| -> Result<usize, String> {
        if t.dtype() != dtype {
            return Err(format!(
                "expected {what} tensor of {dtype}, got {}",
                t.dtype()
            ));
        }
        match t.shape() {
            [rows, columns] if *rows == n => Ok(*columns),
            [rows, _] => Err(format!(
                "expected {what} output batch size of {n}, got {rows}"
            )),
            other => Err(format!(
                "expected {what} tensor shape [batch_size, num_classes], got {other:?}"
            )),
        }
    };
    let labels: Option<(&Vec<Vec<u8>>, usize)> = match classes {
        Some(t) => {
            let k = columns(t, "classes", DataType::Bytes)?;
            match t.data() {
                TensorData::Bytes(v) => Some((v, k)),
                _ => unreachable!("dtype checked"),
            }
        }
        None => None,
    };
    let values: Option<(&Vec<f32>, usize)> = match scores {
        Some(t) => {
            let k = columns(t, "scores", DataType::F32)?;
            match t.data() {
                TensorData::F32(v) => Some((v, k)),
                _ => unreachable!("dtype checked"),
            }
        }
        None => None,
    };
    let k = match (labels, values) {
        (Some((_, a)), Some((_, b))) if a != b => {
            return Err(format!(
                "classes and scores should match in dimension 1: got {a} and {b}"
            ))
        }
        (Some((_, k)), _) | (None, Some((_, k))) => k,
        (None, None) => return Err("neither classes nor scores were given".into()),
    };
    Ok((0..n)
        .map(|row| {
            (0..k)
                .map(|c| {
                    let i = row * k + c;
                    let label = labels
                        .map(|(v, _)| String::from_utf8_lossy(&v[i]).into_owned())
                        .unwrap_or_default();
                    let score = values.map(|(v, _)| v[i]).unwrap_or(0.0);
                    (label, score)
                })
                .collect()
        })
        .collect())
}

/// Reads a regression result for `n` examples, checked as TF Serving checks it.
pub fn read_regressions(n: usize, output: &Tensor) -> Result<Vec<f32>, String> {
    if output.dtype() != DataType::F32 {
        return Err(format!(
            "expected output tensor of {}, got {}",
            DataType::F32,
            output.dtype()
        ));
    }
    match output.shape() {
        [rows] | [rows, 1] if *rows == n => {}
        [rows, ..] if *rows != n => {
            return Err(format!(
                "input batch size {n} did not match output batch size {rows}"
            ))
        }
        other => {
            return Err(format!(
                "expected output tensor shape [batch_size] or [batch_size, 1], got {other:?}"
            ))
        }
    }
    match output.data() {
        TensorData::F32(v) => Ok(v.clone()),
        _ => unreachable!("dtype checked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::Signature;
    use crate::tensor::TensorSpec;
    use ferroserve_proto::tensorflow::{feature, Example, FloatList, Int64List};

    fn spec(name: &str, dtype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    fn named(inputs: Vec<TensorSpec>, outputs: Vec<TensorSpec>) -> NamedSignature {
        NamedSignature {
            name: "s".into(),
            method_name: String::new(),
            signature: Signature { inputs, outputs },
            input_tensors: vec![],
            output_tensors: vec![],
        }
    }

    #[test]
    fn signatures_are_checked_like_tf_serving() {
        let input = || vec![spec("inputs", DataType::Bytes, &[-1])];
        let both = named(
            input(),
            vec![
                spec("classes", DataType::Bytes, &[-1, 3]),
                spec("scores", DataType::F32, &[-1, 3]),
            ],
        );
        let c = ClassifySignature::of(&both).unwrap();
        assert_eq!(c.outputs(), ["classes", "scores"]);
        assert!(RegressSignature::of(&both).is_err());
        let regress = named(input(), vec![spec("outputs", DataType::F32, &[-1])]);
        assert_eq!(RegressSignature::of(&regress).unwrap().output, "outputs");
        let err = ClassifySignature::of(&regress).unwrap_err();
        assert!(err.contains("\"classes\""), "{err}");
        let numeric = named(
            vec![spec("x", DataType::F32, &[-1, 4])],
            vec![spec("scores", DataType::F32, &[-1, 3])],
        );
        assert!(ClassifySignature::of(&numeric)
            .unwrap_err()
            .contains("serialized tf.Example"));
    }

    #[test]
    fn examples_serialize_in_a_stable_order_and_parse_back() {
        let f = |v: Vec<f32>| Feature {
            kind: Some(feature::Kind::FloatList(FloatList { value: v })),
        };
        let features: BTreeMap<String, Feature> = [
            ("b".to_string(), f(vec![1.0, 2.0])),
            (
                "a".to_string(),
                Feature {
                    kind: Some(feature::Kind::Int64List(Int64List { value: vec![7] })),
                },
            ),
        ]
        .into();
        let bytes = serialize_example(features.clone());
        assert_eq!(bytes, serialize_example(features.clone()));
        let back = Example::decode(&*bytes).unwrap();
        let got: BTreeMap<String, Feature> = back.features.unwrap().feature.into_iter().collect();
        assert_eq!(got, features);
    }

    #[test]
    fn results_are_read_and_checked() {
        let classes = Tensor::new(
            vec![2, 2],
            TensorData::Bytes(vec![
                b"a".to_vec(),
                b"b".to_vec(),
                b"a".to_vec(),
                b"b".to_vec(),
            ]),
        )
        .unwrap();
        let scores = Tensor::new(vec![2, 2], TensorData::F32(vec![0.25, 0.75, 1.0, 0.0])).unwrap();
        let read = read_classifications(2, Some(&classes), Some(&scores)).unwrap();
        assert_eq!(read[1], [("a".to_string(), 1.0), ("b".to_string(), 0.0)]);
        let only_scores = read_classifications(2, None, Some(&scores)).unwrap();
        assert_eq!(
            only_scores[0],
            [(String::new(), 0.25), (String::new(), 0.75)]
        );
        assert!(read_classifications(3, Some(&classes), None).is_err());
        assert!(read_classifications(2, Some(&scores), None).is_err());
        let flat = Tensor::new(vec![2], TensorData::F32(vec![1.5, 2.5])).unwrap();
        assert_eq!(read_regressions(2, &flat).unwrap(), [1.5, 2.5]);
        assert!(read_regressions(3, &flat).is_err());
        assert!(read_regressions(1, &scores).is_err());
        assert!(read_regressions(2, &scores).is_err());
    }
}
