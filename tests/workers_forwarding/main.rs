//! Isolated deployments (issue 14): what reaches a deployed model's worker and comes
//! back, against the real binary: gRPC, tokens and their scopes, the main server's
//! request bounds, a worker describing itself on its own port, scoring jobs through a
//! worker, and a worker's prediction log and events reaching the main store.
//!
//! `grpc`: gRPC calls forwarded; `access`: tokens, metrics and management on a
//! worker's own port; `bounds`: the main server's request bounds and body reading;
//! `records`: jobs, the prediction log, events and metrics that reach the main server.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod bounds;
mod grpc;
mod records;

use std::time::{Duration, Instant};

use common::workers::*;
use common::{raw_post, root_path};
use serde_json::{json, Value};
