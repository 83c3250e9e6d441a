//! The numbers behind a model page's live charts, read from the server's own
//! metrics recorders (`crate::metrics::render`, the text `/metrics` serves) and
//! summed over the model's versions and protocols.
//!
//! The answer is cumulative (counters and histogram buckets since the series began),
//! so the server keeps no state per viewer: the page keeps the previous answer and
//! charts the differences (requests per second, the p50 and p99 of the requests
//! answered in the interval, mean batch size).
//!
//! Invariant: the two totals never drop while the server runs, though a version's
//! series leave `/metrics` when it ends. Requests are the count of the model's
//! duration histogram, which outlives its versions (every request is in it once);
//! errors are those of the live versions' series and of the model's series without
//! a version, plus those of the versions that ended
//! (`crate::metrics::errors_of_ended_versions`). The page also clamps a difference
//! below zero to zero.

use std::collections::BTreeMap;

use serde::Serialize;

/// One model's cumulative figures at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelMetrics {
    pub model: String,
    /// Milliseconds since the epoch when the figures were read.
    pub at_ms: i64,
    /// Requests answered or refused, every outcome, since the server started: the
    /// count of `ferroserve_request_duration_seconds`, every protocol.
    pub requests_total: f64,
    /// Requests whose outcome was not `ok` (`ferroserve_requests_total`), since the
    /// server started, those of versions that have ended included.
    pub errors_total: f64,
    /// Requests refused because a queue was full (`ferroserve_rejected_total`).
    pub rejected_total: f64,
    /// Requests waiting in the model's queues now (`ferroserve_queue_length`).
    pub queue_length: f64,
    /// `ferroserve_request_duration_seconds`, every protocol.
    pub latency_seconds: Histogram,
    /// `ferroserve_batch_size`: rows per model run.
    pub batch_size: Histogram,
}

/// A Prometheus histogram summed over label sets: cumulative bucket counts by upper
/// bound (`+Inf` last, as `f64::INFINITY`, which JSON writes as `null`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Histogram {
    /// `(upper bound, cumulative count)`, ascending by bound.
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
    pub sum: f64,
}

#[derive(Default)]
struct HistogramParts {
    buckets: BTreeMap<OrderedBound, f64>,
    count: f64,
    sum: f64,
}

/// A bucket bound that sorts (`le` values are never NaN; an unparsable one is
/// skipped before it gets here), ordered and compared by `f64::total_cmp`.
#[derive(Debug, Clone, Copy)]
struct OrderedBound(f64);
impl PartialEq for OrderedBound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for OrderedBound {}
impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl HistogramParts {
    fn finish(self) -> Histogram {
        Histogram {
            buckets: self.buckets.into_iter().map(|(b, c)| (b.0, c)).collect(),
            count: self.count,
            sum: self.sum,
        }
    }
}

/// Reads `model`'s figures out of a Prometheus text exposition of this server's
/// recorders ([`crate::metrics::render`]), adding the errors of its versions that
/// have ended.
pub fn model_metrics(exposition: &str, model: &str, at_ms: i64) -> ModelMetrics {
    let ended_errors = crate::metrics::errors_of_ended_versions(model);
    figures_of(exposition, model, at_ms, ended_errors as f64)
}

/// `model`'s figures in `exposition`, with `ended_errors` errors counted by
/// versions whose series have left it.
fn figures_of(exposition: &str, model: &str, at_ms: i64, ended_errors: f64) -> ModelMetrics {
    let mut out = ModelMetrics {
        model: model.to_string(),
        at_ms,
        errors_total: ended_errors,
        ..ModelMetrics::default()
    };
    let mut latency = HistogramParts::default();
    let mut batch = HistogramParts::default();
    for line in exposition.lines() {
        let Some(sample) = parse_sample(line) else {
            continue;
        };
        if sample.label("model") != Some(model) {
            continue;
        }
        let value = sample.value;
        match sample.name {
            "ferroserve_requests_total" => {
                if sample.label("outcome") != Some("ok") {
                    out.errors_total += value;
                }
            }
            "ferroserve_rejected_total" => out.rejected_total += value,
            "ferroserve_queue_length" => out.queue_length += value,
            name => {
                let (parts, suffix) =
                    if let Some(s) = name.strip_prefix("ferroserve_request_duration_seconds") {
                        (&mut latency, s)
                    } else if let Some(s) = name.strip_prefix("ferroserve_batch_size") {
                        (&mut batch, s)
                    } else {
                        continue;
                    };
                match suffix {
                    "_bucket" => {
                        let bound = match sample.label("le") {
                            Some("+Inf") => f64::INFINITY,
                            Some(le) => match le.parse::<f64>() {
                                Ok(b) if !b.is_nan() => b,
                                _ => continue,
                            },
                            None => continue,
                        };
                        *parts.buckets.entry(OrderedBound(bound)).or_default() += value;
                    }
                    "_count" => parts.count += value,
                    "_sum" => parts.sum += value,
                    _ => {}
                }
            }
        }
    }
    out.latency_seconds = latency.finish();
    out.batch_size = batch.finish();
    out.requests_total = out.latency_seconds.count;
    out
}

/// One sample line: `name{label="value",...} number`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a sample line of the text format; comments, blank lines and anything
/// malformed give `None` (the exposition is our own, so that is only defence).
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches(',');
            if let Some(after) = body.strip_prefix('}') {
                break after;
            }
            let (key, after_key) = body.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after_key.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.push((key.trim(), value));
            body = &after_key[end + 1..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE ferroserve_requests_total counter
ferroserve_requests_total{model="iris",version="1",protocol="tfs_rest",outcome="ok"} 7
ferroserve_requests_total{model="iris",version="",protocol="tfs_rest",outcome="invalid_argument"} 2
ferroserve_requests_total{model="iris_two",version="1",protocol="tfs_rest",outcome="ok"} 100
ferroserve_requests_total{model="iris",version="2",protocol="v2_rest",outcome="ok"} 1

# TYPE ferroserve_request_duration_seconds histogram
ferroserve_request_duration_seconds_bucket{model="iris",protocol="tfs_rest",le="0.001"} 3
ferroserve_request_duration_seconds_bucket{model="iris",protocol="tfs_rest",le="+Inf"} 9
ferroserve_request_duration_seconds_bucket{model="iris",protocol="v2_rest",le="0.001"} 1
ferroserve_request_duration_seconds_bucket{model="iris",protocol="v2_rest",le="+Inf"} 1
ferroserve_request_duration_seconds_sum{model="iris",protocol="tfs_rest"} 0.5
ferroserve_request_duration_seconds_count{model="iris",protocol="tfs_rest"} 9
ferroserve_request_duration_seconds_sum{model="iris",protocol="v2_rest"} 0.25
ferroserve_request_duration_seconds_count{model="iris",protocol="v2_rest"} 1
ferroserve_request_duration_seconds_count{model="iris_two",protocol="tfs_rest"} 100
ferroserve_request_duration_seconds_count{model="say \"hi\"",protocol="tfs_rest"} 5
ferroserve_queue_length{model="iris",version="1"} 4
ferroserve_batch_size_bucket{model="iris",version="1",le="1"} 5
ferroserve_batch_size_sum{model="iris",version="1"} 12
ferroserve_batch_size_count{model="iris",version="1"} 6
ferroserve_rejected_total{model="iris",version="1"} 3
ferroserve_requests_total{model="say \"hi\"",version="1",protocol="tfs_rest",outcome="ok"} 5
"#;

    #[test]
    fn sums_a_models_series_over_versions_and_protocols() {
        let m = figures_of(TEXT, "iris", 42, 0.0);
        assert_eq!(m.at_ms, 42);
        assert_eq!(m.requests_total, 10.0);
        assert_eq!(m.errors_total, 2.0);
        assert_eq!(m.rejected_total, 3.0);
        assert_eq!(m.queue_length, 4.0);
        assert_eq!(
            m.latency_seconds.buckets,
            vec![(0.001, 4.0), (f64::INFINITY, 10.0)]
        );
        assert_eq!(m.latency_seconds.count, 10.0);
        assert_eq!(m.latency_seconds.sum, 0.75);
        assert_eq!(m.batch_size.buckets, vec![(1.0, 5.0)]);
        assert_eq!((m.batch_size.sum, m.batch_size.count), (12.0, 6.0));
    }

    #[test]
    fn other_models_and_escaped_names_are_kept_apart() {
        assert_eq!(figures_of(TEXT, "iris_two", 0, 0.0).requests_total, 100.0);
        assert_eq!(figures_of(TEXT, "say \"hi\"", 0, 0.0).requests_total, 5.0);
        assert_eq!(figures_of(TEXT, "nobody", 0, 0.0).requests_total, 0.0);
    }

    /// When version 1 ends, its series (`ok` and errors alike) leave the text; the
    /// model's duration histogram stays, and its errors are counted among those of
    /// ended versions: neither total drops, so no rate goes below zero.
    #[test]
    fn totals_do_not_drop_when_a_versions_series_leave() {
        let before = r#"ferroserve_requests_total{model="m",version="1",protocol="tfs_rest",outcome="ok"} 10
ferroserve_requests_total{model="m",version="1",protocol="tfs_rest",outcome="invalid_argument"} 1
ferroserve_request_duration_seconds_count{model="m",protocol="tfs_rest"} 11
"#;
        let after = r#"ferroserve_requests_total{model="m",version="2",protocol="tfs_rest",outcome="ok"} 1
ferroserve_request_duration_seconds_count{model="m",protocol="tfs_rest"} 12
"#;
        let was = figures_of(before, "m", 0, 0.0);
        let now = figures_of(after, "m", 1000, 1.0);
        assert_eq!((was.requests_total, was.errors_total), (11.0, 1.0));
        assert_eq!((now.requests_total, now.errors_total), (12.0, 1.0));
        assert_eq!(now.requests_total, now.latency_seconds.count);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for line in [
            "x{model=\"iris\"",
            "x{model=\"iris\"} abc",
            "# HELP x",
            "",
            "x",
        ] {
            assert!(parse_sample(line).is_none(), "{line}");
        }
    }
}
