//! A ferroserve process started by a test (the real binary, for command-line
//! behaviour): its output goes to a log file shown when it fails to become ready,
//! and it is killed, by its own handle, when dropped.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` consecutive ports for `--worker-ports`, below Linux's ephemeral range
/// (32768 and up), each free when chosen and none handed out twice in one test
/// process. A port the system picked ([`free_port`]) is one it also picks as the
/// local port of outgoing connections: any client of any test could hold it a moment
/// later, and a worker port held so made a deploy answer "no free worker port".
pub fn worker_ports(n: u16) -> (u16, u16) {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = u32::from(n.max(1));
    // Apart between processes too (two test binaries at once, a rerun).
    let base = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..1000 {
        let first = LOW + (base + NEXT.fetch_add(n, Ordering::Relaxed)) % (SPAN - n);
        let free = (first..first + n).all(|p| TcpListener::bind(("127.0.0.1", p as u16)).is_ok());
        if free {
            return (first as u16, (first + n - 1) as u16);
        }
    }
    panic!("no {n} free ports between {LOW} and {}", LOW + SPAN);
}

pub struct ChildServer {
    child: Child,
    /// Where its REST API answers.
    pub rest: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildServer {
    /// Starts `command` (ONNX Runtime's library passed on) and waits until
    /// `/v2/health/ready` on `rest` answers 200.
    pub async fn start(command: Command, rest: SocketAddr) -> ChildServer {
        Self::try_start(command, rest)
            .await
            .unwrap_or_else(|log| panic!("{log}"))
    }

    /// [`ChildServer::start`], answering why the server exited before it was
    /// ready (its log) instead of failing: a caller that chose its ports can try
    /// others when one was taken in the meantime ("Address already in use").
    pub async fn try_start(mut command: Command, rest: SocketAddr) -> Result<ChildServer, String> {
        let log = tempfile::NamedTempFile::new().unwrap();
        if let Some(ort) = super::onnxruntime_path() {
            command.env("ORT_DYLIB_PATH", ort);
        }
        command
            .env("FERROSERVE_LOG", "warn")
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap());
        let child = command.spawn().expect("the server starts");
        let mut server = ChildServer { child, rest, log };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("http://{rest}/v2/health/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("the server exited ({status}): {}", server.log()));
            }
            assert!(
                Instant::now() < deadline,
                "the server was not ready within 60 s: {}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (the graceful stop) to this process only.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.rest)
    }
}

/// Runs `command` to its end (a command line the server refuses, `--version`):
/// its exit code and its output.
pub fn run_to_end(mut command: Command) -> (i32, String) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs a command line that must stop before serving: its exit code and its output
/// (stdout and stderr). A process still running after 30 s started instead: it is
/// killed and the test fails.
pub fn run_refused(mut command: Command) -> (i32, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    if let Some(ort) = super::onnxruntime_path() {
        command.env("ORT_DYLIB_PATH", ort);
    }
    command
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap());
    let mut child = command.spawn().expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = || std::fs::read_to_string(log.path()).unwrap_or_default();
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), output());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after 30 s instead of refusing to start:\n{}",
                output()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
