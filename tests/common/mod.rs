//! Shared helpers for black-box tests: a real server on 127.0.0.1:0 over a
//! temporary model repository, and a client for it.
#![allow(dead_code)] // each test binary uses a different subset

pub mod child;
pub mod db_servers;
pub mod jobs;
pub mod nginx;
pub mod redis_server;
pub mod workers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferroserve::server::{run, Listeners};
use ferroserve::settings::Settings;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Polls `check` every 20 ms until it holds; fails the test, naming `what`, when it
/// still does not after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_some(what, limit, || {
        let checked = check();
        async move { checked.await.then_some(()) }
    })
    .await
}

/// Polls `check` every 20 ms until it gives `Some`, and answers that; fails the
/// test, naming `what`, when it still gives `None` after `limit`.
pub async fn eventually_some<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of the samples of metric `name` in Prometheus text `text` whose labels
/// include all of `labels` (0 when there is none).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(parts) => parts,
            None => continue,
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        if labels.iter().all(|(k, v)| {
            series_labels
                .split(',')
                .any(|l| l == format!("{k}=\"{v}\""))
        }) {
            sum += value.parse::<f64>().unwrap();
        }
    }
    sum
}

/// A path under the crate root (fixtures, examples).
pub fn root_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The ONNX Runtime library `scripts/setup.sh` puts under `.ort/`, unless
/// `ORT_DYLIB_PATH` names one.
pub fn onnxruntime_path() -> Option<PathBuf> {
    if std::env::var_os("ORT_DYLIB_PATH").is_some() {
        return None;
    }
    let p = root_path(".ort/libonnxruntime.so.1.31.1");
    p.is_file().then_some(p)
}

/// Settings for a test server: loopback, one-second-scale defaults.
pub fn test_settings(repo: &Path) -> Settings {
    Settings {
        model_repository: repo.to_path_buf(),
        rest_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        inference_threads: 2,
        onnxruntime_path: onnxruntime_path(),
        ..Settings::default()
    }
}

/// [`test_settings`] with the repository watcher off, so that only the API changes
/// what is served.
pub fn unwatched_settings(repo: &Path) -> Settings {
    Settings {
        file_system_poll_wait: Duration::ZERO,
        ..test_settings(repo)
    }
}

/// The bytes of the example ONNX model `examples/models/<name>/1/model.onnx`.
pub fn example_onnx(name: &str) -> Vec<u8> {
    std::fs::read(root_path(&format!("examples/models/{name}/1/model.onnx"))).unwrap()
}

/// Test settings with a metadata store at `database_url` (else the default SQLite
/// file), a short store timeout and a quick repository poll.
pub fn store_settings(repo: &Path, database_url: Option<String>) -> Settings {
    Settings {
        database_url,
        database_timeout: Duration::from_secs(2),
        file_system_poll_wait: Duration::from_millis(200),
        ..test_settings(repo)
    }
}

/// Copies a model file into `<repo>/<model>/<version>/<file name>`.
pub fn install_model(repo: &Path, model: &str, version: u64, artifact: &Path) -> PathBuf {
    let dir = repo.join(model).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join(artifact.file_name().unwrap());
    std::fs::copy(artifact, &dest).unwrap();
    dest
}

/// Copies the directory `from` (a SavedModel's, say) to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub struct TestServer {
    pub rest_addr: SocketAddr,
    pub grpc_addr: Option<SocketAddr>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server on a repository with default test settings, waits until ready.
    pub async fn start(repo: &Path) -> TestServer {
        TestServer::start_with(test_settings(repo)).await
    }

    pub async fn start_with(settings: Settings) -> TestServer {
        TestServer::start_with_client(settings, "http", reqwest::Client::new()).await
    }

    /// Starts a server whose REST API is reached as `{scheme}://127.0.0.1:PORT` with
    /// `client` (a TLS server needs "https" and a client that trusts its CA).
    pub async fn start_with_client(
        settings: Settings,
        scheme: &str,
        client: reqwest::Client,
    ) -> TestServer {
        let rest = ferroserve::server::listen(settings.rest_addr).unwrap();
        let grpc = ferroserve::server::listen(settings.grpc_addr).unwrap();
        let rest_addr = rest.local_addr().unwrap();
        let grpc_addr = grpc.local_addr().ok();
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = Listeners {
            rest,
            grpc: Some(grpc),
        };
        let task = tokio::spawn(run(settings, listeners, async move {
            let _ = rx.await;
        }));
        let server = TestServer {
            rest_addr,
            grpc_addr,
            base: format!("{scheme}://{rest_addr}"),
            client,
            shutdown: Some(tx),
            task: Some(task),
        };
        // Generous: on a shared machine whose cores other builds hold, the first
        // loads of a binary's parallel servers can take long; a server that never
        // gets ready still fails.
        server.wait_ready(Duration::from_secs(180)).await;
        server
    }

    /// Polls readiness until it answers 200 or the deadline passes.
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = self.client.get(self.url("/v2/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server not ready within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `/metrics` as Prometheus text.
    pub async fn scrape(&self) -> String {
        let r = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        status_and_body(r).await
    }

    /// A request with no body: the status and the JSON body (the text when not JSON).
    pub async fn request(&self, method: reqwest::Method, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .request(method, self.url(path))
            .send()
            .await
            .unwrap();
        status_and_body(r).await
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.post_raw(path, body.to_string().into_bytes()).await
    }

    /// A multipart POST; the status and the JSON body (the text when not JSON).
    pub async fn post_multipart(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .multipart(form)
            .send()
            .await
            .unwrap();
        status_and_body(r).await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        status_and_body(r).await
    }

    /// Stops the server gracefully and checks that it exited cleanly.
    /// `POST /upload_model`, multipart: the text `fields`, then `file` named
    /// `file_name`. Answers the status and the JSON body (the text when not JSON).
    pub async fn upload(
        &self,
        fields: &[(&str, &str)],
        file_name: &str,
        bytes: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_string()),
        );
        self.post_multipart("/upload_model", form).await
    }

    /// A gRPC channel to the server, connected (its gRPC listener must be on).
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        let addr = self
            .grpc_addr
            .expect("the test server has no gRPC listener");
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server did not stop within 30 s")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts two floats agree to a relative tolerance.
pub fn assert_close(actual: f64, expected: f64, rel: f64, what: &str) {
    let tol = rel * actual.abs().max(expected.abs()).max(1e-30);
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: {actual} != {expected} (rel tol {rel})"
    );
}

/// An answer's status and JSON body (the text when it is not JSON).
/// An error answer: `status` is `want`, and its JSON `"error"` says `words`.
#[allow(dead_code)]
pub fn assert_error(status: u16, answer: &serde_json::Value, want: u16, words: &str) {
    assert_eq!(status, want, "{answer}");
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(message.contains(words), "{answer}");
}

pub async fn status_and_body(r: reqwest::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// One HTTP/1.1 request over a new connection, its body sent with `Content-Length`
/// or chunked; answers the status, the content type and the body.
pub async fn raw_post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    chunked: bool,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nConnection: close\r\n"
    );
    let request = if chunked {
        format!(
            "{head}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    } else {
        format!("{head}Content-Length: {}\r\n\r\n{body}", body.len())
    };
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let body = if header("transfer-encoding") == "chunked" {
        // Chunk sizes out, data in.
        let mut data = String::new();
        let mut rest = rest;
        loop {
            let (size, tail) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                break;
            }
            data.push_str(&tail[..size]);
            rest = &tail[size + 2..];
        }
        data
    } else {
        rest.to_string()
    };
    (status, header("content-type"), body)
}

/// A [`raw_post`] answer with its JSON body parsed, less the fields that differ
/// from one call to the next (the simple API's `latency`, `timestamp`, `time`).
pub fn timeless(
    (status, content_type, body): (u16, String, String),
) -> (u16, String, serde_json::Value) {
    let mut body: serde_json::Value = serde_json::from_str(&body).unwrap();
    if let Some(answer) = body.as_object_mut() {
        for key in ["latency", "timestamp", "time"] {
            answer.remove(key);
        }
    }
    (status, content_type, body)
}

/// Every file and directory under `dir`, relative (directories end in `/`), sorted,
/// but the server's own state directory (`.ferroserve`): to check that nothing
/// partial or stray was left behind.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if prefix.is_empty() && e.file_name() == ".ferroserve" {
                continue;
            }
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.path().is_dir() {
                out.push(format!("{name}/"));
                walk(&e.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// How many `model_settings` rows the default SQLite store of `repo`
/// (`<repo>/.ferroserve/ferroserve.db`) holds for `model`.
pub async fn stored_settings_rows(repo: &Path, model: &str) -> i64 {
    let db = format!(
        "sqlite://{}",
        repo.join(".ferroserve/ferroserve.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM model_settings WHERE model = ?")
        .bind(model)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

/// Sends one gRPC message as raw HTTP/2 and gives the `grpc-status` and
/// `grpc-message` headers of the (trailers-only) answer.
pub async fn raw_grpc(server: &TestServer, path: &str, message: &[u8]) -> (Option<String>, String) {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    raw_grpc_body(server, path, framed).await
}

/// As [`raw_grpc`], with the request body as given (framed or not).
pub async fn raw_grpc_body(
    server: &TestServer,
    path: &str,
    framed: Vec<u8>,
) -> (Option<String>, String) {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(format!("http://{}{path}", server.grpc_addr.unwrap()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(framed)
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    (
        header("grpc-status"),
        header("grpc-message").unwrap_or_default(),
    )
}

/// The peak resident memory of this (test) process since the last [`reset_peak_rss`], in
/// bytes (`VmHWM`).
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Resets `VmHWM` to the current resident size (Linux ≥ 4.0).
pub fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// TensorFlow's libraries for the SavedModel tests: `FERROSERVE_TENSORFLOW_PATH`, else
/// the wheel `scripts/setup.sh` installs in `.venv-tf`.
pub fn tensorflow_dir() -> PathBuf {
    let dir = std::env::var_os("FERROSERVE_TENSORFLOW_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root_path(".venv-tf/lib/python3.11/site-packages/tensorflow"));
    assert!(
        dir.join("libtensorflow_cc.so.2").is_file(),
        "TensorFlow's libraries are not in {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// A JSON tensor's (`{"shape": [...], "data": [...]}`, V2's) shape.
pub fn shape_of(t: &serde_json::Value) -> Vec<usize> {
    t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// A JSON tensor's flat data.
pub fn data_of(t: &serde_json::Value) -> &[serde_json::Value] {
    t["data"].as_array().unwrap()
}

/// Flat values nested as `shape` (a scalar for no dimensions).
pub fn nest(data: &[serde_json::Value], shape: &[usize]) -> serde_json::Value {
    match shape {
        [] => data[0].clone(),
        [_, inner @ ..] => {
            let step: usize = inner.iter().product();
            serde_json::Value::Array(
                data.chunks(step.max(1))
                    .map(|chunk| nest(chunk, inner))
                    .collect(),
            )
        }
    }
}

/// How [`post_answer_head`] sends its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// The whole body first, then the answer is read, as Python's http.client
    /// does: an answer given before the body was read and the connection closed
    /// is a failed write (a broken pipe or a reset), and panics.
    WholeBodyFirst,
    /// The answer is read while the body is sent, as a client that does not wait
    /// for `100 Continue` but watches for an early answer does; the rest of the
    /// body may find the connection closed (a refusal past its drain).
    WhileReading,
}

/// POSTs `body` to `path` over a connection of its own, as `sending` says, and
/// answers the head of the answer, lower-cased.
pub async fn post_answer_head(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    sending: Sending,
) -> String {
    use tokio::io::AsyncWriteExt;
    let head = post_head(path, content_type, body.len());
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(1 << 20) {
            writer.write_all(chunk).await?;
        }
        Ok::<_, std::io::Error>(writer)
    });
    // The write half is kept open until the answer is read: dropping it shuts the
    // connection's sending side, and the server (hyper, without half-close) takes
    // that for the client gone and answers nothing.
    let _writer = match sending {
        Sending::WholeBodyFirst => match sender.await.unwrap() {
            Ok(writer) => Some(writer),
            Err(e) => panic!("the body could not be sent whole: {e}"),
        },
        Sending::WhileReading => None,
    };
    answer_head(&mut reader).await
}

/// The head of an HTTP/1.1 POST of `length` bytes to `path`.
fn post_head(path: &str, content_type: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// The head of the answer `reader` receives, lower-cased; it panics when the
/// connection fails or closes first, or nothing comes within 30 s.
async fn answer_head(reader: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), reader.read(&mut buf))
            .await
            .expect("no answer within 30 s")
            .unwrap_or_else(|e| {
                panic!("the connection failed before the answer ({e}): {answer:?}")
            });
        assert!(n > 0, "closed before the answer: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).to_lowercase()
}

/// POSTs `body` to `path` over a connection of its own, its first `split` bytes,
/// then, once `between` is done, the rest, and only then reads the answer (as
/// Python's http.client does); the head of the answer, lower-cased. A write that
/// fails (a broken pipe or a reset: the server closed on the unread body) panics.
pub async fn post_in_two_parts(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
    split: usize,
    between: impl std::future::Future<Output = ()>,
) -> String {
    use tokio::io::AsyncWriteExt;
    let head = post_head(path, content_type, body.len());
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..split]).await.unwrap();
    between.await;
    if let Err(e) = stream.write_all(&body[split..]).await {
        panic!("the rest of the body could not be sent: {e}");
    }
    answer_head(&mut stream).await
}
