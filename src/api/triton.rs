//! Triton's model configuration and statistics extensions, transport-neutral: what
//! the V2 REST routes (`/v2/models/{m}/config`, `/v2/models[/{m}]/stats`) and the
//! V2 gRPC calls (`ModelConfig`, `ModelStatistics`) both answer, so that the two
//! never disagree. The adapters only encode these structs (JSON, protobuf).

use super::{ApiError, ServerState};
use crate::manager::VersionRequest;
use crate::model_config::VersionPolicy;
use crate::tensor::{DataType, TensorSpec};

/// A model version's configuration, as Triton's `ModelConfig` describes it: the
/// fields ferroserve fills.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    /// Triton's platform (`onnxruntime_onnx`, `tensorflow_savedmodel`, `sklearn`,
    /// `fasttext`): [`super::ModelMetadata::platform`].
    pub platform: &'static str,
    /// Triton's backend (`onnxruntime`, `tensorflow`, `sklearn`, `fasttext`).
    pub backend: &'static str,
    pub version_policy: VersionPolicy,
    /// The `[batching]` maximum when the version batches, else 0: Triton's "does
    /// not batch".
    pub max_batch_size: usize,
    pub input: Vec<ConfigTensor>,
    pub output: Vec<ConfigTensor>,
}

/// A tensor as Triton's model configuration lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigTensor {
    pub name: String,
    pub dtype: DataType,
    /// -1 for a dimension of any size, without the batch dimension when the model
    /// batches (`max_batch_size` > 0), as Triton leaves it out.
    pub dims: Vec<i64>,
}

impl ConfigTensor {
    fn of(spec: &TensorSpec, batched: bool) -> ConfigTensor {
        let mut dims = spec.v2_shape();
        if batched && !dims.is_empty() {
            dims.remove(0);
        }
        ConfigTensor {
            name: spec.name.clone(),
            dtype: spec.dtype,
            dims,
        }
    }
}

/// Triton's `DataType` name (`model_config.proto`): `TYPE_` and the V2 name, but
/// `TYPE_STRING` for BYTES.
pub fn triton_data_type(dtype: DataType) -> String {
    match dtype {
        DataType::Bytes => "TYPE_STRING".to_string(),
        other => format!("TYPE_{}", other.v2_name()),
    }
}

/// Triton's backend name for a format (`platform` is [`super::ModelMetadata::platform`]).
fn triton_backend(format: &'static str) -> &'static str {
    match format {
        "onnx" => "onnxruntime",
        other => other,
    }
}

/// A model version's configuration, as Triton's model configuration extension
/// answers it: name, platform and backend, `max_batch_size`, the version policy,
/// inputs and outputs. An unknown model or version is [`ApiError::NotFound`].
pub fn model_config(
    state: &ServerState,
    model: &str,
    version: &VersionRequest,
) -> Result<ModelConfig, ApiError> {
    // One resolve: the configuration and the tensors are of the same version, even
    // while versions change.
    let handle = state.manager.resolve(model, version)?;
    let meta = super::metadata::metadata_of(state, model, &handle);
    let max_batch_size = if handle.queue.is_batching() {
        handle.loaded_config.batching.max_batch_size
    } else {
        0
    };
    let batched = max_batch_size > 0;
    let tensors = |specs: &[TensorSpec]| -> Vec<ConfigTensor> {
        specs.iter().map(|s| ConfigTensor::of(s, batched)).collect()
    };
    Ok(ModelConfig {
        name: meta.name.clone(),
        platform: meta.platform(),
        backend: triton_backend(meta.format),
        version_policy: handle.config().version_policy.clone(),
        max_batch_size,
        input: tensors(&meta.signature.inputs),
        output: tensors(&meta.signature.outputs),
    })
}

/// Triton's `StatisticDuration`: a count and cumulative nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatisticDuration {
    pub count: u64,
    pub ns: u64,
}

impl StatisticDuration {
    fn new(count: u64, ns: u64) -> StatisticDuration {
        StatisticDuration { count, ns }
    }
}

/// One version's statistics, as Triton's statistics extension reports them, from
/// the series `/metrics` shows (`crate::metrics::version_statistics`). `success`
/// counts the version's answered requests and their time (arrival to answer),
/// `fail` its failed ones and theirs; `queue` is the time requests waited in the queue,
/// `compute_infer` the model's runs (one per batch). What ferroserve does not
/// measure (`last_inference`, `compute_input`, `compute_output`, cache time,
/// `batch_stats`) is 0 or empty, and has no field here.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionStatistics {
    pub name: String,
    pub version: u64,
    /// Rows run, over all batches.
    pub inference_count: u64,
    /// Model runs (batches).
    pub execution_count: u64,
    pub success: StatisticDuration,
    pub fail: StatisticDuration,
    pub queue: StatisticDuration,
    pub compute_infer: StatisticDuration,
    /// The version's response-cache hits and misses (their time is not measured: 0).
    pub cache_hit: StatisticDuration,
    pub cache_miss: StatisticDuration,
}

impl VersionStatistics {
    fn of(model: &str, version: u64) -> VersionStatistics {
        let v = crate::metrics::version_statistics(model, version).unwrap_or_default();
        VersionStatistics {
            name: model.to_string(),
            version,
            inference_count: v.rows,
            execution_count: v.compute_count,
            success: StatisticDuration::new(v.success_count, v.success_ns),
            fail: StatisticDuration::new(v.fail_count, v.fail_ns),
            queue: StatisticDuration::new(v.queue_count, v.queue_ns),
            compute_infer: StatisticDuration::new(v.compute_count, v.compute_ns),
            cache_hit: StatisticDuration::new(v.cache_hits, 0),
            cache_miss: StatisticDuration::new(v.cache_misses, 0),
        }
    }
}

/// Every serving model's name, sorted: the models `/v2/models/stats` (and
/// `ModelStatistics` with no name) report.
pub fn serving_models(state: &ServerState) -> Vec<String> {
    let mut models: Vec<String> = state.manager.serving().models.keys().cloned().collect();
    models.sort();
    models
}

/// The statistics of `models`: every serving version of each, or only `version`.
/// An unknown model (or version) is refused as the other V2 calls refuse it
/// ([`ApiError::NotFound`]).
pub fn statistics(
    state: &ServerState,
    models: &[String],
    version: Option<&VersionRequest>,
) -> Result<Vec<VersionStatistics>, ApiError> {
    let serving = state.manager.serving();
    let mut stats = Vec::new();
    for model in models {
        let versions: Vec<u64> = match version {
            Some(v) => vec![state.manager.resolve(model, v)?.version],
            None => {
                state.manager.resolve(model, &VersionRequest::Latest)?;
                serving
                    .models
                    .get(model)
                    .map(|m| m.versions.keys().copied().collect())
                    .unwrap_or_default()
            }
        };
        for v in versions {
            stats.push(VersionStatistics::of(model, v));
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_types_are_named_as_triton_names_them() {
        assert_eq!(triton_data_type(DataType::F32), "TYPE_FP32");
        assert_eq!(triton_data_type(DataType::Bytes), "TYPE_STRING");
        assert_eq!(triton_data_type(DataType::I64), "TYPE_INT64");
    }
}
