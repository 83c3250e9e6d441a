//! TF Serving's text-format files as ferroserve settings: `--batching_parameters_file`
//! (`BatchingParameters`) and `--monitoring_config_file` (`MonitoringConfig`), read
//! as protobuf's text format reads them.

use std::path::Path;

use super::{fail, TfsError};
use crate::model_config::BatchingConfig;
use crate::pbtext::{integer, message, once, parse_text_fields, string, unknown, Field};

pub(super) fn read_batching_parameters(file: &Path) -> Result<BatchingConfig, TfsError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        fail(format!(
            "cannot read --batching_parameters_file {}: {e}",
            file.display()
        ))
    })?;
    parse_batching_parameters(&text).map_err(|e| {
        fail(format!(
            "--batching_parameters_file {}: {e}",
            file.display()
        ))
    })
}

/// A wrapper message's value: `max_batch_size { value: 32 }`.
fn wrapped(f: &Field) -> Result<&Field, String> {
    let fields =
        message(f).map_err(|_| format!("line {}: {} must be {{ value: … }}", f.line, f.name))?;
    match fields {
        [v] if v.name == "value" => Ok(v),
        _ => Err(format!(
            "line {}: {} must be {{ value: … }}",
            f.line, f.name
        )),
    }
}

/// A boolean field as protobuf's text format reads it (`TextFormat::Parser`):
/// the identifiers `true`, `True`, `t`, `false`, `False`, `f` (case matters), or
/// an unsigned integer 0 or 1, written in decimal, hex (`0x1`) or octal (`01`).
fn boolean(f: &Field) -> Result<bool, String> {
    use crate::pbtext::{Tok, Value};
    let parsed = match &f.value {
        Value::Scalar(Tok::Ident(s)) => match s.as_str() {
            "true" | "True" | "t" => Some(true),
            "false" | "False" | "f" => Some(false),
            _ => None,
        },
        Value::Scalar(Tok::Num(n)) => {
            let (digits, radix) = match n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
                Some(hex) => (hex, 16),
                None if n.len() > 1 && n.starts_with('0') => (&n[1..], 8),
                None => (n.as_str(), 10),
            };
            // No sign (from_str_radix would take a `+`): protobuf takes an unsigned
            // integer here.
            let value = digits
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
                .then(|| u64::from_str_radix(digits, radix).ok())
                .flatten();
            match value {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            }
        }
        _ => None,
    };
    parsed.ok_or_else(|| {
        format!(
            "line {}: {} must be true or false (protobuf's text format also takes True, \
             t, False, f, 1 and 0)",
            f.line, f.name
        )
    })
}

/// TF Serving's `BatchingParameters` text format as ferroserve's batching:
/// `max_batch_size` → `max_batch_size`; `batch_timeout_micros` →
/// `max_queue_delay_micros`; `num_batch_threads` → `instances`;
/// `allowed_batch_sizes` → `preferred_batch_sizes` (TF Serving's rule holds: the
/// last is `max_batch_size`); `max_enqueued_batches` → `max_queue_length` of
/// `max_enqueued_batches × max_batch_size` requests (ferroserve bounds requests,
/// TF Serving batches); `thread_pool_name` is accepted. Padding variable-length
/// inputs and splitting large batches are refused: ferroserve does neither.
pub fn parse_batching_parameters(text: &str) -> Result<BatchingConfig, String> {
    let fields = parse_text_fields(text)?;
    let mut b = BatchingConfig {
        enabled: true,
        ..BatchingConfig::default()
    };
    let mut enqueued_batches = None;
    let mut seen = Vec::new();
    for f in &fields {
        if f.name != "allowed_batch_sizes" {
            once(&mut seen, f)?;
        }
        match f.name.as_str() {
            "max_batch_size" => b.max_batch_size = integer(wrapped(f)?)? as usize,
            "batch_timeout_micros" => b.max_queue_delay_micros = integer(wrapped(f)?)?,
            "max_enqueued_batches" => enqueued_batches = Some(integer(wrapped(f)?)? as usize),
            "num_batch_threads" => b.instances = integer(wrapped(f)?)? as usize,
            "thread_pool_name" => {
                string(wrapped(f)?)?;
            }
            // TF Serving reads it only with enable_large_batch_splitting, which
            // ferroserve refuses: without it TF Serving ignores it too.
            "max_execution_batch_size" => {
                integer(wrapped(f)?)?;
                tracing::warn!(
                    "--batching_parameters_file line {}: max_execution_batch_size is ignored \
                     (it applies only with enable_large_batch_splitting, which ferroserve does not do)",
                    f.line
                );
            }
            "allowed_batch_sizes" => b.preferred_batch_sizes.push(integer(f)? as usize),
            "pad_variable_length_inputs" => {
                if boolean(f)? {
                    return Err(format!(
                        "line {}: pad_variable_length_inputs: ferroserve does not pad inputs of different lengths",
                        f.line
                    ));
                }
            }
            "enable_large_batch_splitting" => {
                if boolean(wrapped(f)?)? {
                    return Err(format!(
                        "line {}: enable_large_batch_splitting: ferroserve runs a request larger than a batch alone, unsplit",
                        f.line
                    ));
                }
            }
            _ => {
                return Err(unknown(
                    f,
                    "BatchingParameters",
                    &[
                        "max_batch_size",
                        "batch_timeout_micros",
                        "max_enqueued_batches",
                        "num_batch_threads",
                        "thread_pool_name",
                        "max_execution_batch_size",
                        "allowed_batch_sizes",
                        "pad_variable_length_inputs",
                        "enable_large_batch_splitting",
                    ],
                ))
            }
        }
    }
    if let Some(n) = enqueued_batches {
        b.max_queue_length = n.saturating_mul(b.max_batch_size).min(1_000_000);
    }
    if let Some(last) = b.preferred_batch_sizes.last() {
        if *last != b.max_batch_size {
            return Err(format!(
                "the last allowed_batch_sizes ({last}) must equal max_batch_size ({})",
                b.max_batch_size
            ));
        }
        if b.preferred_batch_sizes.windows(2).any(|w| w[0] >= w[1]) {
            return Err("allowed_batch_sizes must increase".into());
        }
    }
    b.validate()?;
    Ok(b)
}

/// TF Serving's `MonitoringConfig` text format: the path Prometheus metrics are
/// served at when `prometheus_config { enable: true }` (default
/// `/monitoring/prometheus/metrics`), or `None`.
pub fn parse_monitoring_config(text: &str) -> Result<Option<String>, String> {
    let fields = parse_text_fields(text)?;
    let mut path = None;
    let mut seen = Vec::new();
    for f in &fields {
        once(&mut seen, f)?;
        match f.name.as_str() {
            "prometheus_config" => {
                let mut enable = false;
                let mut p = None;
                let mut seen = Vec::new();
                for g in message(f)? {
                    once(&mut seen, g)?;
                    match g.name.as_str() {
                        "enable" => enable = boolean(g)?,
                        "path" => p = Some(string(g)?),
                        _ => return Err(unknown(g, "prometheus_config", &["enable", "path"])),
                    }
                }
                if enable {
                    let p = p
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "/monitoring/prometheus/metrics".into());
                    // A path a route answers or captures (`/healthz`, `/v1/models/m`)
                    // or that is not a plain path (`/v2/models/:x`) is refused here,
                    // before the router is built.
                    crate::http::check_metrics_path(&p)
                        .map_err(|e| format!("line {}: {e}", f.line))?;
                    path = Some(p);
                }
            }
            _ => return Err(unknown(f, "MonitoringConfig", &["prometheus_config"])),
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_parameters_map_onto_batching() {
        let b = parse_batching_parameters(
            "max_batch_size { value: 64 }\n\
             batch_timeout_micros { value: 2000 }\n\
             max_enqueued_batches { value: 10 }\n\
             num_batch_threads { value: 2 }\n\
             thread_pool_name { value: \"pool\" }\n\
             allowed_batch_sizes: 16\n\
             allowed_batch_sizes: 64\n\
             pad_variable_length_inputs: false\n",
        )
        .unwrap();
        assert_eq!(
            b,
            BatchingConfig {
                enabled: true,
                max_batch_size: 64,
                max_queue_delay_micros: 2000,
                preferred_batch_sizes: vec![16, 64],
                max_queue_length: 640,
                instances: 2,
                ..BatchingConfig::default()
            }
        );
        let e = |t: &str| parse_batching_parameters(t).unwrap_err();
        assert!(e("max_batch_size { value: 8 }\nallowed_batch_sizes: 4").contains("must equal"));
        assert!(e("pad_variable_length_inputs: true").contains("does not pad"));
        assert!(e("max_batch_size: 8").contains("{ value: … }"));
        assert!(e("nope { value: 1 }").contains("unknown field"));
        assert!(e("max_batch_size { value: 0 }").contains("max_batch_size"));
        // As protobuf's text format: a field that is not repeated, given twice.
        assert!(
            e("max_batch_size { value: 8 }\nmax_batch_size { value: 16 }").contains(
                "line 2: non-repeated field \"max_batch_size\" is specified multiple times"
            )
        );
        // Ignored, as TF Serving ignores it without enable_large_batch_splitting.
        let b = parse_batching_parameters(
            "max_batch_size { value: 8 }\nmax_execution_batch_size { value: 4 }",
        )
        .unwrap();
        assert_eq!(b.max_batch_size, 8);
        assert!(e("max_execution_batch_size: 4").contains("{ value: … }"));
    }

    /// Booleans of the text-format files read as protobuf's text format reads
    /// them: true/True/t, false/False/f, or an unsigned 0 or 1.
    #[test]
    fn text_format_booleans_read_as_protobuf_reads_them() {
        let enable =
            |v: &str| parse_monitoring_config(&format!("prometheus_config {{ enable: {v} }}"));
        for v in ["true", "True", "t", "1", "0x1", "01"] {
            assert_eq!(
                enable(v).unwrap().as_deref(),
                Some("/monitoring/prometheus/metrics"),
                "{v}"
            );
        }
        for v in ["false", "False", "f", "0", "00", "0x0"] {
            assert_eq!(enable(v).unwrap(), None, "{v}");
        }
        // protobuf refuses these too: case matters, and only 0 or 1 unsigned.
        for v in [
            "TRUE", "tRuE", "yes", "2", "-1", "+1", "0x", "1.0", "\"true\"",
        ] {
            let e = enable(v).unwrap_err();
            assert!(e.contains("enable must be true or false"), "{v}: {e}");
        }
        // The batching parameters' booleans read the same way.
        let b = parse_batching_parameters(
            "pad_variable_length_inputs: f\nenable_large_batch_splitting { value: False }",
        )
        .unwrap();
        assert_eq!(b.max_batch_size, BatchingConfig::default().max_batch_size);
        let e = parse_batching_parameters("pad_variable_length_inputs: t").unwrap_err();
        assert!(e.contains("does not pad"), "{e}");
        let e =
            parse_batching_parameters("enable_large_batch_splitting { value: True }").unwrap_err();
        assert!(e.contains("unsplit"), "{e}");
    }

    #[test]
    fn monitoring_config_gives_the_metrics_path() {
        assert_eq!(
            parse_monitoring_config("prometheus_config {\n  enable: true,\n  path: \"/monitoring/prometheus/metrics\"\n}\n")
                .unwrap()
                .as_deref(),
            Some("/monitoring/prometheus/metrics")
        );
        assert_eq!(
            parse_monitoring_config("prometheus_config { enable: true }")
                .unwrap()
                .as_deref(),
            Some("/monitoring/prometheus/metrics")
        );
        assert_eq!(
            parse_monitoring_config("prometheus_config { enable: false }").unwrap(),
            None
        );
        assert!(
            parse_monitoring_config("prometheus_config { enable: true, path: \"x\" }").is_err()
        );
        assert!(parse_monitoring_config("other {}").is_err());
        assert!(parse_monitoring_config(
            "prometheus_config { enable: true path: \"/a\" path: \"/b\" }"
        )
        .unwrap_err()
        .contains("multiple times"));
    }
}
