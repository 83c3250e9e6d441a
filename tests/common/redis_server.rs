//! A throwaway real `redis-server` for tests: on a free loopback port, with no
//! persistence, in a temporary directory; killed (only this child, by its handle)
//! when dropped. `scripts/setup.sh` installs the Debian package in CI.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::child::free_port;

/// How long a fresh server may take to answer PING.
const START_LIMIT: Duration = Duration::from_secs(20);

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let mut dir = tempfile::tempdir().unwrap();
        // A port taken between our probe and Redis's bind makes Redis exit: try again.
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                port,
                child: None,
                dir,
            };
            if server.spawn_and_wait() {
                return server;
            }
            dir = server.take_dir();
        }
        panic!("redis-server did not start on a free port in 5 tries");
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh server on the same port (after [`RedisServer::kill`]); its
    /// data is empty, as no persistence is configured.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_LIMIT;
        // The port may still be held for a moment by the exiting process.
        while !self.spawn_and_wait() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends one command (inline form) and returns the raw reply.
    pub fn command(&self, command: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{command}\r\n").as_bytes())?;
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// `SET key value` with a binary value (the RESP form: the inline one cannot
    /// carry arbitrary bytes); returns the raw reply.
    #[allow(dead_code)]
    pub fn set_bytes(&self, key: &str, value: &[u8]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut request = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
            key.len(),
            value.len()
        )
        .into_bytes();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
        stream.write_all(&request)?;
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// How many keys the server holds (`DBSIZE`).
    pub fn key_count(&self) -> u64 {
        let reply = self.command("DBSIZE").expect("DBSIZE");
        reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap_or_else(|_| panic!("unexpected DBSIZE reply {reply:?}"))
    }

    /// Starts the child and polls PING until it answers or the child exits.
    fn spawn_and_wait(&mut self) -> bool {
        let child = Command::new(redis_server_path())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run redis-server (Debian package redis-server; scripts/setup.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if matches!(self.command("PING"), Ok(r) if r.starts_with("+PONG")) {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() >= deadline {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `REDIS_SERVER` if set, else `redis-server` on the `PATH`.
fn redis_server_path() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}
