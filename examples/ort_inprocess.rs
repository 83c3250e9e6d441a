//! Bench-only: ONNX Runtime's own throughput for a model, in process, on the
//! calling thread (pin it with `taskset`), at each batch size; prints one line per
//! size and the best. The ceiling ferroserve's batching is measured against.
//! It calls ONNX Runtime through ferroserve's ONNX backend (`ort`, one session,
//! one intra-op thread, graph optimisation level 3), which only wraps the input
//! buffer and copies the outputs out, the same as `ort` used directly.
//!
//! `[ROW_SHAPE=3,48,192] ort_inprocess MODEL.onnx SECONDS_PER_SIZE [SIZES...]`
//! (default sizes 1 2 4 8 16 32 64)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferroserve::backends::onnx::OnnxBackend;
use ferroserve::backends::{Backend, BackendOptions};
use ferroserve::tensor::{Tensor, TensorData};

fn main() {
    let mut args = std::env::args().skip(1);
    let model = PathBuf::from(
        args.next()
            .expect("usage: ort_inprocess MODEL.onnx [SECONDS] [SIZES...]"),
    );
    let seconds: f64 = args
        .next()
        .map(|s| s.parse().expect("seconds"))
        .unwrap_or(3.0);
    let mut sizes: Vec<usize> = args.map(|s| s.parse().expect("batch size")).collect();
    if sizes.is_empty() {
        sizes = vec![1, 2, 4, 8, 16, 32, 64];
    }
    let options = BackendOptions {
        onnxruntime_path: std::env::var_os("FERROSERVE_ONNXRUNTIME_PATH").map(PathBuf::from),
        onnx_intra_threads: 1,
        onnx_sessions: 1,
        tensorflow_path: None,
    };
    let backend = OnnxBackend::load(&model, &options).expect("load the model");
    let spec = backend.signature().inputs[0].clone();
    // One row's shape: ROW_SHAPE (e.g. `3,48,192`) for models with variable
    // dimensions, else the signature's.
    let row_shape: Vec<usize> = match std::env::var("ROW_SHAPE") {
        Ok(s) => s
            .split(',')
            .map(|d| d.parse().expect("ROW_SHAPE"))
            .collect(),
        Err(_) => spec.shape[1..]
            .iter()
            .map(|&d| usize::try_from(d).expect("variable dimension: set ROW_SHAPE"))
            .collect(),
    };
    let row_len: usize = row_shape.iter().product();
    let mut best = (0.0f64, 0usize);
    for &n in &sizes {
        let mut shape = vec![n];
        shape.extend(&row_shape);
        // Deterministic, image-like values in [0, 1).
        let data: Vec<f32> = (0..n * row_len)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let input = Tensor::new(shape, TensorData::F32(data)).expect("input");
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
        let rows_per_s = (runs as f64 * n as f64) / elapsed;
        println!(
            "batch={n} rows/s={rows_per_s:.1} ms/run={:.3}",
            elapsed * 1e3 / runs as f64
        );
        if rows_per_s > best.0 {
            best = (rows_per_s, n);
        }
    }
    println!("best batch={} rows/s={:.1}", best.1, best.0);
}
