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
//! * `ferroserve_jobs_total{kind,state}` (counter: jobs this process ran to an end,
//!   by kind and final state; a job claimed by another replica is not counted here)
//! * `ferroserve_connections_evicted_total` (counter: idle connections closed at the
//!   connection limit to make room for new ones)
//! * `process_resident_memory_bytes` (gauge, read at scrape time)
//!
//! Series labelled with a version live in a recorder of that version's own and
//! leave `/metrics` when the version ends (the `Drop` of its last handle), so a
//! model swapped thousands of times keeps a bounded exposition: every outcome of a
//! request a version was chosen for, errors as well as `ok`, is among them. Series
//! without a version (`ferroserve_request_duration_seconds`, the per-model total
//! of requests, and failures recorded before a version was chosen, `version=""`)
//! live in the global recorder and stay. The errors of the versions that ended are
//! kept as one number per model ([`errors_of_ended_versions`]), outside the
//! exposition, so that the console's totals do not drop at a swap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::manager::Manager;

mod version;
pub use version::{errors_of_ended_versions, version_statistics, VersionStatistics};
use version::{live_version_recorders, VersionRecorder};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often [`upkeep`] drains histogram samples into their buckets. The recorder
/// keeps every sample recorded since the last drain (about 85 bytes a request), so
/// without it memory grows until someone scrapes `/metrics`.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Upkeep passes run since the process started (see [`upkeep`]).
static UPKEEP_PASSES: AtomicU64 = AtomicU64::new(0);

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

/// Every recorder (the global one and each version's) is built alike, so that
/// their renderings merge into one exposition.
fn build_recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .expect("bucket list is not empty")
        .set_buckets_for_metric(
            Matcher::Full("ferroserve_batch_size".into()),
            BATCH_SIZE_BUCKETS,
        )
        .expect("bucket list is not empty")
        .build_recorder()
}

/// Installs the Prometheus recorder once per process (tests start many servers),
/// and starts the thread that runs [`upkeep`] every [`UPKEEP_INTERVAL`]. The
/// thread lives as long as the process, as the recorder does.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by an embedding program);
        // then our handle renders nothing, which is better than failing to start.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        let started = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(|| loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep();
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the metrics upkeep thread; histogram samples will only be drained by /metrics scrapes");
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

/// Idle connections closed at the connection limit to make room for new ones.
pub fn record_connections_evicted(n: u64) {
    metrics::counter!("ferroserve_connections_evicted_total").increment(n);
}

/// A failed use of the metadata store (a write retried later, a management call
/// refused with 503).
pub fn record_store_error() {
    metrics::counter!("ferroserve_store_errors_total").increment(1);
}

/// A job this process ran to an end (`state`: succeeded, failed, cancelled).
pub fn record_job_finished(kind: &'static str, state: &'static str) {
    metrics::counter!("ferroserve_jobs_total", "kind" => kind, "state" => state).increment(1);
}

/// An entry dropped because a store buffer (`events`, `predictions`) was full.
pub fn record_store_dropped(buffer: &'static str) {
    metrics::counter!("ferroserve_store_dropped_total", "buffer" => buffer).increment(1);
}

/// Drains the histogram samples recorded since the last pass into their buckets,
/// in the global recorder and in every live version's. A scrape does the same.
pub fn upkeep() {
    if let Some(handle) = HANDLE.get() {
        handle.run_upkeep();
    }
    for recorder in live_version_recorders() {
        recorder.handle.run_upkeep();
    }
    UPKEEP_PASSES.fetch_add(1, Ordering::Relaxed);
}

/// How many upkeep passes have run, so that a test can see the thread at work.
pub fn upkeep_passes() -> u64 {
    UPKEEP_PASSES.load(Ordering::Relaxed)
}

tokio::task_local! {
    /// The inference request whose task is running, while an adapter's counting
    /// wrapper (`http::count_inference`, `grpc::count_inference`) runs it.
    static TALLY: RequestTally;
}

/// What is known of one inference request while it runs, so that its outcome is
/// recorded exactly once, whatever stage answers it: `api::predict` records the
/// requests it sees (and says so here); the adapter's wrapper records the others
/// (malformed JSON, a message that is not protobuf, a body over the limit) with
/// the error their answer was made from. Cells, not atomics: only the request's
/// own task touches it.
#[derive(Debug, Default)]
pub struct RequestTally {
    /// Set where the outcome was recorded (`api::predict`, `api::admit`) or is
    /// left to another process (a request forwarded to a model's worker).
    recorded: std::cell::Cell<bool>,
    /// The kind of the last error an answer was made from (`ApiError::kind`).
    error: std::cell::Cell<Option<&'static str>>,
    /// The model the request names, once an adapter has read it (a gRPC message).
    model: std::cell::RefCell<Option<String>>,
    /// Set where the request's model is deployed in a worker that did not answer
    /// it (not ready, restarting, or gone mid-request): this server's answer is
    /// then counted here, under the model's name, as the worker never counts it.
    worker_did_not_answer: std::cell::Cell<bool>,
}

impl RequestTally {
    pub fn recorded(&self) -> bool {
        self.recorded.get()
    }

    /// The kind of the error the answer was made from, if one was noted.
    pub fn error(&self) -> Option<&'static str> {
        self.error.get()
    }

    /// The model an adapter noted, if any.
    pub fn model(&self) -> Option<String> {
        self.model.borrow().clone()
    }

    /// Whether the request's worker did not answer it ([`note_worker_did_not_answer`]).
    pub fn worker_did_not_answer(&self) -> bool {
        self.worker_did_not_answer.get()
    }
}

/// Runs `request` (one inference request's answer) with a [`RequestTally`] that
/// the code below it fills, and gives the tally back with its output.
pub async fn tally_request<F: std::future::Future>(request: F) -> (F::Output, RequestTally) {
    let mut scoped = std::pin::pin!(TALLY.scope(RequestTally::default(), request));
    let output = scoped.as_mut().await;
    let tally = scoped.as_mut().take_value().unwrap_or_default();
    (output, tally)
}

/// Says that the running request's outcome is recorded (or left to the worker
/// it is forwarded to), so that its adapter's wrapper does not record it again.
/// Outside a wrapper (a job, the console) it does nothing.
pub fn mark_request_recorded() {
    let _ = TALLY.try_with(|t| t.recorded.set(true));
}

/// Says that the running request, for a model deployed in a worker, is answered
/// by this server because the worker did not answer it (not ready, restarting,
/// gone mid-request): it is no longer left to the worker
/// ([`mark_request_recorded`]), and its adapter's wrapper records it under the
/// model's name ([`record_worker_refusal`]). Outside a wrapper it does nothing.
pub fn note_worker_did_not_answer() {
    let _ = TALLY.try_with(|t| {
        t.recorded.set(false);
        t.worker_did_not_answer.set(true);
    });
}

/// Notes the kind of error the running request's answer is made from.
pub fn note_request_error(kind: &'static str) {
    let _ = TALLY.try_with(|t| t.error.set(Some(kind)));
}

/// Notes the model the running request names (read from a gRPC message).
pub fn note_request_model(model: &str) {
    let _ = TALLY.try_with(|t| *t.model.borrow_mut() = Some(model.to_string()));
}

/// Records a request no operation recorded (refused before `api::predict`, or by
/// it before a version was chosen), with `version=""`: under `model` only when
/// that model is served here (a version or label it lacks is still its request),
/// else under `model=""`, so that names a client makes up never become series.
pub fn record_refused_request(
    manager: &Manager,
    model: Option<&str>,
    protocol: &'static str,
    outcome: &'static str,
    elapsed: Duration,
) {
    let model = match model {
        Some(m) if is_served(manager, m) => m,
        _ => "",
    };
    record_request(model, "", protocol, outcome, elapsed);
}

/// Records a request for `model`, deployed in a worker, that this server answered
/// itself because the worker could not (not ready, restarting, gone mid-request,
/// the connection failed) or never saw it (a body over the limit): the worker
/// counts only what it answers, so such a request is counted here, once, under
/// the deployed model's name (a name the supervisor holds, never one a client
/// made up) and `version=""`.
pub fn record_worker_refusal(
    model: &str,
    protocol: &'static str,
    outcome: &'static str,
    elapsed: Duration,
) {
    record_request(model, "", protocol, outcome, elapsed);
}

/// Whether `model` has a version in the serving map: only such names label series.
pub fn is_served(manager: &Manager, model: &str) -> bool {
    manager.serving().models.contains_key(model)
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
    /// The model's response-cache counters, registered at its first cached
    /// request (a model without `[cache]` has none).
    cache: std::sync::OnceLock<CacheCounters>,
}

/// A model's response-cache counters (see `crate::cache`), as handles: a cached
/// request formats no labels and looks nothing up in the registry. Hits and misses
/// are counted for the version too (its V2 statistics).
pub struct CacheCounters {
    hits_memory: Counter,
    hits_redis: Counter,
    misses: Counter,
    pub not_admitted: Counter,
    version: Arc<VersionRecorder>,
}

impl CacheCounters {
    fn new(model: &str, version: Arc<VersionRecorder>) -> CacheCounters {
        let hits = |tier: &'static str| {
            metrics::counter!(
                "ferroserve_cache_hits_total",
                "model" => model.to_string(),
                "tier" => tier
            )
        };
        CacheCounters {
            hits_memory: hits("memory"),
            hits_redis: hits("redis"),
            misses: metrics::counter!("ferroserve_cache_misses_total", "model" => model.to_string()),
            not_admitted: metrics::counter!(
                "ferroserve_cache_not_admitted_total",
                "model" => model.to_string()
            ),
            version,
        }
    }

    /// A hit in the in-process tier, or in Redis.
    pub fn hit(&self, in_redis: bool) {
        if in_redis {
            self.hits_redis.increment(1);
        } else {
            self.hits_memory.increment(1);
        }
        self.version.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn miss(&self) {
        self.misses.increment(1);
        self.version.cache_misses.fetch_add(1, Ordering::Relaxed);
    }
}

/// A duration in nanoseconds, saturated.
fn duration_nanos(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// `ferroserve_requests_total` and `ferroserve_request_duration_seconds` of the
/// requests one version was chosen for, whatever their outcome. `ok` has one pair
/// per protocol, registered on first use: the request path of an answered request
/// then neither formats labels nor looks up the registry. An error's count is among
/// the version's series too, so that it leaves `/metrics` with them.
pub struct AnsweredRequests {
    model: String,
    recorder: Arc<VersionRecorder>,
    by_protocol: parking_lot::RwLock<Vec<(&'static str, Counter, Histogram)>>,
}

impl AnsweredRequests {
    fn new(model: &str, recorder: Arc<VersionRecorder>) -> AnsweredRequests {
        AnsweredRequests {
            model: model.to_string(),
            recorder,
            by_protocol: parking_lot::RwLock::new(Vec::new()),
        }
    }

    /// Records what [`record_request`] records for outcome `ok`.
    pub fn record(&self, protocol: &'static str, elapsed: Duration) {
        self.recorder
            .success_ns
            .fetch_add(duration_nanos(elapsed), Ordering::Relaxed);
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
        let count = self.recorder.counter(
            "ferroserve_requests_total",
            &[("protocol", protocol), ("outcome", "ok")],
        );
        // Per model, not per version: it stays when the version ends.
        let duration = metrics::histogram!(
            "ferroserve_request_duration_seconds",
            "model" => self.model.clone(),
            "protocol" => protocol
        );
        count.increment(1);
        duration.record(seconds);
        self.by_protocol.write().push((protocol, count, duration));
    }

    /// Records what [`record_request`] records for an error `outcome` (an
    /// `ApiError::kind`) of a request this version was chosen for: its count among
    /// the version's series, which leave with it, its duration in the model's
    /// histogram, which stays. Errors are rare enough to look their series up.
    pub fn record_error(&self, protocol: &'static str, outcome: &'static str, elapsed: Duration) {
        self.recorder
            .counter(
                "ferroserve_requests_total",
                &[("protocol", protocol), ("outcome", outcome)],
            )
            .increment(1);
        self.recorder.errors.fetch_add(1, Ordering::Relaxed);
        self.recorder
            .fail_ns
            .fetch_add(duration_nanos(elapsed), Ordering::Relaxed);
        metrics::histogram!(
            "ferroserve_request_duration_seconds",
            "model" => self.model.clone(),
            "protocol" => protocol
        )
        .record(elapsed.as_secs_f64());
    }
}

impl QueueMetrics {
    pub fn new(model: &str, version: u64) -> QueueMetrics {
        let recorder = VersionRecorder::get(model, version);
        QueueMetrics {
            queue_length: recorder.gauge("ferroserve_queue_length"),
            batch_size: recorder.histogram("ferroserve_batch_size"),
            queue_duration: recorder.histogram("ferroserve_queue_duration_seconds"),
            compute_duration: recorder.histogram("ferroserve_compute_duration_seconds"),
            inference_duration: recorder.histogram("ferroserve_inference_duration_seconds"),
            rejected: recorder.counter("ferroserve_rejected_total", &[]),
            answered: AnsweredRequests::new(model, recorder),
            cache: std::sync::OnceLock::new(),
        }
    }

    /// The model's response-cache counters.
    pub fn cache(&self) -> &CacheCounters {
        self.cache.get_or_init(|| {
            CacheCounters::new(&self.answered.model, self.answered.recorder.clone())
        })
    }
}

/// Renders every metric, after refreshing the gauges that are read at scrape time:
/// the global recorder's series and those of every live version, merged.
pub fn render(manager: &Manager) -> String {
    render_with(manager, None)
}

/// [`render`], with `extra`: series made at scrape time outside the recorder (a
/// text exposition: the deployments' gauges, which must vanish with them).
pub fn render_with(manager: &Manager, extra: Option<String>) -> String {
    let handle = install();
    for (state, count) in manager.state_counts() {
        metrics::gauge!("ferroserve_model_versions", "state" => state.as_str()).set(count as f64);
    }
    // In the system's page size (16 or 64 KiB pages on some arm64 and ppc64le
    // kernels), as the memory trimmer reads it.
    if let Some(rss) = crate::memory::resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    exposition(handle, extra)
}

/// The global recorder's series, those of every live version and `extra`, in
/// one text.
fn exposition(handle: &PrometheusHandle, extra: Option<String>) -> String {
    let mut texts = vec![handle.render()];
    texts.extend(
        live_version_recorders()
            .iter()
            .map(|recorder| recorder.handle.render()),
    );
    texts.extend(extra);
    merge_expositions(&texts)
}

/// What each metric family of the server means: its `# HELP` line, which the
/// recorders (built without descriptions, the version recorders included) do not
/// write. A family missing here is exposed without one.
#[rustfmt::skip]
const HELP: &[(&str, &str)] = &[
    ("ferroserve_requests_total", "Requests answered, by model, version (empty when none was chosen), protocol and outcome."),
    ("ferroserve_request_duration_seconds", "Time from a request's arrival to its answer, by model and protocol."),
    ("ferroserve_inference_duration_seconds", "Time of one model run (the same as ferroserve_compute_duration_seconds, kept for dashboards made before batching)."),
    ("ferroserve_compute_duration_seconds", "Time of one model run, by model and version."),
    ("ferroserve_queue_duration_seconds", "Time a request waited in its version's queue before its run."),
    ("ferroserve_queue_length", "Requests waiting in the version's queue."),
    ("ferroserve_batch_size", "Rows per model run."),
    ("ferroserve_rejected_total", "Requests refused because the version's queue was full."),
    ("ferroserve_model_versions", "Model versions by state."),
    ("ferroserve_auth_failures_total", "Requests refused by the access layer, by protocol and reason."),
    ("ferroserve_jobs_total", "Jobs this process ran to an end, by kind and final state."),
    ("ferroserve_connections_evicted_total", "Idle connections closed at the connection limit to make room for new ones."),
    ("ferroserve_store_errors_total", "Failed uses of the metadata store (a write retried later, a management call refused with 503)."),
    ("ferroserve_store_dropped_total", "Entries dropped because the store's buffer was full, by buffer (events, predictions)."),
    ("ferroserve_prediction_log_oversized_total", "Logged predictions whose inputs and outputs were too large to keep, logged with a marker instead, by model."),
    ("ferroserve_prediction_log_refused_total", "Logged predictions the database refused, by model."),
    ("ferroserve_cache_hits_total", "Requests answered from the response cache, by model and tier."),
    ("ferroserve_cache_misses_total", "Requests of cache-enabled models that missed every tier, by model."),
    ("ferroserve_cache_not_admitted_total", "Answers not stored because second-miss admission had not seen their key before, by model."),
    ("ferroserve_cache_evictions_total", "Response cache entries removed, by model, tier and reason (size, expired)."),
    ("ferroserve_cache_entries", "Entries in the response cache, by tier."),
    ("ferroserve_cache_bytes", "Bytes held by the response cache, by tier."),
    ("ferroserve_cache_redis_errors_total", "Failed Redis cache operations, by operation and reason."),
    ("process_resident_memory_bytes", "Resident memory of the server process, in bytes."),
];

/// Merges Prometheus text expositions into one in which each metric family
/// appears once, as the format requires: its `# HELP` and `# TYPE` lines (the
/// first seen, else the help [`HELP`] gives), then its samples from every text. Each text is one rendering of
/// a recorder: families separated by blank lines, each under its `# TYPE` line.
fn merge_expositions(texts: &[String]) -> String {
    #[derive(Default)]
    struct Family<'a> {
        help: Option<&'a str>,
        kind: Option<&'a str>,
        samples: Vec<&'a str>,
    }
    let mut order: Vec<&str> = Vec::new();
    let mut families: HashMap<&str, Family> = HashMap::new();
    for text in texts {
        let mut current = "";
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            let header = line
                .strip_prefix("# HELP ")
                .map(|rest| (rest, true))
                .or_else(|| line.strip_prefix("# TYPE ").map(|rest| (rest, false)));
            if let Some((rest, _)) = header {
                current = rest.split(' ').next().unwrap_or("");
            }
            let family = families.entry(current).or_insert_with(|| {
                order.push(current);
                Family::default()
            });
            match header {
                Some((_, true)) => {
                    family.help.get_or_insert(line);
                }
                Some((_, false)) => {
                    family.kind.get_or_insert(line);
                }
                None => family.samples.push(line),
            }
        }
    }
    let mut out = String::new();
    for name in order {
        let family = &families[name];
        let described = match (family.help, HELP.iter().find(|(n, _)| *n == name)) {
            (None, Some((_, help))) if family.kind.is_some() => {
                Some(format!("# HELP {name} {help}"))
            }
            _ => None,
        };
        for line in family
            .help
            .iter()
            .copied()
            .chain(described.as_deref())
            .chain(family.kind.iter().copied())
            .chain(family.samples.iter().copied())
        {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn upkeep_runs_on_its_own_every_interval() {
        install();
        let before = upkeep_passes();
        let deadline = Instant::now() + UPKEEP_INTERVAL * 10;
        while upkeep_passes() < before + 2 {
            assert!(
                Instant::now() < deadline,
                "no upkeep pass within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_versions_series_leave_with_its_last_instance() {
        let handle = install();
        let first = QueueMetrics::new("unit_metrics_model", 7);
        first.rejected.increment(2);
        first.batch_size.record(4.0);
        // A reload of the same version while the old instance is still held shares
        // its series rather than rendering them twice.
        let second = QueueMetrics::new("unit_metrics_model", 7);
        second.rejected.increment(1);
        let series = "ferroserve_rejected_total{model=\"unit_metrics_model\",version=\"7\"}";
        let text = exposition(handle, None);
        assert_eq!(text.matches(series).count(), 1, "{text}");
        assert!(text.contains(&format!("{series} 3")), "{text}");
        assert!(text.contains("ferroserve_batch_size_bucket{model=\"unit_metrics_model\",version=\"7\",le=\"4\"} 1"), "{text}");
        // Every family is described once, before its type, the versions' too.
        for family in ["ferroserve_batch_size", "ferroserve_rejected_total"] {
            let help = format!("# HELP {family} ");
            assert_eq!(text.matches(&help).count(), 1, "{text}");
            let at = text.find(&help).unwrap();
            assert!(
                text[at..].find(&format!("# TYPE {family} ")) > Some(0),
                "{text}"
            );
        }
        drop(first);
        assert!(exposition(handle, None).contains(series));
        drop(second);
        let text = exposition(handle, None);
        assert!(!text.contains("unit_metrics_model"), "{text}");
    }

    /// An error a version counted is among its series, once per outcome and
    /// protocol, and leaves with them; the model's duration histogram stays, and
    /// the errors are then counted as those of an ended version.
    #[test]
    fn a_versions_errors_leave_with_it() {
        let handle = install();
        let model = "unit_metrics_errors";
        let version = QueueMetrics::new(model, 3);
        let elapsed = Duration::from_millis(1);
        version.answered.record("tfs_rest", elapsed);
        for _ in 0..2 {
            version
                .answered
                .record_error("tfs_rest", "invalid_argument", elapsed);
        }
        version
            .answered
            .record_error("v2_grpc", "resource_exhausted", elapsed);
        let text = exposition(handle, None);
        for series in [
            "ferroserve_requests_total{model=\"unit_metrics_errors\",version=\"3\",protocol=\"tfs_rest\",outcome=\"ok\"} 1",
            "ferroserve_requests_total{model=\"unit_metrics_errors\",version=\"3\",protocol=\"tfs_rest\",outcome=\"invalid_argument\"} 2",
            "ferroserve_requests_total{model=\"unit_metrics_errors\",version=\"3\",protocol=\"v2_grpc\",outcome=\"resource_exhausted\"} 1",
        ] {
            assert_eq!(text.matches(series).count(), 1, "{series}\n{text}");
        }
        assert_eq!(errors_of_ended_versions(model), 0);
        drop(version);
        let text = exposition(handle, None);
        assert!(
            !text.contains("model=\"unit_metrics_errors\",version="),
            "{text}"
        );
        assert!(text.contains("ferroserve_request_duration_seconds_count{model=\"unit_metrics_errors\",protocol=\"tfs_rest\"} 3"), "{text}");
        assert!(text.contains("ferroserve_request_duration_seconds_count{model=\"unit_metrics_errors\",protocol=\"v2_grpc\"} 1"), "{text}");
        assert_eq!(errors_of_ended_versions(model), 3);
    }

    #[test]
    fn merged_expositions_hold_each_family_once() {
        let a = "# TYPE x counter\nx{v=\"1\"} 1\n\n# TYPE y gauge\ny 2\n\n".to_string();
        let b = "# HELP x Things.\n# TYPE x counter\nx{v=\"2\"} 5\n\n".to_string();
        assert_eq!(
            merge_expositions(&[a, b]),
            "# HELP x Things.\n# TYPE x counter\nx{v=\"1\"} 1\nx{v=\"2\"} 5\n\n# TYPE y gauge\ny 2\n\n"
        );
    }
}
