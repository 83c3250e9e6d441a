//! Hostile text and SVM models: real fixtures with one fitted attribute altered the
//! way a crafted file would alter it. Each must be refused at load (or the request
//! refused) with a message naming the problem: never a panic, never an allocation
//! sized by a number in the file.

mod common;

use std::sync::Arc;

use ferroserve_sklearn::value::Value;
use ferroserve_sklearn::{read_model_file, Input, SklearnModel};

fn fixture(name: &str) -> Value {
    let path = common::crate_dir()
        .join("tests/fixtures/sklearn/1.9.1")
        .join(name);
    read_model_file(&std::fs::read(path).unwrap()).unwrap()
}

/// The tree with attribute `key` of every object of class `class` set to `new`
/// (added when missing).
fn set_attr(v: &Value, class: &str, key: &str, new: &Value) -> Value {
    match v {
        Value::Object {
            module,
            name,
            args,
            state,
        } => {
            let state = state.as_deref().map(|s| match s {
                Value::Dict(items) => {
                    let mut items: Vec<(Value, Value)> = items
                        .iter()
                        .map(|(k, v)| (k.clone(), set_attr(v, class, key, new)))
                        .collect();
                    if name == class {
                        items.retain(|(k, _)| k.as_str() != Some(key));
                        items.push((Value::Str(key.into()), new.clone()));
                    }
                    Arc::new(Value::Dict(Arc::new(items)))
                }
                other => Arc::new(set_attr(other, class, key, new)),
            });
            Value::Object {
                module: module.clone(),
                name: name.clone(),
                args: args.clone(),
                state,
            }
        }
        Value::List(items) => Value::List(Arc::new(
            items.iter().map(|i| set_attr(i, class, key, new)).collect(),
        )),
        Value::Tuple(items) => Value::Tuple(Arc::new(
            items.iter().map(|i| set_attr(i, class, key, new)).collect(),
        )),
        other => other.clone(),
    }
}

fn load_err(v: &Value) -> String {
    SklearnModel::from_value(v)
        .map(|m| panic!("loaded {}, but must be refused", m.description()))
        .unwrap_err()
        .to_string()
}

fn a_callable() -> Value {
    // What a function reference would become if it got past the reader's allowlist
    // (it does not: a GLOBAL naming user code is refused there first).
    Value::Object {
        module: "sklearn.utils".into(),
        name: "Pipeline".into(),
        args: Arc::new(vec![]),
        state: None,
    }
}

#[test]
fn callable_tokenizer_preprocessor_and_analyzer_are_refused_by_name() {
    let model = fixture("text_tfidf_logreg.z3.joblib");
    for key in ["tokenizer", "preprocessor", "analyzer"] {
        let err = load_err(&set_attr(&model, "TfidfVectorizer", key, &a_callable()));
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn vocabulary_index_out_of_range_of_idf_is_refused() {
    let model = fixture("text_tfidf_logreg.z3.joblib");
    let vocab = Value::Dict(Arc::new(vec![
        (Value::Str("team".into()), Value::Int(0)),
        (Value::Str("goal".into()), Value::Int(1_000_000)),
    ]));
    let err = load_err(&set_attr(&model, "TfidfVectorizer", "vocabulary_", &vocab));
    assert!(err.contains("vocabulary_"), "{err}");
    // A valid permutation, but shorter than idf_.
    let vocab = Value::Dict(Arc::new(vec![(Value::Str("team".into()), Value::Int(0))]));
    let err = load_err(&set_attr(&model, "TfidfVectorizer", "vocabulary_", &vocab));
    assert!(err.contains("idf_"), "{err}");
    // Two terms on one column.
    let vocab = Value::Dict(Arc::new(vec![
        (Value::Str("a".into()), Value::Int(0)),
        (Value::Str("b".into()), Value::Int(0)),
    ]));
    let err = load_err(&set_attr(&model, "TfidfVectorizer", "vocabulary_", &vocab));
    assert!(err.contains("two terms"), "{err}");
}

#[test]
fn absurd_ngram_range_is_refused() {
    let model = fixture("text_tfidf_logreg.z3.joblib");
    for (lo, hi, want) in [
        (1, 1_000_000_000, "ngram_range"),
        (3, 2, "ngram_range"),
        (0, 1, "ngram_range"),
    ] {
        let range = Value::Tuple(Arc::new(vec![Value::Int(lo), Value::Int(hi)]));
        let err = load_err(&set_attr(&model, "TfidfVectorizer", "ngram_range", &range));
        assert!(err.contains(want), "({lo}, {hi}): {err}");
    }
}

#[test]
fn huge_n_features_is_bounded() {
    let model = fixture("text_hashing_sgd.z3.joblib");
    let err = load_err(&set_attr(
        &model,
        "HashingVectorizer",
        "n_features",
        &Value::Int(1 << 40),
    ));
    assert!(err.contains("n_features"), "{err}");
    // The largest scikit-learn accepts loads; the rows stay sparse, and the linear
    // model refuses the width without allocating it.
    let wide = set_attr(
        &model,
        "HashingVectorizer",
        "n_features",
        &Value::Int(i32::MAX as i64),
    );
    let m = SklearnModel::from_value(&wide).unwrap();
    let err = m
        .predict(&Input::Text(vec!["the team won".into()]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("features"), "{err}");
}

#[test]
fn svm_with_inconsistent_support_is_refused() {
    let model = fixture("svc_rbf_proba.z3.joblib");
    let bad = Value::Array(Arc::new(ferroserve_sklearn::value::NdArray {
        dtype: ferroserve_sklearn::value::DType::I32,
        shape: vec![3],
        data: ferroserve_sklearn::value::ArrayData::Int(vec![1, 1, 1_000_000]),
    }));
    let err = load_err(&set_attr(&model, "SVC", "_n_support", &bad));
    assert!(err.contains("disagree"), "{err}");
    let kernel = Value::Str("precomputed".into());
    let err = load_err(&set_attr(&model, "SVC", "kernel", &kernel));
    assert!(err.contains("precomputed"), "{err}");
}

#[test]
fn svc_without_probability_refuses_predict_proba_clearly() {
    let model = SklearnModel::from_value(&fixture("svc_sigmoid_ovo.z3.joblib")).unwrap();
    assert!(!model.has_predict_proba());
    let x = [5.0, 3.0, 1.5, 0.2];
    let err = model
        .predict_proba(&Input::dense(&x, 1, 4))
        .unwrap_err()
        .to_string();
    assert!(err.contains("predict_proba"), "{err}");
}

/// Found by `mutated_text_and_svm_models_never_panic`: a binary calibrated model whose
/// base estimator lists its classes in the other order indexed past the probability row.
#[test]
fn calibrated_base_with_classes_out_of_order_is_refused() {
    let model = fixture("calibrated_logreg_isotonic_binary.z3.joblib");
    let reversed = Value::Array(Arc::new(ferroserve_sklearn::value::NdArray {
        dtype: ferroserve_sklearn::value::DType::I64,
        shape: vec![2],
        data: ferroserve_sklearn::value::ArrayData::Int(vec![1, 0]),
    }));
    let err = load_err(&set_attr(
        &model,
        "LogisticRegression",
        "classes_",
        &reversed,
    ));
    assert!(err.contains("classes_"), "{err}");
}
