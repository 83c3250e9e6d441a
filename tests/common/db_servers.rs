//! Throwaway PostgreSQL and MariaDB servers for the store tests: the real servers
//! (Debian's `postgresql` and `mariadb-server`, which `scripts/setup.sh` installs),
//! started on a free loopback port with their data in a temporary directory, and
//! ended (only the process started here, by its handle) and removed on drop. Nothing
//! depends on a database the machine happens to run.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::child::free_port;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Postgres,
    MariaDb,
}

/// A running (or stopped, restartable) database server.
pub struct DbServer {
    pub kind: DbKind,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Run as this user (PostgreSQL refuses to run as root).
    uid: Option<(u32, u32)>,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The MariaDB user the tests connect as, with a password (so that its redaction
/// in messages is checked too).
pub const MARIADB_USER: &str = "ferro";
pub const MARIADB_PASSWORD: &str = "s3cret-pw";

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's own user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of a system user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name))
            .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
            .flatten()
    })
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown {}", path.display());
}

fn run_checked(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl DbServer {
    /// Initialises a data directory and starts the server; waits until it answers.
    pub fn start(kind: DbKind) -> DbServer {
        let dir = tempfile::tempdir().unwrap();
        let uid = match kind {
            DbKind::Postgres if is_root() => {
                Some(user_ids("postgres").expect("the postgres user (Debian's postgresql)"))
            }
            _ => None,
        };
        if let Some(ids) = uid {
            chown_tree(dir.path(), ids);
        }
        let data = dir.path().join("data");
        match kind {
            DbKind::Postgres => {
                let mut init = Command::new(format!("{PG_BIN}/initdb"));
                init.arg("-D").arg(&data).args([
                    "-A",
                    "trust",
                    "-U",
                    "ferro",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]);
                if let Some((u, g)) = uid {
                    init.uid(u).gid(g);
                }
                run_checked(&mut init, "initdb");
            }
            DbKind::MariaDb => {
                // Its own temporary directory: the server's temporary tables live
                // there, not in the machine's /tmp, where anything else may clean up.
                std::fs::create_dir(dir.path().join("tmp")).unwrap();
                run_checked(
                    Command::new("mariadb-install-db")
                        .arg("--no-defaults")
                        .arg(format!("--datadir={}", data.display()))
                        .arg(format!("--tmpdir={}", dir.path().join("tmp").display()))
                        .arg("--auth-root-authentication-method=normal")
                        .arg("--skip-test-db")
                        .arg("--user=root"),
                    "mariadb-install-db",
                );
            }
        }
        let mut server = DbServer {
            kind,
            port: free_port(),
            dir,
            child: None,
            uid,
        };
        server.launch();
        if kind == DbKind::MariaDb {
            let sql = format!(
                "CREATE USER '{MARIADB_USER}'@'127.0.0.1' IDENTIFIED BY '{MARIADB_PASSWORD}'; \
                 GRANT ALL ON *.* TO '{MARIADB_USER}'@'127.0.0.1'; \
                 CREATE DATABASE ferroserve;"
            );
            run_checked(
                Command::new("mariadb")
                    .arg("--no-defaults")
                    .arg(format!("--socket={}", server.socket().display()))
                    .args(["-u", "root", "-e", &sql]),
                "creating the MariaDB user",
            );
        }
        server
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// Starts the server process on its port and waits until it answers (60 s).
    fn launch(&mut self) {
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut command = match self.kind {
            DbKind::Postgres => {
                let mut c = Command::new(format!("{PG_BIN}/postgres"));
                c.arg("-D")
                    .arg(&data)
                    .args(["-p", &self.port.to_string()])
                    .args(["-c", "listen_addresses=127.0.0.1"])
                    .arg("-c")
                    .arg(format!(
                        "unix_socket_directories={}",
                        self.dir.path().display()
                    ))
                    .args(["-c", "fsync=off", "-c", "max_connections=50"]);
                if let Some((u, g)) = self.uid {
                    c.uid(u).gid(g);
                }
                c
            }
            DbKind::MariaDb => {
                let mut c = Command::new("mariadbd");
                c.arg("--no-defaults")
                    .arg(format!("--datadir={}", data.display()))
                    .arg(format!(
                        "--tmpdir={}",
                        self.dir.path().join("tmp").display()
                    ))
                    .arg(format!("--port={}", self.port))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!("--socket={}", self.socket().display()))
                    .arg(format!(
                        "--pid-file={}",
                        self.dir.path().join("mysqld.pid").display()
                    ))
                    .args([
                        "--user=root",
                        "--skip-log-bin",
                        "--innodb-buffer-pool-size=16M",
                        "--innodb-log-file-size=8M",
                        "--performance-schema=OFF",
                    ]);
                c
            }
        };
        command
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        self.child = Some(command.spawn().expect("start the database server"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.answers() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "the {:?} server exited ({status}) at start:\n{}",
                    self.kind,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the {:?} server did not answer within 60 s:\n{}",
                self.kind,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn answers(&self) -> bool {
        let status = match self.kind {
            DbKind::Postgres => Command::new(format!("{PG_BIN}/pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status(),
            DbKind::MariaDb => Command::new("mariadb-admin")
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.socket().display()))
                .args(["-u", "root", "--connect-timeout=1", "ping"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status(),
        };
        status.is_ok_and(|s| s.success())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The URL ferroserve is given.
    pub fn url(&self) -> String {
        match self.kind {
            DbKind::Postgres => format!("postgres://ferro@127.0.0.1:{}/postgres", self.port),
            DbKind::MariaDb => format!(
                "mysql://{MARIADB_USER}:{MARIADB_PASSWORD}@127.0.0.1:{}/ferroserve",
                self.port
            ),
        }
    }

    /// Kills the server at once (SIGKILL, as a crash), and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // PostgreSQL's backends notice their postmaster died and leave; the port is
        // free once they have.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "the port stayed open after kill");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        // A stale postmaster.pid names a dead process; PostgreSQL starts anyway.
        self.launch();
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
