//! Isolated deployments (issue 14): management of deployed models against the real
//! binary: ending a deployment (under load, past the management timeout, with its
//! client gone, its directory gone), config lists that leave a deployed model out,
//! refused deploys and deletes, and what the store keeps of each.

#[path = "../common/mod.rs"]
mod common;

mod directories;
mod ending;
mod refusals;
mod versions;

use std::process::Command;
use std::time::{Duration, Instant};

use common::root_path;
use common::workers::*;
use serde_json::{json, Value};
