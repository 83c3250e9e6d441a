//! Who this server process is, as the jobs table records a claim (`claimed_by`).
//!
//! A host name and a pid alone do not name a process: containers sharing the host's
//! name (`--network host`, `hostNetwork`) each have their own pid namespace, often
//! with the same pids, and a restarted container gets the same name again. So a
//! claim also carries the machine (the kernel's boot id, shared by every container
//! on it, and different on every other machine), the pid namespace (its inode),
//! and a token drawn at start, which no other process has:
//! `host:pid@<boot id, 16 hex>.<pid namespace>.<token, 8 hex>`. The parts that
//! cannot be read (not Linux) are `-`.
//!
//! The recovery sweep (`jobs::replicas`) reads these parts back: the pid of a claim
//! is only looked up when it is in this process's pid namespace on this machine, and
//! heartbeats are only compared with this machine's clock when they came from it.

use std::fmt;

/// One server process's name in the jobs table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaName {
    pub host: String,
    pub pid: u32,
    /// The first 16 hex digits of the kernel's boot id; `None` where unknown.
    pub machine: Option<String>,
    /// The inode of the pid namespace; `None` where unknown.
    pub pid_ns: Option<u64>,
    /// Drawn once per process.
    pub token: String,
}

impl ReplicaName {
    /// This process's name.
    pub fn this_process(host: &str) -> ReplicaName {
        let mut bytes = [0u8; 4];
        if getrandom::fill(&mut bytes).is_err() {
            bytes = fastrand::u32(..).to_le_bytes();
        }
        ReplicaName {
            host: host.to_string(),
            pid: std::process::id(),
            machine: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .and_then(|id| machine_of(&id)),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .and_then(|link| pid_ns_of(&link.to_string_lossy())),
            token: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Reads a name back; `None` for anything else, such as the plain `host:pid`
    /// that servers before this format wrote.
    pub fn parse(name: &str) -> Option<ReplicaName> {
        let (host_pid, ids) = name.rsplit_once('@')?;
        let (host, pid) = host_pid.rsplit_once(':')?;
        let mut ids = ids.split('.');
        let (machine, pid_ns, token) = (ids.next()?, ids.next()?, ids.next()?);
        if ids.next().is_some() || token.is_empty() {
            return None;
        }
        let known = |s: &str| (s != "-").then(|| s.to_string());
        Some(ReplicaName {
            host: host.to_string(),
            pid: pid.parse().ok()?,
            machine: known(machine),
            pid_ns: match known(pid_ns) {
                None => None,
                Some(ns) => Some(ns.parse().ok()?),
            },
            token: token.to_string(),
        })
    }

    /// Whether `other` runs on this machine, so under the same clock.
    pub fn same_machine(&self, other: &ReplicaName) -> bool {
        self.machine.is_some() && self.machine == other.machine
    }

    /// Whether `other`'s pid means the same process here: same machine, same pid
    /// namespace.
    pub fn same_pid_namespace(&self, other: &ReplicaName) -> bool {
        self.same_machine(other) && self.pid_ns.is_some() && self.pid_ns == other.pid_ns
    }
}

impl fmt::Display for ReplicaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}@{}.{}.{}",
            self.host,
            self.pid,
            self.machine.as_deref().unwrap_or("-"),
            self.pid_ns
                .map(|ns| ns.to_string())
                .unwrap_or_else(|| "-".into()),
            self.token
        )
    }
}

/// The first 16 hex digits of a boot id (`"8f2c…-…"`).
fn machine_of(boot_id: &str) -> Option<String> {
    let hex: String = boot_id
        .trim()
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(16)
        .collect();
    (hex.len() == 16).then_some(hex)
}

/// The inode in a namespace link (`"pid:[4026531836]"`).
fn pid_ns_of(link: &str) -> Option<u64> {
    link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_reads_back_as_written() {
        let me = ReplicaName::this_process("host-a");
        assert_eq!(ReplicaName::parse(&me.to_string()), Some(me.clone()));
        if cfg!(target_os = "linux") {
            assert!(me.machine.is_some() && me.pid_ns.is_some(), "{me}");
            assert!(me.same_pid_namespace(&me));
        }
        // Another process drew another token.
        assert_ne!(ReplicaName::this_process("host-a").token, me.token);
        let unknown = ReplicaName::parse("h:7@-.-.00ff00ff").unwrap();
        assert_eq!((&unknown.machine, unknown.pid_ns), (&None, None));
        assert_eq!(unknown.to_string(), "h:7@-.-.00ff00ff");
        // Host names may hold colons (an address); the pid is after the last one.
        let odd = ReplicaName::parse("fe80::1:42@0123456789abcdef.4026531836.0a0b0c0d").unwrap();
        assert_eq!((odd.host.as_str(), odd.pid), ("fe80::1", 42));
    }

    #[test]
    fn other_shapes_are_not_names() {
        for name in [
            "",
            "host:12",
            "host@a.1.t",
            "host:x@a.1.t",
            "host:1@a.1",
            "host:1@a.1.",
            "host:1@a.1.t.u",
            "host:1@a.ns.t",
        ] {
            assert_eq!(ReplicaName::parse(name), None, "{name}");
        }
    }

    #[test]
    fn machines_and_namespaces_compare_only_when_known() {
        let named = |machine: Option<&str>, ns: Option<u64>| ReplicaName {
            host: "h".into(),
            pid: 1,
            machine: machine.map(String::from),
            pid_ns: ns,
            token: "t".into(),
        };
        let me = named(Some("m1"), Some(7));
        assert!(me.same_pid_namespace(&named(Some("m1"), Some(7))));
        assert!(me.same_machine(&named(Some("m1"), Some(8))));
        assert!(!me.same_pid_namespace(&named(Some("m1"), Some(8))));
        assert!(!me.same_machine(&named(Some("m2"), Some(7))));
        assert!(!named(None, None).same_machine(&named(None, None)));
        assert!(!named(Some("m1"), None).same_pid_namespace(&named(Some("m1"), None)));
        assert_eq!(
            machine_of("8f2c1d3e-aaaa-bbbb-cccc-ddddeeeeffff\n").as_deref(),
            Some("8f2c1d3eaaaabbbb")
        );
        assert_eq!(machine_of("short"), None);
        assert_eq!(pid_ns_of("pid:[4026531836]"), Some(4026531836));
        assert_eq!(pid_ns_of("net:[1]"), None);
    }
}
