//! Files uploaded with the job (multipart): scored and removed after, kept across a
//! restart while the job waits, leftovers removed at start, and the bodies' limits
//! and refusals.

use super::*;

/// `POST path` as multipart: a `spec` part and file parts `(part, file name, bytes)`.
async fn post_multipart(
    server: &TestServer,
    path: &str,
    spec: &Value,
    files: &[(&str, &str, Vec<u8>)],
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new().text("spec", spec.to_string());
    for (part, file_name, bytes) in files {
        form = form.part(
            part.to_string(),
            reqwest::multipart::Part::bytes(bytes.clone()).file_name(file_name.to_string()),
        );
    }
    let response = server
        .client
        .post(server.url(path))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_files_are_scored_and_removed_after() {
    let env = env();
    let settings = Settings {
        max_upload_bytes: 200_000,
        ..settings(&env)
    };
    let server = TestServer::start_with(settings).await;
    let rows = iris_rows(300);
    let answers = model_answers(&server, &rows).await;
    let uploads = env.state.join("job-uploads");

    // A CSV part, its format from the file name, scored into Parquet.
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &score_spec(
            json!({"upload": "flowers"}),
            json!({"path": "up.parquet"}),
            64,
        ),
        &[("flowers", "new.csv", csv_text(&rows).into_bytes())],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["spec"]["source"],
        json!({"upload": "flowers", "format": "csv"})
    );
    let (_, written) = read_parquet(&env.data.join("up.parquet"));
    assert_scores(&written, &answers);
    // The upload is gone once the job ended, and was never in the data directory.
    assert_eq!(dir_entries(&uploads), Vec::<String>::new());
    assert_eq!(dir_entries(&env.data), ["up.parquet"]);

    // A Parquet part through the old /predictall/ route.
    let parquet_path = env.data.join("tmp.parquet");
    write_parquet(&parquet_path, &rows);
    let parquet_bytes = std::fs::read(&parquet_path).unwrap();
    std::fs::remove_file(&parquet_path).unwrap();
    let (status, answer) = post_multipart(
        &server,
        "/predictall/",
        &json!({"modelkey": "iris", "inputCollection": {"upload": "data"},
                "outputCollection": "old.csv", "carry": ["id"]}),
        &[("data", "rows.parquet", parquet_bytes)],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"]["rows_written"], 300);
    assert_eq!(dir_entries(&uploads), Vec::<String>::new());

    // Refusals, each leaving no staged files behind.
    let spec = score_spec(json!({"upload": "flowers"}), json!({"path": "x.csv"}), 64);
    let small = csv_text(&rows[..3]).into_bytes();
    let (status, answer) = post_multipart(&server, "/v1/jobs", &spec, &[]).await;
    assert_error(status, &answer, 400, "no part \"flowers\"");
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &spec,
        &[
            ("flowers", "a.csv", small.clone()),
            ("extra", "b.csv", small.clone()),
        ],
    )
    .await;
    assert_error(status, &answer, 400, "part \"extra\" is not used");
    let big = vec![b'x'; 300_000];
    let (status, answer) =
        post_multipart(&server, "/v1/jobs", &spec, &[("flowers", "a.csv", big)]).await;
    assert_eq!(status, 413, "{answer}");
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &spec,
        &[("flowers", "a.xlsx", small.clone())],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("spec.source.upload"),
        "{answer}"
    );
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &spec,
        &[("../evil", "a.csv", small.clone())],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    // No spec part.
    let form = reqwest::multipart::Form::new().part(
        "flowers",
        reqwest::multipart::Part::bytes(small.clone()).file_name("a.csv"),
    );
    let response = server
        .client
        .post(server.url("/v1/jobs"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // An upload source in a JSON body: there is nothing uploaded.
    let (status, answer) = server.post_json("/v1/jobs", &spec).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("multipart"),
        "{answer}"
    );
    assert_eq!(dir_entries(&uploads), Vec::<String>::new());
    server.stop().await;
}

/// A job with uploaded files still waiting when its server stops is held by that
/// server in the store (so replicas fail it if the server never comes back), and
/// runs when the server starts again on the same state directory: the new process
/// takes it over instead of taking its own files' job for an orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_job_waiting_at_a_stop_runs_after_the_restart() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    std::fs::write(env.data.join("big.csv"), csv_text(&iris_rows(200_000))).unwrap();
    let busy = submit(
        &server,
        score_spec(json!({"path": "big.csv"}), json!({"path": "busy.csv"}), 1),
    )
    .await;
    wait_for(&server, &busy, Duration::from_secs(60), |j| {
        j["state"] == "running"
    })
    .await;
    let rows = iris_rows(30);
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &score_spec(json!({"upload": "rows"}), json!({"path": "up.csv"}), 8),
        &[("rows", "new.csv", csv_text(&rows).into_bytes())],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    let db = format!("sqlite://{}", env.state.join("ferroserve.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let holder = || async {
        sqlx::query("SELECT state, claimed_by FROM jobs WHERE id = ?")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .map(|r| (r.get::<String, _>(0), r.get::<Option<String>, _>(1)))
            .unwrap()
    };
    let (state, held_by) = holder().await;
    assert_eq!(state, "queued");
    assert!(
        held_by.is_some(),
        "a job with uploaded files is held by its server"
    );
    server.stop().await;

    let server = TestServer::start_with(settings(&env)).await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"]["rows_written"], 30, "{job}");
    assert_eq!(
        dir_entries(&env.state.join("job-uploads")),
        Vec::<String>::new()
    );
    pool.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_uploads_are_removed_at_start() {
    let env = env();
    let uploads = env.state.join("job-uploads");
    std::fs::create_dir_all(uploads.join(".incoming-0123")).unwrap();
    std::fs::write(uploads.join(".incoming-0123/data"), "a\n").unwrap();
    std::fs::create_dir_all(uploads.join("00000000000000000000000000000000")).unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    assert_eq!(dir_entries(&uploads), Vec::<String>::new());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_bodies_keep_their_size_limits() {
    // The job routes read their bodies themselves (multipart may be as large as the
    // upload limit): a JSON body still stops at max_request_bytes, and so does the
    // spec part of a multipart body.
    let env = env();
    let settings = Settings {
        max_request_bytes: 2048,
        max_upload_bytes: 100_000,
        ..settings(&env)
    };
    let server = TestServer::start_with(settings).await;
    let mut spec = score_spec(json!({"path": "in.csv"}), json!({"path": "x.csv"}), 8);
    spec["spec"]["carry"] = json!(vec!["a".repeat(100); 40]);
    for path in ["/v1/jobs", "/predictall/"] {
        let (status, answer) = server.post_json(path, &spec).await;
        assert_eq!(status, 413, "{path}: {answer}");
    }
    let (status, answer) = post_multipart(&server, "/v1/jobs", &spec, &[]).await;
    assert_eq!(status, 413, "{answer}");
    // Files up to the upload limit, far above max_request_bytes, are taken.
    let rows = iris_rows(1000);
    let csv = csv_text(&rows).into_bytes();
    assert!(csv.len() > 2048 && csv.len() < 100_000);
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &score_spec(json!({"upload": "rows"}), json!({"path": "out.csv"}), 64),
        &[("rows", "rows.csv", csv)],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let job = finished(&server, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    server.stop().await;
}

/// A job request refused on a part before its files (the spec sent twice) drains
/// the files the client is still sending before answering: the client sends its
/// whole body and reads the answer (without the drain, the server closed the
/// connection on 12 MiB unread, more than the sockets' buffers hold, and the
/// client's write failed with a broken pipe or a reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_files_are_read_reach_the_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = env();
    let settings = Settings {
        max_upload_bytes: 64 << 20,
        ..settings(&env)
    };
    let server = TestServer::start_with(settings).await;
    let spec = score_spec(json!({"upload": "rows"}), json!({"path": "out.csv"}), 64).to_string();
    let boundary = "ferroserve-test-boundary";
    let mut body = Vec::new();
    for _ in 0..2 {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{spec}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"rows\"; \
             filename=\"rows.csv\"\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend(std::iter::repeat_n(b'x', 12 << 20));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let addr = server
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut requests = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    requests.extend_from_slice(&body);
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // The write half is kept open until the answer is read: a half-closed
    // connection is a client gone to the server.
    let writer = tokio::spawn(async move { write.write_all(&requests).await.map(|()| write) });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut answer))
        .await
        .expect("the answer within 30 s")
        .expect("the answer read whole");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("part \\\"spec\\\" is sent twice"),
        "{answer}"
    );
    drop(
        writer
            .await
            .unwrap()
            .expect("the whole body sent, none of it refused by a closed connection"),
    );
    server.stop().await;
}
