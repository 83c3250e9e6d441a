//! No client can starve the server (issue 9): the server runs as a child process
//! with a low open-files limit (`prlimit --nofile`), and more connections than its
//! connection limit are kept open against it, reconnecting as soon as the server
//! closes them:
//! * HTTP/1 requests whose head is never finished (closed by the header-read timeout);
//! * idle HTTP/2 connections on the gRPC port (closed by the idle timeout);
//! * gRPC calls whose request message never comes (body read timeout, then idle).
//!
//! Three runs: 1,100 attackers (tasks of this test) against 1,024 descriptors, with
//! 1 s timeouts and with 30 s ones (no connection times out during the attack, so
//! only the limit's closing of idle connections lets the client in); and the issue's
//! 24,000, with 10 s timeouts, from four processes (`tests/flood_clients.py`, each from its own loopback
//! address, at a lower CPU priority, nice 10, as if on other machines), against 16,384
//! descriptors (14,746 connections).
//!
//! Meanwhile a client keeps predicting over fresh connections: every request must be
//! answered within [`ANSWER_WITHIN`]; a new model version copied into the repository
//! during the attack must be served (the watcher still has descriptors); and the
//! server's descriptor count (`/proc/<pid>/fd`) must stay clear of its limit. Each
//! attack lasts [`ATTACK`] at least, and until the server logs that it reached its
//! connection limit (at most [`REACH_LIMIT_WITHIN`]): on a busy machine the attackers
//! take longer to get there, and the test ends them then, by pid.
//!
//! A flood of clients that trickle their request bodies (REST and gRPC, a byte every
//! 400 ms, never silent long enough to look stalled) at a small connection limit must
//! not lock other clients out either: the limit closes connections whose bodies
//! arrive slower than the minimum rate.
//!
//! Everything runs on 127.0.0.1 and stops itself; only the processes started here are
//! killed. Smaller tests check the timeouts one by one on an in-process server.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::free_port;
use common::{install_model, metric_value, root_path};
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use ferroserve_proto::tensorflow::{
    tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// How big an attack is and where it comes from.
#[derive(Clone, Copy, Debug)]
struct Scale {
    /// The server's open-files limit; its connection limit is this less a reserve of
    /// a tenth (at least 256).
    server_fds: u64,
    /// Attacking connections kept open at once, in all: more than the server's
    /// connection limit.
    attackers: usize,
    /// Attacking processes (`tests/flood_clients.py`); 0: tasks of this test.
    processes: usize,
    /// The server's header-read and body-read timeouts; its keep-alive and HTTP/2
    /// idle timeouts are twice this.
    timeout_secs: u64,
}

/// 1,100 attackers against 1,024 descriptors (768 connections).
const SMALL: Scale = Scale {
    server_fds: 1024,
    attackers: 1100,
    processes: 0,
    timeout_secs: 1,
};

/// The issue's attack: 24,000 connections from four processes against 16,384
/// descriptors (14,746 connections). With 10 s timeouts: each attacking connection
/// lives until the server closes it, so the server holds about the attackers'
/// connect rate times the timeout; at 1 s, four processes at nice 10 on a 2-core
/// machine (about 2,800 connections a second) never brought it past 13,600, and the
/// attack proved nothing. 1 s timeouts at scale are SMALL's.
const LARGE: Scale = Scale {
    server_fds: 16_384,
    attackers: 24_000,
    processes: 4,
    timeout_secs: 10,
};

/// SMALL's attack against timeouts longer than the attack (the defaults' order of
/// magnitude): no connection times out while it lasts, so only the connection
/// limit closing idle connections to make room lets legitimate clients in.
const LONG_TIMEOUTS: Scale = Scale {
    timeout_secs: 30,
    ..SMALL
};

/// The tests of this file run one at a time: the flood needs the machine's CPUs.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long each attack lasts at least while the legitimate client predicts.
const ATTACK: Duration = Duration::from_secs(8);
/// How long an attack may go on, past [`ATTACK`], for the attackers to bring the
/// server to its connection limit: on a machine busy with other work they open
/// connections more slowly (a debug server there accepted 13,400 of its 14,746 in
/// 8 s), and an attack that never reaches the limit proves nothing.
const REACH_LIMIT_WITHIN: Duration = Duration::from_secs(40);
/// How long an attack goes on once the server has logged that it reached its limit
/// (and at least [`ATTACK`] in all), for the legitimate clients to be tried there.
const AT_THE_LIMIT: Duration = Duration::from_secs(2);
/// The longest an attacking process runs if nothing ends it: the test ends each
/// attack (by the process's pid) when its phase is over, long before.
const ATTACK_PROCESS_BOUND: Duration = Duration::from_secs(180);
/// The longest a legitimate request may wait for its answer under attack.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Raises this process's open-files limit to its hard limit, which must allow
/// `needed`: the server's limit (prlimit cannot go above it) and, for attacks from
/// this process, the attackers' descriptors.
fn raise_own_fd_limit(needed: u64) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= needed,
        "this test needs an open-files hard limit of at least {needed}, not {limit}"
    );
}

struct ChildServer {
    child: Child,
    pid: u32,
    rest: SocketAddr,
    grpc: SocketAddr,
    repo: tempfile::TempDir,
    log: tempfile::NamedTempFile,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        // Only the process this test started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildServer {
    async fn start(scale: Scale) -> ChildServer {
        let repo = tempfile::tempdir().unwrap();
        install_model(
            repo.path(),
            "iris_lr",
            1,
            &root_path("examples/models/iris_lr/1/model.onnx"),
        );
        let rest: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let (timeout, idle) = (
            scale.timeout_secs.to_string(),
            (2 * scale.timeout_secs).to_string(),
        );
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={0}:{0}", scale.server_fds))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_ferroserve"))
            .args(["serve", "--model-repository"])
            .arg(repo.path())
            .args(["--rest-addr", &rest.to_string()])
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--inference-threads", "2"])
            .args(["--header-read-timeout-secs", &timeout])
            .args(["--keep-alive-timeout-secs", &idle])
            .args(["--grpc-idle-timeout-secs", &idle])
            .args(["--body-read-timeout-secs", &timeout])
            .args(["--file-system-poll-wait-seconds", "0.2"])
            .env("FERROSERVE_LOG", "warn")
            // The server logs to stdout.
            .stdout(log.reopen().unwrap())
            .stderr(Stdio::inherit());
        if let Some(ort) = common::onnxruntime_path() {
            command.env("ORT_DYLIB_PATH", ort);
        }
        // prlimit sets the limit on itself and then executes the server: the child's
        // pid is the server's.
        let child = command
            .spawn()
            .expect("prlimit (util-linux) runs the server");
        let pid = child.id();
        let server = ChildServer {
            child,
            pid,
            rest,
            grpc,
            repo,
            log,
        };
        let client = fresh_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("http://{rest}/v2/health/ready"))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false);
            if ready {
                return server;
            }
            assert!(Instant::now() < deadline, "server not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// How many times the server has logged that it reached its connection limit
    /// (the first time, then at most once per 10 s while it stays there).
    fn limit_lines(&self) -> usize {
        self.log().matches("connection limit reached").count()
    }

    /// Lets an attack that began at `started` go on: for [`ATTACK`] at least, and
    /// until the server logs anew that it reached its limit ([`AT_THE_LIMIT`]
    /// more then), or [`REACH_LIMIT_WITHIN`] passes. Whether it logged.
    async fn attack_until_the_limit(&self, started: Instant, lines_before: usize) -> bool {
        let mut reached: Option<Duration> = None;
        loop {
            let elapsed = started.elapsed();
            if reached.is_none() && self.limit_lines() > lines_before {
                reached = Some(elapsed);
            }
            let over = match reached {
                Some(at) => elapsed >= ATTACK.max(at + AT_THE_LIMIT),
                None => elapsed >= REACH_LIMIT_WITHIN,
            };
            if over {
                eprintln!("the attack lasted {elapsed:?}; the limit was logged after {reached:?}");
                return reached.is_some();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A client that opens a new connection for every request, so each one has to be
/// accepted past the attackers.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(ANSWER_WITHIN)
        .build()
        .unwrap()
}

/// What the attacking connections do.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Half of an HTTP/1 request head, then silence.
    HalfSentRequest,
    /// The HTTP/2 preface and an empty SETTINGS frame, then silence.
    IdleHttp2,
    /// A gRPC call whose request message never comes.
    UnfinishedGrpcCall,
}

impl Kind {
    fn flood_clients_name(self) -> &'static str {
        match self {
            Kind::HalfSentRequest => "http1",
            Kind::IdleHttp2 => "h2",
            Kind::UnfinishedGrpcCall => "grpc",
        }
    }

    async fn attack(self, addr: SocketAddr) {
        match self {
            Kind::HalfSentRequest => half_sent_request(addr).await,
            Kind::IdleHttp2 => idle_http2(addr).await,
            Kind::UnfinishedGrpcCall => unfinished_grpc_call(addr).await,
        }
    }
}

/// Attackers at work: tasks of this test, or processes of `tests/flood_clients.py`.
enum Attack {
    Tasks(tokio::task::JoinSet<()>, CancellationToken),
    Processes(FloodProcesses),
}

/// The attacking processes this test started; any still running when this is
/// dropped (a failed assertion) are killed, each by its own handle.
struct FloodProcesses(Vec<Child>);

impl Drop for FloodProcesses {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Attack {
    /// Keeps `scale.attackers` connections of `kind` open against `addr` until
    /// [`Attack::end`] is called (processes end by themselves after
    /// [`ATTACK_PROCESS_BOUND`] at the latest).
    fn start(scale: Scale, kind: Kind, addr: SocketAddr) -> Attack {
        if scale.processes == 0 {
            let stop = CancellationToken::new();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..scale.attackers {
                let stop = stop.clone();
                tasks.spawn(async move {
                    while !stop.is_cancelled() {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = kind.attack(addr) => {}
                        }
                    }
                });
            }
            return Attack::Tasks(tasks, stop);
        }
        let processes = (0..scale.processes)
            .map(|i| {
                // At a lower priority: the attackers stand for clients on other
                // machines. Sharing this machine's CPUs on equal terms they would
                // take most of them, and the kernel's accept queue would fill
                // however little the server spends per connection. Not the lowest:
                // on a busy machine they must still fill the server's connections.
                Command::new("nice")
                    .args(["-n", "10", "python3"])
                    .arg(root_path("tests/flood_clients.py"))
                    .args(["--target", &addr.to_string()])
                    .args(["--kind", kind.flood_clients_name()])
                    .args([
                        "--connections",
                        &(scale.attackers / scale.processes).to_string(),
                    ])
                    // 127.0.0.2, 127.0.0.3, ...: each process its own ephemeral ports.
                    .args(["--source", &format!("127.0.0.{}", i + 2)])
                    .args(["--seconds", &ATTACK_PROCESS_BOUND.as_secs_f64().to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("python3 runs tests/flood_clients.py")
            })
            .collect();
        Attack::Processes(FloodProcesses(processes))
    }

    /// Stops the attackers; for processes, gives the most connections they had open
    /// at once, added up.
    async fn end(self) -> Option<usize> {
        match self {
            Attack::Tasks(tasks, stop) => {
                stop.cancel();
                tasks.join_all().await;
                None
            }
            Attack::Processes(mut processes) => {
                // SIGTERM, by the pid of each process this test started (not yet
                // waited for, so its pid is still its own): each stops, prints what it
                // did and exits.
                for child in &processes.0 {
                    // SAFETY: kill(2) reads nothing of this process's memory.
                    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                }
                let mut most_open = 0;
                for child in std::mem::take(&mut processes.0) {
                    // The pipe is read to the end.
                    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
                        .await
                        .unwrap()
                        .unwrap();
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    assert!(output.status.success(), "flood_clients.py: {stderr}");
                    let stats: Value = serde_json::from_slice(&output.stdout)
                        .unwrap_or_else(|e| panic!("flood_clients.py: {e}: {stderr}"));
                    eprintln!("attacking process: {stats}");
                    most_open += stats["most_open"].as_u64().unwrap() as usize;
                }
                Some(most_open)
            }
        }
    }
}

/// Connects, or gives up after a moment (a full listen backlog drops the SYN).
async fn connect(addr: SocketAddr) -> Option<TcpStream> {
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Some(stream),
        _ => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// Reads until the server closes the connection (at most 30 s).
async fn until_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Half of an HTTP/1 request, then silence.
async fn half_sent_request(addr: SocketAddr) {
    if let Some(mut stream) = connect(addr).await {
        let _ = stream
            .write_all(b"POST /v1/models/iris_lr:predict HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await;
        until_closed(&mut stream).await;
    }
}

/// The HTTP/2 preface and an empty SETTINGS frame, then silence.
async fn idle_http2(addr: SocketAddr) {
    if let Some(mut stream) = connect(addr).await {
        let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let _ = stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
        until_closed(&mut stream).await;
    }
}

/// A gRPC call whose request message never comes.
async fn unfinished_grpc_call(addr: SocketAddr) {
    let Some(stream) = connect(addr).await else {
        return;
    };
    let Ok(Ok((mut client, connection))) =
        tokio::time::timeout(Duration::from_secs(5), h2::client::handshake(stream)).await
    else {
        return;
    };
    let driver = tokio::spawn(connection);
    let request = http::Request::post(format!(
        "http://{addr}/inference.GRPCInferenceService/ModelInfer"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let mut open = None;
    if let Ok(Ok(ready)) = tokio::time::timeout(Duration::from_secs(5), client.ready()).await {
        client = ready;
        // end_of_stream false: the message is never sent; the answer never read.
        open = client.send_request(request, false).ok();
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), driver).await;
    drop(open);
}

/// Predicts over fresh connections until `stop`; every answer must be a 200 within
/// [`ANSWER_WITHIN`]. Returns how many were answered and the slowest.
async fn keep_predicting_rest(rest: SocketAddr, stop: CancellationToken) -> (usize, Duration) {
    let client = fresh_client();
    let (mut answered, mut slowest) = (0, Duration::ZERO);
    while !stop.is_cancelled() {
        let started = Instant::now();
        let r = client
            .post(format!("http://{rest}/v1/models/iris_lr:predict"))
            .json(&json!({ "instances": [[5.1, 3.5, 1.4, 0.2]] }))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "a legitimate REST request failed under attack after {:?}: {e:?}",
                    started.elapsed()
                )
            });
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        slowest = slowest.max(started.elapsed());
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (answered, slowest)
}

/// A REST predict whose body comes in ten pieces 50 ms apart (within the body read
/// timeout, and within the silence after which the connection limit may close a
/// connection whose request waits for its body, `EVICT_STALLED_BODY_AFTER`): it must
/// be answered.
async fn slow_upload(rest: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = br#"{"instances": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]}"#;
    let started = Instant::now();
    let mut stream = tokio::time::timeout(ANSWER_WITHIN, tokio::net::TcpStream::connect(rest))
        .await
        .expect("a slow upload connected within the bound")
        .unwrap();
    stream
        .write_all(
            format!(
                "POST /v1/models/iris_lr:predict HTTP/1.1\r\nHost: x\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    for piece in body.chunks(body.len().div_ceil(10)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream
            .write_all(piece)
            .await
            .unwrap_or_else(|e| panic!("a slow upload was cut after {:?}: {e}", started.elapsed()));
    }
    let mut answer = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, stream.read_to_end(&mut answer))
        .await
        .expect("a slow upload answered within the bound")
        .unwrap_or_else(|e| panic!("a slow upload was cut after {:?}: {e}", started.elapsed()));
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "a slow upload under attack: {answer}"
    );
}

fn iris_row() -> tfs::PredictRequest {
    tfs::PredictRequest {
        model_spec: Some(ModelSpec {
            name: "iris_lr".into(),
            ..Default::default()
        }),
        inputs: [(
            "input".to_string(),
            TensorProto {
                dtype: Dt::DtFloat as i32,
                tensor_shape: Some(TensorShapeProto {
                    dim: [1i64, 4]
                        .iter()
                        .map(|&size| tensor_shape_proto::Dim {
                            size,
                            name: String::new(),
                        })
                        .collect(),
                    unknown_rank: false,
                }),
                float_val: vec![5.1, 3.5, 1.4, 0.2],
                ..Default::default()
            },
        )]
        .into(),
        output_filter: vec![],
    }
}

/// Like [`keep_predicting_rest`] over gRPC, a new connection (channel) per call.
async fn keep_predicting_grpc(grpc: SocketAddr, stop: CancellationToken) -> (usize, Duration) {
    let (mut answered, mut slowest) = (0, Duration::ZERO);
    while !stop.is_cancelled() {
        let started = Instant::now();
        let call = async {
            let mut client = PredictionServiceClient::connect(format!("http://{grpc}")).await?;
            client.predict(iris_row()).await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        match tokio::time::timeout(ANSWER_WITHIN, call).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("a legitimate gRPC call failed under attack: {e}"),
            Err(_) => panic!("a legitimate gRPC call was not answered within {ANSWER_WITHIN:?}"),
        }
        slowest = slowest.max(started.elapsed());
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (answered, slowest)
}

/// Samples the server's open descriptors until `stop`; gives the most seen.
fn watch_fds(server: &ChildServer, stop: CancellationToken) -> tokio::task::JoinHandle<usize> {
    let pid = server.pid;
    let most = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let n = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0);
            most.fetch_max(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        most.load(Ordering::Relaxed)
    })
}

/// Descriptors the server must always have free: its reserve is at least 256, so
/// staying this far below the limit shows the connections never took the reserve.
const FREE_FDS_KEPT: usize = 128;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floods_of_stalled_connections_do_not_starve_the_server() {
    attacks_do_not_starve_the_server(SMALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floods_that_outlast_no_timeout_do_not_starve_the_server() {
    attacks_do_not_starve_the_server(LONG_TIMEOUTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floods_of_24000_connections_from_four_processes_do_not_starve_the_server() {
    attacks_do_not_starve_the_server(LARGE).await;
}

/// The three attacks one after the other against one server, each while legitimate
/// clients keep predicting; during the first a new model version is loaded.
async fn attacks_do_not_starve_the_server(scale: Scale) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let in_process = if scale.processes == 0 {
        2 * scale.attackers as u64 + 256
    } else {
        0
    };
    raise_own_fd_limit(scale.server_fds.max(in_process));
    let server = ChildServer::start(scale).await;
    eprintln!(
        "{scale:?}: server idles with {} descriptors",
        server.open_fds()
    );
    let limit = scale.server_fds as usize - FREE_FDS_KEPT;

    // Whether each attack brought the server to its limit (logged it anew).
    let mut reached = Vec::new();

    // 1. Half-sent HTTP/1 requests on the REST port, and a new model version.
    let stop = CancellationToken::new();
    let fds = watch_fds(&server, stop.clone());
    let rest = server.rest;
    let (started, lines) = (Instant::now(), server.limit_lines());
    let attack = Attack::start(scale, Kind::HalfSentRequest, rest);
    let legit = tokio::spawn(keep_predicting_rest(rest, stop.clone()));
    let uploads = tokio::spawn(async move {
        // Once the flood has filled the server: uploads that pause between pieces
        // keep their connections while idle ones are closed around them.
        tokio::time::sleep(ATTACK / 4).await;
        for _ in 0..3 {
            slow_upload(rest).await;
        }
    });
    tokio::time::sleep(ATTACK / 2).await;
    install_model(
        server.repo.path(),
        "iris_lr",
        2,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let client = fresh_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A request for version 2 answers once the watcher has loaded it.
        let r = client
            .post(format!(
                "http://{rest}/v1/models/iris_lr/versions/2:predict"
            ))
            .json(&json!({ "instances": [[5.1, 3.5, 1.4, 0.2]] }))
            .send()
            .await
            .expect("a legitimate request under attack");
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "version 2 not served within 30 s under attack: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reached.push(server.attack_until_the_limit(started, lines).await);
    stop.cancel();
    let (answered, slowest) = legit.await.unwrap();
    uploads.await.unwrap();
    let attackers_open = attack.end().await;
    let most = fds.await.unwrap();
    eprintln!(
        "half-sent HTTP/1: {answered} answered, slowest {slowest:?}, at most {most} fds, \
         attackers open at most {attackers_open:?}"
    );
    assert!(answered >= 5, "only {answered} requests answered");
    assert!(most < limit, "{most} descriptors open");
    let status: Value = client
        .get(format!("http://{rest}/v1/models/iris_lr/versions/2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["model_version_status"][0]["state"], "AVAILABLE",
        "{status}"
    );

    // 2. Idle HTTP/2 connections on the gRPC port.
    let stop = CancellationToken::new();
    let fds = watch_fds(&server, stop.clone());
    let grpc = server.grpc;
    let (started, lines) = (Instant::now(), server.limit_lines());
    let attack = Attack::start(scale, Kind::IdleHttp2, grpc);
    let legit = tokio::spawn(keep_predicting_grpc(grpc, stop.clone()));
    reached.push(server.attack_until_the_limit(started, lines).await);
    stop.cancel();
    let (answered, slowest) = legit.await.unwrap();
    let attackers_open = attack.end().await;
    let most = fds.await.unwrap();
    eprintln!(
        "idle HTTP/2: {answered} answered, slowest {slowest:?}, at most {most} fds, \
         attackers open at most {attackers_open:?}"
    );
    assert!(answered >= 5, "only {answered} calls answered");
    assert!(most < limit, "{most} descriptors open");

    // 3. gRPC calls opened and never finished (nor their answers read).
    let stop = CancellationToken::new();
    let fds = watch_fds(&server, stop.clone());
    let (started, lines) = (Instant::now(), server.limit_lines());
    let attack = Attack::start(scale, Kind::UnfinishedGrpcCall, grpc);
    let legit = tokio::spawn(keep_predicting_grpc(grpc, stop.clone()));
    let legit_rest = tokio::spawn(keep_predicting_rest(rest, stop.clone()));
    reached.push(server.attack_until_the_limit(started, lines).await);
    stop.cancel();
    let (answered, slowest) = legit.await.unwrap();
    let (answered_rest, slowest_rest) = legit_rest.await.unwrap();
    let attackers_open = attack.end().await;
    let most = fds.await.unwrap();
    eprintln!(
        "unfinished gRPC calls: {answered} gRPC answered (slowest {slowest:?}), \
         {answered_rest} REST (slowest {slowest_rest:?}), at most {most} fds, \
         attackers open at most {attackers_open:?}"
    );
    // A call may wait for a connection whose request stalled to be closed (1 s of
    // silence at the limit, EVICT_STALLED_BODY_AFTER): fewer gRPC calls than in the
    // other attacks.
    assert!(
        answered >= 3 && answered_rest >= 5,
        "only {answered} gRPC calls and {answered_rest} REST requests answered"
    );
    assert!(most < limit, "{most} descriptors open");

    let log = server.log();
    assert!(
        !log.contains("Too many open files"),
        "the server ran out of descriptors:\n{log}"
    );
    eprintln!("each attack logged the connection limit anew: {reached:?}");
    assert!(
        log.contains("connection limit reached"),
        "the attacks never reached the connection limit, so they proved nothing:\n{log}"
    );
    let metrics = fresh_client()
        .get(format!("http://{rest}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let evicted = metric_value(&metrics, "ferroserve_connections_evicted_total", &[]);
    eprintln!("idle connections closed to make room: {evicted}");
    assert!(evicted > 0.0, "no idle connection was closed at the limit");
}

/// A byte of a trickled body every this long: never silent for the body read
/// timeout, nor for the silence after which the limit may close a connection
/// waiting for its body (`EVICT_STALLED_BODY_AFTER`, 1 s), yet 2.5 bytes/s, far
/// below the minimum rate (`MIN_BODY_BYTES_PER_SEC`, 500).
const TRICKLE_EVERY: Duration = Duration::from_millis(400);

/// The head of a REST predict whose body (announced as 100,000 bytes) trickles.
const TRICKLED_HEAD: &[u8] = b"POST /v1/models/iris_lr:predict HTTP/1.1\r\nHost: x\r\n\
    Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"instances\": [";

/// Sends [`TRICKLED_HEAD`] over `stream`, then a byte of its body every `every`,
/// until the server closes the connection; what the server answered. Dropped, it
/// closes the connection (the writer's task with it).
async fn trickled_rest_body(stream: TcpStream, every: Duration) -> String {
    let (mut read, mut write) = stream.into_split();
    let writer = AbortOnDropHandle::new(tokio::spawn(async move {
        if write.write_all(TRICKLED_HEAD).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(every).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    }));
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the server closes (or resets) the connection.
    while let Ok(n @ 1..) = read.read(&mut buf).await {
        answer.extend_from_slice(&buf[..n]);
    }
    drop(writer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The 5-byte gRPC prefix of a 100,000-byte request message, which never comes whole.
const GRPC_MESSAGE_PREFIX: [u8; 5] = [0, 0, 0x01, 0x86, 0xA0];

/// A gRPC Predict call over `stream` (raw HTTP/2) whose request message never comes
/// (`trickle` `None`), or comes a byte every `trickle`. Its status and message once
/// the server ends it; `None` when the connection closed first. Dropped, it closes
/// the connection.
async fn unfinished_grpc_predict(
    stream: TcpStream,
    addr: SocketAddr,
    trickle: Option<Duration>,
) -> Option<(String, String)> {
    let (client, connection) = tokio::time::timeout(ANSWER_WITHIN, h2::client::handshake(stream))
        .await
        .ok()?
        .ok()?;
    let mut driver = AbortOnDropHandle::new(tokio::spawn(connection));
    let mut client = tokio::time::timeout(ANSWER_WITHIN, client.ready())
        .await
        .ok()?
        .ok()?;
    let request = http::Request::post(format!(
        "http://{addr}/tensorflow.serving.PredictionService/Predict"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut send) = client.send_request(request, false).ok()?;
    let _sender = AbortOnDropHandle::new(tokio::spawn(async move {
        if let Some(every) = trickle {
            let prefix = bytes::Bytes::from_static(&GRPC_MESSAGE_PREFIX);
            if send.send_data(prefix, false).is_err() {
                return;
            }
            loop {
                tokio::time::sleep(every).await;
                if send
                    .send_data(bytes::Bytes::from_static(b"\n"), false)
                    .is_err()
                {
                    return;
                }
            }
        }
        // Holds the stream open, sending nothing.
        std::future::pending::<()>().await;
        drop(send);
    }));
    let status = async {
        let (parts, mut body) = response.await.ok()?.into_parts();
        let text = |headers: &http::HeaderMap, name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).replace("%20", " "))
        };
        if let Some(status) = text(&parts.headers, "grpc-status") {
            let message = text(&parts.headers, "grpc-message").unwrap_or_default();
            return Some((status, message));
        }
        while let Some(data) = body.data().await {
            data.ok()?;
        }
        let trailers = body.trailers().await.ok()??;
        Some((
            text(&trailers, "grpc-status")?,
            text(&trailers, "grpc-message").unwrap_or_default(),
        ))
    };
    tokio::select! {
        outcome = status => outcome,
        _ = &mut driver => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_trickled_bodies_at_the_limit_does_not_lock_out_other_clients() {
    // Connections open at most, REST and gRPC together; two trickling attackers for
    // each, a quarter of them gRPC calls.
    const LIMIT: usize = 16;
    let _alone = ONE_AT_A_TIME.lock().await;
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris_lr",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    // The default timeouts (a 30 s body read timeout, longer than the attack): only
    // the limit closing the trickling connections lets the other clients in.
    let settings = ferroserve::settings::Settings {
        max_connections: Some(LIMIT),
        ..common::test_settings(repo.path())
    };
    let server = common::TestServer::start_with(settings).await;
    let (rest, grpc) = (server.rest_addr, server.grpc_addr.unwrap());

    let stop = CancellationToken::new();
    let connected = Arc::new(AtomicUsize::new(0));
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..2 * LIMIT {
        let (stop, connected) = (stop.clone(), connected.clone());
        attackers.spawn(async move {
            while !stop.is_cancelled() {
                let addr = if i % 4 == 3 { grpc } else { rest };
                let attack = async {
                    let Some(stream) = connect(addr).await else {
                        return;
                    };
                    connected.fetch_add(1, Ordering::Relaxed);
                    if addr == grpc {
                        unfinished_grpc_predict(stream, addr, Some(TRICKLE_EVERY)).await;
                    } else {
                        trickled_rest_body(stream, TRICKLE_EVERY).await;
                    }
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = attack => {}
                }
            }
        });
    }
    // The flood fills the server first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let legit = tokio::spawn(keep_predicting_rest(rest, stop.clone()));
    let legit_grpc = tokio::spawn(keep_predicting_grpc(grpc, stop.clone()));
    // Uploads that pause between pieces are real clients: never closed for it.
    let uploads = tokio::spawn(async move {
        for _ in 0..3 {
            slow_upload(rest).await;
        }
    });
    tokio::time::sleep(ATTACK).await;
    stop.cancel();
    let (answered, slowest) = legit.await.unwrap();
    let (answered_grpc, slowest_grpc) = legit_grpc.await.unwrap();
    uploads.await.unwrap();
    attackers.join_all().await;
    let connected = connected.load(Ordering::Relaxed);
    eprintln!(
        "trickled bodies: {answered} REST answered (slowest {slowest:?}), {answered_grpc} \
         gRPC (slowest {slowest_grpc:?}); {connected} attacking connections"
    );
    // Each new connection waits behind the trickling ones queued before it, each of
    // which holds its place for a second or so: fewer answers than in other floods.
    assert!(
        answered >= 3 && answered_grpc >= 3,
        "only {answered} REST requests and {answered_grpc} gRPC calls answered"
    );
    // More connections than attackers: the server closed trickling ones (long before
    // their body read timeout) and they came back.
    assert!(connected > 2 * LIMIT, "{connected} attacking connections");
    server.stop().await;
}

// ---- one timeout at a time, on an in-process server ----

async fn short_timeouts_server() -> (common::TestServer, tempfile::TempDir) {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris_lr",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let settings = ferroserve::settings::Settings {
        header_read_timeout: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(2),
        body_read_timeout: Duration::from_secs(1),
        max_header_bytes: 16 * 1024,
        ..common::test_settings(repo.path())
    };
    (common::TestServer::start_with(settings).await, repo)
}

/// Reads an HTTP/1 answer until the server closes the connection; `None` when it
/// closed without answering. Fails past `within`.
async fn answer(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut text = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut text))
        .await
        .expect("the server did not close the connection in time")
        .ok();
    (!text.is_empty()).then(|| String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_a_json_408() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (server, _repo) = short_timeouts_server().await;
    // TF Serving's JSON, and a V2 binary body (read in chunks, not as one buffer).
    let heads: [&[u8]; 2] = [
        b"POST /v1/models/iris_lr:predict HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"instances\":",
        b"POST /v2/models/iris_lr/infer HTTP/1.1\r\nHost: x\r\n\
          Inference-Header-Content-Length: 18\r\nContent-Length: 100\r\n\r\n{\"inputs\": []}    \x01\x02",
    ];
    for head in heads {
        let mut stream = TcpStream::connect(server.rest_addr).await.unwrap();
        stream.write_all(head).await.unwrap();
        let started = Instant::now();
        let text = answer(&mut stream, Duration::from_secs(10)).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let error: Value = serde_json::from_str(body).unwrap();
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains("stopped arriving"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_a_json_408() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (server, _repo) = short_timeouts_server().await;
    // A byte every 200 ms: never silent for the body read timeout (1 s), 5 bytes/s.
    let stream = TcpStream::connect(server.rest_addr).await.unwrap();
    let started = Instant::now();
    let text = tokio::time::timeout(
        Duration::from_secs(10),
        trickled_rest_body(stream, Duration::from_millis(200)),
    )
    .await
    .expect("a trickled body was still being read after 10 s");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let error: Value = serde_json::from_str(body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("too slowly"),
        "{error}"
    );
    // The read timeout, plus 2 ms per byte received.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_message_that_stops_or_trickles_is_deadline_exceeded() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (server, _repo) = short_timeouts_server().await;
    let grpc = server.grpc_addr.unwrap();
    // Never sent, and a byte every 200 ms: DEADLINE_EXCEEDED (4), as the REST 408 is.
    for (trickle, why) in [
        (None, "stopped arriving for 1s"),
        (Some(Duration::from_millis(200)), "too slowly"),
    ] {
        let stream = TcpStream::connect(grpc).await.unwrap();
        let started = Instant::now();
        let (status, message) = tokio::time::timeout(
            Duration::from_secs(10),
            unfinished_grpc_predict(stream, grpc, trickle),
        )
        .await
        .unwrap_or_else(|_| panic!("{trickle:?}: the call was still open after 10 s"))
        .unwrap_or_else(|| panic!("{trickle:?}: the connection closed without a status"));
        assert_eq!(status, "4", "{trickle:?}: {message}");
        assert!(message.contains(why), "{trickle:?}: {message}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{trickle:?}: {took:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_heads_and_idle_connections_are_closed() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (server, _repo) = short_timeouts_server().await;
    // A connection that sends nothing, and one that sends half a head: closed
    // without an answer after the header read timeout (1 s).
    for sent in [&b""[..], b"GET /v2/health/live HTTP/1.1\r\nHo"] {
        let mut stream = TcpStream::connect(server.rest_addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let started = Instant::now();
        assert_eq!(answer(&mut stream, Duration::from_secs(10)).await, None);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
    // A keep-alive connection stays open between requests for the idle timeout
    // (2 s, longer than the header timeout), then closes.
    let mut stream = TcpStream::connect(server.rest_addr).await.unwrap();
    let request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(request).await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "still open after 1.5 s idle"
    );
    let started = Instant::now();
    assert_eq!(answer(&mut stream, Duration::from_secs(10)).await, None);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "{took:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_the_limit_are_431() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (server, _repo) = short_timeouts_server().await;
    let mut stream = TcpStream::connect(server.rest_addr).await.unwrap();
    let big = "a".repeat(20 * 1024);
    let request = format!("GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let text = answer(&mut stream, Duration::from_secs(10)).await.unwrap();
    // hyper writes this answer itself, before any of our code sees the request:
    // it has no body.
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    // Under the limit is fine.
    let (status, _) = server.get("/v2/health/live").await;
    assert_eq!(status, 200);
    server.stop().await;
}
