//! The repository watcher: one task, owned by `server::run` and stopped with it,
//! that loads the models at start-up and then polls the repository (every
//! `file_system_poll_wait`) and the model config file (every
//! `model_config_file_poll_wait`), handing each change to [`Sources`].
//!
//! File IO and model loads run on blocking threads; the task awaits each poll before
//! the next, so two polls never overlap. A config file that does not parse is logged
//! and the list in force stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::model_config_list::ModelConfigList;
use crate::sources::Sources;

/// What the watcher needs from the settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WatcherSettings {
    /// Time between two polls of the repository; zero disables polling.
    pub file_system_poll_wait: Duration,
    /// The multi-model config file, re-read every `model_config_file_poll_wait`.
    pub model_config_file: Option<PathBuf>,
    /// Time between two reads of the config file; zero reads it at start-up only.
    pub model_config_file_poll_wait: Duration,
    /// Directories every base path of the config file must lie under.
    pub model_roots: Vec<PathBuf>,
}

/// Loads every model, marks the manager ready, then polls until `stop` turns true.
pub async fn run(
    sources: Arc<Sources>,
    settings: WatcherSettings,
    mut stop: watch::Receiver<bool>,
) {
    let initial = {
        let sources = sources.clone();
        tokio::task::spawn_blocking(move || {
            sources.initial_load();
            sources.manager().set_ready();
            tracing::info!("initial model load finished");
        })
    };
    tokio::select! {
        _ = stopped(&mut stop) => return,
        r = initial => if let Err(e) = r {
            tracing::error!("initial model load failed: {e}");
            sources.manager().set_ready();
        },
    }

    let mut fs_tick = ticker(settings.file_system_poll_wait);
    let mut config_tick = match &settings.model_config_file {
        Some(_) => ticker(settings.model_config_file_poll_wait),
        None => None,
    };
    let mut config_in_force = sources.config_list();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick(&mut fs_tick) => {
                let sources = sources.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || sources.poll()).await {
                    tracing::error!("repository poll failed: {e}");
                }
            }
            _ = tick(&mut config_tick) => {
                let Some(path) = settings.model_config_file.clone() else { continue };
                let read = tokio::task::spawn_blocking(move || ModelConfigList::load(&path)).await;
                match read {
                    Ok(Ok(list)) if config_in_force.as_deref() != Some(&list) => {
                        if let Err(e) = list.check_roots(&settings.model_roots) {
                            tracing::error!("model config file refused, the current one stays: {e}");
                            continue;
                        }
                        tracing::info!(models = list.models.len(), "model config file changed; applying it");
                        let applying = sources.clone();
                        let applied = tokio::task::spawn_blocking(move || applying.apply_config_list(list, &crate::sources::CancellationToken::new())).await;
                        match applied {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => tracing::error!("model config file refused, the current one stays: {e}"),
                            Err(e) => tracing::error!("applying the model config file failed: {e}"),
                        }
                        config_in_force = sources.config_list();
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("{e}; the current model config stays in force"),
                    Err(e) => tracing::error!("reading the model config file failed: {e}"),
                }
            }
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn ticker(period: Duration) -> Option<tokio::time::Interval> {
    if period.is_zero() {
        return None;
    }
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Some(interval)
}

/// Waits for the next tick, or forever when polling is off.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}
