//! Reads scikit-learn models saved with `pickle` or `joblib` without running Python
//! and without executing any code from the file.
//!
//! * [`pickle`] turns a pickle stream into a plain [`value::Value`] tree; global
//!   lookups resolve only through [`allowlist::resolve`]. Invariant: no input makes it
//!   execute code, panic, overflow the stack, or allocate beyond [`Limits`].
//! * [`joblib`] detects and (boundedly) decompresses joblib files and reads the raw
//!   array bytes joblib writes after each `NumpyArrayWrapper`; [`read_model_file`] is
//!   the entry point for any saved model file.
//! * [`estimators`] rebuilds allowlisted estimator classes from that tree, and
//!   [`model::SklearnModel`] serves them: `predict` and `predict_proba` as scikit-learn.

// The docs are written for this code's own developers and read with
// `cargo doc --document-private-items`, so they may link to private items.
#![allow(rustdoc::private_intra_doc_links)]

pub mod allowlist;
pub mod estimators;
pub mod joblib;
pub mod model;
pub mod pickle;
pub mod value;

pub use estimators::text::murmurhash3_32;
pub use estimators::{ClassLabels, Column, ColumnKind, MatrixRef, SparseRows};
pub use joblib::{read_model_file, read_model_file_with_options};
pub use model::{
    Input, InputColumn, InputSchema, LoadOptions, ModelError, PredictError, Prediction,
    SklearnModel,
};
pub use pickle::{read_pickle, Limits, LoadError, ReadOptions};
