//! Wires the pieces together and runs the server until shut down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::ServerState;
use crate::backends::BackendOptions;
use crate::manager::Manager;
use crate::settings::Settings;

mod restore;

/// Sockets the server answers on, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub rest: TcpListener,
    /// `None` leaves the gRPC API off.
    pub grpc: Option<TcpListener>,
}

/// The listen backlog asked for (the kernel caps it at `net.core.somaxconn`). At the
/// connection limit, with no idle connection to close, new connections wait there
/// (issue 9); a short backlog (tokio's
/// default is 128) would drop their SYNs instead, and the client would retry only
/// after one, three, seven seconds.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a restart does not wait
/// for the old connections' TIME_WAIT).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Listeners {
    /// Binds the addresses the settings name.
    pub async fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
        let rest = listen(settings.rest_addr)
            .with_context(|| format!("cannot listen on REST address {}", settings.rest_addr))?;
        let grpc = listen(settings.grpc_addr)
            .with_context(|| format!("cannot listen on gRPC address {}", settings.grpc_addr))?;
        Ok(Listeners {
            rest,
            grpc: Some(grpc),
        })
    }
}

pub fn backend_options(settings: &Settings) -> BackendOptions {
    BackendOptions {
        onnxruntime_path: settings.onnxruntime_path.clone(),
        onnx_intra_threads: settings.onnx_intra_threads,
        tensorflow_path: settings.tensorflow_path.clone(),
        onnx_sessions: settings.onnx_sessions,
    }
}

/// Runs the server until `shutdown` completes, then stops accepting connections,
/// lets in-flight requests finish, and returns.
///
/// Models load in the background: the server answers liveness at once and
/// reports ready when every model found at start-up has loaded or failed.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::metrics::install();
    let repository = settings.model_repository.clone();
    // With a model config file the repository root is optional: the file may name
    // every model.
    anyhow::ensure!(
        repository.is_dir()
            || settings.model_config_file.is_some()
            || settings.single_model.is_some(),
        "model repository {} is not a directory",
        repository.display()
    );
    let model_roots = settings.model_roots();
    let config_list = config_list(&settings, &model_roots)?;
    let auth = Arc::new(crate::auth::Auth::from_settings(&settings)?);
    log_access_rules(&settings);
    // TLS (issue 10): checked before anything starts, so bad files stop the start.
    let tls = match settings.tls_files() {
        Some(files) => Some(crate::tls::Tls::load(files).context("cannot set up TLS")?),
        None => None,
    };
    let watcher_settings = crate::watcher::WatcherSettings {
        file_system_poll_wait: settings.file_system_poll_wait,
        model_config_file: settings.model_config_file.clone(),
        model_config_file_poll_wait: settings.model_config_file_poll_wait,
        model_roots,
    };
    let mut settings = settings;
    if settings.public_url.is_none() {
        let addr = listeners.rest.local_addr()?;
        settings.public_url = Some(crate::settings::default_public_url(
            addr,
            settings.tls_cert.is_some(),
        ));
    }
    // The metadata store (issue 12): opened and migrated before anything is served,
    // so a database that cannot be reached or read stops the start.
    let store = Arc::new(
        crate::store::Store::open(&settings.database_url(), settings.database_timeout, true)
            .await
            .map_err(|e| anyhow::anyhow!("metadata store: {e}"))?,
    );
    tracing::info!(kind = store.kind(), url = store.url(), "metadata store");
    let manager = manager(&settings, &store);
    let state = Arc::new(ServerState {
        auth: auth.clone(),
        store: Some(store.clone()),
        ..ServerState::new(settings, manager.clone())
    });
    if let Some(list) = config_list {
        state.sources.set_config_list(list);
    }
    restore::saved_settings(&state, &store).await?;
    restore::start_workers(&state, &store).await?;
    follow_log_limits(&state, &store);
    let stop_store = tokio_util::sync::CancellationToken::new();
    let store_writers = store.start_writers(stop_store.clone(), Duration::from_secs(2));
    // Jobs (issue 13): jobs left running by a previous process are marked failed,
    // queued ones run once the models have loaded.
    let data_dir = state.settings.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let jobs = crate::jobs::Jobs::start(
        &state,
        store.clone(),
        state.settings.job_workers,
        state.settings.job_retention,
        data_dir,
    )
    .await
    .map_err(|e| anyhow::anyhow!("jobs: {e}"))?;
    let _ = state.jobs.set(jobs.clone());

    // A stopped model whose directory goes while the server runs forgets its stop
    // (the watcher notices it), in the store too, so that a new directory of the
    // name is served.
    crate::api::manage::forget_stops_gone_from_watch(&state);
    // One shutdown signal, fanned out to every listener and the watcher.
    let (stop_tx, stop_rx) = watch::channel(false);
    // The watcher loads the models, then polls the repository until shutdown.
    let watcher = tokio::spawn(crate::watcher::run(
        state.sources.clone(),
        watcher_settings,
        stop_rx.clone(),
    ));
    // A deployed model a changed model config file leaves out loses its deployment
    // (its worker, or its settings in this process).
    let config_follower = (state.settings.model_config_file.is_some()
        && !state.settings.model_config_file_poll_wait.is_zero())
    .then(|| {
        tokio::spawn(crate::api::manage::follow_config_file(
            state.clone(),
            state.settings.model_config_file_poll_wait,
            stop_rx.clone(),
        ))
    });
    // The tokens file is re-read when it changes, until shutdown.
    // Free memory goes back to the OS after a large request (src/memory.rs).
    let stop_trimmer = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trimmer = crate::memory::Trimmer::spawn(stop_trimmer.clone())
        .context("cannot start the memory trimmer thread")?;
    let tokens_watcher = auth
        .tokens_configured()
        .then(|| tokio::spawn(watch_tokens_file(auth.clone(), stop_rx.clone())));
    {
        // At the stop signal: not ready at once; serving goes on for the shutdown
        // delay (load balancers take the hint), then the listeners close.
        let state = state.clone();
        tokio::spawn(async move {
            shutdown.await;
            state
                .draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let delay = state.settings.shutdown_delay;
            if !delay.is_zero() {
                tracing::info!(
                    ?delay,
                    "not ready; serving on until the shutdown delay ends"
                );
                tokio::time::sleep(delay).await;
            }
            let _ = stop_tx.send(true);
        });
    }
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // One certificate for both ports, re-read until shutdown.
    let tls_reload = tls
        .clone()
        .map(|tls| tokio::spawn(tls.watch(crate::tls::RELOAD_POLL, stop_rx.clone())));
    let transport = tls.as_ref().map_or("plain tcp", |tls| tls.describe());
    let with_tls = |protocol| tls.clone().map(|tls| (tls, protocol));

    // A flood of idle connections is closed to make room or waits in the backlog
    // instead of taking the descriptors the watcher and model loads need.
    let limit = Some(connection_limit(&state.settings));

    let rest_addr = listeners.rest.local_addr()?;
    tracing::info!(%rest_addr, transport, "REST API listening");
    let rest_listener = crate::tls::ServerListener::limited(
        listeners.rest,
        with_tls(crate::tls::Protocol::Rest),
        limit.clone(),
    );
    let rest_router = crate::http::router(state.clone())
        // REST over HTTP/2: a stream whose client leaves its answer unread past
        // `send_timeout` is reset, as on gRPC.
        .layer(axum::middleware::map_response(crate::grpc::watch_send));
    let rest = tokio::spawn(crate::connections::serve(
        rest_listener,
        rest_router,
        // Small predict requests skip the router (`crate::http::fast`).
        Some(state.clone()),
        crate::connections::ConnectionOptions::rest(&state.settings),
        stopped(stop_rx.clone()),
    ));

    // gRPC (issue 5): beside REST, on the same state and the same shutdown signal.
    let grpc = match listeners.grpc {
        Some(listener) => {
            let grpc_addr = listener.local_addr()?;
            tracing::info!(%grpc_addr, transport, "gRPC API listening");
            let listener = crate::tls::ServerListener::limited(
                listener,
                with_tls(crate::tls::Protocol::Grpc),
                limit.clone(),
            );
            let limits = crate::grpc::MessageLimits {
                max_receive_bytes: state.settings.grpc_max_receive_bytes,
                max_send_bytes: state.settings.grpc_max_send_bytes,
            };
            Some(tokio::spawn(crate::grpc::serve(
                state.clone(),
                limits,
                listener,
                crate::connections::ConnectionOptions::grpc(&state.settings),
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };

    // The registry on its own port too (`--registry-addr`), like the old registry:
    // with the main port's TLS, connection limit, timeouts and access layer.
    let registry = match state.settings.registry_addr {
        Some(addr) => {
            let listener = listen(addr)
                .with_context(|| format!("cannot listen on registry address {addr}"))?;
            tracing::info!(%addr, transport, "registry listening");
            let listener = crate::tls::ServerListener::limited(
                listener,
                with_tls(crate::tls::Protocol::Rest),
                limit.clone(),
            );
            Some(tokio::spawn(crate::connections::serve(
                listener,
                crate::http::registry_router(state.clone()),
                None,
                crate::connections::ConnectionOptions::rest(&state.settings),
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };

    // Draining has a deadline that starts with the stop signal: a client holding a
    // stalled request must not keep the server up forever. Past it the servers are
    // dropped; their connections close when the runtime ends.
    let drain_deadline = {
        let stop = stopped(stop_rx.clone());
        let timeout = state.settings.shutdown_timeout;
        async move {
            stop.await;
            tokio::time::sleep(timeout).await;
        }
    };
    // At the stop signal, before the drain: running jobs stop at their next batch
    // (recorded as interrupted, their output discarded, on the inference threads
    // they predict on, which stay until the end), queued ones stay queued; then
    // the events streams end, so that none holds the drain, and no job goes on
    // writing beside a server started in this one's place.
    let jobs_stopped = {
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            stop.await;
            tokio::task::spawn_blocking(move || jobs.shutdown()).await
        })
    };
    // When the stop signal came: the inference threads are waited for until the
    // shutdown timeout counted from it (below).
    let stop_signalled = {
        let stop = stopped(stop_rx.clone());
        async move {
            stop.await;
            std::time::Instant::now()
        }
    };
    let stop_signalled = tokio::spawn(stop_signalled);
    let (rest_abort, grpc_abort) = (rest.abort_handle(), grpc.as_ref().map(|g| g.abort_handle()));
    let served = async move {
        // Each returns once its connections have drained.
        rest.await.context("REST server failed")?;
        if let Some(grpc) = grpc {
            grpc.await.context("gRPC server failed")?;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        served = served => served?,
        _ = drain_deadline => {
            tracing::warn!(
                "requests still in flight after the shutdown timeout; closing their connections"
            );
            rest_abort.abort();
            if let Some(grpc) = grpc_abort {
                grpc.abort();
            }
        }
    }
    // Workers drain and stop (their rows stay: the next start re-spawns them).
    if let Some(workers) = state.workers.get() {
        workers.shutdown().await;
    }
    if let Some(registry) = registry {
        registry.abort();
    }
    // The watcher has seen the stop signal; a load in progress is not waited for.
    let _ = watcher.await;
    if let Some(follower) = config_follower {
        let _ = follower.await;
    }
    if let Some(tokens_watcher) = tokens_watcher {
        let _ = tokens_watcher.await;
    }
    stop_trimmer.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || trimmer.join()).await;
    if let Some(reload) = tls_reload {
        let _ = reload.await;
    }
    // The jobs stopped at the stop signal (above); the inference threads they
    // predicted on go once they have.
    jobs_stopped.await??;
    join_inference_threads(&state, stop_signalled).await?;
    // What the store's buffers hold is written (bounded by the drain time).
    stop_store.cancel();
    for writer in store_writers {
        let _ = writer.await;
    }
    // A late write that lands now must still be undone (bounded like the drain).
    store.settle_pending(state.settings.shutdown_timeout).await;
    store.close().await;
    tracing::info!("shut down");
    Ok(())
}

/// How often the tokens file is checked for changes.
const TOKENS_FILE_POLL: Duration = Duration::from_secs(1);

/// The least time shutdown waits for the inference threads, even once the shutdown
/// timeout has passed: enough for those finishing a job, or skipping queued ones
/// whose callers have gone, to return.
const INFERENCE_GRACE: Duration = Duration::from_secs(1);

/// Re-reads the tokens file every [`TOKENS_FILE_POLL`] until `stop` turns true.
async fn watch_tokens_file(auth: Arc<crate::auth::Auth>, mut stop: watch::Receiver<bool>) {
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(TOKENS_FILE_POLL) => {
                let auth = auth.clone();
                let _ = tokio::task::spawn_blocking(move || auth.reload_if_changed()).await;
            }
        }
    }
}

/// Says at start who may manage the server, so an open server is never a surprise.
fn log_access_rules(settings: &Settings) {
    let bound_remote =
        !settings.rest_addr.ip().is_loopback() || !settings.grpc_addr.ip().is_loopback();
    match (
        &settings.auth_tokens,
        settings.allow_unauthenticated_management,
    ) {
        (Some(path), _) => tracing::info!(
            tokens = %path.display(),
            metrics_require_token = settings.metrics_require_token,
            "bearer tokens required for inference and management"
        ),
        (None, true) => tracing::warn!(
            "--allow-unauthenticated-management: ANY client that reaches the ports may \
             upload, reload, deploy, stop and delete models"
        ),
        (None, false) if bound_remote => tracing::info!(
            "no --auth-tokens: inference is open to every client; management is allowed \
             only from this host (loopback); remote management is refused"
        ),
        (None, false) => tracing::info!(
            "no --auth-tokens: inference is open; management is allowed from loopback clients"
        ),
    }
}

/// The model config list the settings give: the `--model_config_file`, checked
/// against the model roots, or the one model of `--model_name`; `None` serves the
/// repository as found.
fn config_list(
    settings: &Settings,
    model_roots: &[std::path::PathBuf],
) -> anyhow::Result<Option<crate::model_config_list::ModelConfigList>> {
    Ok(
        match (&settings.model_config_file, &settings.single_model) {
            (Some(path), _) => {
                let list = crate::model_config_list::ModelConfigList::load(path)?;
                list.check_roots(model_roots)
                    .map_err(|e| anyhow::anyhow!("model config file {}: {e}", path.display()))?;
                Some(list)
            }
            // One model named on the command line (TF Serving's --model_name and
            // --model_base_path): a list of one, its path given by the operator.
            (None, Some(single)) => {
                let list = crate::model_config_list::ModelConfigList {
                    models: vec![crate::model_config_list::ModelListEntry {
                        name: single.name.clone(),
                        base_path: single.base_path.clone(),
                        model_platform: None,
                        version_policy: None,
                        labels: Default::default(),
                    }],
                };
                list.validate()
                    .map_err(|e| anyhow::anyhow!("--model_name: {e}"))?;
                Some(list)
            }
            (None, None) => None,
        },
    )
}

/// The manager, with every version state change going to the store's audit trail
/// (buffered; the manager never waits on the database).
fn manager(settings: &Settings, store: &Arc<crate::store::Store>) -> Arc<Manager> {
    let manager = Arc::new(
        Manager::new(backend_options(settings))
            .with_request_timeout(settings.request_timeout)
            .with_limits(crate::manager::LoadLimits {
                max_concurrent_loads: settings.max_concurrent_loads,
                max_served_versions: settings.max_served_versions_per_model,
            }),
    );
    {
        let store = store.clone();
        manager.observe_states(Box::new(move |model, version, from, to, error| {
            store.record(
                crate::store::EventKind::State,
                model,
                Some(version),
                serde_json::json!({ "from": from.as_str(), "to": to.as_str(), "error": error }),
                None,
                None,
            );
        }));
    }
    manager
}

/// The prediction log's limits as the served models' configs say now, applied every
/// minute to the rows logged before a restart or by a model that logs no more too.
fn follow_log_limits(state: &Arc<ServerState>, store: &crate::store::Store) {
    let manager = state.manager.clone();
    store.predictions.set_retention_source(Arc::new(move || {
        manager
            .serving()
            .models
            .iter()
            .map(|(name, model)| {
                let log = match model.versions.values().next_back() {
                    Some(newest) => newest.config().log.clone(),
                    None => model.config.log.clone(),
                };
                (Arc::from(name.as_str()), (log.max_rows, log.max_age_days))
            })
            .collect()
    }));
}

/// One limit for both listeners, from the open-files limit raised to its hard limit
/// (issue 9), unless `--max-connections` gives one.
fn connection_limit(settings: &Settings) -> Arc<crate::connections::ConnectionLimit> {
    let fd_limit = crate::connections::raise_fd_limit();
    let max_connections = settings
        .max_connections
        .unwrap_or_else(|| crate::connections::default_max_connections(fd_limit));
    if max_connections as u64 >= fd_limit {
        tracing::warn!(
            max_connections,
            fd_limit,
            "max_connections leaves no file descriptors for models and the watcher"
        );
    }
    tracing::info!(max_connections, fd_limit, "connection limit");
    crate::connections::ConnectionLimit::new(max_connections)
}

/// Waits for the inference threads for what is left of the shutdown timeout
/// counted from the stop signal (`stop_signalled`), and at least
/// [`INFERENCE_GRACE`], for those finishing a job whose caller has gone: a thread
/// stuck in a model's run (a SavedModel looping for ever) is not waited for, and
/// ends with the process (a warning names it).
async fn join_inference_threads(
    state: &ServerState,
    stop_signalled: tokio::task::JoinHandle<std::time::Instant>,
) -> anyhow::Result<()> {
    let now = std::time::Instant::now();
    let stopped_at = if stop_signalled.is_finished() {
        stop_signalled.await.unwrap_or(now)
    } else {
        stop_signalled.abort();
        now
    };
    let inference = state.inference.clone();
    let inference_deadline = now
        + state
            .settings
            .shutdown_timeout
            .saturating_sub(now - stopped_at)
            .max(INFERENCE_GRACE);
    let still_busy =
        tokio::task::spawn_blocking(move || inference.shutdown_until(Some(inference_deadline)))
            .await?;
    if !still_busy.is_empty() {
        let threads: Vec<String> = still_busy
            .iter()
            .map(|b| match b.running_for {
                Some(t) => format!("{} (running for {:.1} s)", b.thread, t.as_secs_f64()),
                None => b.thread.clone(),
            })
            .collect();
        tracing::warn!(
            "{} inference thread(s) still inside a model's run after the shutdown \
             timeout; exiting without them: {}",
            still_busy.len(),
            threads.join(", ")
        );
    }
    Ok(())
}
