use super::*;

#[test]
fn layers_apply_in_order() {
    let file: ServeArgs = toml::from_str(
        "rest_addr = \"127.0.0.1:9000\"\nrequest_timeout_secs = 5\ninference_threads = 3",
    )
    .unwrap();
    let flags = ServeArgs {
        inference_threads: Some(7),
        ..ServeArgs::default()
    };
    let s = file.overridden_by(flags).into_settings().unwrap();
    assert_eq!(s.rest_addr, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(s.request_timeout, Duration::from_secs(5));
    assert_eq!(s.inference_threads, 7, "flag overrides file");
    assert_eq!(s.grpc_addr.port(), 8500, "default kept");
}

/// A thread count far above any machine's cores is refused, not started.
#[test]
fn thread_counts_are_bounded() {
    type Setter = fn(&mut ServeArgs, usize);
    let max = super::super::MAX_THREADS;
    let with = |f: Setter, n: usize| {
        let mut a = ServeArgs::default();
        f(&mut a, n);
        a.into_settings()
    };
    let setters: [(&str, Setter); 4] = [
        ("inference_threads", |a, n| a.inference_threads = Some(n)),
        ("onnx_intra_threads", |a, n| a.onnx_intra_threads = Some(n)),
        ("onnx_sessions", |a, n| a.onnx_sessions = Some(n)),
        ("job_workers", |a, n| a.job_workers = Some(n)),
    ];
    for (name, set) in setters {
        assert!(with(set, max).is_ok(), "{name}");
        let e = with(set, max + 1).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("1024"), "{name}: {e}");
        assert!(with(set, 100_000).is_err(), "{name}");
    }
    let both = ServeArgs {
        onnx_intra_threads: Some(64),
        onnx_sessions: Some(32),
        ..ServeArgs::default()
    };
    let e = both.into_settings().unwrap_err().to_string();
    assert!(e.contains("2048 threads per model version"), "{e}");
}

#[test]
fn invalid_values_are_refused() {
    let zero = ServeArgs {
        inference_threads: Some(0),
        ..ServeArgs::default()
    };
    assert!(zero
        .into_settings()
        .unwrap_err()
        .to_string()
        .contains("inference_threads"));
    let neg = ServeArgs {
        request_timeout_secs: Some(-1.0),
        ..ServeArgs::default()
    };
    assert!(neg.into_settings().is_err());
    assert!(toml::from_str::<ServeArgs>("no_such_key = 1").is_err());
    for secs in [0, 604_801] {
        let grace = ServeArgs {
            upload_job_grace_secs: Some(secs),
            ..ServeArgs::default()
        };
        assert!(grace
            .into_settings()
            .unwrap_err()
            .to_string()
            .contains("upload_job_grace_secs"));
    }
}

/// The budget of body bytes held at once is 1 GiB by default, never less than
/// the largest body one request may send, and a smaller one is refused.
#[test]
fn the_inflight_body_budget_fits_the_largest_body() {
    let d = ServeArgs::default().into_settings().unwrap();
    assert_eq!(d.max_inflight_body_bytes, 1 << 30);
    let big = ServeArgs {
        grpc_max_receive_bytes: Some(2 << 30),
        ..ServeArgs::default()
    };
    assert_eq!(
        big.into_settings().unwrap().max_inflight_body_bytes,
        2 << 30
    );
    let set = ServeArgs {
        max_request_bytes: Some(1000),
        grpc_max_receive_bytes: Some(2000),
        max_inflight_body_bytes: Some(2000),
        ..ServeArgs::default()
    };
    assert_eq!(set.into_settings().unwrap().max_inflight_body_bytes, 2000);
    let small = ServeArgs {
        max_inflight_body_bytes: Some(1000),
        ..ServeArgs::default()
    };
    let e = small.into_settings().unwrap_err().to_string();
    assert!(e.contains("max_inflight_body_bytes"), "{e}");
}

/// A config file that does not parse is told by line and column, never by its
/// text: an unquoted database URL, a misspelled key or a value of the wrong
/// type would otherwise put a password in the log.
#[test]
fn a_config_file_that_does_not_parse_is_told_without_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferroserve.toml");
    for (text, says) in [
        (
            "model_repository = \"repo\"\ndatabase_url = postgres://u:s3cretPW@db/f\n",
            "line 2, column 16",
        ),
        (
            "database_urll = \"postgres://u:s3cretPW@db/f\"\n",
            "line 1, column 1: unknown key, expected one of",
        ),
        (
            "redis_url = [\"redis://:s3cretPW@r\"]\n",
            "invalid type: sequence",
        ),
        (
            "rest_addr = \"0.0.0.0:1\"\nrest_addr = \"s3cretPW\"\n",
            "duplicate key `rest_addr`",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let e = ServeArgs::from_toml_file(&path).unwrap_err().to_string();
        assert!(!e.contains("s3cretPW"), "{text}: {e}");
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[test]
fn upload_job_grace() {
    let d = ServeArgs::default().into_settings().unwrap();
    assert_eq!(d.upload_job_grace, Duration::from_secs(600));
    let file: ServeArgs = toml::from_str("upload_job_grace_secs = 30").unwrap();
    assert_eq!(
        file.into_settings().unwrap().upload_job_grace,
        Duration::from_secs(30)
    );
}

#[test]
fn access_settings() {
    let d = ServeArgs::default().into_settings().unwrap();
    assert_eq!(d.auth_tokens, None);
    assert!(!d.allow_unauthenticated_management && !d.metrics_require_token);
    assert_eq!(d.model_roots(), vec![PathBuf::from("models")]);
    let file: ServeArgs = toml::from_str(
        "auth_tokens = \"t.toml\"\nmetrics_require_token = true\n\
             allowed_model_roots = [\"/srv/a\", \"/srv/b\"]\nmodel_repository = \"/r\"",
    )
    .unwrap();
    let s = file.into_settings().unwrap();
    assert!(s.metrics_require_token);
    // Said to be off, it does not conflict with tokens.
    let file: ServeArgs =
        toml::from_str("auth_tokens = \"t.toml\"\nallow_unauthenticated_management = false")
            .unwrap();
    assert!(
        !file
            .into_settings()
            .unwrap()
            .allow_unauthenticated_management
    );
    assert_eq!(
        s.model_roots(),
        ["/r", "/srv/a", "/srv/b"].map(PathBuf::from).to_vec(),
        "the repository is always a root"
    );
}

#[test]
fn watcher_and_upload_settings() {
    let d = ServeArgs::default().into_settings().unwrap();
    assert_eq!(d.file_system_poll_wait, Duration::from_secs(1));
    assert_eq!(d.model_config_file_poll_wait, Duration::ZERO);
    assert_eq!(d.model_config_file, None);
    assert_eq!(d.max_request_rows, 65_536);
    assert_eq!(d.max_response_bytes, 64 << 20);
    assert_eq!(d.grpc_max_concurrent_streams, 256);
    assert_eq!(d.grpc_send_timeout, Duration::from_secs(30));
    assert_eq!(d.management_timeout, Duration::from_secs(60));
    assert_eq!(d.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(d.worker_start_timeout, Duration::from_secs(120));
    assert_eq!(d.max_served_versions_per_model, 100);
    assert!(d.max_concurrent_loads >= 1);
    let file: ServeArgs = toml::from_str(
        "management_timeout_secs = 2.5\nshutdown_timeout_secs = 1\n\
             max_concurrent_loads = 3\nmax_served_versions_per_model = 7\n\
             worker_start_timeout_secs = 600",
    )
    .unwrap();
    let s = file.into_settings().unwrap();
    assert_eq!(s.management_timeout, Duration::from_millis(2500));
    assert_eq!(s.shutdown_timeout, Duration::from_secs(1));
    assert_eq!(s.worker_start_timeout, Duration::from_secs(600));
    assert_eq!(
        (s.max_concurrent_loads, s.max_served_versions_per_model),
        (3, 7)
    );
    let file: ServeArgs = toml::from_str(
        "file_system_poll_wait_seconds = 0\nmodel_config_file = \"m.config\"\n\
             model_config_file_poll_wait_seconds = 2.5\nmax_upload_bytes = 10",
    )
    .unwrap();
    let s = file.into_settings().unwrap();
    assert_eq!(
        s.file_system_poll_wait,
        Duration::ZERO,
        "0 disables polling"
    );
    assert_eq!(s.model_config_file_poll_wait, Duration::from_millis(2500));
    assert_eq!(s.model_config_file.as_deref(), Some(Path::new("m.config")));
    assert_eq!(s.max_upload_bytes, 10);
    assert_eq!(
        s.model_roots(),
        vec![PathBuf::from("models"), PathBuf::from(".")],
        "repository and the config file's directory by default"
    );
    for bad in [
        "file_system_poll_wait_seconds = -1",
        "model_config_file_poll_wait_seconds = nan",
        "max_upload_bytes = 0",
        "metrics_require_token = true",
        "auth_tokens = \"t.toml\"\nallow_unauthenticated_management = true",
        "max_request_rows = 0",
        "max_response_bytes = 0",
        "grpc_max_concurrent_streams = 0",
        "grpc_send_timeout_secs = 0",
        "management_timeout_secs = 0",
        "shutdown_timeout_secs = -1",
        "worker_start_timeout_secs = 0",
        "max_concurrent_loads = 0",
        "max_served_versions_per_model = 0",
    ] {
        let args: ServeArgs = toml::from_str(bad).unwrap();
        assert!(args.into_settings().is_err(), "{bad}");
    }
}

#[test]
fn connection_settings() {
    let d = ServeArgs::default().into_settings().unwrap();
    assert_eq!(
        d.max_connections, None,
        "derived from the fd limit at start"
    );
    assert_eq!(d.header_read_timeout, Duration::from_secs(10));
    assert_eq!(d.keep_alive_timeout, Duration::from_secs(60));
    assert_eq!(d.body_read_timeout, Duration::from_secs(30));
    assert_eq!(d.send_timeout, Duration::from_secs(30));
    assert_eq!(d.max_header_bytes, 64 << 10);
    assert_eq!(d.rest_max_concurrent_streams, 256);
    assert_eq!(d.http2_keep_alive_interval, Some(Duration::from_secs(60)));
    assert_eq!(d.http2_keep_alive_timeout, Duration::from_secs(20));
    assert_eq!(d.http2_max_pending_accept_reset_streams, 20);
    assert_eq!(d.grpc_idle_timeout, Duration::from_secs(300));
    let file: ServeArgs = toml::from_str(
        "max_connections = 100\nheader_read_timeout_secs = 1.5\n\
             keep_alive_timeout_secs = 5\nbody_read_timeout_secs = 2\nsend_timeout_secs = 3\n\
             max_header_bytes = 8192\nrest_max_concurrent_streams = 8\n\
             http2_keep_alive_interval_secs = 0\nhttp2_keep_alive_timeout_secs = 4\n\
             http2_max_pending_accept_reset_streams = 7\ngrpc_idle_timeout_secs = 9",
    )
    .unwrap();
    let flags = ServeArgs {
        header_read_timeout_secs: Some(2.0),
        ..ServeArgs::default()
    };
    let s = file.overridden_by(flags).into_settings().unwrap();
    assert_eq!(s.max_connections, Some(100));
    assert_eq!(s.header_read_timeout, Duration::from_secs(2), "flag wins");
    assert_eq!(s.keep_alive_timeout, Duration::from_secs(5));
    assert_eq!(s.body_read_timeout, Duration::from_secs(2));
    assert_eq!(s.send_timeout, Duration::from_secs(3));
    assert_eq!(s.max_header_bytes, 8192);
    assert_eq!(s.rest_max_concurrent_streams, 8);
    assert_eq!(s.http2_keep_alive_interval, None, "0 sends no pings");
    assert_eq!(s.http2_keep_alive_timeout, Duration::from_secs(4));
    assert_eq!(s.http2_max_pending_accept_reset_streams, 7);
    assert_eq!(s.grpc_idle_timeout, Duration::from_secs(9));
    for bad in [
        "max_connections = 0",
        "header_read_timeout_secs = 0",
        "keep_alive_timeout_secs = -1",
        "body_read_timeout_secs = nan",
        "send_timeout_secs = 100000",
        "max_header_bytes = 1000",
        "rest_max_concurrent_streams = 0",
        "http2_keep_alive_interval_secs = -5",
        "http2_keep_alive_timeout_secs = 0",
        "grpc_idle_timeout_secs = 0",
    ] {
        let args: ServeArgs = toml::from_str(bad).unwrap();
        let error = args.into_settings().unwrap_err().to_string();
        let key = bad.split(' ').next().unwrap();
        assert!(error.contains(key), "{bad}: {error}");
    }
}

#[test]
fn tls_files_come_as_a_pair() {
    let d = ServeArgs::default().into_settings().unwrap();
    assert_eq!(d.tls_files(), None, "plain TCP by default");
    let file: ServeArgs =
        toml::from_str("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_client_ca = \"ca.pem\"")
            .unwrap();
    let files = file.into_settings().unwrap().tls_files().unwrap();
    assert_eq!(files.cert, Path::new("c.pem"));
    assert_eq!(files.key, Path::new("k.pem"));
    assert_eq!(files.client_ca.as_deref(), Some(Path::new("ca.pem")));
    for bad in [
        "tls_cert = \"c.pem\"",
        "tls_key = \"k.pem\"",
        "tls_client_ca = \"ca.pem\"",
        "tls_cert = \"c.pem\"\ntls_client_ca = \"ca.pem\"",
        "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nworker_bind = \"0.0.0.0\"",
    ] {
        let args: ServeArgs = toml::from_str(bad).unwrap();
        let error = args.into_settings().unwrap_err().to_string();
        assert!(
            error.contains("tls_") || error.contains("worker_bind"),
            "{bad}: {error}"
        );
    }
    let local: ServeArgs =
        toml::from_str("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nworker_bind = \"::1\"").unwrap();
    assert!(local.into_settings().is_ok());
}

#[test]
fn public_url_is_checked_and_derived() {
    let url = |u: &str| {
        ServeArgs {
            public_url: Some(u.into()),
            ..ServeArgs::default()
        }
        .into_settings()
        .map(|s| s.public_url.unwrap())
    };
    assert_eq!(
        url("http://models.example:8501/").unwrap(),
        "http://models.example:8501"
    );
    assert_eq!(
        url("https://gw.example/ml").unwrap(),
        "https://gw.example/ml"
    );
    assert_eq!(url("http://[::1]:8501").unwrap(), "http://[::1]:8501");
    for bad in [
        "models.example:8501",
        "ftp://x",
        "http://",
        "http://a b",
        "http://x/?q=1",
        "http://u@x",
    ] {
        assert!(url(bad).is_err(), "{bad}");
    }
    assert_eq!(
        ServeArgs::default().into_settings().unwrap().public_url,
        None
    );
    assert_eq!(
        default_public_url("0.0.0.0:8501".parse().unwrap(), false),
        "http://127.0.0.1:8501"
    );
    assert_eq!(
        default_public_url("[::]:80".parse().unwrap(), false),
        "http://[::1]:80"
    );
    assert_eq!(
        default_public_url("10.1.2.3:9000".parse().unwrap(), false),
        "http://10.1.2.3:9000"
    );
    // A server that serves TLS is reached over HTTPS.
    assert_eq!(
        default_public_url("0.0.0.0:8443".parse().unwrap(), true),
        "https://127.0.0.1:8443"
    );
}

#[test]
fn cache_settings() {
    let d = ServeArgs::default().into_settings().unwrap();
    assert_eq!(d.cache_max_bytes, 256 << 20);
    assert_eq!(d.redis_url, None, "no Redis unless asked");
    assert_eq!(d.redis_timeout, Duration::from_millis(5));
    let file: ServeArgs = toml::from_str(
            "cache_max_bytes = 0\nredis_url = \"redis://:secret@cache.example:6380/2\"\nredis_timeout_ms = 20",
        )
        .unwrap();
    let s = file.into_settings().unwrap();
    assert_eq!(s.cache_max_bytes, 0, "0 turns the in-process tier off");
    assert_eq!(s.redis_timeout, Duration::from_millis(20));
    for bad in [
        "redis_timeout_ms = 0",
        "redis_timeout_ms = 60000",
        "redis_url = \"http://cache.example\"",
        "redis_url = \"not a url\"",
    ] {
        let args: ServeArgs = toml::from_str(bad).unwrap();
        let err = args.into_settings().unwrap_err().to_string();
        assert!(err.contains("redis"), "{bad}: {err}");
    }
    let args: ServeArgs = toml::from_str("redis_url = \"ftp://:hunter2@cache.example\"").unwrap();
    let err = args.into_settings().unwrap_err().to_string();
    assert!(
        !err.contains("hunter2"),
        "the password is never echoed: {err}"
    );
}
