//! What the prediction log costs per logged request: the request's own part (copying
//! what it hands over and offering it to the buffer) timed per call, and everything
//! the process spends on the entry in all (the writer's encoding and SQLite's insert
//! included) as CPU time over 200,000 (`LOG_COSTS_N`) one-row iris predictions written to a fresh
//! SQLite store, as `[log] sample_rate = 1.0` does.
//!
//! `taskset -c 1 cargo run --release --example log_costs` (pinned to one CPU, so that
//! the CPU time is the one core's). On demand, beside `bench/cache.sh`, whose
//! end-to-end ratio also carries the machine's noise. Compare the total with a
//! request's whole cost (about 70 us on the bench machine): the target is 10 %.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroserve::model_config::LogConfig;
use ferroserve::store::predictions::PendingPrediction;
use ferroserve::store::Store;
use ferroserve::tensor::{NamedTensor, Tensor, TensorData};
use tokio_util::sync::CancellationToken;

/// Entries offered between pauses: well under the buffer (4,096), so none is dropped.
const CHUNK: usize = 1_000;

fn cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    // LOG_COSTS_N: fewer entries, e.g. under valgrind (instruction counts).
    let n: usize = std::env::var("LOG_COSTS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}/ferroserve.db", dir.path().display());
        let store = Arc::new(
            Store::open(&url, Duration::from_secs(5), true)
                .await
                .expect("a SQLite store"),
        );
        let stop = CancellationToken::new();
        let writers = store.start_writers(stop.clone(), Duration::from_secs(120));
        let model: Arc<str> = "iris".into();
        let outputs: Vec<NamedTensor> = vec![
            (
                "label".to_string(),
                Tensor::new(vec![1], TensorData::I64(vec![1])).unwrap(),
            ),
            (
                "probabilities".to_string(),
                Tensor::new(vec![1, 3], TensorData::F32(vec![0.1, 0.2, 0.7])).unwrap(),
            ),
        ];
        let cpu0 = cpu_time();
        let wall0 = Instant::now();
        let mut offering = Duration::ZERO;
        for i in 0..n {
            let x = i as f32;
            let row = Tensor::new(vec![1, 4], TensorData::F32(vec![x, 1.0, 2.0, 3.0])).unwrap();
            let inputs: Vec<NamedTensor> = vec![("input".to_string(), row)];
            let started = Instant::now();
            // As the request path does: its inputs were copied for the log.
            let t0 = Instant::now();
            let entry = PendingPrediction::new(
                model.clone(),
                1,
                "v2",
                started.elapsed(),
                inputs.clone(),
                &outputs,
                &LogConfig::default(),
            );
            store.log_prediction(entry);
            offering += t0.elapsed();
            if (i + 1) % CHUNK == 0 {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        stop.cancel();
        for w in writers {
            w.await.expect("the writer ends");
        }
        let cpu = cpu_time() - cpu0;
        let wall = wall0.elapsed();
        let rows = store
            .status()
            .await
            .expect("the store's status")
            .rows
            .get("predictions")
            .copied()
            .unwrap_or(0);
        println!(
            "{n} logged predictions ({rows} rows written) in {:.1} s: request side {:.0} ns each; \
             CPU in all {:.2} us each (request side, writer, SQLite)",
            wall.as_secs_f64(),
            offering.as_nanos() as f64 / n as f64,
            cpu.as_nanos() as f64 / n as f64 / 1000.0,
        );
        assert_eq!(
            rows, n as i64,
            "entries were dropped: pace the offers more slowly"
        );
    });
}
