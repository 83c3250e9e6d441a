//! Reads scikit-learn models saved with `pickle` or `joblib` without running Python
//! and without executing any code from the file.
//!
//! * [`pickle`] turns a pickle stream into a plain [`value::Value`] tree; global
//!   lookups resolve only through an allowlist.
//! * `estimators` (to come) rebuilds allowlisted estimator classes from that tree.

pub mod allowlist;
pub mod joblib;
pub mod pickle;
pub mod value;

pub use joblib::read_model_file;
pub use pickle::{read_pickle, Limits, LoadError};
