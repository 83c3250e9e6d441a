//! The old prediction service's job.json (`POST /predictall/`, `POST /train/`)
//! mapped onto job specs (`super::spec`), which check it as any spec.

use serde_json::Value;

use super::spec::{err, Obj, SpecError};

/// The old service's `POST /predictall/` job.json as a score job: `modelkey` names
/// the model (the training job's id, which `api::jobs::predictall` turns into the
/// model and version it saved, or a served model's name),
/// `inputCollection` / `outputCollection` the source and sink (a path in the data
/// directory or a database URL; for a URL sink, `outputTable` names the table,
/// default `predictions`), optional `version`, `carry` and `batch_size`.
pub fn predictall_to_score(job: &Value) -> Result<Value, SpecError> {
    let obj = job
        .as_object()
        .ok_or_else(|| SpecError("the job description must be a JSON object".into()))?;
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let model = get("modelkey")
        .or_else(|| get("modelKey"))
        .ok_or_else(|| err("modelkey", "missing"))?;
    let model = match model {
        Value::String(s) => Value::String(s.clone()),
        Value::Number(n) => Value::String(n.to_string()),
        _ => return Err(err("modelkey", "must be a string")),
    };
    let input = get("inputCollection").ok_or_else(|| err("inputCollection", "missing"))?;
    let output = get("outputCollection").ok_or_else(|| err("outputCollection", "missing"))?;
    let sink = match output {
        Value::String(s) if s.contains("://") => serde_json::json!({
            "url": s,
            "table": get("outputTable").cloned().unwrap_or(Value::String("predictions".into())),
            "mode": get("mode").cloned().unwrap_or(Value::String("overwrite".into())),
        }),
        other => other.clone(),
    };
    let mut spec = serde_json::json!({
        "model": model,
        "source": input,
        "sink": sink,
    });
    for key in ["version", "carry", "batch_size", "outputs"] {
        if let Some(v) = get(key) {
            spec[key] = v.clone();
        }
    }
    Ok(serde_json::json!({"kind": "score", "spec": spec}))
}

/// The old service's `POST /train/` job.json as a train job. Mapping:
///
/// * `schema` → `spec.schema` as it is (label with its value map, features, a
///   feature with `values` categorical);
/// * `inputCollection` → `spec.source` (a path in the data directory, a database
///   URL with `inputQuery`, or a source object); `outputCollection` is not used:
///   the model is saved in the repository as the next version of `model`;
/// * `model` (or `modelName`) → `spec.model`, default `trained`;
/// * `algorithm`: a name (`LogisticRegression`, `logistic_regression`,
///   `RandomForest`, `random_forest`) or an object with a `name`; its parameters,
///   in `params` or beside the name: `iterations`/`maxIter` → `max_iter`,
///   `intercept`/`fitIntercept` → `fit_intercept`, `regType` must be L2,
///   `regParam` (λ, a number or a list) → the grid `C = 1/λ`, `C` or `grid`
///   as they are, anything else passed through;
/// * `folds`/`numFolds`, `seed`, `scoring` → `spec.cv`.
pub fn train_job_to_spec(job: &Value) -> Result<Value, SpecError> {
    let obj = job
        .as_object()
        .ok_or_else(|| SpecError("the job description must be a JSON object".into()))?;
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let schema = get("schema")
        .ok_or_else(|| err("schema", "missing"))?
        .clone();
    let input = get("inputCollection").ok_or_else(|| err("inputCollection", "missing"))?;
    let source = match (input, get("inputQuery")) {
        (Value::String(url), Some(query)) if url.contains("://") => {
            serde_json::json!({"url": url, "query": query})
        }
        (other, _) => other.clone(),
    };
    let model = get("model")
        .or_else(|| get("modelName"))
        .cloned()
        .unwrap_or_else(|| Value::String("trained".into()));
    let (name, params) = match get("algorithm") {
        None => ("logistic_regression".to_string(), Obj::new()),
        Some(Value::String(n)) => (
            n.clone(),
            get("params")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        ),
        Some(Value::Object(o)) => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| err("algorithm.name", "missing"))?
                .to_string();
            let mut params: Obj = o
                .iter()
                .filter(|(k, _)| k.as_str() != "name" && k.as_str() != "params")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(p) = o.get("params").and_then(Value::as_object) {
                params.extend(p.clone());
            }
            (name, params)
        }
        Some(_) => return Err(err("algorithm", "must be a name or an object with a name")),
    };
    let name = match name
        .to_ascii_lowercase()
        .replace(['_', '-', ' '], "")
        .as_str()
    {
        // Spark MLlib's name for its L-BFGS logistic regression, as old job.json files have it.
        "logisticregression" | "logisticregressionwithlbfgs" | "logistic" | "lr" => {
            "logistic_regression"
        }
        "randomforest" | "randomforestclassifier" | "rf" => "random_forest",
        _ => name.as_str(),
    }
    .to_string();
    let mut algorithm = Obj::new();
    algorithm.insert("name".into(), Value::String(name));
    let mut grid = Obj::new();
    for (k, v) in params {
        match k.as_str() {
            "iterations" | "maxIter" | "max_iter" => {
                algorithm.insert("max_iter".into(), v);
            }
            "intercept" | "fitIntercept" | "fit_intercept" => {
                algorithm.insert("fit_intercept".into(), v);
            }
            "regType" => {
                let t = v.as_str().unwrap_or_default().to_ascii_lowercase();
                if !matches!(t.as_str(), "l2" | "ridge" | "squaredl2") {
                    return Err(err(
                        "algorithm.regType",
                        format!("{v} is not supported (only L2)"),
                    ));
                }
            }
            "regParam" => {
                let values = match v {
                    Value::Array(a) => a,
                    one => vec![one],
                };
                let mut cs = Vec::new();
                for l in values {
                    match l.as_f64() {
                        // C = 1/λ must be a number too (1e-320 gives infinity).
                        Some(x) if x > 0.0 && (1.0 / x).is_finite() => {
                            cs.push(serde_json::json!(1.0 / x))
                        }
                        Some(x) if x > 0.0 => {
                            return Err(err(
                                "algorithm.regParam",
                                format!("{l} is too small: C = 1/regParam must be finite"),
                            ))
                        }
                        _ => {
                            return Err(err(
                                "algorithm.regParam",
                                format!("{l} is not a positive number"),
                            ))
                        }
                    }
                }
                grid.insert("C".into(), Value::Array(cs));
            }
            "C" => {
                let values = match v {
                    Value::Array(a) => Value::Array(a),
                    one => Value::Array(vec![one]),
                };
                grid.insert("C".into(), values);
            }
            "grid" => {
                if let Value::Object(g) = v {
                    grid.extend(g);
                } else {
                    return Err(err("algorithm.grid", "must be an object"));
                }
            }
            _ => {
                algorithm.insert(k, v);
            }
        }
    }
    if !grid.is_empty() {
        algorithm.insert("grid".into(), Value::Object(grid));
    }
    let mut cv = Obj::new();
    for (from, to) in [
        ("folds", "folds"),
        ("numFolds", "folds"),
        ("seed", "seed"),
        ("scoring", "scoring"),
        ("holdout", "holdout"),
    ] {
        if let Some(v) = get(from) {
            cv.insert(to.into(), v.clone());
        }
    }
    let mut spec = serde_json::json!({
        "model": model,
        "source": source,
        "schema": schema,
        "algorithm": algorithm,
    });
    if !cv.is_empty() {
        spec["cv"] = Value::Object(cv);
    }
    Ok(serde_json::json!({"kind": "train", "spec": spec}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_old_train_job_json_maps_onto_a_train_job() {
        let schema = json!({"label": {"key": "y", "values": {"yes": 1, "no": 0}},
                            "features": [{"key": "age"}, {"key": "job", "values": {"admin.": 0}}]});
        let spec = train_job_to_spec(&json!({
            "schema": schema, "inputCollection": "bank.csv", "outputCollection": "models",
            "algorithm": "LogisticRegression",
            "params": {"iterations": 200, "regType": "L2", "intercept": true, "regParam": [0.1, 1.0]},
            "numFolds": 3,
        }))
        .unwrap();
        assert_eq!(
            spec,
            json!({"kind": "train", "spec": {
                "model": "trained", "source": "bank.csv", "schema": schema,
                "algorithm": {"name": "logistic_regression", "max_iter": 200, "fit_intercept": true,
                              "grid": {"C": [10.0, 1.0]}},
                "cv": {"folds": 3}}})
        );
        let spec = train_job_to_spec(&json!({
            "schema": schema, "inputCollection": "sqlite://d.db", "inputQuery": "select * from t",
            "model": "bank", "algorithm": {"name": "RandomForest", "grid": {"max_depth": [3]}},
        }))
        .unwrap();
        assert_eq!(
            spec["spec"]["source"],
            json!({"url": "sqlite://d.db", "query": "select * from t"})
        );
        assert_eq!(
            spec["spec"]["algorithm"],
            json!({"name": "random_forest", "grid": {"max_depth": [3]}})
        );
        let e = |j: Value| train_job_to_spec(&j).unwrap_err().0;
        assert!(e(json!({"inputCollection": "a.csv"})).starts_with("schema"));
        assert!(e(json!({"schema": schema})).starts_with("inputCollection"));
        assert!(e(
            json!({"schema": schema, "inputCollection": "a.csv", "algorithm": "lr",
                         "params": {"regType": "L1"}})
        )
        .contains("only L2"));
        assert!(e(
            json!({"schema": schema, "inputCollection": "a.csv", "algorithm": "lr",
                         "params": {"regParam": 0}})
        )
        .starts_with("algorithm.regParam"));
        assert_eq!(
            e(
                json!({"schema": schema, "inputCollection": "a.csv", "algorithm": "lr",
                             "params": {"regParam": 1e-320}})
            ),
            "algorithm.regParam: 1e-320 is too small: C = 1/regParam must be finite"
        );
    }

    #[test]
    fn the_old_job_json_maps_onto_a_score_job() {
        let spec = predictall_to_score(&json!({
            "modelkey": "bank", "inputCollection": "new.csv", "outputCollection": "scores.csv",
        }))
        .unwrap();
        assert_eq!(
            spec,
            json!({"kind": "score", "spec": {"model": "bank", "source": "new.csv", "sink": "scores.csv"}})
        );
        assert!(predictall_to_score(&json!({"inputCollection": "a.csv"}))
            .unwrap_err()
            .0
            .starts_with("modelkey"));
    }
}
