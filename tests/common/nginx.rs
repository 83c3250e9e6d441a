//! A throwaway real nginx for tests (Debian's package; `scripts/setup.sh` installs
//! it): a load balancer on a free loopback port in front of the given upstreams,
//! with its configuration, logs, temporary files and pid file in a temporary
//! directory; stopped when dropped: SIGTERM to the master (this child, by its
//! pid), which takes its worker down with it, and SIGKILL only if it has not
//! exited within five seconds (a SIGKILLed master leaves its worker running).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";

pub struct Nginx {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of a child this handle owns and has not
        // yet waited for, so the pid cannot have been reused.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Balances `upstreams` (`127.0.0.1:PORT`) round-robin over kept-alive
    /// connections. A request that meets a closed connection, a refused connect
    /// or a 502/503 goes to the next upstream: predictions are idempotent, so
    /// POSTs are retried too (`non_idempotent`).
    pub fn start(upstreams: &[String]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = super::child::free_port();
            let servers: String = upstreams
                .iter()
                .map(|u| format!("        server {u} max_fails=0;\n"))
                .collect();
            let p = dir.path().display();
            let conf = format!(
                "worker_processes 1;\n\
                 daemon off;\n\
                 master_process on;\n\
                 pid {p}/nginx.pid;\n\
                 error_log {p}/error.log warn;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n\
                     access_log off;\n\
                     client_body_temp_path {p}/body;\n\
                     proxy_temp_path {p}/proxy;\n\
                     fastcgi_temp_path {p}/fastcgi;\n\
                     uwsgi_temp_path {p}/uwsgi;\n\
                     scgi_temp_path {p}/scgi;\n\
                     client_max_body_size 64m;\n\
                     upstream ferroserve {{\n{servers}        keepalive 32;\n    }}\n\
                     server {{\n\
                         listen 127.0.0.1:{port};\n\
                         location / {{\n\
                             proxy_pass http://ferroserve;\n\
                             proxy_http_version 1.1;\n\
                             proxy_set_header Connection \"\";\n\
                             proxy_set_header Host $http_host;\n\
                             proxy_next_upstream error timeout http_502 http_503 non_idempotent;\n\
                             proxy_next_upstream_tries 3;\n\
                             proxy_read_timeout 60s;\n\
                         }}\n\
                     }}\n\
                 }}\n"
            );
            std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
            let mut command = Command::new(NGINX);
            command
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Run as root, nginx would hand its workers to `nobody`, who cannot
            // write the temporary directory: keep them as the test's user.
            if is_root() {
                let conf = std::fs::read_to_string(dir.path().join("nginx.conf")).unwrap();
                std::fs::write(
                    dir.path().join("nginx.conf"),
                    format!("user root root;\n{conf}"),
                )
                .unwrap();
            }
            let mut child = command.spawn().expect("nginx (Debian's package) runs");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx { port, child, dir };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    // The port was taken between the probe and the bind: try another.
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "nginx did not listen: {}",
                    std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.wait();
        }
        panic!("nginx did not start on a free port in 5 tries");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Its error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
