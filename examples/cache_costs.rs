//! What the response cache itself costs a request whose answer it does not hold:
//! the key (BLAKE3 of the request), the lookup that misses, and storing the answer,
//! each timed per call over 400,000 distinct one-row iris requests in three phases
//! (the in-process tier at its default 256 MiB fills during the second).
//!
//! `cargo run --release --example cache_costs` (pin it: `taskset -c 1 …`). On demand,
//! beside `bench/cache.sh`, whose end-to-end ratio also carries the machine's noise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroserve::cache::{CacheKey, ResponseCache};
use ferroserve::metrics::QueueMetrics;
use ferroserve::model_config::Admission;
use ferroserve::settings::Settings;
use ferroserve::tensor::{Tensor, TensorData};

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    // The server's metrics recorder, so that the hit and miss counters cost what
    // they cost in the server.
    ferroserve::metrics::install();
    runtime.block_on(async {
        let cache = ResponseCache::from_settings(&Settings::default()).expect("a memory tier");
        let model: Arc<str> = "iris".into();
        let answer = vec![
            (
                "label".to_string(),
                Tensor::new(vec![1], TensorData::I64(vec![1])).unwrap(),
            ),
            (
                "probabilities".to_string(),
                Tensor::new(vec![1, 3], TensorData::F32(vec![0.1, 0.2, 0.7])).unwrap(),
            ),
        ];
        let metrics = QueueMetrics::new(&model, 1);
        let counters = metrics.cache();
        let n = 400_000u32;
        for phase in 0..3 {
            let (mut key_t, mut lookup_t, mut store_t) =
                (Duration::ZERO, Duration::ZERO, Duration::ZERO);
            for i in 0..n {
                let x = (phase * n + i) as f32;
                let row = Tensor::new(vec![1, 4], TensorData::F32(vec![x, 1.0, 2.0, 3.0])).unwrap();
                let inputs = vec![("input".to_string(), row)];
                let t0 = Instant::now();
                let key = CacheKey::new(&model, 1, &[0; 32], &inputs, &[]);
                let t1 = Instant::now();
                let found = cache
                    .lookup(&key, &model, counters, t1 + Duration::from_secs(1), &|_| {
                        true
                    })
                    .await;
                assert!(found.is_none(), "every request differs");
                let t2 = Instant::now();
                cache
                    .store(
                        key,
                        &model,
                        &answer,
                        Duration::from_secs(3600),
                        Admission::FirstMiss,
                        counters,
                    )
                    .await;
                let t3 = Instant::now();
                key_t += t1 - t0;
                lookup_t += t2 - t1;
                store_t += t3 - t2;
            }
            let per = |d: Duration| d.as_nanos() as f64 / f64::from(n);
            println!(
                "phase {phase}: key {:.0} ns, lookup (miss) {:.0} ns, store {:.0} ns",
                per(key_t),
                per(lookup_t),
                per(store_t)
            );
        }
    });
}
