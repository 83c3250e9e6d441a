//! The Redis tier: answers shared by every replica that names the same Redis.
//!
//! Invariant: no request waits on Redis longer than `redis_timeout` (or its own
//! deadline, if sooner). A lookup that takes longer is a miss; a write never
//! delays an answer: it runs on a task of its own, at most
//! [`MAX_WRITES_IN_FLIGHT`] at once (more are dropped and counted), each bounded
//! by [`WRITE_TIMEOUT`].
//!
//! The connection is a `redis::aio::ConnectionManager`, made lazily (Redis down at
//! start stops nothing), which reconnects after a connection error. A supervisor
//! task pings Redis every [`PING_INTERVAL`]: it logs when Redis goes away and
//! comes back, keeps reconnect attempts going while no request arrives, and
//! replaces the manager with a fresh one after [`PINGS_BEFORE_RENEWAL`] failed
//! pings in a row, whatever state the old one is stuck in. While its last ping
//! failed, lookups and writes skip Redis altogether, so an outage adds no wait to
//! requests; the first ping that succeeds brings them back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{codec, CacheKey};
use crate::tensor::NamedTensor;

/// Most Redis writes in progress at once; a write beyond it is dropped (and
/// counted): a slow Redis must not pile up tasks and memory.
pub const MAX_WRITES_IN_FLIGHT: usize = 256;
/// Longest one write may take before it is abandoned.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest answer written to Redis; larger answers stay in the in-process tier.
pub const MAX_VALUE_BYTES: usize = 32 * 1024 * 1024;
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PINGS_BEFORE_RENEWAL: u32 = 5;
/// Prefix of every key ferroserve writes, with the value layout's version.
const KEY_PREFIX: &str = "ferroserve:cache:v1:";

/// An answer found in Redis, with the time it has left there.
pub struct RedisHit {
    pub outputs: Vec<NamedTensor>,
    pub ttl_left: Option<Duration>,
}

pub struct RedisTier {
    /// Swapped whole by the supervisor when it renews the connection; requests
    /// clone the manager they find (a cheap `Arc` clone) and never lock.
    connection: Arc<ArcSwap<ConnectionManager>>,
    /// Bounds writes in flight (see [`MAX_WRITES_IN_FLIGHT`]).
    writes: Arc<Semaphore>,
    /// False while the supervisor's last ping failed: requests then skip Redis.
    /// True at start, so the first requests try before the first ping is back.
    reachable: Arc<AtomicBool>,
    timeout: Duration,
    /// The pinging task; aborted when the tier drops (the server stops).
    supervisor: JoinHandle<()>,
}

/// Checks that `url` is a Redis URL the client can use. The message never
/// repeats the URL, which may hold a password.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url).map(|_| ()).map_err(|_| {
        "not a Redis URL; use redis://[user:password@]host[:port][/db] or \
         redis+unix:///path/to/socket"
            .to_string()
    })
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)))
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

fn new_manager(client: &redis::Client) -> redis::RedisResult<ConnectionManager> {
    ConnectionManager::new_lazy_with_config(client.clone(), manager_config())
}

impl RedisTier {
    /// Sets up the tier without waiting for Redis: the first connection is made in
    /// the background. Needs a Tokio runtime (the supervisor is spawned on it).
    pub fn new(url: &str, timeout: Duration) -> Result<RedisTier, String> {
        let client = redis::Client::open(url).map_err(|_| check_url(url).unwrap_err())?;
        let address = client.get_connection_info().addr().to_string();
        let manager = new_manager(&client).map_err(|e| format!("Redis at {address}: {e}"))?;
        let connection = Arc::new(ArcSwap::from_pointee(manager));
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the Redis tier needs a Tokio runtime".to_string())?;
        tracing::info!(redis = %address, timeout_ms = timeout.as_millis() as u64, "response cache: Redis tier");
        let reachable = Arc::new(AtomicBool::new(true));
        let supervisor = runtime.spawn(supervise(
            client,
            address,
            connection.clone(),
            reachable.clone(),
        ));
        Ok(RedisTier {
            connection,
            reachable,
            writes: Arc::new(Semaphore::new(MAX_WRITES_IN_FLIGHT)),
            timeout,
            supervisor,
        })
    }

    /// Looks `key` up, waiting at most the tier's timeout and never past `deadline`.
    /// Any failure is a miss, counted in `ferroserve_cache_redis_errors_total`.
    pub async fn get(&self, key: &CacheKey, deadline: Instant) -> Option<RedisHit> {
        let wait = self
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        if wait.is_zero() || !self.reachable.load(Ordering::Relaxed) {
            return None;
        }
        let mut conn = ConnectionManager::clone(&self.connection.load());
        let redis_key = redis_key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&redis_key).cmd("PTTL").arg(&redis_key);
        let query = pipe.query_async::<(Option<Vec<u8>>, i64)>(&mut conn);
        let (value, pttl) = match tokio::time::timeout(wait, query).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                count_error("get", "error");
                tracing::debug!(error = %e, "response cache: Redis lookup failed");
                return None;
            }
            Err(_) => {
                count_error("get", "timeout");
                return None;
            }
        };
        let value = value?;
        match codec::decode(&value) {
            Ok(outputs) => Some(RedisHit {
                outputs,
                ttl_left: u64::try_from(pttl)
                    .ok()
                    .filter(|&ms| ms > 0)
                    .map(Duration::from_millis),
            }),
            Err(e) => {
                count_error("get", "corrupt");
                tracing::warn!(key = %redis_key, "response cache: Redis entry unreadable, ignored: {e}");
                None
            }
        }
    }

    /// Writes an answer with `SET key value EX ttl` on a task of its own; drops it
    /// (counted) when [`MAX_WRITES_IN_FLIGHT`] writes are already in progress.
    pub fn put(&self, key: &CacheKey, outputs: &[NamedTensor], ttl: Duration) {
        if !self.reachable.load(Ordering::Relaxed) {
            return;
        }
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            count_error("set", "dropped");
            return;
        };
        let value = codec::encode(outputs);
        if value.len() > MAX_VALUE_BYTES {
            return;
        }
        let mut conn = ConnectionManager::clone(&self.connection.load());
        let redis_key = redis_key(key);
        let seconds = ttl.as_secs().max(1);
        // Short-lived and bounded (a permit, WRITE_TIMEOUT): it needs no owner to
        // stop it.
        tokio::spawn(async move {
            let _permit = permit;
            let mut command = redis::cmd("SET");
            command.arg(&redis_key).arg(value).arg("EX").arg(seconds);
            let set = command.exec_async(&mut conn);
            match tokio::time::timeout(WRITE_TIMEOUT, set).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    count_error("set", "error");
                    tracing::debug!(error = %e, "response cache: Redis write failed");
                }
                Err(_) => count_error("set", "timeout"),
            }
        });
    }
}

impl Drop for RedisTier {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

fn redis_key(key: &CacheKey) -> String {
    format!("{KEY_PREFIX}{}", key.to_hex())
}

/// Counts a Redis entry that decoded but does not fit the request it was found for
/// (`ResponseCache::lookup`): corrupt, as one that does not decode.
pub(super) fn count_unfit() {
    count_error("get", "corrupt");
}

fn count_error(op: &'static str, reason: &'static str) {
    metrics::counter!(
        "ferroserve_cache_redis_errors_total",
        "op" => op,
        "reason" => reason
    )
    .increment(1);
}

/// Pings Redis every [`PING_INTERVAL`]; logs each change between reachable and
/// not, and renews the connection manager after [`PINGS_BEFORE_RENEWAL`] failures
/// in a row.
async fn supervise(
    client: redis::Client,
    address: String,
    connection: Arc<ArcSwap<ConnectionManager>>,
    reachable: Arc<AtomicBool>,
) {
    let mut up: Option<bool> = None;
    let mut failures: u32 = 0;
    loop {
        let mut conn = ConnectionManager::clone(&connection.load());
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut conn);
        let result = match tokio::time::timeout(PING_INTERVAL, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(("error", e.to_string())),
            Err(_) => Err(("timeout", "no answer within 1 s".to_string())),
        };
        match result {
            Ok(()) => {
                if up != Some(true) {
                    tracing::info!(redis = %address, "response cache: Redis is reachable");
                }
                up = Some(true);
                reachable.store(true, Ordering::Relaxed);
                failures = 0;
            }
            Err((reason, e)) => {
                // Before the count: a test that sees the count sees requests skip Redis.
                reachable.store(false, Ordering::Relaxed);
                count_error("ping", reason);
                if up != Some(false) {
                    tracing::warn!(
                        redis = %address,
                        "response cache: Redis is not reachable ({e}); predictions go on \
                         without it, and it is retried every second"
                    );
                }
                up = Some(false);
                failures += 1;
                if failures >= PINGS_BEFORE_RENEWAL {
                    failures = 0;
                    match new_manager(&client) {
                        Ok(fresh) => connection.store(Arc::new(fresh)),
                        Err(e) => tracing::warn!(redis = %address, "response cache: {e}"),
                    }
                }
            }
        }
        tokio::time::sleep(PING_INTERVAL).await;
    }
}
