//! TensorFlow SavedModels. The backend lives in `ferroserve-core`
//! (`ferroserve_core::backends::tensorflow`), so the Python package loads SavedModels
//! with the same code; it keeps its path here. `examples` (tf.Example inputs of the
//! Classify and Regress APIs) stays with the server: it reads TF Serving's generated
//! protos.

pub use ferroserve_core::backends::tensorflow::*;

pub mod examples;
