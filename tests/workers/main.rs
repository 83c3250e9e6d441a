//! Isolated deployments (issue 14), black-box against the real binary: the old
//! service's workflow with real worker processes, restarts after a kill, OOM past a
//! memory limit, crash-loop, port exhaustion, redeploys, a main-server restart, and
//! no worker outliving its server. Management of deployed models is in
//! `workers_management/`, what reaches a worker and comes back in
//! `workers_forwarding/`; their helpers are `common/workers.rs`.

#[path = "../common/mod.rs"]
mod common;

mod draining;
mod failures;
mod restarts;
mod workflow;

use std::process::Command;
use std::time::{Duration, Instant};

use common::child::free_port;
use common::workers::*;
use common::{raw_post, root_path, timeless};
use serde_json::{json, Value};
