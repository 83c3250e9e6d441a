//! Prometheus metrics. Operations record through the `metrics` facade; `/metrics`
//! renders the process-wide recorder installed by [`install`].
//!
//! Names:
//! * `ferroserve_requests_total{model,version,protocol,outcome}`
//! * `ferroserve_request_duration_seconds{model,protocol}` (histogram)
//! * `ferroserve_inference_duration_seconds{model,version}` (histogram)
//! * `ferroserve_queue_length{model,version}` (gauge: requests waiting in the version's queue)
//! * `ferroserve_batch_size{model,version}` (histogram: rows per model run)
//! * `ferroserve_queue_duration_seconds{model,version}` (histogram: queued → run)
//! * `ferroserve_compute_duration_seconds{model,version}` (histogram: one model run)
//! * `ferroserve_rejected_total{model,version}` (counter: refused because the queue was full)
//! * `ferroserve_model_versions{state}` (gauge, set at scrape time)
//! * `ferroserve_auth_failures_total{protocol,reason}` (counter: requests refused by
//!   the access layer: missing_token, invalid_token, missing_scope, remote_management,
//!   cross_site)
//! * `process_resident_memory_bytes` (gauge, read at scrape time)

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::manager::Manager;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets from 50 µs to 60 s: a tabular model answers in microseconds,
/// a large one in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Batch sizes, in rows: powers of two up to the largest `max_batch_size` worth having.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Installs the Prometheus recorder once per process (tests start many servers).
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("bucket list is not empty")
            .set_buckets_for_metric(
                Matcher::Full("ferroserve_batch_size".into()),
                BATCH_SIZE_BUCKETS,
            )
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by an embedding program);
        // then our handle renders nothing, which is better than failing to start.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

/// A request the access layer refused (`protocol` rest or grpc).
pub fn record_auth_failure(protocol: &'static str, reason: &'static str) {
    metrics::counter!(
        "ferroserve_auth_failures_total",
        "protocol" => protocol,
        "reason" => reason
    )
    .increment(1);
}

pub fn record_request(
    model: &str,
    version: &str,
    protocol: &'static str,
    outcome: &'static str,
    elapsed: Duration,
) {
    metrics::counter!(
        "ferroserve_requests_total",
        "model" => model.to_string(),
        "version" => version.to_string(),
        "protocol" => protocol,
        "outcome" => outcome
    )
    .increment(1);
    metrics::histogram!(
        "ferroserve_request_duration_seconds",
        "model" => model.to_string(),
        "protocol" => protocol
    )
    .record(elapsed.as_secs_f64());
}

pub fn record_inference(model: &str, version: u64, elapsed: Duration) {
    metrics::histogram!(
        "ferroserve_inference_duration_seconds",
        "model" => model.to_string(),
        "version" => version.to_string()
    )
    .record(elapsed.as_secs_f64());
}

/// The metrics of one version's queue, registered once when the version loads so
/// that the request path formats and allocates no labels.
pub struct QueueMetrics {
    pub queue_length: Gauge,
    pub batch_size: Histogram,
    pub queue_duration: Histogram,
    pub compute_duration: Histogram,
    /// `ferroserve_inference_duration_seconds`, kept beside compute time for
    /// dashboards made before batching.
    pub inference_duration: Histogram,
    pub rejected: Counter,
    /// Requests answered by this version, per protocol.
    pub answered: AnsweredRequests,
}

/// `ferroserve_requests_total{outcome="ok"}` and `ferroserve_request_duration_seconds`
/// of one version, one pair per protocol, registered on first use: the request path
/// of an answered request then neither formats labels nor looks up the registry.
pub struct AnsweredRequests {
    model: String,
    version: String,
    by_protocol: parking_lot::RwLock<Vec<(&'static str, Counter, Histogram)>>,
}

impl AnsweredRequests {
    fn new(model: &str, version: u64) -> AnsweredRequests {
        AnsweredRequests {
            model: model.to_string(),
            version: version.to_string(),
            by_protocol: parking_lot::RwLock::new(Vec::new()),
        }
    }

    /// Records what [`record_request`] records for outcome `ok`.
    pub fn record(&self, protocol: &'static str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some((_, count, duration)) = self
            .by_protocol
            .read()
            .iter()
            .find(|(p, ..)| *p == protocol)
        {
            count.increment(1);
            duration.record(seconds);
            return;
        }
        let count = metrics::counter!(
            "ferroserve_requests_total",
            "model" => self.model.clone(),
            "version" => self.version.clone(),
            "protocol" => protocol,
            "outcome" => "ok"
        );
        let duration = metrics::histogram!(
            "ferroserve_request_duration_seconds",
            "model" => self.model.clone(),
            "protocol" => protocol
        );
        count.increment(1);
        duration.record(seconds);
        self.by_protocol.write().push((protocol, count, duration));
    }
}

impl QueueMetrics {
    pub fn new(model: &str, version: u64) -> QueueMetrics {
        let labels = [
            metrics::Label::new("model", model.to_string()),
            metrics::Label::new("version", version.to_string()),
        ];
        QueueMetrics {
            queue_length: metrics::gauge!("ferroserve_queue_length", labels.iter()),
            batch_size: metrics::histogram!("ferroserve_batch_size", labels.iter()),
            queue_duration: metrics::histogram!("ferroserve_queue_duration_seconds", labels.iter()),
            compute_duration: metrics::histogram!(
                "ferroserve_compute_duration_seconds",
                labels.iter()
            ),
            inference_duration: metrics::histogram!(
                "ferroserve_inference_duration_seconds",
                labels.iter()
            ),
            rejected: metrics::counter!("ferroserve_rejected_total", labels.iter()),
            answered: AnsweredRequests::new(model, version),
        }
    }
}

/// Renders every metric, after refreshing the gauges that are read at scrape time.
pub fn render(manager: &Manager) -> String {
    let handle = install();
    for (state, count) in manager.state_counts() {
        metrics::gauge!("ferroserve_model_versions", "state" => state.as_str()).set(count as f64);
    }
    if let Some(rss) = resident_memory_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    handle.render()
}

/// Resident set size from `/proc/self/statm` (Linux); `None` elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
