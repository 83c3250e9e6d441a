//! Inputs the fuzzer (`fuzz/`, see FUZZING.md) flagged: crashes, timeouts, slow units and
//! out-of-memory reports. Each must now load or fail cleanly, quickly, on a small stack.

mod common;

use std::fs;
use std::time::{Duration, Instant};

#[test]
fn every_fuzzer_finding_is_handled_cleanly() {
    let dir = common::crate_dir().join("tests/fuzz_regressions");
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let started = Instant::now();
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                let _ = ferroserve_sklearn::read_model_file(&bytes);
            })
            .unwrap()
            .join()
            .unwrap_or_else(|_| panic!("{name}: reader panicked"));
        // Generous for a debug build on a busy machine; the point is "not minutes".
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name}: took {:?}",
            started.elapsed()
        );
        count += 1;
    }
    assert!(count >= 1, "no fuzz regression inputs found");
}

/// A small deterministic stand-in for the fuzzer that runs with every `cargo test`:
/// random byte flips, insertions, deletions and splices of real fixtures must never
/// panic (the fuzzer explores far more; this keeps regressions visible on stable Rust).
#[test]
fn mutated_fixtures_never_panic() {
    let dir = common::crate_dir().join("tests/fixtures/pickle");
    let seeds: Vec<Vec<u8>> = [
        "plain.p0.pkl",
        "plain.p2.pkl",
        "plain.p5.pkl",
        "arrays.p2.pkl",
        "arrays.p5.pkl",
        "arrays.joblib",
        "sk_knn_kd_tree.p5.pkl",
    ]
    .iter()
    .map(|name| fs::read(dir.join(name)).unwrap())
    .collect();
    // xorshift64*: deterministic, so a failure reproduces.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let interesting: [u8; 12] = [
        0x00, 0x01, 0x7f, 0x80, 0xff, b'(', b')', b'.', b'R', b'b', b'h', 0x94,
    ];
    // FERROSERVE_MUTATION_ROUNDS scales the run up for a longer soak (see FUZZING.md).
    let rounds: usize = std::env::var("FERROSERVE_MUTATION_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3000);
    for round in 0..rounds {
        let seed = &seeds[round % seeds.len()];
        let mut bytes = seed.clone();
        for _ in 0..1 + next() % 4 {
            if bytes.is_empty() {
                break;
            }
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 4 {
                0 => bytes[at] = interesting[(next() % 12) as usize],
                1 => bytes[at] ^= 1 << (next() % 8),
                2 => {
                    bytes.remove(at);
                }
                _ => {
                    let other = &seeds[(next() % seeds.len() as u64) as usize];
                    let from = (next() % other.len() as u64) as usize;
                    let len = ((next() % 32) as usize).min(other.len() - from);
                    let piece = other[from..from + len].to_vec();
                    bytes.splice(at..at, piece);
                }
            }
        }
        let _ = ferroserve_sklearn::read_model_file(&bytes);
    }
}

/// The same mutations over the uncompressed text-pipeline, SVM and calibration
/// fixtures, through the whole load (reader and estimator rebuild) and, when a mutant
/// still loads, a prediction: the vectorizers, CSR parsing and libsvm port must refuse
/// what they cannot use, never panic.
#[test]
fn mutated_text_and_svm_models_never_panic() {
    let dir = common::crate_dir().join("tests/fixtures/sklearn/1.9.1");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            ["text_", "svc_", "nusvc_", "svr_", "nusvr_", "calibrated_"]
                .iter()
                .any(|p| n.starts_with(p))
                && (n.ends_with(".pkl") || n.ends_with(".joblib"))
        })
        .collect();
    names.retain(|n| !n.contains(".z3.") && !n.contains(".gz3."));
    names.sort();
    assert!(names.len() >= 10, "text/SVM seeds missing: {names:?}");
    let seeds: Vec<Vec<u8>> = names
        .iter()
        .map(|n| fs::read(dir.join(n)).unwrap())
        .collect();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    };
    let rounds: usize = std::env::var("FERROSERVE_MUTATION_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1500);
    let docs = vec![
        "the team won".to_string(),
        "这 部 电影".to_string(),
        "café  crème".to_string(),
        String::new(),
    ];
    let dense = [5.0, 3.0, 1.5, 0.2, 6.0, 2.5, 5.0, 1.8];
    for round in 0..rounds {
        let seed = &seeds[round % seeds.len()];
        let mut bytes = seed.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 3 {
                0 => bytes[at] ^= 1 << (next() % 8),
                1 => bytes[at] = (next() % 256) as u8,
                _ => {
                    bytes.remove(at);
                }
            }
        }
        let Ok(model) = ferroserve_sklearn::SklearnModel::load(&bytes) else {
            continue;
        };
        let input = match model.input_schema() {
            ferroserve_sklearn::InputSchema::Text => ferroserve_sklearn::Input::Text(docs.clone()),
            ferroserve_sklearn::InputSchema::Dense { n_features: 4 } => {
                ferroserve_sklearn::Input::dense(&dense, 2, 4)
            }
            _ => continue,
        };
        let _ = model.predict(&input);
        let _ = model.predict_proba(&input);
        let _ = model.decision_function(&input);
    }
}
