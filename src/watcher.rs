//! The repository watcher: one task, owned by `server::run` and stopped with it,
//! that loads the models at start-up and then polls the repository (every
//! `file_system_poll_wait`) and the model config file (every
//! `model_config_file_poll_wait`), handing each change to [`Sources`].
//!
//! File IO and model loads run on blocking threads; the task awaits each poll's scan
//! before the next, so two polls never overlap. A poll does not wait for the loads it
//! starts (`Sources::poll_in_background`): each model's reconcile runs on its own
//! thread under the model's lock, and a later poll skips a model whose reconcile
//! still runs. The initial load waits for every model, so readiness keeps its
//! meaning; every warm-up request is bounded in time (`crate::warmup`), so it
//! cannot wait for ever on one version.
//!
//! Each read of the config file is compared with the list in force, whoever put it
//! there (the file, or a gRPC `HandleReloadConfigRequest` since): as TF Serving's
//! poll, the file wins at its next read when they differ, and nothing happens when
//! they do not. A file that cannot be used (it does not parse, or is refused) is
//! logged and the list in force stays; so does a file that holds no list (empty, or
//! only comments), as TF Serving takes no action for an empty config. Each of those
//! is logged once per content of the file, not at every poll.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
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
    let mut config_file = ConfigFileReport::default();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick(&mut fs_tick) => {
                let sources = sources.clone();
                // The poll starts each model's reconcile on a thread of its own and
                // does not wait for them: one model's long load or warm-up never
                // holds up the next poll, nor the other models. Its scan still
                // runs here, and the stop signal is not held up by it.
                let polled = tokio::task::spawn_blocking(move || sources.poll_in_background());
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    polled = polled => if let Err(e) = polled {
                        tracing::error!("repository poll failed: {e}");
                    },
                }
            }
            _ = tick(&mut config_tick) => {
                let Some(path) = settings.model_config_file.clone() else { continue };
                let (sources, roots) = (sources.clone(), settings.model_roots.clone());
                let mut report = std::mem::take(&mut config_file);
                let polled = tokio::task::spawn_blocking(move || {
                    poll_config_file(&sources, &path, &roots, &mut report);
                    report
                });
                let polled = tokio::select! {
                    _ = stopped(&mut stop) => return,
                    polled = polled => polled,
                };
                match polled {
                    Ok(report) => config_file = report,
                    Err(e) => tracing::error!("polling the model config file failed: {e}"),
                }
            }
        }
    }
}

/// What one read of the model config file came to.
#[derive(Debug, Clone, PartialEq)]
enum ConfigFilePoll {
    /// Its list is the list in force: nothing to do.
    InForce,
    /// Its list differed from the list in force and is in force now.
    Applied,
    /// The file holds no list (empty, or only comments): no action.
    NoList,
    /// The file cannot be read, does not parse, or its list was refused: the list
    /// in force stays.
    Refused(String),
}

/// What the watcher last logged of the model config file, so that a file that
/// stays unusable is logged once, not at every poll: again when its contents or
/// the reason change, and a usable file after it is logged too.
#[derive(Debug, Default)]
struct ConfigFileReport {
    /// The hash of the contents (none when unreadable) and the outcome last logged
    /// for a file that was not applied.
    unusable: Option<(Option<u64>, ConfigFilePoll)>,
}

/// Reads the model config file at `path` and applies its list when it differs from
/// the list in force. Blocking.
fn poll_config_file(
    sources: &Sources,
    path: &Path,
    roots: &[PathBuf],
    report: &mut ConfigFileReport,
) {
    let (contents, outcome) = read_and_apply(sources, path, roots);
    let file = path.display();
    match outcome {
        ConfigFilePoll::InForce | ConfigFilePoll::Applied => {
            if report.unusable.take().is_some() {
                tracing::info!(%file, "model config file usable again; its list is in force");
            }
        }
        ConfigFilePoll::NoList | ConfigFilePoll::Refused(_) => {
            let seen = (contents, outcome);
            if report.unusable.as_ref() == Some(&seen) {
                return;
            }
            match &seen.1 {
                ConfigFilePoll::Refused(e) => tracing::error!(
                    %file,
                    "model config file refused, the list in force stays: {e}"
                ),
                _ => tracing::warn!(
                    %file,
                    "model config file holds no model list (it is empty or only comments): \
                     taking no action, the list in force stays (an explicit empty list, \
                     `model_config_list {{ }}` or TOML `models = []`, unloads every model)"
                ),
            }
            report.unusable = Some(seen);
        }
    }
}

/// [`poll_config_file`]'s work, without the logging: the hash of what the file
/// held (none when it could not be read) and what came of it.
fn read_and_apply(
    sources: &Sources,
    path: &Path,
    roots: &[PathBuf],
) -> (Option<u64>, ConfigFilePoll) {
    let bytes = match crate::regular_file::read(
        path,
        crate::model_config_list::ModelConfigList::MAX_FILE_BYTES,
    ) {
        Ok(bytes) => bytes,
        Err(e) => {
            let reason = format!("cannot read it: {e}");
            return (None, ConfigFilePoll::Refused(reason));
        }
    };
    let contents = {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut hasher);
        Some(hasher.finish())
    };
    let list = match ModelConfigList::from_file_bytes(path, &bytes) {
        Ok(Some(list)) => list,
        Ok(None) => return (contents, ConfigFilePoll::NoList),
        Err(e) => return (contents, ConfigFilePoll::Refused(e.to_string())),
    };
    if sources.config_list().as_deref() == Some(&list) {
        return (contents, ConfigFilePoll::InForce);
    }
    if let Err(e) = list.check_roots(roots) {
        return (contents, ConfigFilePoll::Refused(e));
    }
    tracing::info!(
        file = %path.display(),
        models = list.models.len(),
        "model config file differs from the list in force; applying it"
    );
    match sources.apply_config_file_list(list, &crate::sources::CancellationToken::new()) {
        Ok(_) => (contents, ConfigFilePoll::Applied),
        Err(e) => (contents, ConfigFilePoll::Refused(e.to_string())),
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::manager::Manager;

    /// A watcher's view of one config file over a server's sources, with what it
    /// logs kept for the test.
    struct Bench {
        _dir: tempfile::TempDir,
        root: PathBuf,
        file: PathBuf,
        sources: Sources,
        report: ConfigFileReport,
        log: Arc<Mutex<Vec<u8>>>,
    }

    impl Bench {
        fn new(file_name: &str) -> Bench {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            // Models with no version: nothing loads, only the list matters here.
            for m in ["a", "b", "c"] {
                std::fs::create_dir_all(root.join(m)).unwrap();
            }
            let sources = Sources::new(
                Arc::new(Manager::new(crate::backends::BackendOptions::default())),
                root.clone(),
            );
            Bench {
                file: root.join(file_name),
                root,
                _dir: dir,
                sources,
                report: ConfigFileReport::default(),
                log: Arc::default(),
            }
        }

        fn write(&self, text: &str) {
            std::fs::write(&self.file, text).unwrap();
        }

        /// One poll; what it logged.
        fn poll(&mut self) -> String {
            let before = self.log.lock().unwrap().len();
            let log = self.log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || SharedLog(log.clone()))
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                poll_config_file(
                    &self.sources,
                    &self.file,
                    std::slice::from_ref(&self.root),
                    &mut self.report,
                )
            });
            String::from_utf8_lossy(&self.log.lock().unwrap()[before..]).into_owned()
        }

        /// Polls `n` times; what they logged of the config file.
        fn polls(&mut self, n: usize) -> Vec<String> {
            (0..n)
                .flat_map(|_| {
                    self.poll()
                        .lines()
                        .filter(|l| l.contains("model config file"))
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect()
        }

        fn in_force(&self) -> Option<Vec<String>> {
            let list = self.sources.config_list()?;
            Some(list.models.iter().map(|m| m.name.clone()).collect())
        }
    }

    /// A log writer appending to a buffer the test reads.
    struct SharedLog(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedLog {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text_list(names: &[&str]) -> String {
        let configs: String = names
            .iter()
            .map(|n| format!("config {{ name: \"{n}\" base_path: \"{n}\" }}\n"))
            .collect();
        format!("model_config_list {{\n{configs}}}\n")
    }

    fn lines_with<'a>(logged: &'a [String], words: &str) -> Vec<&'a String> {
        logged.iter().filter(|l| l.contains(words)).collect()
    }

    /// Issue: an empty or comment-only file was applied as an empty list and
    /// unloaded every model. It takes no action (one warning per content); an
    /// explicit empty list still empties the list, as in TF Serving.
    #[test]
    fn an_empty_or_comment_only_file_takes_no_action() {
        for (file_name, no_list, explicit_empty) in [
            (
                "models.config",
                "# only a comment\n\n",
                "model_config_list { }",
            ),
            ("list.toml", "# only a comment\n\n", "models = []"),
        ] {
            let mut bench = Bench::new(file_name);
            let list = if file_name.ends_with(".toml") {
                "[[models]]\nname = \"a\"\nbase_path = \"a\"\n[[models]]\nname = \"b\"\nbase_path = \"b\"\n"
                    .to_string()
            } else {
                text_list(&["a", "b"])
            };
            bench.write(&list);
            bench.polls(1);
            assert_eq!(bench.in_force(), Some(vec!["a".into(), "b".into()]));

            for text in ["", no_list] {
                bench.write(text);
                let logged = bench.polls(4);
                assert_eq!(
                    bench.in_force(),
                    Some(vec!["a".into(), "b".into()]),
                    "{file_name} {text:?}"
                );
                assert_eq!(
                    lines_with(&logged, "taking no action").len(),
                    1,
                    "{logged:?}"
                );
                assert!(logged[0].contains("WARN"), "{logged:?}");
            }

            bench.write(explicit_empty);
            let logged = bench.polls(3);
            assert_eq!(bench.in_force(), Some(vec![]), "{file_name}: {logged:?}");
            assert_eq!(lines_with(&logged, "applying it").len(), 1, "{logged:?}");
        }
    }

    /// Issue: a file that could not be used logged an ERROR at every poll. It is
    /// logged once per content (and reason), and a usable file after it is logged.
    #[test]
    fn an_unusable_file_is_logged_once_per_content() {
        let mut bench = Bench::new("models.config");
        bench.write(&text_list(&["a"]));
        assert_eq!(lines_with(&bench.polls(1), "applying it").len(), 1);

        bench.write("model_config_list { config { name: \"a\" colour: 1 } }");
        let logged = bench.polls(4);
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(
            logged[0].contains("ERROR") && logged[0].contains("colour"),
            "{logged:?}"
        );
        // Other bad contents: said again, once.
        bench.write("model_config_list { config { name: \"a\" size: 1 } }");
        let logged = bench.polls(3);
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].contains("size"), "{logged:?}");
        // Refused rather than unparsable: a base path outside the roots.
        bench.write("model_config_list { config { name: \"a\" base_path: \"/proc\" } }");
        let logged = bench.polls(3);
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(
            logged[0].contains("outside the allowed model roots"),
            "{logged:?}"
        );
        // A file that cannot be read at all.
        std::fs::remove_file(&bench.file).unwrap();
        let logged = bench.polls(3);
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].contains("cannot read"), "{logged:?}");
        assert_eq!(bench.in_force(), Some(vec!["a".into()]));

        // Usable again, the same list as in force: said, nothing applied.
        bench.write(&text_list(&["a"]));
        let logged = bench.polls(3);
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].contains("usable again"), "{logged:?}");
        // Bad, then usable with another list: applied, and said.
        bench.write("model_config_list {");
        assert_eq!(bench.polls(2).len(), 1);
        bench.write(&text_list(&["a", "c"]));
        let logged = bench.polls(3);
        assert_eq!(lines_with(&logged, "usable again").len(), 1, "{logged:?}");
        assert_eq!(lines_with(&logged, "applying it").len(), 1, "{logged:?}");
        assert_eq!(bench.in_force(), Some(vec!["a".into(), "c".into()]));
        // The same bad contents as before the good file: said again.
        bench.write("model_config_list {");
        assert_eq!(bench.polls(2).len(), 1);
    }

    /// Issue: a base path that did not exist was accepted at start but refused
    /// whole at every later edit of the file. It is accepted with a warning, as at
    /// start, and the rest of the edit applies.
    #[test]
    fn a_missing_base_path_is_accepted_on_reload_as_at_start() {
        let mut bench = Bench::new("models.config");
        bench.write(&text_list(&["a", "ghost"]));
        let logged = bench.polls(3);
        assert_eq!(lines_with(&logged, "applying it").len(), 1, "{logged:?}");
        assert_eq!(bench.in_force(), Some(vec!["a".into(), "ghost".into()]));
        bench.write(&text_list(&["a", "c", "ghost"]));
        bench.polls(2);
        assert_eq!(
            bench.in_force(),
            Some(vec!["a".into(), "c".into(), "ghost".into()])
        );
        // The gRPC reload keeps refusing one: its caller gets the answer.
        let grpc = ModelConfigList::load(&bench.file).unwrap();
        let err = bench
            .sources
            .apply_config_list(grpc, &crate::sources::CancellationToken::new())
            .unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    /// Issue: after a gRPC reload changed the list, the file (unchanged) was not
    /// applied again. The file's list is compared with the list in force, whoever
    /// set it; nothing is applied or logged while they agree.
    #[test]
    fn the_file_wins_over_a_grpc_reload_at_its_next_read() {
        let mut bench = Bench::new("models.config");
        bench.write(&text_list(&["a", "b"]));
        bench.polls(1);
        assert!(bench.polls(3).is_empty());

        let grpc = ModelConfigList::parse_text_format(&text_list(&["a"]).replace(
            "\"a\" }",
            &format!("\"{}\" }}", bench.root.join("a").display()),
        ))
        .unwrap();
        bench
            .sources
            .apply_config_list(grpc, &crate::sources::CancellationToken::new())
            .unwrap();
        assert_eq!(bench.in_force(), Some(vec!["a".into()]));

        let logged = bench.polls(3);
        assert_eq!(lines_with(&logged, "applying it").len(), 1, "{logged:?}");
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert_eq!(bench.in_force(), Some(vec!["a".into(), "b".into()]));
    }
}
