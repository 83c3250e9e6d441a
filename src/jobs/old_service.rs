//! The old prediction service's job.json (`POST /predictall/`, `POST /train/`)
//! mapped onto job specs (`super::spec`), which check it as any spec.

use serde_json::Value;

use super::spec::{check_url_scheme, err, Obj, SpecError};

/// The old service's `POST /predictall/` job.json as a score job: `modelkey` names
/// the model (the training job's id, which `api::jobs::predictall` turns into the
/// model and version it saved, or a served model's name),
/// `inputCollection` / `outputCollection` the source and sink (a path in the data
/// directory or a database URL; for a URL sink, `outputTable` names the table,
/// default `predictions`; for a URL source, `inputQuery` the query), optional
/// `version`, `carry`, `batch_size` and `outputs`.
pub fn predictall_to_score(job: &Value) -> Result<Value, SpecError> {
    let obj = job
        .as_object()
        .ok_or_else(|| SpecError("the job description must be a JSON object".into()))?;
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let model = one_of(obj, &["modelkey", "modelKey"], "the model")?
        .ok_or_else(|| err("modelkey", "missing"))?;
    let model = match model {
        Value::String(s) => Value::String(s.clone()),
        Value::Number(n) => Value::String(n.to_string()),
        _ => return Err(err("modelkey", "must be a string")),
    };
    let source = source_of(
        get("inputCollection").ok_or_else(|| err("inputCollection", "missing"))?,
        get("inputQuery"),
    )?;
    let output = get("outputCollection").ok_or_else(|| err("outputCollection", "missing"))?;
    let sink = match output {
        Value::String(s) if s.contains("://") => {
            // Refused here, so that the message names the job.json's field.
            check_url_scheme(s, "outputCollection")?;
            serde_json::json!({
                "url": s,
                "table": get("outputTable").cloned().unwrap_or(Value::String("predictions".into())),
                "mode": get("mode").cloned().unwrap_or(Value::String("overwrite".into())),
            })
        }
        other => other.clone(),
    };
    let mut spec = serde_json::json!({
        "model": model,
        "source": source,
        "sink": sink,
    });
    for key in ["version", "carry", "batch_size", "outputs"] {
        if let Some(v) = get(key) {
            spec[key] = v.clone();
        }
    }
    Ok(serde_json::json!({"kind": "score", "spec": spec}))
}

/// `inputCollection` (and `inputQuery`) as a job's source: a path in the data
/// directory, a source object as it is, or a database URL with `inputQuery`, the
/// query that reads it. A URL without a query, or a query beside anything but a
/// URL (it would be left unread), is an error naming the job.json field.
fn source_of(input: &Value, query: Option<&Value>) -> Result<Value, SpecError> {
    match (input, query) {
        (Value::String(url), Some(query)) if url.contains("://") => {
            check_url_scheme(url, "inputCollection")?;
            Ok(serde_json::json!({"url": url, "query": query}))
        }
        (Value::String(url), None) if url.contains("://") => {
            check_url_scheme(url, "inputCollection")?;
            Err(err(
                "inputQuery",
                "missing: a database URL in inputCollection needs the query that reads it",
            ))
        }
        (_, Some(_)) => Err(err(
            "inputQuery",
            "is only for a database URL in inputCollection (a file is read whole)",
        )),
        (other, None) => Ok(other.clone()),
    }
}

/// The old service's `POST /train/` job.json as a train job. Mapping:
///
/// * `schema` → `spec.schema` as it is (label with its value map, features, a
///   feature with `values` categorical);
/// * `inputCollection` → `spec.source` (a path in the data directory, a database
///   URL with `inputQuery`, or a source object); `outputCollection` is not used:
///   the model is saved in the repository as the next version of `model`;
/// * `model` (or `modelName`; both must agree) → `spec.model`, default `trained`;
/// * `algorithm`: a name (`LogisticRegression`, `logistic_regression`,
///   `RandomForest`, `random_forest`) or an object with a `name`; its parameters,
///   in `params` or beside the name: `iterations`/`maxIter` → `max_iter`,
///   `intercept`/`fitIntercept` → `fit_intercept`, `regType` must be L2,
///   `regParam` (λ, a number or a list) → the grid `C = 1/λ`, `C` or `grid`
///   as they are, anything else passed through; a `params` beside `algorithm`
///   counts as one inside it; fields that set one parameter must agree;
/// * `folds`/`numFolds` (both must agree), `seed`, `scoring`, `holdout` → `spec.cv`.
pub fn train_job_to_spec(job: &Value) -> Result<Value, SpecError> {
    let obj = job
        .as_object()
        .ok_or_else(|| SpecError("the job description must be a JSON object".into()))?;
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let schema = get("schema")
        .ok_or_else(|| err("schema", "missing"))?
        .clone();
    let source = source_of(
        get("inputCollection").ok_or_else(|| err("inputCollection", "missing"))?,
        get("inputQuery"),
    )?;
    let model = one_of(obj, &["model", "modelName"], "the model")?
        .cloned()
        .unwrap_or_else(|| Value::String("trained".into()));
    // Every parameter with the field that gave it: beside the name, in the
    // algorithm's `params`, in a `params` beside the algorithm.
    let mut given: Vec<(String, String, Value)> = Vec::new();
    let mut take = |prefix: &str, params: &Obj| {
        for (k, v) in params {
            given.push((format!("{prefix}{k}"), k.clone(), v.clone()));
        }
    };
    let name = match get("algorithm") {
        None => "logistic_regression".to_string(),
        Some(Value::String(n)) => n.clone(),
        Some(Value::Object(o)) => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| err("algorithm.name", "missing"))?
                .to_string();
            let beside: Obj = o
                .iter()
                .filter(|(k, _)| k.as_str() != "name" && k.as_str() != "params")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            take("algorithm.", &beside);
            match o.get("params") {
                None | Some(Value::Null) => {}
                Some(Value::Object(p)) => take("algorithm.params.", p),
                Some(_) => return Err(err("algorithm.params", "must be an object")),
            }
            name
        }
        Some(_) => return Err(err("algorithm", "must be a name or an object with a name")),
    };
    match get("params") {
        None => {}
        Some(Value::Object(p)) => take("params.", p),
        Some(_) => return Err(err("params", "must be an object")),
    }
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
    let mut set = Settled::default();
    for (field, k, v) in given {
        match k.as_str() {
            "iterations" | "maxIter" | "max_iter" => {
                set.put(Target::Algorithm("max_iter".into()), &field, &v, v.clone())?
            }
            "intercept" | "fitIntercept" | "fit_intercept" => set.put(
                Target::Algorithm("fit_intercept".into()),
                &field,
                &v,
                v.clone(),
            )?,
            "regType" => {
                let t = v.as_str().unwrap_or_default().to_ascii_lowercase();
                if !matches!(t.as_str(), "l2" | "ridge" | "squaredl2") {
                    return Err(err(&field, format!("{v} is not supported (only L2)")));
                }
            }
            "regParam" => {
                let values = match &v {
                    Value::Array(a) => a.clone(),
                    one => vec![one.clone()],
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
                                &field,
                                format!("{l} is too small: C = 1/regParam must be finite"),
                            ))
                        }
                        _ => return Err(err(&field, format!("{l} is not a positive number"))),
                    }
                }
                set.put(Target::Grid("C".into()), &field, &v, Value::Array(cs))?;
            }
            "C" => {
                let values = match &v {
                    Value::Array(a) => Value::Array(a.clone()),
                    one => Value::Array(vec![one.clone()]),
                };
                set.put(Target::Grid("C".into()), &field, &v, values)?;
            }
            "grid" => {
                let Value::Object(g) = &v else {
                    return Err(err(&field, "must be an object"));
                };
                for (gk, gv) in g {
                    set.put(
                        Target::Grid(gk.clone()),
                        &format!("{field}.{gk}"),
                        gv,
                        gv.clone(),
                    )?;
                }
            }
            _ => set.put(Target::Algorithm(k.clone()), &field, &v, v.clone())?,
        }
    }
    let mut grid = Obj::new();
    for (target, (_, _, value)) in set.0 {
        match target {
            Target::Grid(g) => grid.insert(g, value),
            Target::Algorithm(k) => algorithm.insert(k, value),
        };
    }
    if !grid.is_empty() {
        algorithm.insert("grid".into(), Value::Object(grid));
    }
    let mut cv = Obj::new();
    for (from, to) in [
        (&["folds", "numFolds"][..], "folds"),
        (&["seed"][..], "seed"),
        (&["scoring"][..], "scoring"),
        (&["holdout"][..], "holdout"),
    ] {
        if let Some(v) = one_of(obj, from, &format!("cv.{to}"))? {
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

/// The value of whichever of `names` (fields of the job.json that set one thing,
/// `what`: `model` and `modelName`, `folds` and `numFolds`) the job.json gives, null
/// counting as absent. Two given must agree, as the algorithm's parameters must
/// ([`Settled`]): different values are an error naming both; equal ones are one.
fn one_of<'a>(obj: &'a Obj, names: &[&str], what: &str) -> Result<Option<&'a Value>, SpecError> {
    let mut first: Option<(&str, &Value)> = None;
    for name in names {
        let Some(value) = obj.get(*name).filter(|v| !v.is_null()) else {
            continue;
        };
        match first {
            None => first = Some((*name, value)),
            Some((_, before)) if agree(before, value) => {}
            Some((first_name, before)) => {
                return Err(err(
                    name,
                    format!(
                        "{value} conflicts with {first_name} = {before}: both set {what}; \
                         give one of them (or the same value in both)"
                    ),
                ))
            }
        }
    }
    Ok(first.map(|(_, v)| v))
}

/// Whether two fields give one value: as [`same_setting`] judges, or a number and
/// its digits as text (a `modelkey` of `42` or `"42"`).
fn agree(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            s.trim() == n.to_string()
        }
        _ => same_setting(a, b, false),
    }
}

/// The algorithm's parameters of an old job.json as the train spec takes them
/// (`max_iter`, `grid.C`, …), each with the field that set it and the value given
/// there. Old job.json files name one parameter several ways (`regParam` and `C`,
/// `iterations` and `maxIter`, beside the name and in `params`): two fields that
/// set one parameter must agree, or the job would train with only one of them,
/// chosen by where the keys happen to sort.
#[derive(Default)]
struct Settled(std::collections::BTreeMap<Target, (String, Value, Value)>);

/// A parameter of the train spec's algorithm: a key of it, or of its grid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Algorithm(String),
    Grid(String),
}

impl Settled {
    /// Sets `target` to `value` (what `field` gave as `given`); an error naming
    /// both fields when an earlier one set it to another value.
    fn put(
        &mut self,
        target: Target,
        field: &str,
        given: &Value,
        value: Value,
    ) -> Result<(), SpecError> {
        let grid = matches!(target, Target::Grid(_));
        match self.0.get(&target) {
            None => {
                self.0
                    .insert(target, (field.to_string(), given.clone(), value));
                Ok(())
            }
            Some((_, _, before)) if same_setting(before, &value, grid) => Ok(()),
            Some((first, first_given, before)) => {
                let (what, both) = match &target {
                    Target::Grid(g) => (
                        format!("the grid's {g}"),
                        format!(" (to {value} and to {before})"),
                    ),
                    Target::Algorithm(k) => (k.clone(), String::new()),
                };
                Err(err(
                    field,
                    format!(
                        "{given} conflicts with {first} = {first_given}: both set {what}{both}; \
                         give one of them (or the same value in both)"
                    ),
                ))
            }
        }
    }
}

/// Whether two values set a parameter alike: numbers by value (`10` and `10.0`,
/// `C = 1/0.1`), lists item by item, and, for a grid, one value as the list of it.
fn same_setting(a: &Value, b: &Value, grid: bool) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_setting(x, y, false))
        }
        (Value::Array(x), one) | (one, Value::Array(x)) if grid && x.len() == 1 => {
            same_setting(&x[0], one, false)
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_setting(v, w, false)))
        }
        _ => a == b,
    }
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
        .starts_with("params.regParam"));
        assert_eq!(
            e(
                json!({"schema": schema, "inputCollection": "a.csv", "algorithm": "lr",
                             "params": {"regParam": 1e-320}})
            ),
            "params.regParam: 1e-320 is too small: C = 1/regParam must be finite"
        );
        assert!(e(json!({"schema": schema, "inputCollection": "a.csv",
                         "algorithm": {"name": "lr", "params": [1]}}))
        .starts_with("algorithm.params: must be an object"));
    }

    /// Two fields that set one parameter (`regParam` and `C`, `iterations` and
    /// `maxIter`, beside the name and in `params`) must agree: different values are
    /// an error naming both, whatever order their keys sort in; equal ones are one.
    #[test]
    fn conflicting_algorithm_parameters_are_refused_naming_both() {
        let schema = json!({"label": {"key": "y"}, "features": [{"key": "age"}]});
        let job = |algorithm: Value| json!({"schema": schema, "inputCollection": "a.csv", "algorithm": algorithm});
        let e = |algorithm: Value| train_job_to_spec(&job(algorithm)).unwrap_err().0;
        let both = |m: &str, a: &str, b: &str| {
            assert!(
                m.contains(a) && m.contains(b),
                "{m} should name {a} and {b}"
            );
            assert!(m.contains("conflicts with"), "{m}");
        };
        // The probe's case: C was dropped for regParam's 1/λ.
        both(
            &e(json!({"name": "LogisticRegression", "params": {"regParam": 0.1, "C": 5}})),
            "algorithm.params.regParam",
            "algorithm.params.C",
        );
        // Beside the name against params: the one in params won silently.
        both(
            &e(json!({"name": "lr", "regParam": 1.0, "params": {"regParam": 0.1}})),
            "algorithm.regParam",
            "algorithm.params.regParam",
        );
        both(
            &e(json!({"name": "lr", "params": {"maxIter": 50, "iterations": 100}})),
            "algorithm.params.maxIter",
            "algorithm.params.iterations",
        );
        both(
            &e(json!({"name": "lr", "params": {"grid": {"C": [1, 2]}, "regParam": 1}})),
            "algorithm.params.grid.C",
            "algorithm.params.regParam",
        );
        both(
            &e(json!({"name": "lr", "intercept": true, "params": {"fit_intercept": false}})),
            "algorithm.intercept",
            "algorithm.params.fit_intercept",
        );
        both(
            &e(json!({"name": "lr", "tol": 1e-4, "params": {"tol": 1e-6}})),
            "algorithm.tol",
            "algorithm.params.tol",
        );
        // A params object beside an algorithm object counts too (it was ignored).
        let m = train_job_to_spec(&json!({"schema": schema, "inputCollection": "a.csv",
            "algorithm": {"name": "lr", "C": 1}, "params": {"C": 2}}))
        .unwrap_err()
        .0;
        both(&m, "params.C", "algorithm.C");
        // Agreeing fields are fine: one value, as a number or the list of it.
        let spec = train_job_to_spec(&job(json!({"name": "LogisticRegression",
            "maxIter": 100, "regParam": 0.1,
            "params": {"iterations": 100.0, "C": 10, "grid": {"C": [10.0]}}})))
        .unwrap();
        assert_eq!(
            spec["spec"]["algorithm"],
            json!({"name": "logistic_regression", "max_iter": 100, "grid": {"C": [10.0]}})
        );
        let spec = train_job_to_spec(&json!({"schema": schema, "inputCollection": "a.csv",
            "algorithm": {"name": "lr"}, "params": {"C": [0.5, 2]}}))
        .unwrap();
        assert_eq!(spec["spec"]["algorithm"]["grid"], json!({"C": [0.5, 2]}));
    }

    /// `model` and `modelName`, `folds` and `numFolds`, `modelkey` and `modelKey`
    /// name one thing each: different values are an error naming both (the one
    /// that came last in the mapping won silently), equal ones are one.
    #[test]
    fn aliases_that_disagree_are_refused_naming_both() {
        let schema = json!({"label": {"key": "y"}, "features": [{"key": "age"}]});
        let train = |extra: Value| {
            let mut job = json!({"schema": schema, "inputCollection": "a.csv"});
            job.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            train_job_to_spec(&job).map_err(|e| e.0)
        };
        assert_eq!(
            train(json!({"model": "old2", "modelName": "old1"})).unwrap_err(),
            "modelName: \"old1\" conflicts with model = \"old2\": both set the model; \
             give one of them (or the same value in both)"
        );
        assert_eq!(
            train(json!({"folds": 3, "numFolds": 4})).unwrap_err(),
            "numFolds: 4 conflicts with folds = 3: both set cv.folds; give one of them \
             (or the same value in both)"
        );
        let spec =
            train(json!({"model": "m", "modelName": "m", "folds": 3, "numFolds": 3.0})).unwrap();
        assert_eq!(spec["spec"]["model"], "m");
        assert_eq!(spec["spec"]["cv"], json!({"folds": 3}));
        // Either alone, and a null beside one, is that one.
        let spec = train(json!({"modelName": "m", "model": null, "numFolds": 4})).unwrap();
        assert_eq!(spec["spec"]["model"], "m");
        assert_eq!(spec["spec"]["cv"], json!({"folds": 4}));
        let score = |extra: Value| {
            let mut job = json!({"inputCollection": "a.csv", "outputCollection": "o.csv"});
            job.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            predictall_to_score(&job).map_err(|e| e.0)
        };
        let m = score(json!({"modelkey": "a", "modelKey": "b"})).unwrap_err();
        assert!(
            m.starts_with("modelKey: \"b\" conflicts with modelkey = \"a\""),
            "{m}"
        );
        let spec = score(json!({"modelkey": 42, "modelKey": "42"})).unwrap();
        assert_eq!(spec["spec"]["model"], "42");
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

    /// `inputQuery` reads a database URL in `inputCollection`, as `/train/` takes
    /// it; without a URL it would go unread, and a URL needs it.
    #[test]
    fn the_old_job_jsons_input_query_reads_the_database() {
        let spec = predictall_to_score(&json!({
            "modelkey": "iris", "inputCollection": "sqlite://s.db",
            "inputQuery": "select * from src", "outputCollection": "pz.csv",
        }))
        .unwrap();
        assert_eq!(
            spec["spec"]["source"],
            json!({"url": "sqlite://s.db", "query": "select * from src"})
        );
        let e = |j: Value| predictall_to_score(&j).unwrap_err().0;
        assert!(e(
            json!({"modelkey": "iris", "inputCollection": "sqlite://s.db",
                         "outputCollection": "pz.csv"})
        )
        .starts_with("inputQuery: missing"));
        assert!(e(json!({"modelkey": "iris", "inputCollection": "new.csv",
                         "inputQuery": "select 1", "outputCollection": "pz.csv"}))
        .starts_with("inputQuery: is only for a database URL"));
        assert!(e(
            json!({"modelkey": "iris", "inputCollection": "mongodb://h/db",
                         "outputCollection": "pz.csv"})
        )
        .contains("MongoDB is not supported"));
        // A URL no module reads is named by the job.json's field, as an input or
        // an output.
        for (job, field) in [
            (
                json!({"modelkey": "iris", "inputCollection": "new.csv",
                       "outputCollection": "mongodb://h/db"}),
                "outputCollection",
            ),
            (
                json!({"modelkey": "iris", "inputCollection": "mongodb+srv://h/db",
                       "inputQuery": "{}", "outputCollection": "pz.csv"}),
                "inputCollection",
            ),
        ] {
            let m = e(job);
            assert_eq!(m, format!("{field}: MongoDB is not supported"));
        }
        let schema = json!({"label": {"key": "y"}, "features": [{"key": "age"}]});
        assert!(
            train_job_to_spec(&json!({"schema": schema, "inputCollection": "a.csv",
                                           "inputQuery": "select 1"}))
            .unwrap_err()
            .0
            .starts_with("inputQuery")
        );
    }
}
