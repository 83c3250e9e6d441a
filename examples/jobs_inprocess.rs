//! Bench-only (bench/jobs.sh): a backend's own batch throughput, in process, on the
//! calling thread: the ceiling a scoring job is measured against. It loads the model
//! with ferroserve's backend (ONNX Runtime with one intra-op thread, or the native
//! scikit-learn reader), then predicts batches of `BATCH` iris-like rows (every
//! output, as a job asks for the prediction and the probabilities) for `SECONDS`,
//! and prints `rows/s=…`.
//!
//! `jobs_inprocess MODEL(.onnx|.joblib|.pkl) BATCH SECONDS`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferroserve::backends::onnx::OnnxBackend;
use ferroserve::backends::sklearn::SklearnBackend;
use ferroserve::backends::{Backend, BackendOptions};
use ferroserve::tensor::{DataType, Tensor, TensorData};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: jobs_inprocess MODEL BATCH SECONDS";
    let model = PathBuf::from(args.next().expect(usage));
    let batch: usize = args.next().expect(usage).parse().expect("batch size");
    let seconds: f64 = args.next().expect(usage).parse().expect("seconds");
    let backend: Box<dyn Backend> = if model.extension().is_some_and(|e| e == "onnx") {
        let options = BackendOptions {
            onnxruntime_path: std::env::var_os("FERROSERVE_ONNXRUNTIME_PATH").map(PathBuf::from),
            onnx_intra_threads: 1,
            onnx_sessions: 1,
            ..BackendOptions::default()
        };
        Box::new(OnnxBackend::load(&model, &options).expect("load the model"))
    } else {
        Box::new(SklearnBackend::load(&model).expect("load the model"))
    };
    let spec = backend.signature().inputs[0].clone();
    // Iris-like rows, different in every position.
    let values: Vec<f64> = (0..batch * 4)
        .map(|i| 1.0 + ((i * 7919) % 600) as f64 / 100.0)
        .collect();
    let data = match spec.dtype {
        DataType::F32 => TensorData::F32(values.iter().map(|v| *v as f32).collect()),
        _ => TensorData::F64(values),
    };
    let input = Tensor::new(vec![batch, 4], data).expect("input");
    let run = || {
        backend
            .predict(vec![(spec.name.clone(), input.clone())], &[])
            .expect("inference")
    };
    run(); // warm-up
    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        run();
        runs += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "batch={batch} rows/s={:.1} ms/batch={:.3}",
        runs as f64 * batch as f64 / elapsed,
        elapsed * 1e3 / runs as f64
    );
}
