//! Enforcing a worker's limits on this machine: cgroup v1 memory and cpu
//! controllers where writable, else an address-space rlimit (memory) and CPU
//! affinity only (cpu); and reading a worker's RSS and CPU time from /proc.
//!
//! Invariant: what is reported as enforced is what was applied. A cgroup that cannot
//! be created or written leaves that limit to the fallback, and the fallback's name is
//! what the registry shows.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use super::resources::Limits;

/// How a limit is applied, as the registry and the deploy answer report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Not asked for.
    None,
    /// A cgroup v1 limit (memory.limit_in_bytes, cpu.cfs_quota_us): the kernel
    /// enforces it.
    Cgroup,
    /// RLIMIT_AS with headroom, plus the worker's own RSS watchdog.
    RlimitAndWatchdog,
    /// The worker's threads sized to ceil(cpu) and pinned to that many cores.
    Affinity,
    /// Affinity and a cgroup CPU quota.
    AffinityAndCgroup,
    /// The worker's request deadline.
    RequestDeadline,
}

impl Enforcement {
    pub fn is_enforced(self) -> bool {
        self != Enforcement::None
    }

    /// How the limit is held, in words for people (the console).
    pub fn describe(self) -> &'static str {
        match self {
            Enforcement::None => "not enforced",
            Enforcement::Cgroup => "enforced by a cgroup limit",
            Enforcement::RlimitAndWatchdog => {
                "enforced by an address-space rlimit and the worker's RSS watchdog"
            }
            Enforcement::Affinity => "enforced by pinning the worker to that many cores",
            Enforcement::AffinityAndCgroup => "enforced by pinned cores and a cgroup CPU quota",
            Enforcement::RequestDeadline => "enforced as the worker's request deadline",
        }
    }
}

/// The cgroup v1 directories a worker was put in, kept across its restarts and
/// removed when the deployment stops.
#[derive(Debug, Default)]
pub struct WorkerCgroups {
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
}

/// Where a v1 controller lives for this process: its mount plus this process's own
/// group in it (from /proc/self/cgroup), so that a worker's group nests under ours.
fn own_v1_group(controller: &str) -> Option<PathBuf> {
    let mount = Path::new("/sys/fs/cgroup").join(controller);
    if !mount.join("cgroup.procs").is_file() {
        return None;
    }
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.trim_start_matches('/').to_string())
    })?;
    let dir = mount.join(own);
    dir.is_dir().then_some(dir)
}

/// Creates `<own group>/<name>` under `controller` and writes `settings` into it;
/// `None` (and nothing left behind) when any step fails.
fn make_group(controller: &str, name: &str, settings: &[(&str, String)]) -> Option<PathBuf> {
    let dir = own_v1_group(controller)?.join(name);
    if std::fs::create_dir_all(&dir).is_err() {
        return None;
    }
    for (file, value) in settings {
        if let Err(e) = std::fs::write(dir.join(file), value) {
            tracing::warn!(dir = %dir.display(), file, "cannot write the cgroup setting: {e}");
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
    }
    Some(dir)
}

impl WorkerCgroups {
    /// Sets up the groups `limits` ask for, named `name` (unique per deployment).
    pub fn create(name: &str, limits: &Limits) -> WorkerCgroups {
        let memory = limits.memory.and_then(|bytes| {
            make_group(
                "memory",
                name,
                &[
                    ("memory.limit_in_bytes", bytes.to_string()),
                    // No swap beyond the limit where the kernel accounts swap.
                    ("memory.swappiness", "0".to_string()),
                ],
            )
            .or_else(|| {
                make_group(
                    "memory",
                    name,
                    &[("memory.limit_in_bytes", bytes.to_string())],
                )
            })
        });
        let cpu = limits.cpu.and_then(|cores| {
            let period: u64 = 100_000;
            let quota = ((cores * period as f64).ceil() as u64).max(1000);
            make_group(
                "cpu",
                name,
                &[
                    ("cpu.cfs_period_us", period.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            )
        });
        WorkerCgroups { memory, cpu }
    }

    /// How many times the kernel's OOM killer has killed a process in the memory
    /// group (`oom_kill` of memory.oom_control).
    pub fn oom_kills(&self) -> Option<u64> {
        let text =
            std::fs::read_to_string(self.memory.as_ref()?.join("memory.oom_control")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// The `cgroup.procs` files a new worker writes its pid into before exec.
    pub fn procs_files(&self) -> Vec<CString> {
        [&self.memory, &self.cpu]
            .into_iter()
            .flatten()
            .filter_map(|d| CString::new(d.join("cgroup.procs").to_string_lossy().as_bytes()).ok())
            .collect()
    }

    /// Removes the groups (their processes have exited).
    pub fn remove(&self) {
        for dir in [&self.memory, &self.cpu].into_iter().flatten() {
            if let Err(e) = std::fs::remove_dir(dir) {
                tracing::debug!(dir = %dir.display(), "cgroup not removed: {e}");
            }
        }
    }
}

/// Removes the groups that servers which died without cleaning up (killed) left
/// behind: `ferroserve-<pid>-…` under our own groups whose pid no longer runs. A group
/// that still has processes is not removable and stays.
pub fn remove_stale_groups() {
    for controller in ["memory", "cpu"] {
        let Some(own) = own_v1_group(controller) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(&own) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("ferroserve-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                if let Err(e) = std::fs::remove_dir(entry.path()) {
                    tracing::debug!(group = %entry.path().display(), "stale cgroup not removed: {e}");
                }
            }
        }
    }
}

/// Extra address space allowed above a memory limit when it is enforced by
/// RLIMIT_AS: ONNX Runtime's and the allocator's reservations are address space
/// that is never resident, so the rlimit has to be far above the RSS limit; the RSS
/// watchdog enforces the limit itself.
pub fn address_space_limit(memory: u64) -> u64 {
    memory.saturating_mul(4).saturating_add(4 << 30)
}

/// The cores a worker with `cores` cores is pinned to: `cores` of the cores this
/// process may run on, starting at an offset (the worker's port), so that workers
/// spread over the machine instead of piling on the first core.
pub fn cores_for(cores: usize, offset: usize) -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let allowed: Vec<usize> =
        if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }
            == 0
        {
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
                .collect()
        } else {
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
        };
    if allowed.is_empty() {
        return Vec::new();
    }
    let n = cores.min(allowed.len());
    (0..n)
        .map(|i| allowed[(offset + i) % allowed.len()])
        .collect()
}

/// What the child does between fork and exec: its own process group, death with
/// its parent, the cgroups, the cores and the address-space limit. Only
/// async-signal-safe calls (no allocation): everything is prepared beforehand.
///
/// Every step that fails fails the start (the supervisor reports "cannot start the
/// worker" with the system's error, and the worker's stderr, the server's, names
/// the step): a worker never runs without a limit the registry reports as
/// enforced.
pub struct PreExec {
    pub procs_files: Vec<CString>,
    pub cores: Vec<usize>,
    pub address_space: Option<u64>,
    pub parent_pid: libc::pid_t,
}

/// Writes `message` to stderr, without allocating: which step of
/// [`PreExec::apply`] failed (only the error number crosses back to the parent).
fn say(message: &[u8]) {
    // SAFETY: write(2) on the inherited stderr with a static buffer.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
    }
}

/// The system's last error, once `message` says which step it failed.
fn step_failed(message: &[u8]) -> std::io::Error {
    let error = std::io::Error::last_os_error();
    say(message);
    error
}

impl PreExec {
    /// Runs in the forked child.
    pub fn apply(&self) -> std::io::Result<()> {
        // SAFETY: plain system calls on this (single-threaded, forked) process with
        // arguments prepared before the fork.
        unsafe {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between fork and prctl: no one would ever stop us.
            if libc::getppid() != self.parent_pid {
                libc::_exit(1);
            }
            let mut digits = [0u8; 24];
            let pid_text = format_pid(libc::getpid(), &mut digits);
            for file in &self.procs_files {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(step_failed(
                        b"ferroserve worker: cannot open its cgroup's cgroup.procs\n",
                    ));
                }
                let written = libc::write(fd, pid_text.as_ptr().cast(), pid_text.len());
                if written != pid_text.len() as isize {
                    let error = step_failed(
                        b"ferroserve worker: cannot join its cgroup (writing cgroup.procs)\n",
                    );
                    libc::close(fd);
                    return Err(error);
                }
                libc::close(fd);
            }
            if !self.cores.is_empty() {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                for &c in &self.cores {
                    // CPU_SET does not check its bound.
                    if c >= libc::CPU_SETSIZE as usize {
                        say(b"ferroserve worker: a core number is beyond CPU_SETSIZE\n");
                        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
                    }
                    libc::CPU_SET(c, &mut set);
                }
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(step_failed(
                        b"ferroserve worker: cannot pin itself to its cores (sched_setaffinity)\n",
                    ));
                }
            }
            if let Some(bytes) = self.address_space {
                let limit = libc::rlimit {
                    rlim_cur: bytes as libc::rlim_t,
                    rlim_max: bytes as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(step_failed(
                        b"ferroserve worker: cannot set its address-space limit (setrlimit)\n",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `pid` in decimal in `buf`, without allocating.
fn format_pid(pid: libc::pid_t, buf: &mut [u8; 24]) -> &[u8] {
    let mut n = pid.max(0) as u64;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// A process's resident memory and CPU time (user + system), from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct ProcessUsage {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

pub fn process_usage(pid: u32) -> Option<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is rest[0]; utime is field 14, stime 15, rss 24.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    Some(ProcessUsage {
        rss_bytes: rss_pages * page,
        cpu_seconds: (utime + stime) / ticks,
    })
}

/// The cores a process may run on (its affinity list), from /proc.
pub fn allowed_cores(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_format_without_allocating() {
        let mut buf = [0u8; 24];
        assert_eq!(format_pid(0, &mut buf), b"0");
        assert_eq!(format_pid(4_194_303, &mut buf), b"4194303");
    }

    #[test]
    fn own_usage_is_read() {
        let u = process_usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 1 << 20, "{u:?}");
        assert!(allowed_cores(std::process::id()).is_some());
    }

    /// Starts `true` with `pre_exec` applied between fork and exec.
    fn start_with(pre_exec: PreExec) -> std::io::Result<std::process::ExitStatus> {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new("true");
        command.stderr(std::process::Stdio::null());
        // SAFETY: `apply` makes only async-signal-safe calls (see PreExec).
        unsafe {
            command.pre_exec(move || pre_exec.apply());
        }
        command.spawn()?.wait()
    }

    fn nothing_to_apply() -> PreExec {
        PreExec {
            procs_files: Vec::new(),
            cores: Vec::new(),
            address_space: None,
            parent_pid: std::process::id() as libc::pid_t,
        }
    }

    #[test]
    fn a_start_with_its_limits_applied_runs() {
        let status = start_with(PreExec {
            cores: cores_for(1, 0),
            address_space: Some(address_space_limit(256 << 20)),
            ..nothing_to_apply()
        })
        .unwrap();
        assert!(status.success());
    }

    #[test]
    fn a_limit_that_cannot_be_applied_fails_the_start() {
        let missing_group = start_with(PreExec {
            procs_files: vec![CString::new("/nonexistent-ferroserve-group/cgroup.procs").unwrap()],
            ..nothing_to_apply()
        })
        .unwrap_err();
        assert_eq!(
            missing_group.kind(),
            std::io::ErrorKind::NotFound,
            "{missing_group}"
        );
        // /dev/full opens for writing, and every write to it fails.
        let unwritable = start_with(PreExec {
            procs_files: vec![CString::new("/dev/full").unwrap()],
            ..nothing_to_apply()
        })
        .unwrap_err();
        assert_eq!(
            unwritable.raw_os_error(),
            Some(libc::ENOSPC),
            "{unwritable}"
        );
        let beyond = start_with(PreExec {
            cores: vec![libc::CPU_SETSIZE as usize],
            ..nothing_to_apply()
        })
        .unwrap_err();
        assert_eq!(beyond.raw_os_error(), Some(libc::EINVAL), "{beyond}");
    }

    #[test]
    fn cores_wrap_around_what_is_allowed() {
        let all = cores_for(4096, 0);
        assert!(!all.is_empty());
        let one = cores_for(1, 7);
        assert_eq!(one.len(), 1);
        assert!(all.contains(&one[0]));
    }
}
