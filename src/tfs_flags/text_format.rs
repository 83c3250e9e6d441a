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

/// A wrapper message's value: `max_batch_size { value: 32 }`, named as the
/// file's field (`max_batch_size`), so that an error about the value names the
/// field the file gives rather than the wrapper's `value`.
fn wrapped(f: &Field) -> Result<Field, String> {
    let fields =
        message(f).map_err(|_| format!("line {}: {} must be {{ value: … }}", f.line, f.name))?;
    match fields {
        [v] if v.name == "value" => Ok(Field {
            name: f.name.clone(),
            ..v.clone()
        }),
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

/// TF Serving's `max_batch_size` where `BatchingParameters` leave it out: its
/// batch scheduler's `QueueOptions::input_batch_size_limit`, which TF Serving also
/// checks the last `allowed_batch_sizes` against. ferroserve's own default (32,
/// `BatchingConfig::default`) is for `config.toml`; the drop-in follows TF Serving.
pub(super) const TFS_DEFAULT_MAX_BATCH_SIZE: u64 = 1000;

/// The batching of `--enable_batching` without `--batching_parameters_file`: TF
/// Serving's `BatchingParameters` with nothing set, so `max_batch_size` is TF
/// Serving's default and the rest ferroserve's.
pub(super) fn tfs_default_batching() -> BatchingConfig {
    BatchingConfig {
        enabled: true,
        max_batch_size: TFS_DEFAULT_MAX_BATCH_SIZE as usize,
        ..BatchingConfig::default()
    }
}

/// One integer field as the file gives it: its value and its line, for errors
/// that quote both.
#[derive(Clone, Copy)]
struct Given {
    value: u64,
    line: usize,
}

/// TF Serving's `BatchingParameters` text format as ferroserve's batching:
/// `max_batch_size` → `max_batch_size` (left out: TF Serving's default,
/// [`TFS_DEFAULT_MAX_BATCH_SIZE`]); `batch_timeout_micros` →
/// `max_queue_delay_micros`; `num_batch_threads` → `instances`;
/// `allowed_batch_sizes` → `preferred_batch_sizes` (TF Serving's rule holds: the
/// last is `max_batch_size`); `max_enqueued_batches` → `max_queue_length` of
/// `max_enqueued_batches × max_batch_size` requests, at most 1,000,000
/// (ferroserve bounds requests, TF Serving batches); `thread_pool_name` is
/// accepted. Padding variable-length inputs and splitting large batches are
/// refused: ferroserve does neither.
///
/// Every field is checked here, in the file's terms (the field, its line and the
/// value given, and the default used for a field the check needs and the file
/// leaves out), against the bounds `BatchingConfig::validate` puts on what it
/// becomes: that check speaks `config.toml`'s key names, which this file has none of.
pub fn parse_batching_parameters(text: &str) -> Result<BatchingConfig, String> {
    let fields = parse_text_fields(text)?;
    let mut max_batch_size: Option<Given> = None;
    let mut batch_timeout_micros: Option<Given> = None;
    let mut max_enqueued_batches: Option<Given> = None;
    let mut num_batch_threads: Option<Given> = None;
    let mut allowed_batch_sizes: Vec<Given> = Vec::new();
    let given = |f: &Field| -> Result<Option<Given>, String> {
        Ok(Some(Given {
            value: integer(&wrapped(f)?)?,
            line: f.line,
        }))
    };
    let mut seen = Vec::new();
    for f in &fields {
        if f.name != "allowed_batch_sizes" {
            once(&mut seen, f)?;
        }
        match f.name.as_str() {
            "max_batch_size" => max_batch_size = given(f)?,
            "batch_timeout_micros" => batch_timeout_micros = given(f)?,
            "max_enqueued_batches" => max_enqueued_batches = given(f)?,
            "num_batch_threads" => num_batch_threads = given(f)?,
            "thread_pool_name" => {
                string(&wrapped(f)?)?;
            }
            // TF Serving reads it only with enable_large_batch_splitting, which
            // ferroserve refuses: without it TF Serving ignores it too.
            "max_execution_batch_size" => {
                integer(&wrapped(f)?)?;
                tracing::warn!(
                    "--batching_parameters_file line {}: max_execution_batch_size is ignored \
                     (it applies only with enable_large_batch_splitting, which ferroserve does not do)",
                    f.line
                );
            }
            "allowed_batch_sizes" => allowed_batch_sizes.push(Given {
                value: integer(f)?,
                line: f.line,
            }),
            "pad_variable_length_inputs" => {
                if boolean(f)? {
                    return Err(format!(
                        "line {}: pad_variable_length_inputs: ferroserve does not pad inputs of different lengths",
                        f.line
                    ));
                }
            }
            "enable_large_batch_splitting" => {
                if boolean(&wrapped(f)?)? {
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

    let between = |name: &str, g: Option<Given>, max: u64| match g {
        Some(Given { value, line }) if value == 0 || value > max => Err(format!(
            "line {line}: {name} must be between 1 and {max}, not {value}"
        )),
        _ => Ok(()),
    };
    between(
        "max_batch_size",
        max_batch_size,
        BatchingConfig::MAX_BATCH_SIZE as u64,
    )?;
    between(
        "num_batch_threads",
        num_batch_threads,
        BatchingConfig::MAX_INSTANCES as u64,
    )?;
    if let Some(Given { value, line }) = batch_timeout_micros {
        if value > BatchingConfig::MAX_DELAY_MICROS {
            return Err(format!(
                "line {line}: batch_timeout_micros must be at most {} (10 s), not {value}",
                BatchingConfig::MAX_DELAY_MICROS
            ));
        }
    }
    // No upper bound: the queue it makes is capped at the most ferroserve queues.
    if let Some(Given { value: 0, line }) = max_enqueued_batches {
        return Err(format!(
            "line {line}: max_enqueued_batches must be at least 1, not 0"
        ));
    }
    let batch_size = max_batch_size.map_or(TFS_DEFAULT_MAX_BATCH_SIZE, |g| g.value);
    // TF Serving's checks and order: the last entry against max_batch_size, then
    // the order of the entries.
    if let Some(last) = allowed_batch_sizes.last() {
        if last.value != batch_size {
            return Err(match max_batch_size {
                Some(m) => format!(
                    "line {}: allowed_batch_sizes: the last ({}) must equal max_batch_size ({}, line {})",
                    last.line, last.value, m.value, m.line
                ),
                None => format!(
                    "line {}: allowed_batch_sizes: the last ({}) must equal max_batch_size, \
                     which the file leaves out (TF Serving's default, which ferroserve \
                     follows: {TFS_DEFAULT_MAX_BATCH_SIZE})",
                    last.line, last.value
                ),
            });
        }
    }
    if let Some(w) = allowed_batch_sizes
        .windows(2)
        .find(|w| w[0].value >= w[1].value)
    {
        return Err(format!(
            "line {}: allowed_batch_sizes must increase: {} follows {} (line {})",
            w[1].line, w[1].value, w[0].value, w[0].line
        ));
    }
    if let Some(Given { line, .. }) = allowed_batch_sizes.first().filter(|g| g.value == 0) {
        return Err(format!(
            "line {line}: allowed_batch_sizes must be at least 1, not 0"
        ));
    }

    let mut b = tfs_default_batching();
    b.max_batch_size = batch_size as usize;
    if let Some(g) = batch_timeout_micros {
        b.max_queue_delay_micros = g.value;
    }
    if let Some(g) = num_batch_threads {
        b.instances = g.value as usize;
    }
    if let Some(g) = max_enqueued_batches {
        b.max_queue_length = (g.value as usize)
            .saturating_mul(b.max_batch_size)
            .min(BatchingConfig::MAX_QUEUE_LENGTH);
    }
    b.preferred_batch_sizes = allowed_batch_sizes
        .iter()
        .map(|g| g.value as usize)
        .collect();
    // Everything it checks was checked above in the file's terms; a failure here
    // is a check missing above.
    b.validate()
        .map_err(|e| format!("{e} (made from the file's fields)"))?;
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

    /// A batching parameters file that cannot be served is refused in its own
    /// terms: the field, its line and the value given, and the default used for a
    /// field the check needs and the file leaves out; never the `config.toml` key
    /// a field becomes (`batching.instances`, `batching.max_queue_length`).
    #[test]
    fn batching_parameter_errors_name_the_files_fields() {
        let e = |t: &str| parse_batching_parameters(t).unwrap_err();
        for (text, says) in [
            (
                "max_enqueued_batches { value: 0 }",
                "line 1: max_enqueued_batches must be at least 1, not 0",
            ),
            (
                "num_batch_threads { value: 0 }",
                "line 1: num_batch_threads must be between 1 and 256, not 0",
            ),
            (
                "num_batch_threads { value: 257 }",
                "line 1: num_batch_threads must be between 1 and 256, not 257",
            ),
            (
                "max_batch_size { value: 0 }",
                "line 1: max_batch_size must be between 1 and 65536, not 0",
            ),
            (
                "max_batch_size { value: 65537 }",
                "line 1: max_batch_size must be between 1 and 65536, not 65537",
            ),
            (
                "batch_timeout_micros { value: 10000001 }",
                "line 1: batch_timeout_micros must be at most 10000000 (10 s), not 10000001",
            ),
            (
                "allowed_batch_sizes: 8",
                "line 1: allowed_batch_sizes: the last (8) must equal max_batch_size, which \
                 the file leaves out (TF Serving's default, which ferroserve follows: 1000)",
            ),
            (
                "max_batch_size { value: 16 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8",
                "line 3: allowed_batch_sizes: the last (8) must equal max_batch_size (16, line 1)",
            ),
            (
                "max_batch_size { value: 16 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 8\n\
                 allowed_batch_sizes: 16",
                "line 3: allowed_batch_sizes must increase: 8 follows 8 (line 2)",
            ),
            (
                "max_batch_size { value: 16 }\nallowed_batch_sizes: 0\nallowed_batch_sizes: 16",
                "line 2: allowed_batch_sizes must be at least 1, not 0",
            ),
            // The wrapper's value is named as the file's field, not `value`.
            (
                "max_batch_size { value: -1 }",
                "line 1: max_batch_size must be a non-negative integer, not -1",
            ),
            (
                "max_enqueued_batches { value: x }",
                "line 1: max_enqueued_batches must be an integer",
            ),
            ("thread_pool_name { value: 3 }", "thread_pool_name"),
            (
                "enable_large_batch_splitting { value: 2 }",
                "line 1: enable_large_batch_splitting must be true or false",
            ),
        ] {
            let got = e(text);
            assert!(got.contains(says), "{text:?}: want {says:?}, got {got:?}");
            assert!(!got.contains("batching."), "{text:?}: {got}");
            assert!(!got.contains("value must"), "{text:?}: {got}");
        }
        // At the bounds, each serves.
        let b = parse_batching_parameters(
            "max_batch_size { value: 65536 }\nnum_batch_threads { value: 256 }\n\
             batch_timeout_micros { value: 10000000 }\nmax_enqueued_batches { value: 1000000 }\n\
             allowed_batch_sizes: 1\nallowed_batch_sizes: 65536",
        )
        .unwrap();
        assert_eq!(b.max_batch_size, 65536);
        assert_eq!(b.instances, 256);
        assert_eq!(b.max_queue_delay_micros, 10_000_000);
        assert_eq!(b.max_queue_length, 1_000_000);
        assert_eq!(b.preferred_batch_sizes, vec![1, 65536]);
    }

    /// A file that leaves max_batch_size out gets TF Serving's default, 1000,
    /// and so does `--enable_batching` without a file; the queue of
    /// max_enqueued_batches counts batches of that size.
    #[test]
    fn a_left_out_max_batch_size_is_tf_servings_default() {
        let b = parse_batching_parameters(
            "allowed_batch_sizes: 8\nallowed_batch_sizes: 1000\nmax_enqueued_batches { value: 2 }",
        )
        .unwrap();
        assert_eq!(
            b,
            BatchingConfig {
                enabled: true,
                max_batch_size: 1000,
                preferred_batch_sizes: vec![8, 1000],
                max_queue_length: 2000,
                ..BatchingConfig::default()
            }
        );
        assert_eq!(
            parse_batching_parameters("").unwrap(),
            tfs_default_batching()
        );
        assert_eq!(tfs_default_batching().max_batch_size, 1000);
        assert!(tfs_default_batching().enabled);
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
        assert_eq!(b.max_batch_size, TFS_DEFAULT_MAX_BATCH_SIZE as usize);
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
