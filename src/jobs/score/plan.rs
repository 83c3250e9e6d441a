//! The [`ScoringPlan`]: what a scoring job needs of the model version it scores
//! with, made once per job from a handle here or read from a deployed model's
//! worker (`GET /v1/scoring-plans/{model}`), and the checks of the sink's columns
//! that follow from it.

use std::collections::BTreeMap;

use crate::api::simple;
use crate::api::ApiError;
use crate::jobs::spec::{ScoreSpec, SinkSpec};
use crate::manager::ServableHandle;
use crate::model_config::FeatureValue;
use crate::tensor::{DataType, TensorSpec};

/// What a scoring job needs of the model version it scores with, decided once per
/// job: how named features fill its inputs, its answer's outputs, the features'
/// defaults and the class labels. Made from a handle here, or read from the worker
/// a deployed model lives in (which makes it the same way).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringPlan {
    pub model: String,
    pub version: u64,
    /// Each input and the features that fill it, in order (`simple::named_layout`).
    pub layout: Vec<(TensorSpec, Vec<String>)>,
    /// The prediction's output and the class probabilities' (`simple::answer_outputs`).
    pub prediction: String,
    pub probabilities: Option<String>,
    /// Every output of the signature.
    pub outputs: Vec<String>,
    pub feature_defaults: BTreeMap<String, FeatureValue>,
    pub class_labels: Option<Vec<String>>,
    /// The inputs whose missing values the model fills (`ModelTraits::missing_inputs`).
    pub missing_inputs: Vec<String>,
    /// A model a training job wrote (`ModelTraits::trained`): NaN is a missing value
    /// to its inputs that do not impute. Other models take NaN as a number.
    pub trained: bool,
}

impl ScoringPlan {
    /// The plan of a version served in this process.
    pub fn of(handle: &ServableHandle) -> Result<ScoringPlan, ApiError> {
        let layout = simple::named_layout(handle)?;
        let (prediction, probabilities) = simple::answer_outputs(handle)?;
        Ok(ScoringPlan {
            model: handle.model.to_string(),
            version: handle.version,
            layout,
            prediction,
            probabilities,
            outputs: handle
                .backend
                .signature()
                .outputs
                .iter()
                .map(|o| o.name.clone())
                .collect(),
            feature_defaults: handle.config().feature_defaults.clone(),
            class_labels: handle.class_labels().map(<[String]>::to_vec),
            missing_inputs: handle.backend.traits().missing_inputs.clone(),
            trained: handle.backend.traits().trained,
        })
    }

    /// The plan with the class labels of a version a training job wrote, read from
    /// its `training.json` when the plan has none: the ONNX backend does not read
    /// them from the graph, and without them its probabilities' columns would be
    /// named by position (`probabilities_0`) rather than by class.
    pub fn with_trained_class_labels(mut self, state: &crate::api::ServerState) -> ScoringPlan {
        if self.class_labels.is_some() || !self.trained {
            return self;
        }
        let Some(training) = crate::jobs::train::training_record(state, &self.model, self.version)
        else {
            return self;
        };
        self.class_labels = training["classes"].as_array().map(|classes| {
            classes
                .iter()
                .map(|c| match c {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        });
        self
    }

    /// The outputs a job with `spec` writes: those it names, else the prediction
    /// and the class probabilities.
    pub(super) fn wanted_outputs(&self, spec: &ScoreSpec) -> Vec<String> {
        match &spec.outputs {
            Some(o) => o.clone(),
            None => std::iter::once(self.prediction.clone())
                .chain(self.probabilities.clone())
                .collect(),
        }
    }

    /// The sink's columns for the output `name` with `width` values a row: its
    /// name for one, else `name_<class>` (the class labels of the probabilities)
    /// or `name_<j>`.
    pub(super) fn columns_of_output(&self, name: &str, width: usize) -> Vec<String> {
        if width == 1 {
            return vec![name.to_string()];
        }
        let labels = self
            .class_labels
            .as_deref()
            .filter(|l| Some(name) == self.probabilities.as_deref() && l.len() == width);
        (0..width)
            .map(|j| match labels {
                Some(l) => format!("{name}_{}", l[j]),
                None => format!("{name}_{j}"),
            })
            .collect()
    }

    /// Refuses a job whose carried columns share a name with an output column that
    /// can be known before any row is predicted: the outputs whose width the
    /// signature's shapes (`declared`, the version's outputs) give. The message
    /// starts with the carried column; submission prefixes `spec.carry`. The job
    /// checks every column again once the first batch gives every output's width.
    pub fn check_carry(&self, spec: &ScoreSpec, declared: &[TensorSpec]) -> Result<(), String> {
        let known: Vec<String> = self
            .wanted_outputs(spec)
            .iter()
            .filter_map(|name| {
                let width = declared_width(declared.iter().find(|o| &o.name == name)?)?;
                Some(self.columns_of_output(name, width))
            })
            .flatten()
            .collect();
        check_distinct_columns(&spec.carry, &known, &spec.sink)
    }

    /// As `GET /v1/scoring-plans/{model}` answers it ([`PlanJson`]).
    pub fn to_json(&self) -> serde_json::Value {
        let plan = PlanJson {
            model: self.model.clone(),
            version: self.version,
            inputs: self
                .layout
                .iter()
                .map(|(spec, features)| InputJson {
                    name: spec.name.clone(),
                    datatype: spec.dtype.v2_name().to_string(),
                    shape: spec.v2_shape(),
                    features: features.clone(),
                })
                .collect(),
            prediction_output: self.prediction.clone(),
            probabilities_output: self.probabilities.clone(),
            outputs: self.outputs.clone(),
            feature_defaults: self.feature_defaults.clone(),
            class_labels: self.class_labels.clone(),
            missing_inputs: self.missing_inputs.clone(),
            trained: self.trained,
        };
        serde_json::to_value(plan).expect("a scoring plan is plain JSON")
    }

    /// Reads [`ScoringPlan::to_json`]'s answer.
    pub fn from_json(value: serde_json::Value) -> Result<ScoringPlan, String> {
        let plan: PlanJson = serde_json::from_value(value).map_err(|e| e.to_string())?;
        let layout = plan
            .inputs
            .into_iter()
            .map(|i| {
                let dtype = DataType::from_v2_name(&i.datatype).ok_or_else(|| {
                    format!("input {:?}: unknown datatype {:?}", i.name, i.datatype)
                })?;
                let spec = TensorSpec {
                    name: i.name,
                    dtype,
                    shape: i.shape,
                };
                Ok((spec, i.features))
            })
            .collect::<Result<_, String>>()?;
        Ok(ScoringPlan {
            model: plan.model,
            version: plan.version,
            layout,
            prediction: plan.prediction_output,
            probabilities: plan.probabilities_output,
            outputs: plan.outputs,
            feature_defaults: plan.feature_defaults,
            class_labels: plan.class_labels,
            missing_inputs: plan.missing_inputs,
            trained: plan.trained,
        })
    }
}

/// A [`ScoringPlan`] on the wire (`GET /v1/scoring-plans/{model}`, read by the main
/// server from a worker): one description for both directions.
#[derive(serde::Serialize, serde::Deserialize)]
struct PlanJson {
    model: String,
    version: u64,
    inputs: Vec<InputJson>,
    prediction_output: String,
    probabilities_output: Option<String>,
    outputs: Vec<String>,
    #[serde(default)]
    feature_defaults: BTreeMap<String, FeatureValue>,
    class_labels: Option<Vec<String>>,
    #[serde(default)]
    missing_inputs: Vec<String>,
    #[serde(default)]
    trained: bool,
}

/// One input of a [`PlanJson`]: its tensor (V2 datatype name) and its features.
#[derive(serde::Serialize, serde::Deserialize)]
struct InputJson {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    features: Vec<String>,
}

/// An output's values a row as its signature declares them (`[-1]`: one; `[-1, k]`:
/// `k`), when every dimension after the batch is known; as [`row_width`] counts.
fn declared_width(output: &TensorSpec) -> Option<usize> {
    output
        .shape
        .iter()
        .skip(1)
        .try_fold(1usize, |w, d| w.checked_mul(usize::try_from(*d).ok()?))
        .map(|w| w.max(1))
}

/// Refuses columns a sink cannot hold side by side: a carried column with the name
/// of an output column (a JSON line would keep one of the two values, a Parquet
/// file would have two fields of one name, a table would refuse it), or output
/// columns of one name. A SQL table other than PostgreSQL's takes names that
/// differ only in case for the same (SQLite, MySQL).
pub(super) fn check_distinct_columns(
    carry: &[String],
    outputs: &[String],
    sink: &SinkSpec,
) -> Result<(), String> {
    let ignores_case = matches!(sink, SinkSpec::Sql { url, .. }
        if !url.starts_with("postgres"));
    let same = |a: &str, b: &str| match ignores_case {
        true => a.to_lowercase() == b.to_lowercase(),
        false => a == b,
    };
    if let Some((c, o)) = carry
        .iter()
        .find_map(|c| outputs.iter().find(|o| same(c, o)).map(|o| (c, o)))
    {
        let named = match c == o {
            true => String::new(),
            false => format!(
                " ({o:?}: the table's database takes names that differ only in case for one)"
            ),
        };
        return Err(format!(
            "carry column {c:?} has the name of one of the model's output columns{named}, \
             which the output would hold twice (the model's output columns: {outputs:?}); \
             carry another column, or rename it in the source"
        ));
    }
    if let Some(o) = outputs
        .iter()
        .enumerate()
        .find_map(|(i, o)| outputs[..i].iter().any(|p| same(p, o)).then_some(o))
    {
        return Err(format!(
            "the model's output columns {outputs:?} name {o:?} twice, which the output \
             cannot hold: choose the outputs to write with spec.outputs"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scoring_plan_reads_back_what_it_wrote() {
        let plan = ScoringPlan {
            model: "iris".into(),
            version: 3,
            layout: vec![(
                TensorSpec {
                    name: "input".into(),
                    dtype: DataType::F32,
                    shape: vec![-1, 2],
                },
                vec!["a".into(), "b".into()],
            )],
            prediction: "label".into(),
            probabilities: Some("probabilities".into()),
            outputs: vec!["label".into(), "probabilities".into()],
            feature_defaults: BTreeMap::from([
                ("a".to_string(), FeatureValue::Number(0.5)),
                ("city".to_string(), FeatureValue::Text("Paris".into())),
            ]),
            class_labels: Some(vec!["no".into(), "yes".into()]),
            missing_inputs: vec!["input".into()],
            trained: true,
        };
        let json = plan.to_json();
        assert_eq!(json["inputs"][0]["datatype"], "FP32", "{json}");
        assert_eq!(json["feature_defaults"]["city"], "Paris", "{json}");
        assert_eq!(ScoringPlan::from_json(json).unwrap(), plan);
        let unknown = serde_json::json!({
            "model": "m", "version": 1, "prediction_output": "y", "probabilities_output": null,
            "outputs": ["y"], "class_labels": null,
            "inputs": [{"name": "x", "datatype": "FP128", "shape": [1], "features": []}],
        });
        assert!(ScoringPlan::from_json(unknown)
            .unwrap_err()
            .contains("FP128"));
    }

    fn sink(json: serde_json::Value) -> SinkSpec {
        crate::jobs::spec::parse_sink(Some(&json), "spec.sink", &std::env::temp_dir()).unwrap()
    }

    #[test]
    fn a_sink_never_gets_two_columns_of_one_name() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let outputs = strings(&["label", "probabilities_no", "probabilities_yes"]);
        let file = sink(serde_json::json!({"path": "out.parquet"}));
        assert!(check_distinct_columns(&strings(&["id", "Label"]), &outputs, &file).is_ok());
        let m = check_distinct_columns(&strings(&["id", "label"]), &outputs, &file).unwrap_err();
        assert!(
            m.starts_with("carry column \"label\" has the name of"),
            "{m}"
        );
        // SQLite and MySQL take names that differ in case for one; PostgreSQL does not.
        let sqlite = sink(serde_json::json!({"url": "sqlite://out.db", "table": "t"}));
        let m = check_distinct_columns(&strings(&["Label"]), &outputs, &sqlite).unwrap_err();
        assert!(
            m.contains("\"Label\"") && m.contains("differ only in case"),
            "{m}"
        );
        let postgres = sink(serde_json::json!({"url": "postgres://u@h/db", "table": "t"}));
        assert!(check_distinct_columns(&strings(&["Label"]), &outputs, &postgres).is_ok());
        // Output columns of one name (an output `p` two wide beside an output `p_0`).
        let m = check_distinct_columns(&[], &strings(&["p_0", "p_1", "p_0"]), &file).unwrap_err();
        assert!(m.contains("name \"p_0\" twice"), "{m}");
    }

    #[test]
    fn output_columns_known_from_the_signature() {
        let spec = |shape: Vec<i64>| TensorSpec {
            name: "p".into(),
            dtype: DataType::F32,
            shape,
        };
        assert_eq!(declared_width(&spec(vec![-1])), Some(1));
        assert_eq!(declared_width(&spec(vec![-1, 1])), Some(1));
        assert_eq!(declared_width(&spec(vec![-1, 3])), Some(3));
        assert_eq!(declared_width(&spec(vec![-1, 2, 3])), Some(6));
        assert_eq!(declared_width(&spec(vec![-1, -1])), None);
        let plan = ScoringPlan {
            model: "m".into(),
            version: 1,
            layout: Vec::new(),
            prediction: "label".into(),
            probabilities: Some("probabilities".into()),
            outputs: vec!["label".into(), "probabilities".into(), "other".into()],
            feature_defaults: BTreeMap::new(),
            class_labels: Some(vec!["a".into(), "b".into()]),
            missing_inputs: Vec::new(),
            trained: true,
        };
        assert_eq!(
            plan.columns_of_output("probabilities", 2),
            ["probabilities_a", "probabilities_b"]
        );
        assert_eq!(plan.columns_of_output("other", 2), ["other_0", "other_1"]);
        assert_eq!(
            plan.columns_of_output("probabilities", 3)[2],
            "probabilities_2"
        );
    }
}
