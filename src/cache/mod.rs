//! The response cache: answers of models whose `config.toml` says `[cache]
//! enabled = true`, kept in an in-process tier (`--cache-max-bytes`, `quick_cache`) and,
//! when `--redis-url` names one, a Redis tier that several replicas share.
//!
//! `api::predict` consults it after the request is checked and converted for the
//! model, and before the version's queue: a hit skips the queue and the backend.
//! What is kept is the transport-neutral answer (the output tensors), never an
//! encoded one, so a hit is encoded afresh for whichever protocol asked. Only
//! successful answers are stored. The key is described in [`key`].
//!
//! Lookups try the in-process tier, then Redis (an answer found there is kept in
//! process too, for the time it has left in Redis). A miss stores the answer in
//! both; the Redis write runs on a task of its own. A model with `admission =
//! "second_miss"` stores it only when its request misses a second time
//! ([`doorkeeper`]).
//!
//! Invariant: no request waits on Redis longer than `redis_timeout`, and a Redis
//! failure is a miss, never a failed prediction (see [`redis`]).
//!
//! Metrics: `ferroserve_cache_hits_total{model,tier}` (tier `memory` or `redis`),
//! `ferroserve_cache_misses_total{model}` (missed every tier),
//! `ferroserve_cache_evictions_total{model,tier,reason}` (reason `size` or
//! `expired`), `ferroserve_cache_entries{tier}` and `ferroserve_cache_bytes{tier}`
//! (refreshed at scrape time), `ferroserve_cache_redis_errors_total{op,reason}`
//! (op `get`, `set` or `ping`; reason `error`, `timeout`, `corrupt` or `dropped`:
//! a write refused because too many were in flight),
//! `ferroserve_cache_not_admitted_total{model}` (answers not stored: their request
//! missed for the first time, under `admission = "second_miss"`).

pub mod codec;
pub mod doorkeeper;
pub mod key;
pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use key::CacheKey;

pub use crate::metrics::CacheCounters;
use crate::model_config::Admission;
use crate::settings::Settings;
use crate::tensor::NamedTensor;

/// What the cache did for a request of a cache-enabled model; REST answers carry
/// it as `x-ferroserve-cache`, gRPC answers as metadata of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

impl CacheStatus {
    /// The header's and metadata's name.
    pub const HEADER: &'static str = "x-ferroserve-cache";

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
        }
    }
}

/// One stored answer.
pub struct CachedAnswer {
    /// The model it answers for: the label of its eviction counts.
    pub model: Arc<str>,
    pub outputs: Vec<NamedTensor>,
    /// When it stops answering in the in-process tier: its TTL after it was made.
    pub expires_at: Instant,
    /// Its weight in the in-process tier (see [`memory::weight`]).
    pub weight: u32,
}

impl CachedAnswer {
    pub fn new(model: Arc<str>, outputs: Vec<NamedTensor>, ttl: Duration) -> CachedAnswer {
        let weight = memory::weight(&outputs);
        let now = Instant::now();
        CachedAnswer {
            model,
            outputs,
            // A TTL past what `Instant` can count lives as long as the process.
            expires_at: now
                .checked_add(ttl)
                .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
                .unwrap_or(now),
            weight,
        }
    }

    /// The outputs in the order `wanted` names them (empty: as stored, which is
    /// the model's order, as every request with that key asked for all of them).
    /// The key holds the wanted names, so every one is there.
    pub fn outputs_for(&self, wanted: &[String]) -> Option<Vec<NamedTensor>> {
        if wanted.is_empty() {
            return Some(self.outputs.clone());
        }
        wanted
            .iter()
            .map(|name| self.outputs.iter().find(|(n, _)| n == name).cloned())
            .collect()
    }
}

/// The tiers the settings ask for; `None` from [`ResponseCache::from_settings`] when
/// there are none, and then no model is cached.
pub struct ResponseCache {
    memory: Option<memory::MemoryTier>,
    redis: Option<redis::RedisTier>,
    /// Made at the first answer of a model with `admission = "second_miss"`.
    doorkeeper: std::sync::OnceLock<doorkeeper::Doorkeeper>,
}

/// Checks a `--redis-url` (for `Settings`); the message never repeats the URL.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    redis::check_url(url)
}

impl ResponseCache {
    /// The cache of a server with these settings, or `None` when no tier is on.
    /// A Redis tier needs a Tokio runtime; without one (or with a URL the client
    /// refuses) it is left off, with an error in the log.
    pub fn from_settings(settings: &Settings) -> Option<Arc<ResponseCache>> {
        let memory = (settings.cache_max_bytes > 0)
            .then(|| memory::MemoryTier::new(settings.cache_max_bytes));
        let redis = settings.redis_url.as_deref().and_then(|url| {
            redis::RedisTier::new(url, settings.redis_timeout)
                .map_err(|e| tracing::error!("response cache: Redis tier left off: {e}"))
                .ok()
        });
        if memory.is_none() && redis.is_none() {
            return None;
        }
        Some(Arc::new(ResponseCache {
            memory,
            redis,
            doorkeeper: std::sync::OnceLock::new(),
        }))
    }

    /// Finds the answer stored under `key`, counting a hit or a miss for `model`.
    /// Waits on Redis at most its timeout, and never past `deadline`.
    ///
    /// An answer from Redis is used only when `fits` takes it (the outputs, dtypes
    /// and rows the request would get): an entry that decodes but was written by
    /// something else is counted `corrupt` and is a miss, as one that does not
    /// decode. The in-process tier holds only this process's own answers.
    pub async fn lookup(
        &self,
        key: &CacheKey,
        model: &Arc<str>,
        counters: &CacheCounters,
        deadline: Instant,
        fits: &(dyn Fn(&[NamedTensor]) -> bool + Sync),
    ) -> Option<Arc<CachedAnswer>> {
        if let Some(memory) = &self.memory {
            if let Some(found) = memory.get(key) {
                counters.hit(false);
                return Some(found);
            }
        }
        if let Some(redis) = &self.redis {
            if let Some(hit) = redis.get(key, deadline).await.filter(|hit| {
                let fit = fits(&hit.outputs);
                if !fit {
                    redis::count_unfit();
                    tracing::warn!(
                        model = &**model,
                        "response cache: a Redis entry does not fit the request's outputs, ignored"
                    );
                }
                fit
            }) {
                counters.hit(true);
                let ttl = hit.ttl_left.unwrap_or(Duration::from_secs(1));
                let answer = Arc::new(CachedAnswer::new(model.clone(), hit.outputs, ttl));
                if let Some(memory) = &self.memory {
                    memory.insert(*key, answer.clone());
                }
                return Some(answer);
            }
        }
        counters.miss();
        None
    }

    /// Stores a successful answer under `key` for `ttl`, in process at once and in
    /// Redis on a task of its own; under [`Admission::SecondMiss`] only when `key`
    /// missed before.
    pub async fn store(
        &self,
        key: CacheKey,
        model: &Arc<str>,
        outputs: &[NamedTensor],
        ttl: Duration,
        admission: Admission,
        counters: &CacheCounters,
    ) {
        if admission == Admission::SecondMiss
            && !self
                .doorkeeper
                .get_or_init(doorkeeper::Doorkeeper::default)
                .missed_before(&key)
        {
            counters.not_admitted.increment(1);
            return;
        }
        if let Some(redis) = &self.redis {
            redis.put(&key, outputs, ttl);
        }
        if let Some(memory) = &self.memory {
            let answer = Arc::new(CachedAnswer::new(model.clone(), outputs.to_vec(), ttl));
            memory.insert(key, answer);
        }
    }

    /// Refreshes the entries and bytes gauges (at scrape time).
    pub async fn refresh_gauges(&self) {
        if let Some(memory) = &self.memory {
            memory.refresh_gauges();
        }
    }
}
