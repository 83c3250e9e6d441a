//! Native scikit-learn prediction against ONNX Runtime on the same fitted models,
//! in process, one thread: predict for 1 row and for 32 rows, and the load time of a
//! ~50 MB random forest pickle.
//!
//! The models are made at bench time by `benches/make_bench_models.py` (scikit-learn
//! and skl2onnx from the repository's `.venv`) into `$FERROSERVE_BENCH_DIR`, by
//! default `/tmp/ferroserve-sklearn-bench`; nothing large is committed.
//! ONNX Runtime is `ORT_DYLIB_PATH`, else `.ort/libonnxruntime.so.1.31.1`.
//!
//! Run: `cargo bench -p ferroserve-sklearn --bench sklearn_native`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferroserve_sklearn::{Input, SklearnModel};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("FERROSERVE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/ferroserve-sklearn-bench"));
    if !dir.join("big_forest.pkl").is_file() {
        let python = workspace_root().join(".venv/bin/python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/make_bench_models.py");
        let status = std::process::Command::new(&python)
            .arg(&script)
            .arg(&dir)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} (run scripts/setup.sh): {e}",
                    python.display()
                )
            });
        assert!(status.success(), "make_bench_models.py failed");
    }
    dir
}

/// Median time per call of `f`, over `rounds` rounds of `iters` calls.
fn time_per_call(rounds: usize, iters: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..iters {
        f();
    }
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters as u32
        })
        .collect();
    samples.sort();
    samples[rounds / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let dir = bench_dir();
    let rows: Vec<f64> = std::fs::read_to_string(dir.join("rows.txt"))
        .expect("rows.txt")
        .split_whitespace()
        .map(|v| v.parse().expect("a number"))
        .collect();
    let rows32: Vec<f32> = rows.iter().map(|&v| v as f32).collect();

    let ort_lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".ort/libonnxruntime.so.1.31.1"));
    let env = ort::init_from(&ort_lib)
        .expect("load ONNX Runtime")
        .with_name("bench")
        .with_telemetry(false)
        .build()
        .expect("ONNX Runtime environment");

    println!("## in-process predict, 1 thread, median per call (µs)");
    println!("| model | rows | native predict | native predict_proba | ONNX Runtime run | ORT / native proba |");
    println!("|---|---|---|---|---|---|");
    for name in ["logreg", "forest", "pipeline"] {
        let model = SklearnModel::load(&std::fs::read(dir.join(format!("{name}.pkl"))).unwrap())
            .expect("native load");
        let mut session = Session::builder(&env)
            .unwrap()
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .unwrap()
            .with_intra_threads(1)
            .unwrap()
            .with_inter_threads(1)
            .unwrap()
            .commit_from_file(dir.join(format!("{name}.onnx")))
            .expect("ONNX session");
        let input_name = session.inputs()[0].name().to_string();
        for n in [1usize, 32] {
            let x = &rows[..n * 4];
            let input = Input::dense(x, n, 4);
            let (rounds, iters) = if name == "forest" {
                (15, 2000 / n)
            } else {
                (15, 20000 / n)
            };
            let native_predict = time_per_call(rounds, iters, || {
                black_box(model.predict(black_box(&input)).unwrap());
            });
            let native_proba = time_per_call(rounds, iters, || {
                black_box(model.predict_proba(black_box(&input)).unwrap());
            });
            let x32 = &rows32[..n * 4];
            let ort_run = time_per_call(rounds, iters.min(5000), || {
                let tensor = TensorRef::from_array_view(([n as i64, 4], x32)).unwrap();
                let inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> =
                    vec![(input_name.as_str(), tensor.into())];
                let outputs = session.run(inputs).unwrap();
                let probs = outputs["probabilities"]
                    .try_extract_tensor::<f32>()
                    .unwrap();
                black_box(probs.1.len());
            });
            println!(
                "| {name} | {n} | {:.2} | {:.2} | {:.2} | {:.1}x |",
                micros(native_predict),
                micros(native_proba),
                micros(ort_run),
                ort_run.as_secs_f64() / native_proba.as_secs_f64()
            );
        }
    }

    let big = std::fs::read(dir.join("big_forest.pkl")).expect("big_forest.pkl");
    let load = time_per_call(5, 1, || {
        black_box(SklearnModel::load(black_box(&big)).unwrap());
    });
    println!(
        "\nload of big_forest.pkl ({:.1} MB, {} trees): {:.0} ms median of 5 (read + rebuild)",
        big.len() as f64 / 1e6,
        72,
        load.as_secs_f64() * 1e3
    );
}
