//! ferroserve's core types and the backends that need nothing of the server:
//! [`tensor`] (what every adapter decodes into and every backend takes), the
//! [`backends::Backend`] trait with its types, format recognition, and the ONNX and
//! TensorFlow (SavedModel) backends.
//!
//! Invariant: this crate depends on no async runtime, HTTP/gRPC stack or database,
//! so the Python package (`python/ferroserve-py`) loads models with the same code
//! the server uses. The server re-exports these modules at their old paths
//! (`ferroserve::tensor`, `ferroserve::backends::onnx`,
//! `ferroserve::backends::tensorflow`).

pub mod backends;
pub mod file_kind;
pub mod tensor;
