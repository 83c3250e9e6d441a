//! What a model serves when its newest versions are broken or its `config.toml`
//! does not fit: the fallback of a `latest` policy to the newest older version that
//! loads (at start and while running, giving way to a newer version that loads),
//! the config in force while `config.toml` is invalid, a `config.toml` caught
//! mid-write, and settings that name what the model does not have, shown in status.
//!
//! The manager and the repository sources are driven directly, as the server's
//! start-up (`initial_load`) and watcher (`poll`, twice for a change to settle) do.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{install_model, onnxruntime_path, root_path};
use ferroserve::backends::BackendOptions;
use ferroserve::manager::{Manager, VersionRequest, VersionState};
use ferroserve::sources::Sources;

fn lr() -> std::path::PathBuf {
    root_path("examples/models/iris_lr/1/model.onnx")
}

/// A server's model side over `repo`, loaded as at start.
fn start(repo: &Path) -> (Arc<Manager>, Sources) {
    let manager = Arc::new(Manager::new(BackendOptions {
        onnxruntime_path: onnxruntime_path(),
        onnx_intra_threads: 1,
        onnx_sessions: 1,
        tensorflow_path: None,
    }));
    let sources = Sources::new(manager.clone(), repo.to_path_buf());
    sources.initial_load();
    (manager, sources)
}

/// Two watcher polls: a changed version directory counts once unchanged across two.
fn settle(sources: &Sources) {
    sources.poll();
    sources.poll();
}

/// Adds a version whose model file is garbage, in one rename.
fn add_broken_version(repo: &Path, model: &str, version: u64) {
    let staging = repo.join(model).join(".tmp-broken");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), b"garbage\n").unwrap();
    std::fs::rename(&staging, repo.join(model).join(version.to_string())).unwrap();
}

/// Adds a good model whose `warmup.json` fails (an input the model does not have).
fn add_version_failing_warmup(repo: &Path, model: &str, version: u64) {
    let dir = install_model(repo, model, version, &lr());
    std::fs::write(
        dir.parent().unwrap().join("warmup.json"),
        br#"[{"nope": [[1.0, 2.0, 3.0, 4.0]]}]"#,
    )
    .unwrap();
}

fn served(manager: &Manager, model: &str) -> Vec<u64> {
    manager
        .serving()
        .models
        .get(model)
        .map(|m| m.versions.keys().copied().collect())
        .unwrap_or_default()
}

fn state(manager: &Manager, model: &str, version: u64) -> Option<VersionState> {
    manager
        .model_record(model)
        .and_then(|r| r.versions.get(&version).map(|v| v.state))
}

/// The probe's case: a good version 1, then broken ones added (a file that is no
/// model, a warm-up that fails). Before a restart version 1 keeps serving; after
/// one, it serves again (it served nothing: the policy asked only for the newest),
/// each broken version tried newest first and left in ERROR. A `specific` policy
/// naming the broken version does not fall back.
#[test]
fn after_a_restart_a_broken_newest_version_falls_back_to_the_newest_that_loads() {
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path();
    install_model(repo, "q", 1, &lr());
    install_model(repo, "pinned", 1, &lr());
    std::fs::write(
        repo.join("pinned/config.toml"),
        "version_policy = { specific = [2] }\n",
    )
    .unwrap();
    add_broken_version(repo, "pinned", 2);
    {
        let (manager, sources) = start(repo);
        assert_eq!(served(&manager, "q"), [1]);
        add_broken_version(repo, "q", 2);
        add_version_failing_warmup(repo, "q", 3);
        settle(&sources);
        assert_eq!(state(&manager, "q", 3), Some(VersionState::Error));
        assert_eq!(
            served(&manager, "q"),
            [1],
            "the previous version keeps serving"
        );
    }

    // The restart, on the same repository.
    let (manager, _sources) = start(repo);
    assert_eq!(
        served(&manager, "q"),
        [1],
        "{:?}",
        manager.model_record("q")
    );
    let record = manager.model_record("q").unwrap();
    for v in [2, 3] {
        assert_eq!(record.versions[&v].state, VersionState::Error, "{record:?}");
    }
    assert!(
        record.versions[&3]
            .error
            .as_deref()
            .unwrap()
            .contains("warmup.json"),
        "{record:?}"
    );
    assert_eq!(record.versions[&1].state, VersionState::Available);
    let handle = manager.resolve("q", &VersionRequest::Latest).unwrap();
    assert_eq!(handle.version, 1);

    // The operator named version 2: no other version serves in its place.
    assert_eq!(served(&manager, "pinned"), Vec::<u64>::new());
    assert_eq!(state(&manager, "pinned", 2), Some(VersionState::Error));
    assert_eq!(state(&manager, "pinned", 1), None, "never loaded");
}

/// The version served in place of a broken newest one stays while nothing the
/// policy asks for loads (a poll with nothing new changes nothing), and gives way to
/// a newer version that loads: that one serves first, then the fallback goes.
#[test]
fn a_fallback_version_gives_way_to_a_newer_version_that_loads() {
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path();
    install_model(repo, "q", 1, &lr());
    add_broken_version(repo, "q", 2);
    let (manager, sources) = start(repo);
    assert_eq!(served(&manager, "q"), [1]);
    let fallback = manager.resolve("q", &VersionRequest::Latest).unwrap();

    settle(&sources);
    assert_eq!(served(&manager, "q"), [1], "the fallback does not flap");
    assert_eq!(state(&manager, "q", 2), Some(VersionState::Error));

    install_model(repo, "q", 3, &lr());
    settle(&sources);
    assert_eq!(served(&manager, "q"), [3]);
    assert_eq!(
        manager
            .resolve("q", &VersionRequest::Latest)
            .unwrap()
            .version,
        3
    );
    // Unpublished, and freed when the last request holding it is done.
    assert_eq!(state(&manager, "q", 1), Some(VersionState::Unloading));
    drop(fallback);
    assert_eq!(state(&manager, "q", 1), Some(VersionState::End));

    // A broken version newer still leaves the one that serves as it is.
    add_broken_version(repo, "q", 4);
    settle(&sources);
    assert_eq!(served(&manager, "q"), [3]);
}

/// While running: a model that serves nothing (its only version is broken) serves
/// an older version added later; a chain of broken versions is tried newest first,
/// one at a time, and a version in ERROR is tried again only once its files change.
#[test]
fn a_model_serving_nothing_falls_back_while_running_and_retries_only_fixed_versions() {
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path();
    add_broken_version(repo, "q", 5);
    let (manager, sources) = start(repo);
    assert_eq!(served(&manager, "q"), Vec::<u64>::new());

    add_broken_version(repo, "q", 3);
    add_broken_version(repo, "q", 4);
    settle(&sources);
    assert_eq!(served(&manager, "q"), Vec::<u64>::new());
    for v in [3, 4, 5] {
        assert_eq!(state(&manager, "q", v), Some(VersionState::Error), "{v}");
    }

    // Version 3 fixed in place (a good model moved over its file): loaded as the
    // fallback, though 4 is newer, because 4 is still the broken files it was.
    let tmp = repo.join("q/3/model.tmp");
    std::fs::copy(lr(), &tmp).unwrap();
    std::fs::rename(&tmp, repo.join("q/3/model.onnx")).unwrap();
    settle(&sources);
    assert_eq!(
        served(&manager, "q"),
        [3],
        "{:?}",
        manager.model_record("q")
    );
    assert_eq!(state(&manager, "q", 4), Some(VersionState::Error));
}

/// While `config.toml` is invalid the config in force before stays, and a version
/// added meanwhile is served by its policy (it was not even listed); status keeps
/// the error. A model whose config is invalid at start serves nothing, and says so.
#[test]
fn versions_added_while_the_config_is_invalid_follow_the_config_in_force() {
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path();
    install_model(repo, "m", 1, &lr());
    std::fs::write(
        repo.join("m/config.toml"),
        "version_policy = { latest = 2 }\n",
    )
    .unwrap();
    install_model(repo, "bad", 1, &lr());
    std::fs::write(repo.join("bad/config.toml"), "version_policy = 7\n").unwrap();
    let (manager, sources) = start(repo);
    assert_eq!(served(&manager, "m"), [1]);

    std::fs::write(repo.join("m/config.toml"), "version_policy = 7\n").unwrap();
    install_model(repo, "m", 2, &lr());
    settle(&sources);
    let record = manager.model_record("m").unwrap();
    assert_eq!(served(&manager, "m"), [1, 2], "{record:?}");
    let error = record.config_error.unwrap();
    assert!(
        error.contains("config.toml is not a valid model config")
            && error.contains("the config in force before stays"),
        "{error}"
    );

    std::fs::write(repo.join("m/config.toml"), "").unwrap();
    settle(&sources);
    assert_eq!(served(&manager, "m"), [2]);
    assert_eq!(manager.model_record("m").unwrap().config_error, None);

    // No config in force at start: nothing serves, and status says why.
    assert_eq!(served(&manager, "bad"), Vec::<u64>::new());
    let error = manager.model_record("bad").unwrap().config_error.unwrap();
    assert!(
        error.contains("config.toml") && error.contains("serves nothing until it is fixed"),
        "{error}"
    );
}

/// `input_name`, `prediction_output` and `probabilities_output` naming what the
/// model does not have, and a format's table on a model of another format, are the
/// model's config error in status once a version serves (requests that need them
/// fail); fixing the file clears it.
#[test]
fn config_settings_that_do_not_fit_the_served_model_are_a_config_error() {
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path();
    for (model, config, words) in [
        (
            "n1",
            "input_name = \"nope\"\n",
            "input_name names input \"nope\"",
        ),
        (
            "n2",
            "prediction_output = \"zzz\"\n",
            "prediction_output names output \"zzz\"",
        ),
        (
            "n3",
            "probabilities_output = \"zzz\"\n",
            "probabilities_output names output \"zzz\"",
        ),
        (
            "n4",
            "[fasttext]\nk = -1\n",
            "[fasttext] is read only for fasttext models",
        ),
    ] {
        install_model(repo, model, 1, &lr());
        std::fs::write(repo.join(model).join("config.toml"), config).unwrap();
        let (manager, sources) = start(repo);
        assert_eq!(served(&manager, model), [1], "{model}");
        let error = manager.model_record(model).unwrap().config_error;
        let error = error.unwrap_or_else(|| panic!("{model}: no config error"));
        assert!(error.contains(words), "{model}: {error}");
        if model != "n4" {
            assert!(error.contains("version 1"), "{model}: {error}");
        }

        std::fs::write(repo.join(model).join("config.toml"), "").unwrap();
        settle(&sources);
        assert_eq!(manager.model_record(model).unwrap().config_error, None);
    }
}

/// A changed `config.toml` takes effect once it reads the same on two polls in a
/// row, as a version directory does: one caught mid-write (emptied, then written
/// again) is never applied, so the versions and labels of the config in force stay.
/// The first scan at start applies the file at once.
#[test]
fn a_config_toml_caught_mid_write_is_not_applied() {
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path();
    install_model(repo, "m", 1, &lr());
    install_model(repo, "m", 2, &lr());
    let config = repo.join("m/config.toml");
    let full = "version_policy = \"all\"\n[labels]\nstable = 1\n";
    std::fs::write(&config, full).unwrap();
    let (manager, sources) = start(repo);
    assert_eq!(served(&manager, "m"), [1, 2]);
    let stable = || {
        manager
            .resolve("m", &VersionRequest::Label("stable".into()))
            .map(|h| h.version)
    };
    assert_eq!(stable(), Ok(1));

    // `: > config.toml`, seen by one poll, then the file written again.
    std::fs::write(&config, "").unwrap();
    sources.poll();
    assert_eq!(served(&manager, "m"), [1, 2], "applied mid-write");
    assert_eq!(stable(), Ok(1));
    std::fs::write(&config, full).unwrap();
    settle(&sources);
    assert_eq!(served(&manager, "m"), [1, 2]);
    assert_eq!(stable(), Ok(1));

    // An edit that stays takes effect on the poll after the one that saw it.
    std::fs::write(&config, "").unwrap();
    sources.poll();
    assert_eq!(served(&manager, "m"), [1, 2]);
    sources.poll();
    assert_eq!(served(&manager, "m"), [2]);
    assert!(stable().is_err());
}
