//! ferroserve: a machine-learning model server. See `docs/architecture.md` for the code map.

pub mod api;
pub mod auth;
pub mod backends;
pub mod batching;
pub mod cache;
pub mod connections;
pub mod flat;
pub mod grpc;
pub mod http;
pub mod inference;
pub mod json_tensor;
pub mod manager;
pub mod memory;
pub mod metrics;
pub mod model_config;
pub mod model_config_list;
pub mod raw_tensor;
pub mod repository;
pub mod server;
pub mod settings;
pub mod sources;
pub mod store;
pub mod tensor;
pub mod tls;
pub mod warmup;
pub mod watcher;
