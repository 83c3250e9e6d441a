use super::*;

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn strings(args: Vec<OsString>) -> Vec<String> {
    args.into_iter().map(|a| a.into_string().unwrap()).collect()
}

#[test]
fn the_tfs_name_serves_and_single_dash_flags_read() {
    let out = normalize_args(os(&[
        "/usr/bin/tensorflow_model_server",
        "-model_name=m",
        "--port=9000",
        "-rest_api_port=8080",
        "--flush_filesystem_caches=true",
        "--max_num_load_retries",
        "5",
    ]))
    .unwrap();
    assert_eq!(
        strings(out),
        [
            "/usr/bin/tensorflow_model_server",
            "serve",
            "--model_name=m",
            "--port=9000",
            "--rest_api_port=8080"
        ]
    );
    // Other commands of ferroserve are left alone.
    let out = normalize_args(os(&["ferroserve", "jobs", "list", "-x"])).unwrap();
    assert_eq!(strings(out), ["ferroserve", "jobs", "list", "-x"]);
}

#[test]
fn unsupported_flags_are_refused_unless_they_ask_for_nothing() {
    let e = normalize_args(os(&["ferroserve", "serve", "--ssl_config_file=/x.conf"])).unwrap_err();
    assert!(e.0.contains("--tls-cert"), "{e}");
    let e =
        normalize_args(os(&["tensorflow_model_server", "--enable_profiler=false"])).unwrap_err();
    assert!(e.0.contains("profiler"), "{e}");
    let e =
        normalize_args(os(&["tensorflow_model_server", "--grpc_max_threads=many"])).unwrap_err();
    assert!(e.0.contains("whole number"), "{e}");
    let e = normalize_args(os(&[
        "tensorflow_model_server",
        "--enable_grpc_healthcheck_service=maybe",
    ]))
    .unwrap_err();
    assert!(e.0.contains("true or false"), "{e}");
}

/// Every flag of TF Serving's main.cc is accepted at TF Serving's default,
/// those it computes from the CPU count (4 × CPUs, CPUs) included.
#[test]
fn every_tfs_flag_is_accepted_at_its_default() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let defaults = [
        "--enable_grpc_healthcheck_service=false".to_string(),
        "--enable_grpc_healthcheck_service=true".to_string(),
        "--xla_gpu_compilation_enabled=false".to_string(),
        "--xla_cpu_compilation_enabled=false".to_string(),
        "--enable_serialization_as_tensor_content=false".to_string(),
        format!("--rest_api_num_threads={}", 4 * cpus),
        format!("--grpc_max_threads={}", 4 * cpus),
        format!("--num_tflite_pools={cpus}"),
        "--per_process_gpu_memory_fraction=0.0".to_string(),
    ];
    for flag in defaults {
        let out = normalize_args(os(&["tensorflow_model_server", &flag]))
            .unwrap_or_else(|e| panic!("{flag}: {e}"));
        assert_eq!(strings(out), ["tensorflow_model_server", "serve"], "{flag}");
    }
    // A default that is not TF Serving's is still refused.
    assert!(normalize_args(os(&[
        "tensorflow_model_server",
        "--enable_serialization_as_tensor_content=true"
    ]))
    .is_err());
}

/// As in TF Serving, the last value of a flag given twice wins: a later
/// default undoes an earlier value, and a later value an earlier default.
#[test]
fn the_last_value_of_a_repeated_flag_wins() {
    let tfs = |args: &[&str]| normalize_args(os(&[&["tensorflow_model_server"], args].concat()));
    assert!(tfs(&["--enable_profiler=false", "--enable_profiler=true"]).is_ok());
    let e = tfs(&["--enable_profiler=true", "-enable_profiler=false"]).unwrap_err();
    assert!(e.0.contains("--enable_profiler=false"), "{e}");
    // clap reads the flags TF Serving and ferroserve share the same way.
    let command = usage_as_invoked(
        clap::Command::new("ferroserve")
            .subcommand(TfsArgs::augment_args(clap::Command::new("serve"))),
    );
    let matches = command
        .try_get_matches_from(
            tfs(&[
                "--rest_api_port=1",
                "--model_name=a",
                "--port=3",
                "--rest_api_port=2",
                "-model_name=b",
                "--enable_batching",
                "--enable_batching=false",
                "--version",
                "--version",
            ])
            .unwrap(),
        )
        .unwrap();
    let (_, serve) = matches.subcommand().unwrap();
    let t = <TfsArgs as clap::FromArgMatches>::from_arg_matches(serve).unwrap();
    assert_eq!(t.rest_api_port, Some(2));
    assert_eq!(t.port, Some(3));
    assert_eq!(t.model_name.as_deref(), Some("b"));
    assert_eq!(t.enable_batching, Some(false));
    assert!(t.version);
    // Booleans as TF Serving's flag parser takes them (1, 0, True, f, ...): only
    // true and false were.
    for (given, want) in [("1", true), ("True", true), ("0", false), ("FALSE", false)] {
        let command = clap::Command::new("ferroserve")
            .subcommand(TfsArgs::augment_args(clap::Command::new("serve")));
        let flag = format!("--enable_batching={given}");
        let matches = command
            .try_get_matches_from(tfs(&[&flag, "--enable_model_warmup=0"]).unwrap())
            .unwrap();
        let (_, serve) = matches.subcommand().unwrap();
        let t = <TfsArgs as clap::FromArgMatches>::from_arg_matches(serve).unwrap();
        assert_eq!(t.enable_batching, Some(want), "{given}");
        assert_eq!(t.enable_model_warmup, Some(false));
    }
}

/// Under TF Serving's name, help and usage errors show the program as it was
/// invoked, without the `serve` that name does not take.
#[test]
fn usage_names_the_program_as_invoked() {
    let mut serve = usage_as_invoked(
        clap::Command::new("ferroserve")
            .bin_name(TFS_BINARY)
            .subcommand(TfsArgs::augment_args(clap::Command::new("serve"))),
    );
    let err = serve
        .try_get_matches_from_mut(["tensorflow_model_server", "serve", "--no_such_flag=1"])
        .unwrap_err()
        .render()
        .to_string();
    assert!(
        err.contains("Usage: tensorflow_model_server [OPTIONS]"),
        "{err}"
    );
    let help = serve
        .find_subcommand_mut("serve")
        .unwrap()
        .render_help()
        .to_string();
    assert!(
        help.contains("Usage: tensorflow_model_server [OPTIONS]"),
        "{help}"
    );
    assert!(!help.contains("tensorflow_model_server serve"), "{help}");
}

/// A base path that does not exist (a typo, a volume not yet mounted) stops
/// the start and creates nothing; under TF Serving's name, so does a start
/// that names no model, instead of serving ferroserve's `./models`.
#[test]
fn a_missing_base_path_or_no_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let t = TfsArgs {
        model_name: Some("m".into()),
        model_base_path: Some(missing.clone()),
        ..TfsArgs::default()
    };
    let e = t.finish(&mut Settings::default()).unwrap_err();
    assert!(e.0.contains("Could not find base path"), "{e}");
    assert!(!missing.exists());
    std::fs::write(&missing, b"").unwrap();
    let e = t.finish(&mut Settings::default()).unwrap_err();
    assert!(e.0.contains("not a directory"), "{e}");

    let none = TfsArgs::default().with_container_env(|_| None);
    let e = none.finish(&mut Settings::default()).unwrap_err();
    assert!(e.0.contains("--model_base_path"), "{e}");
    // ferroserve's own ways of naming models still serve under that name.
    let mut own = Settings {
        model_repository: dir.path().into(),
        ..Settings::default()
    };
    none.finish(&mut own).unwrap();
    // `ferroserve serve` keeps its default repository.
    TfsArgs::default().finish(&mut Settings::default()).unwrap();
}

#[test]
fn tfs_booleans_and_unlimited_message_sizes() {
    for (v, want) in [("true", true), ("1", true), ("false", false), ("0", false)] {
        assert_eq!(tfs_bool(v), Ok(want), "{v}");
    }
    for v in ["yes", "on", "no", "off", "y", ""] {
        assert!(tfs_bool(v).is_err(), "{v}");
    }
    let t = TfsArgs {
        grpc_channel_arguments: Some(
            "grpc.max_receive_message_length=-1,grpc.max_send_message_length=-1".into(),
        ),
        ..TfsArgs::default()
    };
    let args = t.fold_into(ServeArgs::default()).unwrap();
    assert_eq!(args.grpc_max_receive_bytes, Some(i32::MAX as usize));
    assert_eq!(args.grpc_max_send_bytes, Some(i32::MAX as usize));
    let t = TfsArgs {
        grpc_channel_arguments: Some("grpc.max_receive_message_length=-2".into()),
        ..TfsArgs::default()
    };
    assert!(t.fold_into(ServeArgs::default()).is_err());
}

/// A channel argument given twice is named as such (not as a clash with
/// --grpc-max-receive-bytes, which nobody gave); a value past the most a gRPC
/// channel argument (an int) can say is refused, as TF Serving's int parse
/// refuses it.
#[test]
fn channel_arguments_given_twice_or_too_large_are_refused() {
    let fold = |list: &str| {
        TfsArgs {
            grpc_channel_arguments: Some(list.into()),
            ..TfsArgs::default()
        }
        .fold_into(ServeArgs::default())
    };
    let e =
        fold("grpc.max_receive_message_length=1,grpc.max_receive_message_length=2").unwrap_err();
    assert!(
        e.0.contains("grpc.max_receive_message_length is given twice"),
        "{e}"
    );
    assert!(!e.0.contains("--grpc-max-receive-bytes"), "{e}");
    for too_large in ["2147483648", "99999999999"] {
        let e = fold(&format!("grpc.max_send_message_length={too_large}")).unwrap_err();
        assert!(e.0.contains("2147483647"), "{e}");
        assert!(e.0.contains(too_large), "{e}");
    }
    let args = fold("grpc.max_receive_message_length=2147483647").unwrap();
    assert_eq!(args.grpc_max_receive_bytes, Some(2_147_483_647));
}

/// --rest_api_timeout_in_ms past a year is refused naming the flag and the
/// value given, not the seconds setting it becomes.
#[test]
fn a_rest_timeout_too_long_names_the_flag() {
    let fold = |ms| {
        TfsArgs {
            rest_api_timeout_in_ms: Some(ms),
            ..TfsArgs::default()
        }
        .fold_into(ServeArgs::default())
    };
    for ms in [0, 31_536_000_001, u64::MAX] {
        let e = fold(ms).unwrap_err();
        assert!(
            e.0.starts_with(&format!("--rest_api_timeout_in_ms={ms}:")),
            "{e}"
        );
        assert!(!e.0.contains("request_timeout_secs"), "{e}");
    }
    let args = fold(31_536_000_000).unwrap();
    assert_eq!(args.request_timeout_secs, Some(31_536_000.0));
}

#[test]
fn container_env_names_the_model() {
    let env = |k: &str| match k {
        "MODEL_NAME" => Some("half_plus_two".to_string()),
        _ => None,
    };
    let t = TfsArgs::default().with_container_env(env);
    assert_eq!(t.model_name.as_deref(), Some("half_plus_two"));
    assert_eq!(
        t.model_base_path,
        Some(PathBuf::from("/models/half_plus_two"))
    );
    // A command-line model wins.
    let t = TfsArgs {
        model_base_path: Some("/x".into()),
        ..TfsArgs::default()
    }
    .with_container_env(env);
    assert_eq!(t.model_name, None);
}

#[test]
fn folded_flags_set_ferroserve_settings_once() {
    let t = TfsArgs {
        port: Some(9000),
        rest_api_port: Some(8080),
        rest_api_timeout_in_ms: Some(60000),
        num_load_threads: Some(0),
        grpc_channel_arguments: Some("grpc.max_receive_message_length=1000".into()),
        ..TfsArgs::default()
    };
    let args = t.fold_into(ServeArgs::default()).unwrap();
    assert_eq!(args.grpc_addr, Some("0.0.0.0:9000".parse().unwrap()));
    assert_eq!(args.rest_addr, Some("0.0.0.0:8080".parse().unwrap()));
    assert_eq!(args.request_timeout_secs, Some(60.0));
    assert_eq!(args.max_concurrent_loads, Some(1));
    assert_eq!(args.grpc_max_receive_bytes, Some(1000));
    let clash = ServeArgs {
        grpc_addr: Some("127.0.0.1:1".parse().unwrap()),
        ..ServeArgs::default()
    };
    assert!(t.fold_into(clash).unwrap_err().0.contains("give one"));
    let zero = TfsArgs {
        rest_api_port: Some(0),
        ..TfsArgs::default()
    };
    assert!(zero.fold_into(ServeArgs::default()).is_err());
}

/// A value a FERROSERVE_* variable gave is overridden by the TF Serving flag of
/// the same setting, not refused as a clash.
#[test]
fn tfs_flags_override_the_environment() {
    let t = TfsArgs {
        port: Some(9000),
        rest_api_timeout_in_ms: Some(60_000),
        from_environment: ["grpc_addr".to_string(), "request_timeout_secs".into()].into(),
        ..TfsArgs::default()
    };
    let from_env = ServeArgs {
        grpc_addr: Some("127.0.0.1:1".parse().unwrap()),
        request_timeout_secs: Some(5.0),
        ..ServeArgs::default()
    };
    let args = t.fold_into(from_env).unwrap();
    assert_eq!(args.grpc_addr, Some("0.0.0.0:9000".parse().unwrap()));
    assert_eq!(args.request_timeout_secs, Some(60.0));
}

/// --model_base_path on the command line wins over a config file the
/// environment names; a config file given as a flag still wins (TF Serving).
#[test]
fn a_base_path_flag_wins_over_the_environments_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = TfsArgs {
        model_base_path: Some(dir.path().to_path_buf()),
        from_environment: ["model_config_file".to_string()].into(),
        ..TfsArgs::default()
    };
    let mut settings = Settings {
        model_config_file: Some("/env/models.config".into()),
        ..Settings::default()
    };
    t.finish(&mut settings).unwrap();
    assert_eq!(settings.model_config_file, None);
    assert!(settings.single_model.is_some());
    let flag = TfsArgs {
        model_base_path: Some(dir.path().to_path_buf()),
        from_command_line: ["model_config_file".to_string()].into(),
        ..TfsArgs::default()
    };
    let mut settings = Settings {
        model_config_file: Some("/flag/models.config".into()),
        ..Settings::default()
    };
    flag.finish(&mut settings).unwrap();
    assert!(settings.model_config_file.is_some());
    assert!(settings.single_model.is_none());
}

/// A thread count far above any machine's cores is refused before any
/// session starts it.
#[test]
fn intra_op_parallelism_is_bounded() {
    let at = |n| TfsArgs {
        tensorflow_intra_op_parallelism: Some(n),
        ..TfsArgs::default()
    };
    let max = crate::settings::MAX_THREADS;
    assert_eq!(
        at(max)
            .fold_into(ServeArgs::default())
            .unwrap()
            .onnx_intra_threads,
        Some(max)
    );
    for n in [max + 1, 100_000] {
        let e = at(n).fold_into(ServeArgs::default()).unwrap_err();
        assert!(e.0.contains("at most 1024"), "{e}");
    }
}

/// TF Serving's session flags reach every SavedModel whose config.toml does
/// not say, as TF Serving's server reads them.
#[test]
fn session_flags_give_savedmodels_their_threads_and_tags() {
    let defaults = |intra, inter, session, tags: Option<&str>| {
        TfsArgs {
            tensorflow_intra_op_parallelism: intra,
            tensorflow_inter_op_parallelism: inter,
            tensorflow_session_parallelism: session,
            saved_model_tags: tags.map(str::to_string),
            ..TfsArgs::default()
        }
        .tensorflow_defaults()
    };
    let threads = |d: TensorflowDefaults| (d.intra_op_threads, d.inter_op_threads);
    assert_eq!(
        defaults(None, None, None, None).unwrap(),
        TensorflowDefaults::default()
    );
    assert_eq!(
        threads(defaults(Some(4), None, None, None).unwrap()),
        (Some(4), None)
    );
    assert_eq!(
        threads(defaults(None, Some(2), Some(8), None).unwrap()),
        (None, Some(2)),
        "either of its own flags wins over the session's"
    );
    assert_eq!(
        threads(defaults(Some(0), Some(0), Some(3), None).unwrap()),
        (Some(3), Some(3))
    );
    let e = defaults(Some(1), Some(1), Some(1), None).unwrap_err();
    assert!(e.0.contains("You cannot configure all"), "{e}");
    let e = defaults(None, Some(1025), None, None).unwrap_err();
    assert!(
        e.0.contains("--tensorflow_inter_op_parallelism=1025: at most 1024"),
        "{e}"
    );
    assert!(defaults(None, None, Some(u32::MAX as usize + 1), None).is_err());
    assert_eq!(
        defaults(None, None, None, Some("serve, gpu")).unwrap().tags,
        Some(vec!["serve".to_string(), "gpu".to_string()])
    );
    let e = defaults(None, None, None, Some(",")).unwrap_err();
    assert!(e.0.contains("at least one tag"), "{e}");
    // Through the command line, into the settings.
    let command = clap::Command::new("ferroserve")
        .subcommand(TfsArgs::augment_args(clap::Command::new("serve")));
    let argv = normalize_args(os(&[
        "tensorflow_model_server",
        "--model_config_file=/m.config",
        "--tensorflow_session_parallelism=2",
        "--saved_model_tags=serve,tpu",
    ]))
    .unwrap();
    let matches = command.try_get_matches_from(argv).unwrap();
    let t = <TfsArgs as clap::FromArgMatches>::from_arg_matches(
        matches.subcommand_matches("serve").unwrap(),
    )
    .unwrap();
    let mut settings = Settings {
        model_config_file: Some("/m.config".into()),
        ..Settings::default()
    };
    t.finish(&mut settings).unwrap();
    assert_eq!(
        settings.model_defaults.tensorflow,
        TensorflowDefaults {
            tags: Some(vec!["serve".into(), "tpu".into()]),
            intra_op_threads: Some(2),
            inter_op_threads: Some(2),
        }
    );
}

#[test]
fn version_flag_reads_as_tf_serving_reads_it() {
    for args in [
        &["ferroserve", "serve", "--version"][..],
        &["ferroserve", "serve", "--version=true"],
        &["ferroserve", "serve", "-version=1"],
        &["/bin/tensorflow_model_server", "--version"],
    ] {
        let out = strings(normalize_args(os(args)).unwrap());
        assert_eq!(out.last().unwrap(), "--tfs-version", "{args:?}");
    }
    let out = strings(normalize_args(os(&["ferroserve", "serve", "--version=false"])).unwrap());
    assert_eq!(out, ["ferroserve", "serve"]);
    assert!(normalize_args(os(&["ferroserve", "serve", "--version=maybe"])).is_err());
}
