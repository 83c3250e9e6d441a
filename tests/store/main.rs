//! The metadata store (issue 12) against every database it supports: SQLite (the
//! default, embedded), and throwaway PostgreSQL and MariaDB servers started by
//! `common::db_servers` on free loopback ports. The same tests run against each:
//! a restart keeps what management decided and the history; the database killed
//! while clients predict fails no prediction, refuses management writes with 503
//! and recovers by itself; a write that lands after its call answered 503 is
//! written back (PostgreSQL and MariaDB: another client's lock makes it late; a
//! SQLite write gives up waiting with the same timeout); a corrupt SQLite file or an unreachable URL stops the
//! start with a clear message and is never overwritten.

#[path = "../common/mod.rs"]
mod common;

mod log;
mod outages;
mod restart;
mod start;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::db_servers::{DbKind, DbServer, MARIADB_PASSWORD};
use common::{install_model, root_path, store_settings, TestServer};
use ferroserve::settings::Settings;
use serde_json::{json, Value};
use sha2::Digest;

/// A repository with two ONNX models.
fn repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    for model in ["iris_lr", "iris_dt"] {
        install_model(
            repo.path(),
            model,
            1,
            &root_path(&format!("examples/models/{model}/1/model.onnx")),
        );
    }
    repo
}

async fn start_db(kind: DbKind) -> DbServer {
    tokio::task::spawn_blocking(move || DbServer::start(kind))
        .await
        .unwrap()
}

async fn predict(server: &TestServer, model: &str) -> (u16, Value) {
    server
        .post_json(
            &format!("/v1/models/{model}:predict"),
            &json!({ "instances": [[5.1, 3.5, 1.4, 0.2]] }),
        )
        .await
}

fn model_status<'a>(status: &'a Value, model: &str) -> &'a Value {
    status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == model)
        .unwrap_or_else(|| panic!("{model} not in {status}"))
}

async fn history(server: &TestServer, model: &str) -> Vec<Value> {
    let (code, body) = server.get(&format!("/v1/models/{model}/history")).await;
    assert_eq!(code, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}
