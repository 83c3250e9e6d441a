//! The OpenAPI description's types for the V2 answers that `super` builds as JSON
//! values; never built.
#![allow(dead_code)]

use serde_json::Value;
use utoipa::ToSchema;

#[derive(ToSchema)]
pub struct V2ServerMetadata {
    name: String,
    version: String,
    extensions: Vec<String>,
}

#[derive(ToSchema)]
pub struct V2TensorMetadata {
    name: String,
    datatype: String,
    /// -1 for a dimension of any size.
    shape: Vec<i64>,
}

#[derive(ToSchema)]
pub struct V2ModelMetadata {
    name: String,
    versions: Vec<String>,
    platform: String,
    inputs: Vec<V2TensorMetadata>,
    outputs: Vec<V2TensorMetadata>,
}

#[derive(ToSchema)]
pub struct V2ConfigTensor {
    name: String,
    /// Triton's data type: `TYPE_FP32`, `TYPE_INT64`, `TYPE_STRING` (BYTES)...
    data_type: String,
    /// -1 for a dimension of any size; without the batch dimension when
    /// `max_batch_size` > 0.
    dims: Vec<i64>,
}

/// Triton's `ModelConfig`, the fields ferroserve fills.
#[derive(ToSchema)]
pub struct V2ModelConfig {
    name: String,
    /// `onnxruntime_onnx`, `tensorflow_savedmodel`, `sklearn`, `fasttext`.
    platform: String,
    /// `onnxruntime`, `tensorflow`, `sklearn`, `fasttext`.
    backend: String,
    /// `{"latest": {"num_versions": n}}`, `{"all": {}}` or
    /// `{"specific": {"versions": [...]}}`.
    version_policy: Value,
    /// The `[batching]` maximum when the model batches, else 0.
    max_batch_size: u64,
    input: Vec<V2ConfigTensor>,
    output: Vec<V2ConfigTensor>,
}

/// Triton's `ModelStatisticsResponse`: `model_stats`, one entry per version,
/// each with `name`, `version`, `last_inference`, `inference_count`,
/// `execution_count`, `inference_stats` (`success`, `fail`, `queue`,
/// `compute_input`, `compute_infer`, `compute_output`, `cache_hit`,
/// `cache_miss`: each `{"count", "ns"}`) and `batch_stats`.
#[derive(ToSchema)]
pub struct V2ModelStatistics {
    model_stats: Vec<Value>,
}

#[derive(ToSchema)]
pub struct V2InferOutput {
    name: String,
    datatype: String,
    shape: Vec<u64>,
    /// `binary_data_size` when the output is sent as binary data.
    #[schema(required = false)]
    parameters: Value,
    /// The flat tensor data (absent when binary).
    #[schema(required = false)]
    data: Vec<Value>,
}

#[derive(ToSchema)]
pub struct V2InferResponse {
    #[schema(required = false)]
    id: String,
    model_name: String,
    model_version: String,
    outputs: Vec<V2InferOutput>,
}
