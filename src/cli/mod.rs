//! Client commands: `ferroserve jobs …`, `models …`, `upload`, `predict`, `status`
//! talk to a running server over REST (`client` holds what they share and their
//! exit codes); `service` is `serve --pid-file` and `stop`.

pub mod client;
pub mod jobs;
pub mod models;
mod rows;
pub mod service;
