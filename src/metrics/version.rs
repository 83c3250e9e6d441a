//! The series of one version, in a recorder of its own so that they leave
//! `/metrics` with the version, and what the V2 statistics extension reads back
//! from them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use metrics::{Counter, Gauge, Histogram, Key, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};
use parking_lot::Mutex;

use super::build_recorder;

/// The recorders of live versions, by `(model, version)`. A version's series live
/// in a recorder of their own so that they can leave with the version: the
/// Prometheus recorder has no way to delete one series. The entry is weak; the
/// [`VersionRecorder`] is owned by the version's [`QueueMetrics`] (two instances
/// of the same version, one being replaced by a reload of the other, share it).
static VERSION_RECORDERS: Mutex<BTreeMap<(String, u64), Weak<VersionRecorder>>> =
    Mutex::new(BTreeMap::new());

/// Requests with an error outcome counted by versions that have ended, by model:
/// their series left `/metrics` with them, and the console's error total
/// (`crate::console::metrics`) still counts them. One number per model that ever
/// had a version end after an error, which is no more than the models served.
static ENDED_VERSION_ERRORS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Requests for `model` with an error outcome that versions which have since
/// ended counted (their series are gone from `/metrics`).
pub fn errors_of_ended_versions(model: &str) -> u64 {
    ENDED_VERSION_ERRORS.lock().get(model).copied().unwrap_or(0)
}

pub(super) fn live_version_recorders() -> Vec<Arc<VersionRecorder>> {
    let recorders = VERSION_RECORDERS.lock();
    recorders.values().filter_map(Weak::upgrade).collect()
}

/// The recorder that holds the series of one `(model, version)`; they are gone
/// from `/metrics` once it drops, i.e. once the version has ended.
pub(super) struct VersionRecorder {
    key: (String, u64),
    recorder: PrometheusRecorder,
    pub(super) handle: PrometheusHandle,
    /// Requests with an error outcome counted here, added to
    /// [`ENDED_VERSION_ERRORS`] when the version ends. Only the error path touches
    /// it: the recorder's own counters cannot be read back.
    pub(super) errors: AtomicU64,
    /// The time of this version's answered requests and of its failed ones, and
    /// its response-cache hits and misses, in nanoseconds and counts: what the V2
    /// statistics extension reports per version ([`version_statistics`]), which
    /// the per-model series (`ferroserve_request_duration_seconds`,
    /// `ferroserve_cache_*`) cannot tell apart.
    pub(super) success_ns: AtomicU64,
    pub(super) fail_ns: AtomicU64,
    pub(super) cache_hits: AtomicU64,
    pub(super) cache_misses: AtomicU64,
}

/// Call-site metadata for series registered directly on a version's recorder.
static VERSION_METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl VersionRecorder {
    /// The recorder of `(model, version)`: the live one if another instance of that
    /// version still holds it, else a new one.
    pub(super) fn get(model: &str, version: u64) -> Arc<VersionRecorder> {
        let key = (model.to_string(), version);
        let mut recorders = VERSION_RECORDERS.lock();
        if let Some(live) = recorders.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        let recorder = build_recorder();
        let handle = recorder.handle();
        let fresh = Arc::new(VersionRecorder {
            key: key.clone(),
            recorder,
            handle,
            errors: AtomicU64::new(0),
            success_ns: AtomicU64::new(0),
            fail_ns: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        });
        recorders.insert(key, Arc::downgrade(&fresh));
        fresh
    }

    fn key(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        let mut all = vec![
            metrics::Label::new("model", self.key.0.clone()),
            metrics::Label::new("version", self.key.1.to_string()),
        ];
        all.extend(labels.iter().map(|&(k, v)| metrics::Label::new(k, v)));
        Key::from_parts(name, all)
    }

    pub(super) fn counter(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Counter {
        self.recorder
            .register_counter(&self.key(name, labels), &VERSION_METADATA)
    }

    pub(super) fn gauge(&self, name: &'static str) -> Gauge {
        self.recorder
            .register_gauge(&self.key(name, &[]), &VERSION_METADATA)
    }

    pub(super) fn histogram(&self, name: &'static str) -> Histogram {
        self.recorder
            .register_histogram(&self.key(name, &[]), &VERSION_METADATA)
    }
}

impl Drop for VersionRecorder {
    fn drop(&mut self) {
        // The samples recorded since the last upkeep pass sit in blocks of
        // metrics-util's `AtomicBucket`, which has no `Drop` of its own: only a drain
        // frees them. Undrained, they leaked with every version that ended while it
        // was answering (about 1 s of samples each, 270–430 KiB per swap under load).
        self.handle.run_upkeep();
        let errors = self.errors.load(Ordering::Relaxed);
        if errors > 0 {
            *ENDED_VERSION_ERRORS
                .lock()
                .entry(self.key.0.clone())
                .or_default() += errors;
        }
        let mut recorders = VERSION_RECORDERS.lock();
        // A new instance of the same version may have registered meanwhile: its
        // entry upgrades, and stays.
        if recorders
            .get(&self.key)
            .is_some_and(|w| w.upgrade().is_none())
        {
            recorders.remove(&self.key);
        }
    }
}

/// What the Prometheus series say of one live version, read back for the V2
/// statistics extension (`http::v2`'s `/stats`): the same counts `/metrics` shows,
/// so the two never disagree. Durations are nanoseconds, summed over the samples.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct VersionStatistics {
    /// Requests this version answered (`ferroserve_requests_total`, outcome `ok`).
    pub success_count: u64,
    /// Requests this version was chosen for that ended in an error (every other
    /// outcome of `ferroserve_requests_total`).
    pub fail_count: u64,
    /// Requests that waited in the queue (`ferroserve_queue_duration_seconds`).
    pub queue_count: u64,
    pub queue_ns: u64,
    /// Batch runs, and their time (`ferroserve_compute_duration_seconds`).
    pub compute_count: u64,
    pub compute_ns: u64,
    /// Rows run, over all batches (the sum of `ferroserve_batch_size`).
    pub rows: u64,
    /// The time of the answered requests, and of the failed ones (each from its
    /// arrival to its answer, as `ferroserve_request_duration_seconds`).
    pub success_ns: u64,
    pub fail_ns: u64,
    /// Response-cache lookups that found an answer, and those that did not.
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// [`VersionStatistics`] of `(model, version)`; `None` when the version has no
/// live recorder (never loaded in this process, or ended). Renders the version's
/// recorder: a monitoring call, never on the request path.
pub fn version_statistics(model: &str, version: u64) -> Option<VersionStatistics> {
    let recorder = VERSION_RECORDERS
        .lock()
        .get(&(model.to_string(), version))
        .and_then(Weak::upgrade)?;
    let text = recorder.handle.render();
    let mut stats = VersionStatistics {
        success_ns: recorder.success_ns.load(Ordering::Relaxed),
        fail_ns: recorder.fail_ns.load(Ordering::Relaxed),
        cache_hits: recorder.cache_hits.load(Ordering::Relaxed),
        cache_misses: recorder.cache_misses.load(Ordering::Relaxed),
        ..VersionStatistics::default()
    };
    for (name, labels, value) in samples(&text) {
        match name {
            "ferroserve_requests_total" if labels.contains("outcome=\"ok\"") => {
                stats.success_count += value as u64
            }
            "ferroserve_requests_total" => stats.fail_count += value as u64,
            "ferroserve_queue_duration_seconds_count" => stats.queue_count += value as u64,
            "ferroserve_queue_duration_seconds_sum" => stats.queue_ns += nanos(value),
            "ferroserve_compute_duration_seconds_count" => stats.compute_count += value as u64,
            "ferroserve_compute_duration_seconds_sum" => stats.compute_ns += nanos(value),
            "ferroserve_batch_size_sum" => stats.rows += value as u64,
            _ => {}
        }
    }
    Some(stats)
}

fn nanos(seconds: f64) -> u64 {
    (seconds * 1e9).round() as u64
}

/// The samples of a Prometheus text exposition: `(name, labels, value)`, the labels
/// as written between the braces.
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            Some((name, labels, value))
        })
}
