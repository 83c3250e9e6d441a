//! The process-wide ONNX Runtime: where its library is, the environment made from
//! it once, and its log lines (through `tracing`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::backends::BackendOptions;

/// The library file name the `onnxruntime==1.31.1` wheel ships, which `api-31` needs.
pub const RUNTIME_FILE_NAME: &str = "libonnxruntime.so.1.31.1";

/// The process-wide ONNX Runtime environment, or why it could not be created.
/// `ort` can load one library per process, so the first successful location wins.
static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Where to find `libonnxruntime`: the explicit setting (which must exist), else
/// `ORT_DYLIB_PATH`, else next to the running executable (where `scripts/setup.sh`
/// puts it).
pub fn locate_runtime(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!(
                "ONNX Runtime library {} (from --onnxruntime-path) does not exist",
                p.display()
            ))
        };
    }
    crate::backends::find_library(
        "ORT_DYLIB_PATH",
        |dir| dir.join(RUNTIME_FILE_NAME),
        Path::is_file,
    )
    .map_err(|tried| {
        format!(
            "ONNX Runtime library not found (tried: {tried}); run scripts/setup.sh, or set \
             --onnxruntime-path / ORT_DYLIB_PATH to {RUNTIME_FILE_NAME}"
        )
    })
}

pub(super) fn environment(
    options: &BackendOptions,
) -> Result<&'static ort::environment::Environment, String> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = locate_runtime(options.onnxruntime_path.as_deref())?;
            let builder = ort::init_from(&path)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
            let environment = builder
                .with_name("ferroserve")
                .with_telemetry(false)
                .with_logger(std::sync::Arc::new(runtime_log))
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
            // A custom logger's environment starts at every level (verbose): the
            // level ONNX Runtime's own logger has (`ORT_LOG`, else errors only).
            environment.set_log_level(runtime_log_level());
            Ok(environment)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// ONNX Runtime's log lines, through `tracing` as the server's own are (its own
/// logger wrote coloured text to stderr, lines a JSON log stream,
/// `--log-format json`, could not parse), under the target `onnxruntime`. The
/// error a run ended at its deadline logs ("Exiting due to terminate flag") is the
/// server's doing and answered as a timeout already: a debug line.
fn runtime_log(
    level: ort::logging::LogLevel,
    category: &str,
    _id: &str,
    code_location: &str,
    message: &str,
) {
    use ort::logging::LogLevel;
    if message.contains("terminate flag being set to true") {
        tracing::debug!(target: "onnxruntime", category, code_location, "{message}");
        return;
    }
    match level {
        LogLevel::Verbose => {
            tracing::debug!(target: "onnxruntime", category, code_location, "{message}")
        }
        LogLevel::Info => {
            tracing::info!(target: "onnxruntime", category, code_location, "{message}")
        }
        LogLevel::Warning => {
            tracing::warn!(target: "onnxruntime", category, code_location, "{message}")
        }
        LogLevel::Error | LogLevel::Fatal => {
            tracing::error!(target: "onnxruntime", category, code_location, "{message}")
        }
    }
}

/// The level ONNX Runtime logs from: `ORT_LOG` (`fatal`, `error`, `warning`,
/// `info`, `verbose`, in any case) as for its own logger, else errors; a value
/// that names no level is said in the log, not taken silently for `error`.
fn runtime_log_level() -> ort::logging::LogLevel {
    let value = std::env::var("ORT_LOG").ok();
    log_level_named(value.as_deref()).unwrap_or_else(|given| {
        tracing::warn!(
            "ORT_LOG={given:?} names no ONNX Runtime log level (fatal, error, warning, \
             info, verbose): ONNX Runtime logs its errors only"
        );
        ort::logging::LogLevel::Error
    })
}

/// The level `ORT_LOG`'s value names (`None`, unset: errors), or the value back
/// when it names none.
fn log_level_named(value: Option<&str>) -> Result<ort::logging::LogLevel, String> {
    use ort::logging::LogLevel;
    let Some(value) = value else {
        return Ok(LogLevel::Error);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "fatal" => Ok(LogLevel::Fatal),
        "error" => Ok(LogLevel::Error),
        "warning" | "warn" => Ok(LogLevel::Warning),
        "info" => Ok(LogLevel::Info),
        "verbose" => Ok(LogLevel::Verbose),
        _ => Err(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::log_level_named;

    /// `ORT_LOG` names a level in any case; unset is errors; anything else is
    /// handed back to be said.
    #[test]
    fn ort_log_values() {
        use ort::logging::LogLevel;
        assert_eq!(log_level_named(None), Ok(LogLevel::Error));
        assert_eq!(log_level_named(Some("WARNING")), Ok(LogLevel::Warning));
        assert_eq!(log_level_named(Some("warn")), Ok(LogLevel::Warning));
        assert_eq!(log_level_named(Some(" verbose ")), Ok(LogLevel::Verbose));
        assert_eq!(log_level_named(Some("Fatal")), Ok(LogLevel::Fatal));
        assert_eq!(log_level_named(Some("debug")), Err("debug".to_string()));
        assert_eq!(log_level_named(Some("")), Err(String::new()));
    }
}
