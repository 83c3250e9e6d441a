//! Jobs with a store other replicas share or that fails under them (issue 13):
//! replicas keeping each other's jobs, heartbeats through a store outage, claims,
//! submissions, ends and cancels the database cannot take, on throwaway
//! PostgreSQL servers.

use super::*;

/// Several replicas share one store: a restart fails only the jobs whose replica
/// is gone (a dead process in this pid namespace at once, a silent heartbeat once
/// seen silent), never another live replica's: not one in a container beside this
/// one with the same host name, whose pids mean nothing here, nor one on a machine
/// whose clock is two minutes behind. Queued jobs another replica recorded run here.
/// A queued job whose uploaded files are on a replica that is gone is failed once
/// that replica has been silent for the grace; one whose files are here (left by
/// the process before this one) runs here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_keep_each_others_jobs_and_share_the_queue() {
    use ferroserve::store::ReplicaName;
    let env = env();
    write_csv(&env.data.join("small.csv"), &iris_rows(20));
    // The first start creates the database.
    let server = TestServer::start_with(settings(&env)).await;
    server.stop().await;
    let db = format!("sqlite://{}", env.state.join("ferroserve.db").display());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let now = ferroserve::store::now_ms;
    // The server runs in this process: its machine and pid namespace are ours.
    let here = ReplicaName::this_process(&host);
    let name = |pid: u32, pid_ns: Option<u64>, machine: Option<&str>| {
        ReplicaName {
            host: host.clone(),
            pid,
            machine: machine.map(String::from).or(here.machine.clone()),
            pid_ns,
            token: "0badcafe".into(),
        }
        .to_string()
    };
    let beside = here.pid_ns.map(|ns| ns + 1);
    let away = Some("0123456789abcdef");
    const BEHIND: i64 = 120_000;
    // (id, claimer, how far behind its clock is; None: silent, never beats)
    // pid 1 exists here (another live replica in this namespace); u32::MAX - 7
    // does not, which means nothing in another namespace.
    let rows = [
        ("alive-here", name(1, here.pid_ns, None), Some(0)),
        ("dead-here", name(u32::MAX - 7, here.pid_ns, None), Some(0)),
        ("beside-here", name(u32::MAX - 7, beside, None), Some(0)),
        ("alive-elsewhere", name(42, Some(1), away), Some(0)),
        ("behind-elsewhere", name(43, Some(1), away), Some(BEHIND)),
        ("silent-elsewhere", name(44, Some(1), away), None),
    ];
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let spec = score_spec(
        json!({"path": "small.csv"}),
        json!({"path": "never.csv"}),
        8,
    )["spec"]
        .to_string();
    for (id, by, behind) in &rows {
        sqlx::query(
            "INSERT INTO jobs (id, kind, state, spec, progress, messages, created_ms, started_ms, \
             claimed_by, heartbeat_ms, cancel_requested) \
             VALUES (?, 'score', 'running', ?, '{}', '[]', ?, ?, ?, ?, 0)",
        )
        .bind(id)
        .bind(&spec)
        .bind(now())
        .bind(now())
        .bind(by)
        .bind(now() - behind.unwrap_or(BEHIND))
        .execute(&pool)
        .await
        .unwrap();
    }
    // Queued jobs with uploaded files, held by the replica that has them.
    let uploaded = score_spec(
        json!({"upload": "rows", "format": "csv"}),
        json!({"path": "from_upload.csv"}),
        8,
    )["spec"]
        .to_string();
    let left_here = env.state.join("job-uploads").join("upload-left-here");
    std::fs::create_dir_all(&left_here).unwrap();
    write_csv(&left_here.join("rows"), &iris_rows(20));
    let held = [
        ("upload-gone-here", name(u32::MAX - 7, here.pid_ns, None)),
        ("upload-held-elsewhere", name(42, Some(1), away)),
        ("upload-left-here", name(u32::MAX - 7, here.pid_ns, None)),
    ];
    for (id, by) in &held {
        sqlx::query(
            "INSERT INTO jobs (id, kind, state, spec, progress, messages, created_ms, \
             claimed_by, heartbeat_ms, cancel_requested) \
             VALUES (?, 'score', 'queued', ?, '{}', '[]', ?, ?, ?, 0)",
        )
        .bind(id)
        .bind(&uploaded)
        .bind(now())
        .bind(by)
        .bind(now())
        .execute(&pool)
        .await
        .unwrap();
    }
    // The live replicas beat every second, each by its own clock.
    let beating = {
        let pool = pool.clone();
        let rows = rows.clone();
        tokio::spawn(async move {
            loop {
                let held_elsewhere = ("upload-held-elsewhere", String::new(), Some(0));
                for (id, _, behind) in rows.iter().chain([&held_elsewhere]) {
                    if let Some(behind) = behind {
                        // A beat that fails shows as the job's failure below.
                        if let Err(e) = sqlx::query("UPDATE jobs SET heartbeat_ms = ? WHERE id = ?")
                            .bind(now() - behind)
                            .bind(id)
                            .execute(&pool)
                            .await
                        {
                            eprintln!("cannot beat for {id}: {e}");
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    // Another server's job with uploaded files waits 20 s of silence here.
    let server = TestServer::start_with(ferroserve::settings::Settings {
        upload_job_grace: Duration::from_secs(20),
        ..settings(&env)
    })
    .await;
    let states = || {
        let (server, rows) = (&server, &rows);
        async move {
            let mut states = Vec::new();
            for (id, _, _) in rows {
                let (_, job) = server.get(&format!("/v1/jobs/{id}")).await;
                states.push((*id, job["state"].as_str().unwrap().to_string()));
            }
            states
        }
    };
    let expected = |silent: &str| {
        rows.iter()
            .map(|(id, _, _)| {
                let state = match *id {
                    "dead-here" => "failed",
                    "silent-elsewhere" => silent,
                    _ => "running",
                };
                (*id, state.to_string())
            })
            .collect::<Vec<_>>()
    };
    // At start: the dead process's job is failed; the silent one's old time stamp,
    // from another clock, is not believed yet.
    assert_eq!(states().await, expected("running"));
    let (_, job) = server.get("/v1/jobs/dead-here").await;
    assert_eq!(job["error"], "interrupted by restart", "{job}");
    // A dead pid is not enough for a job held for its files: its server may be
    // starting again.
    let (_, job) = server.get("/v1/jobs/upload-gone-here").await;
    assert_eq!(job["state"], "queued", "{job}");
    let job = wait_for(&server, "upload-left-here", Duration::from_secs(30), |j| {
        j["state"] == "succeeded" || j["state"] == "failed"
    })
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(env.data.join("from_upload.csv").is_file());
    assert!(!left_here.exists(), "its files go when it ends");
    // Seen silent for 15 s, it is failed; every live replica keeps its job.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, job) = server.get("/v1/jobs/silent-elsewhere").await;
        if job["state"] != "running" {
            assert_eq!(job["error"], "interrupted by restart", "{job}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the silent job stays running: {job}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(states().await, expected("failed"));
    // Silent past the grace, the held job is failed; the beating one waits on.
    let job = wait_for(&server, "upload-gone-here", Duration::from_secs(60), |j| {
        j["state"] != "queued"
    })
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("uploaded files is gone"),
        "{job}"
    );
    let (_, job) = server.get("/v1/jobs/upload-held-elsewhere").await;
    assert_eq!(job["state"], "queued", "{job}");
    beating.abort();

    // A job another replica queued (its row only) runs here.
    let scored = score_spec(
        json!({"path": "small.csv"}),
        json!({"path": "from_elsewhere.csv"}),
        8,
    )["spec"]
        .to_string();
    sqlx::query(
        "INSERT INTO jobs (id, kind, state, spec, progress, messages, created_ms, cancel_requested) \
         VALUES ('queued-elsewhere', 'score', 'queued', ?, '{}', '[]', ?, 0)",
    )
    .bind(&scored)
    .bind(now())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let job = wait_for(&server, "queued-elsewhere", Duration::from_secs(30), |j| {
        j["state"] == "succeeded" || j["state"] == "failed"
    })
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(env.data.join("from_elsewhere.csv").is_file());
    server.stop().await;
}

/// While the store takes no writes, nobody's heartbeat moves: when it takes them
/// again, a replica must not fail another's live job before that replica has had
/// time to beat again. Here the other replica's clock is a minute behind (its time
/// stamps look old), the store refuses every write for 18 s, and the other replica
/// beats again 6 s after it takes them. Before, the heartbeats seen standing still
/// through the outage counted, and the job was failed at the first sweep after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_took_no_writes_for_a_while_costs_no_live_job() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let env = env();
    let (db, server) = on_a_postgres_store(&env).await;
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    running_elsewhere(&env, &pool).await;
    let beating = Arc::new(AtomicBool::new(true));
    let beater = {
        let (pool, beating) = (pool.clone(), beating.clone());
        tokio::spawn(async move {
            loop {
                if beating.load(Ordering::Relaxed) {
                    // Refused while the store takes no writes, as everyone's are.
                    let _ = beat_elsewhere(&pool).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(state_of(&server, "elsewhere").await, "running");
    // Every write refused, as by a read-only database.
    sqlx::raw_sql(
        "CREATE FUNCTION read_only() RETURNS trigger AS $$ BEGIN \
           RAISE EXCEPTION 'read-only' USING ERRCODE = 'read_only_sql_transaction'; \
         END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER read_only BEFORE UPDATE OR INSERT OR DELETE ON jobs \
           FOR EACH STATEMENT EXECUTE FUNCTION read_only();",
    )
    .execute(&pool)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(18)).await;
    beating.store(false, Ordering::Relaxed);
    sqlx::raw_sql("DROP TRIGGER read_only ON jobs")
        .execute(&pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    beating.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state_of(&server, "elsewhere").await, "running");
    beater.abort();
    server.stop().await;
}

/// Writes the store makes wait rather than refuses (a lock held past the point
/// where a heartbeat has stood still long enough, with a database timeout longer
/// than that): this server's own heartbeat waits too, so it decides nothing while
/// it does, since nobody may be able to write. Here the other replica beats last
/// just after this server's heartbeat lands, as the lock is taken; its clock is a
/// minute behind. Before, this server's sweep saw that heartbeat stand still through
/// the lock and queued the job's failure behind it, which landed the moment the
/// lock went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_wait_for_the_store_fail_no_live_job() {
    use sqlx::Connection;
    let env = env();
    let db = tokio::task::spawn_blocking(|| DbServer::start(DbKind::Postgres))
        .await
        .unwrap();
    let server = TestServer::start_with(ferroserve::settings::Settings {
        database_url: Some(db.url()),
        database_timeout: Duration::from_secs(60),
        ..settings(&env)
    })
    .await;
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    running_elsewhere(&env, &pool).await;
    // A job of this server's own, whose row shows when its heartbeat lands.
    let mine = submit(&server, slow_job(&env, "mine.csv")).await;
    wait_for(&server, &mine, Duration::from_secs(30), |j| {
        j["state"] == "running"
    })
    .await;
    let heartbeat = || async {
        sqlx::query("SELECT heartbeat_ms FROM jobs WHERE id = $1")
            .bind(&mine)
            .fetch_one(&pool)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    let before = heartbeat().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while heartbeat().await == before {
        assert!(
            Instant::now() < deadline,
            "this server's heartbeat never landed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    beat_elsewhere(&pool).await.unwrap();
    let mut lock = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE jobs IN EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    // Reads go on; every write waits. The other replica's heartbeat seen still
    // for 15 s with a stamp a minute old would make it an orphan by 20 s.
    tokio::time::sleep(Duration::from_secs(23)).await;
    assert_eq!(state_of(&server, "elsewhere").await, "running");
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    // The other replica beats again, now that it can.
    beat_elsewhere(&pool).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(state_of(&server, "elsewhere").await, "running");
    server.stop().await;
}

/// Records a running score job, "elsewhere", claimed by a replica on another
/// machine whose clock is a minute behind this one.
async fn running_elsewhere(env: &Env, pool: &sqlx::PgPool) {
    use ferroserve::store::{now_ms, ReplicaName};
    write_csv(&env.data.join("small.csv"), &iris_rows(20));
    let elsewhere = ReplicaName {
        host: "other-host".into(),
        pid: 42,
        machine: Some("0123456789abcdef".into()),
        pid_ns: Some(1),
        token: "0badcafe".into(),
    };
    let spec = score_spec(
        json!({"path": "small.csv"}),
        json!({"path": "never.csv"}),
        8,
    )["spec"]
        .to_string();
    sqlx::query(
        "INSERT INTO jobs (id, kind, state, spec, progress, messages, created_ms, started_ms, \
         claimed_by, heartbeat_ms, cancel_requested) \
         VALUES ('elsewhere', 'score', 'running', $1, '{}', '[]', $2, $2, $3, $4, 0)",
    )
    .bind(&spec)
    .bind(now_ms())
    .bind(elsewhere.to_string())
    .bind(now_ms() - 60_000)
    .execute(pool)
    .await
    .unwrap();
}

/// The heartbeat of [`running_elsewhere`]'s replica, its clock a minute behind.
async fn beat_elsewhere(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE jobs SET heartbeat_ms = $1 WHERE id = 'elsewhere'")
        .bind(ferroserve::store::now_ms() - 60_000)
        .execute(pool)
        .await
        .map(|_| ())
}

/// A job's state as this server answers it.
async fn state_of(server: &TestServer, id: &str) -> String {
    let (status, job) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "{job}");
    job["state"].as_str().unwrap().to_string()
}

/// A throwaway PostgreSQL server, and a server keeping its store there (with a 2 s
/// database timeout).
async fn on_a_postgres_store(env: &Env) -> (DbServer, TestServer) {
    let db = tokio::task::spawn_blocking(|| DbServer::start(DbKind::Postgres))
        .await
        .unwrap();
    let server = TestServer::start_with(ferroserve::settings::Settings {
        database_url: Some(db.url()),
        database_timeout: Duration::from_secs(2),
        ..settings(env)
    })
    .await;
    (db, server)
}

/// A claim the store cannot answer in time (another client holds the job's row
/// past the database timeout) leaves the job queued and is tried again; once the
/// row is free the job runs. Before, the job was failed for good ("cannot start"),
/// which could also overwrite another replica's claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_the_store_cannot_answer_is_tried_again() {
    use sqlx::Connection;
    let env = env();
    let (db, server) = on_a_postgres_store(&env).await;
    let (busy, queued) = queued_behind_a_busy_worker(&server, &env).await;
    let mut lock = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(&queued)
        .fetch_one(&mut lock)
        .await
        .unwrap();
    let (status, answer) = server
        .post_json(&format!("/v1/jobs/{busy}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    finished(&server, &busy).await;
    // The worker's claims of the locked row time out (2 s each), more than once.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, job) = server.get(&format!("/v1/jobs/{queued}")).await;
    assert_eq!(job["state"], "queued", "{job}");

    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    let job = finished(&server, &queued).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(env.data.join("later.csv").is_file());
    server.stop().await;
}

/// A submission whose record outlives the database timeout answers 503; when the
/// database records the job after all (another client held a lock on the table),
/// it is marked failed, never run: no server may run a job its client was told
/// was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_recorded_after_its_503_is_never_run() {
    use sqlx::Connection;
    let env = env();
    write_csv(&env.data.join("small.csv"), &iris_rows(20));
    let (db, server) = on_a_postgres_store(&env).await;
    let mut lock = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let spec = score_spec(json!({"path": "small.csv"}), json!({"path": "late.csv"}), 8);
    let (code, body) = server.post_json("/v1/jobs", &spec).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("did not answer"),
        "{body}"
    );
    sqlx::raw_sql("COMMIT").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();

    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (state, error) = loop {
        let rows = sqlx::query("SELECT state, error FROM jobs")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(rows.len() <= 1, "one submission, one row");
        if let Some(row) = rows.first() {
            let state: String = row.get(0);
            if state != "queued" {
                break (state, row.get::<Option<String>, _>(1).unwrap_or_default());
            }
        }
        assert!(Instant::now() < deadline, "the late job stays queued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(state, "failed", "{error}");
    assert!(error.contains("never run"), "{error}");
    // Nor does a restart run it.
    server.stop().await;
    let server = TestServer::start_with(ferroserve::settings::Settings {
        database_url: Some(db.url()),
        ..settings(&env)
    })
    .await;
    let (code, body) = server.get("/v1/jobs").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["jobs"][0]["state"], "failed", "{body}");
    assert!(!env.data.join("late.csv").exists());
    pool.close().await;
    server.stop().await;
}

/// A job whose end the database cannot take for the moment (here a trigger
/// refuses every end as a read-only transaction, as a replica being promoted in a
/// failover does) has its end recorded once the database takes it, however long
/// that takes, and stays this server's meanwhile.
/// Before, its end was tried five times over a few seconds, then the job left this
/// server's memory, and the first heartbeat after the database took writes again
/// took it for an orphan and recorded it "interrupted by restart", its output whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_end_the_database_refuses_is_recorded_when_it_takes_it() {
    let env = env();
    write_csv(&env.data.join("small.csv"), &iris_rows(20));
    let (db, server) = on_a_postgres_store(&env).await;
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_ends() RETURNS trigger AS $$ BEGIN \
           IF OLD.state = 'running' AND NEW.state <> 'running' THEN \
             RAISE EXCEPTION 'read-only for now' USING ERRCODE = 'read_only_sql_transaction'; \
           END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER refuse_ends BEFORE UPDATE ON jobs \
           FOR EACH ROW EXECUTE FUNCTION refuse_ends();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let id = submit(
        &server,
        score_spec(
            json!({"path": "small.csv"}),
            json!({"path": "small_out.csv"}),
            4,
        ),
    )
    .await;
    let stored = || async {
        let row = sqlx::query("SELECT state, error FROM jobs WHERE id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
        (
            row.get::<String, _>(0),
            row.get::<Option<String>, _>(1).unwrap_or_default(),
        )
    };
    // This server shows the end once it has tried to record it a few times...
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, job) = server.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(code, 200, "{job}");
        if job["state"] != "queued" && job["state"] != "running" {
            assert_eq!(job["state"], "succeeded", "{job}");
            break;
        }
        assert!(Instant::now() < deadline, "the job never ends: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... and keeps the job, long past those tries and a heartbeat.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (code, job) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!((code, &job["state"]), (200, &json!("succeeded")), "{job}");
    assert_eq!(stored().await.0, "running");

    sqlx::raw_sql("DROP TRIGGER refuse_ends ON jobs")
        .execute(&pool)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored().await.0 == "running" {
        assert!(Instant::now() < deadline, "the job's end is never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored().await, ("succeeded".to_string(), String::new()));
    // A heartbeat later (every 5 s), still so.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(stored().await, ("succeeded".to_string(), String::new()));
    assert!(env.data.join("small_out.csv").exists());
    server.stop().await;
}

/// A job end the database refuses as such (not for the moment: here a trigger
/// raises a plain error for one job's end) is handed to the recovery sweep after a
/// few tries, and the job worker goes on to the next job instead of trying for
/// ever. The sweep records the end once the store takes it: here the store goes on
/// refusing it with its result or messages, so it is recorded without, the error
/// saying so.
/// Before, the end was given up and the sweep recorded the job "interrupted by
/// restart".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_end_the_database_refuses_for_good_frees_the_worker() {
    let env = env();
    write_csv(&env.data.join("small.csv"), &iris_rows(20));
    let (db, server) = on_a_postgres_store(&env).await;
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    let refuse_ends_when = |condition: &str| {
        format!(
            "CREATE OR REPLACE FUNCTION refuse_one_end() RETURNS trigger AS $$ BEGIN \
               IF OLD.state = 'running' AND NEW.state <> 'running' \
                  AND NEW.spec LIKE '%refused.csv%' AND {condition} THEN \
                 RAISE EXCEPTION 'not this one'; \
               END IF; RETURN NEW; END $$ LANGUAGE plpgsql;"
        )
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "{} CREATE TRIGGER refuse_one_end BEFORE UPDATE ON jobs \
           FOR EACH ROW EXECUTE FUNCTION refuse_one_end();",
        refuse_ends_when("true")
    )))
    .execute(&pool)
    .await
    .unwrap();
    let spec = |sink: &str| score_spec(json!({"path": "small.csv"}), json!({"path": sink}), 4);
    let refused = submit(&server, spec("refused.csv")).await;
    let next = submit(&server, spec("next.csv")).await;
    let job = finished(&server, &next).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let stored = || async {
        let row = sqlx::query("SELECT state, result, error FROM jobs WHERE id = $1")
            .bind(&refused)
            .fetch_one(&pool)
            .await
            .unwrap();
        (
            row.get::<String, _>(0),
            row.get::<Option<String>, _>(1),
            row.get::<Option<String>, _>(2),
        )
    };
    // Past a sweep (every 5 s), which tried it again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (state, _, _) = stored().await;
    assert_eq!(state, "running", "the trigger kept every end of it out");
    // This server shows the end it could not record.
    let (_, job) = server.get(&format!("/v1/jobs/{refused}")).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    // Now an end with a result, or with messages, is refused: the sweep records
    // it without either.
    sqlx::raw_sql(sqlx::AssertSqlSafe(refuse_ends_when(
        "(NEW.result IS NOT NULL OR NEW.messages <> '[]')",
    )))
    .execute(&pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let (state, result, error) = loop {
        let (state, result, error) = stored().await;
        if state != "running" {
            break (state, result, error);
        }
        assert!(Instant::now() < deadline, "the end was never recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(state, "succeeded");
    assert_eq!(result, None);
    let error = error.unwrap_or_default();
    assert!(
        error.contains(
            "its result and messages were not recorded: the metadata store refused to record it"
        ),
        "{error}"
    );
    let (_, job) = server.get(&format!("/v1/jobs/{refused}")).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    server.stop().await;
}

/// A cancel the store cannot record answers 503 and cancels nothing: the job runs
/// on to its end, which is recorded once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_the_store_refuses_changes_nothing() {
    let env = env();
    write_csv(&env.data.join("mid.csv"), &iris_rows(60_000));
    let (mut db, server) = on_a_postgres_store(&env).await;
    let id = submit(
        &server,
        score_spec(
            json!({"path": "mid.csv"}),
            json!({"path": "mid_out.csv"}),
            4,
        ),
    )
    .await;
    wait_for(&server, &id, Duration::from_secs(60), |j| {
        j["progress"]["rows_read"].as_u64().unwrap_or(0) > 0
    })
    .await;
    db = tokio::task::spawn_blocking(move || {
        db.kill();
        db
    })
    .await
    .unwrap();
    let (status, answer) = server
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    // Still running here (a finished job would be read from the dead database).
    let (code, live) = server.get(&format!("/v1/jobs/{id}")).await;
    let _db = tokio::task::spawn_blocking(move || {
        db.restart();
        db
    })
    .await
    .unwrap();
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("metadata store"),
        "{answer}"
    );
    assert_eq!(code, 200, "{live}");
    assert_eq!(live["state"], "running", "{live}");
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"]["rows_read"], 60_000, "{job}");
    assert!(env.data.join("mid_out.csv").exists());
    server.stop().await;
}

/// The files in the data directory whose name holds `sink` (the sink and its
/// hidden temporary file), with their sizes.
fn sink_files(env: &Env, sink: &str) -> Vec<(String, u64)> {
    let mut files = std::fs::read_dir(&env.data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(sink))
        .map(|e| {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            (e.file_name().to_string_lossy().into_owned(), size)
        })
        .collect::<Vec<_>>();
    files.sort();
    files
}

/// A running job whose row another replica marks failed under it (as one does
/// for a replica paused past the heartbeat's grace, here written straight into
/// the database) stops at its next progress write: this server answers the
/// store's state and error, writes nothing more to the sink, and never records
/// an end of its own over the store's. Before, it ran on, answered `running`
/// for minutes and finally overwrote the store's state with its own end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failed_by_another_replica_stops_here() {
    let env = env();
    let (db, server) = on_a_postgres_store(&env).await;
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    let id = submit(&server, slow_job(&env, "taken.csv")).await;
    wait_for(&server, &id, Duration::from_secs(60), |j| {
        j["progress"]["rows_read"].as_u64().unwrap_or(0) > 0
    })
    .await;
    sqlx::query(
        "UPDATE jobs SET state = 'failed', error = 'interrupted by restart', \
         finished_ms = $1 WHERE id = $2",
    )
    .bind(ferroserve::store::now_ms())
    .bind(&id)
    .execute(&pool)
    .await
    .unwrap();
    // Within 3 s, or the job runs on after another replica failed it.
    let job = wait_for(&server, &id, Duration::from_secs(3), |j| {
        j["state"] != "running"
    })
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"], "interrupted by restart", "{job}");
    // Nothing more is written to the sink, and the store's word stands.
    let files = sink_files(&env, "taken.csv");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink_files(&env, "taken.csv"), files);
    assert!(!env.data.join("taken.csv").exists());
    let row = sqlx::query("SELECT state, error FROM jobs WHERE id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "failed");
    assert_eq!(
        row.get::<Option<String>, _>(1).as_deref(),
        Some("interrupted by restart")
    );
    let (_, job) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "failed", "{job}");
    server.stop().await;
}

/// A store that does not answer (its PostgreSQL killed, a 5 s database timeout)
/// does not slow a running job: its progress writes wait in the background.
/// Before, every write (every half second) held the job for the whole timeout,
/// and it went on at a tenth of its pace or less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_answer_does_not_slow_a_job() {
    let env = env();
    write_csv(&env.data.join("huge.csv"), &iris_rows(1_000_000));
    let mut db = tokio::task::spawn_blocking(|| DbServer::start(DbKind::Postgres))
        .await
        .unwrap();
    let server = TestServer::start_with(ferroserve::settings::Settings {
        database_url: Some(db.url()),
        database_timeout: Duration::from_secs(5),
        ..settings(&env)
    })
    .await;
    let id = submit(
        &server,
        score_spec(
            json!({"path": "huge.csv"}),
            json!({"path": "huge_out.csv"}),
            4,
        ),
    )
    .await;
    wait_for(&server, &id, Duration::from_secs(60), |j| {
        j["progress"]["rows_read"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let rows_read = || async {
        let (_, job) = server.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(job["state"], "running", "{job}");
        job["progress"]["rows_read"].as_u64().unwrap()
    };
    const WINDOW: Duration = Duration::from_secs(6);
    let start = rows_read().await;
    tokio::time::sleep(WINDOW).await;
    let before = rows_read().await - start;
    db = tokio::task::spawn_blocking(move || {
        db.kill();
        db
    })
    .await
    .unwrap();
    let start = rows_read().await;
    tokio::time::sleep(WINDOW).await;
    let during = rows_read().await - start;
    let _db = tokio::task::spawn_blocking(move || {
        db.restart();
        db
    })
    .await
    .unwrap();
    // Blocking writes would allow about a tenth of the pace before.
    assert!(
        during * 2 > before,
        "{during} rows read with the store down, {before} before"
    );
    server.stop().await;
}
