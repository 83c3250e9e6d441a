//! ferroserve: a machine-learning model server. See `docs/architecture.md` for the code map.

// The docs are written for this code's own developers and read with
// `cargo doc --document-private-items`, so they may link to private items.
#![allow(rustdoc::private_intra_doc_links)]

pub mod api;
pub mod auth;
pub mod backends;
pub mod batching;
pub mod cache;
pub mod cli;
pub mod connections;
pub mod console;
pub mod flat;
pub mod grpc;
pub mod http;
pub mod inference;
pub mod jobs;
pub mod json_tensor;
pub mod manager;
pub mod memory;
pub mod metrics;
pub mod model_config;
pub mod model_config_list;
pub mod paths;
pub mod pbtext;
pub mod preprocess;
pub mod raw_tensor;
pub mod regular_file;
pub mod repository;
pub mod server;
pub mod settings;
pub mod sources;
pub mod store;
// Tensors live in ferroserve-core (shared with the Python package); same path here.
pub use ferroserve_core::tensor;
pub use ferroserve_core::with_tensor_data;
pub mod tfrecord;
pub mod tfs_flags;
pub mod tls;
pub mod toml_error;
pub mod warmup;
pub mod watcher;
pub mod workers;
