//! A deployment's `resources` as numbers: CPU cores and memory bytes, parsed from
//! the spellings the old service and Kubernetes use.

/// The limits a deployment asks for, parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// CPU cores (`"2"`, `"0.5"`, `"500m"`).
    pub cpu: Option<f64>,
    /// Bytes (`"512MB"`, `"1GB"`, `"1Gi"`, `"512Mi"`, or a plain number of bytes).
    pub memory: Option<u64>,
    /// The request deadline in seconds.
    pub timeout_secs: Option<f64>,
}

impl Limits {
    /// Parses a deployment's limits; the error names the field (`resources.cpu_limit`).
    pub fn parse(
        cpu: Option<&str>,
        memory: Option<&str>,
        timeout_secs: Option<f64>,
    ) -> Result<Limits, String> {
        Ok(Limits {
            cpu: cpu.map(parse_cpu).transpose()?,
            memory: memory.map(parse_memory).transpose()?,
            timeout_secs,
        })
    }

    /// Whole cores the worker's threads are sized to and pinned on: ceil(cpu).
    pub fn cores(&self) -> Option<usize> {
        self.cpu.map(|c| (c.ceil() as usize).max(1))
    }

    /// How long the supervisor waits for the worker to answer a health or status
    /// probe: a second, stretched by 1/cpu under a limit below one core. A worker
    /// held to a fraction of a core does everything that much slower (at `10m`, a
    /// request body that takes 10 ms to decode holds its async thread a second),
    /// and a busy worker is not a hung one.
    pub fn probe_timeout(&self) -> std::time::Duration {
        let second = std::time::Duration::from_secs(1);
        match self.cpu {
            Some(cpu) if cpu < 1.0 => second.div_f64(cpu.max(MIN_CPU)),
            _ => second,
        }
    }
}

/// The most cores a limit may name (more than any machine this runs on).
const MAX_CPU: f64 = 4096.0;
/// The least CPU limit: the kernel's least `cpu.cfs_quota_us` (1000 µs) over the
/// period `limits` uses (100000 µs).
const MIN_CPU: f64 = 0.01;

/// `"2"`, `"0.5"`, `"500m"` (millicores) → cores.
pub fn parse_cpu(text: &str) -> Result<f64, String> {
    let invalid = || {
        format!(
            "resources.cpu_limit {text:?} is not a number of CPU cores: write \"2\", \"0.5\" \
             or \"500m\" (millicores), above 0 and at most {MAX_CPU}"
        )
    };
    let t = text.trim();
    let (number, scale) = match t.strip_suffix('m') {
        Some(n) => (n, 1000.0),
        None => (t, 1.0),
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(invalid());
    }
    let cores = number.parse::<f64>().map_err(|_| invalid())? / scale;
    if !(cores.is_finite() && cores > 0.0 && cores <= MAX_CPU) {
        return Err(invalid());
    }
    if cores < MIN_CPU {
        // Below it the cgroup would enforce its least quota, not this limit, and
        // the registry would report a limit that is not the one applied.
        return Err(format!(
            "resources.cpu_limit {text:?} is below the least CPU limit that can be applied, \
             {MIN_CPU} cores (\"10m\"): a CPU cgroup's quota is at least 1 ms per 100 ms"
        ));
    }
    Ok(cores)
}

/// The least memory a limit may name: a worker does not start in less.
pub const MIN_MEMORY: u64 = 16 * 1024 * 1024;

/// The most memory a limit may name (more than any machine this runs on).
const MAX_MEMORY: u128 = 1_000_000_000_000_000_000;

/// `"512MB"`, `"1GB"`, `"1Gi"`, `"512Mi"`, `"64K"`, `"1048576"` → bytes. Decimal
/// units (K, KB, M, MB, G, GB, T, TB) are powers of 1000, binary ones (Ki, Mi, Gi,
/// Ti) of 1024; case does not matter but for the `i`. A fraction is fine where it
/// comes to whole bytes (`"1.5Gi"`), and refused where it does not
/// (`"268435456.5"`, `"0.1Gi"`): the limit applied is the one asked for, to the
/// byte. The arithmetic is exact (no floating point), so `"1.1GB"` is 1100000000.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "resources.memory_limit {text:?} is not an amount of memory: write \"512MB\", \
             \"1GB\", \"512Mi\", \"1Gi\" or a number of bytes, at least 16Mi"
        )
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let multiplier: u128 = match unit.trim() {
        "" | "B" | "b" => 1,
        "K" | "k" | "KB" | "kB" | "kb" | "Kb" => 1_000,
        "M" | "m" | "MB" | "mb" | "Mb" => 1_000_000,
        "G" | "g" | "GB" | "gb" | "Gb" => 1_000_000_000,
        "T" | "t" | "TB" | "tb" | "Tb" => 1_000_000_000_000,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        "Ti" | "TiB" => 1 << 40,
        _ => return Err(invalid()),
    };
    // `whole.fraction`, either part (not both) possibly empty: "5", "5.", ".5".
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(invalid());
    }
    // number × multiplier = digits × multiplier / 10^(fraction digits), exactly;
    // anything too large to compute is far past the most a limit may name.
    let digits = format!("{whole}{fraction}");
    let scale = u32::try_from(fraction.len())
        .ok()
        .and_then(|n| 10u128.checked_pow(n));
    let scaled = digits
        .parse::<u128>()
        .ok()
        .and_then(|d| d.checked_mul(multiplier));
    let (Some(scaled), Some(scale)) = (scaled, scale) else {
        return Err(invalid());
    };
    if scaled % scale != 0 {
        return Err(format!(
            "resources.memory_limit {text:?} is not a whole number of bytes: write a \
             whole number of bytes, or a quantity that comes to one (\"1.5Gi\" does, \
             \"0.1Gi\" does not)"
        ));
    }
    let bytes = scaled / scale;
    if !(u128::from(MIN_MEMORY)..MAX_MEMORY).contains(&bytes) {
        return Err(invalid());
    }
    u64::try_from(bytes).map_err(|_| invalid())
}

/// The most a deployment's request deadline may be, in seconds (a day).
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// `resources.timeout` as a request body gives it: a number of seconds (`5`,
/// `0.5`), or nothing. Any other kind (`"5"`, `[5]`) is an error that names the
/// field; whether the number is a valid deadline is checked with the deployment.
pub fn parse_timeout(value: Option<&serde_json::Value>) -> Result<Option<f64>, String> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("resources.timeout {n} is not a number of seconds")),
        Some(other) => Err(format!(
            "resources.timeout must be a positive number of seconds (at most \
             {MAX_TIMEOUT_SECS}), not {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_spellings() {
        assert_eq!(parse_cpu("2"), Ok(2.0));
        assert_eq!(parse_cpu("0.5"), Ok(0.5));
        assert_eq!(parse_cpu("500m"), Ok(0.5));
        assert_eq!(parse_cpu(" 1 "), Ok(1.0));
        for bad in [
            "", "0", "-1", "two", "1e3", "1.5.2", "m", "nan", "inf", "5000",
        ] {
            let e = parse_cpu(bad).unwrap_err();
            assert!(e.contains("resources.cpu_limit"), "{bad}: {e}");
        }
        // The least a cgroup applies, and no less (0.0001 was taken, and reported,
        // while the cgroup gave 0.01 cores).
        assert_eq!(parse_cpu("0.01"), Ok(0.01));
        assert_eq!(parse_cpu("10m"), Ok(0.01));
        for tiny in ["0.0001", "9m", "0.009"] {
            let e = parse_cpu(tiny).unwrap_err();
            assert!(e.contains("below the least CPU limit"), "{tiny}: {e}");
        }
    }

    #[test]
    fn memory_spellings() {
        assert_eq!(parse_memory("512MB"), Ok(512_000_000));
        assert_eq!(parse_memory("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_memory("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory("512Mi"), Ok(512 << 20));
        assert_eq!(parse_memory("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_memory("33554432"), Ok(32 << 20));
        // Exact: no floating-point error turns a whole byte count into a fraction.
        assert_eq!(parse_memory("1.1GB"), Ok(1_100_000_000));
        assert_eq!(parse_memory("0.3GB"), Ok(300_000_000));
        assert_eq!(parse_memory("268435456.0"), Ok(1 << 28));
        assert_eq!(parse_memory("256.Mi"), Ok(1 << 28));
        assert_eq!(parse_memory(".25Gi"), Ok(1 << 28));
        for bad in [
            "",
            "1",
            "1XB",
            "Gi",
            "-1Gi",
            "1 G i",
            "lots",
            "1kMi",
            "1e9",
            ".",
            "1.2.3Gi",
            "1..5Gi",
            "1000000000000000000",
            "99999999999999999999999999999999999999999Ti",
        ] {
            let e = parse_memory(bad).unwrap_err();
            assert!(e.contains("resources.memory_limit"), "{bad}: {e}");
        }
        // A fraction of a byte is refused, not rounded down (it was taken as
        // 268435456).
        for fractional in ["268435456.5", "0.1Gi", "16777216.001", "1.0000000001GB"] {
            let e = parse_memory(fractional).unwrap_err();
            assert!(
                e.contains("resources.memory_limit") && e.contains("whole number of bytes"),
                "{fractional}: {e}"
            );
        }
    }

    #[test]
    fn timeouts_are_numbers() {
        use serde_json::json;
        assert_eq!(parse_timeout(None), Ok(None));
        assert_eq!(parse_timeout(Some(&json!(null))), Ok(None));
        assert_eq!(parse_timeout(Some(&json!(5))), Ok(Some(5.0)));
        assert_eq!(parse_timeout(Some(&json!(0.5))), Ok(Some(0.5)));
        for bad in [json!("5"), json!([5]), json!(true), json!({"s": 5})] {
            let e = parse_timeout(Some(&bad)).unwrap_err();
            assert!(e.contains("resources.timeout"), "{bad}: {e}");
        }
    }

    #[test]
    fn cores_round_up() {
        let l = Limits::parse(Some("0.5"), None, None).unwrap();
        assert_eq!(l.cores(), Some(1));
        let l = Limits::parse(Some("2.1"), Some("1Gi"), Some(3.0)).unwrap();
        assert_eq!((l.cores(), l.memory), (Some(3), Some(1 << 30)));
        assert!(Limits::parse(Some("x"), None, None).is_err());
    }
}
