//! The in-process tier: a `quick_cache` cache (S3-FIFO eviction) bounded by the
//! bytes its answers take (`--cache-max-bytes`), each entry expiring after its
//! model's `ttl_secs`.
//!
//! `quick_cache` has no timers: an entry past its expiry is dropped when it is
//! next looked up (and then is a miss), and [`MemoryTier::refresh_gauges`] (run at
//! scrape time) sweeps out every other expired entry before the entries and bytes
//! gauges are read, so that they describe what is held and still valid. Size
//! eviction happens as answers are stored.
//!
//! It replaced `moka` (issue 12's benchmark): with the cache enabled and every
//! request missing, moka's lookup and insert cost 4 to 12 µs per request (growing
//! with the number of entries: its read and write logs are applied in batches on
//! the request path), `quick_cache`'s 1.1 to 1.5 µs, the copy of the answer
//! included (see bench/RESULTS.md).

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use super::{CacheKey, CachedAnswer};
use crate::tensor::{Tensor, TensorData};

/// Bytes counted for an entry besides its tensors: the key, the cache's
/// bookkeeping, the `Arc`s and `Vec` headers.
const ENTRY_OVERHEAD: usize = 256;

/// What a typical answer weighs (a few small output tensors): sizes the cache's
/// tracking of recently evicted keys, from `--cache-max-bytes`.
const TYPICAL_WEIGHT: u64 = 512;

/// The smallest share of the bytes one shard holds when the cache is larger than
/// this: an answer must fit in a shard to be kept, so shards never get small enough
/// to refuse an answer of a few MiB.
const MIN_SHARD_BYTES: u64 = 8 * 1024 * 1024;

type Store = quick_cache::sync::Cache<
    CacheKey,
    Arc<CachedAnswer>,
    Weight,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

pub struct MemoryTier {
    cache: Store,
}

/// An entry weighs what [`weight`] said when it was made.
#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<CacheKey, Arc<CachedAnswer>> for Weight {
    fn weight(&self, _key: &CacheKey, value: &Arc<CachedAnswer>) -> u64 {
        u64::from(value.weight)
    }
}

/// Counts every answer evicted for room (`reason="size"`), including an answer too
/// large to be kept at all.
#[derive(Clone)]
struct CountEvictions;

impl quick_cache::Lifecycle<CacheKey, Arc<CachedAnswer>> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: CacheKey, value: Arc<CachedAnswer>) {
        count_eviction(&value.model, "size");
    }
}

fn count_eviction(model: &str, reason: &'static str) {
    metrics::counter!(
        "ferroserve_cache_evictions_total",
        "model" => model.to_string(),
        "tier" => "memory",
        "reason" => reason
    )
    .increment(1);
}

impl MemoryTier {
    pub fn new(max_bytes: u64) -> MemoryTier {
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        let options = quick_cache::OptionsBuilder::new()
            .weight_capacity(max_bytes)
            .estimated_items_capacity((max_bytes / TYPICAL_WEIGHT).max(1) as usize)
            .shards(shard_count(max_bytes, parallelism))
            .build()
            .expect("the cache's options are complete");
        MemoryTier {
            cache: Store::with_options(
                options,
                Weight,
                quick_cache::DefaultHashBuilder::default(),
                CountEvictions,
            ),
        }
    }

    /// The answer stored under `key`, unless it has expired (then it goes, and
    /// counts as an eviction for `reason="expired"`).
    pub fn get(&self, key: &CacheKey) -> Option<Arc<CachedAnswer>> {
        let found = self.cache.get(key)?;
        if found.expires_at > Instant::now() {
            return Some(found);
        }
        if self
            .cache
            .remove_if(key, |held| Arc::ptr_eq(held, &found))
            .is_some()
        {
            count_eviction(&found.model, "expired");
        }
        None
    }

    pub fn insert(&self, key: CacheKey, answer: Arc<CachedAnswer>) {
        self.cache.insert(key, answer);
    }

    /// Sets the entries and bytes gauges, after dropping the expired entries so
    /// that they describe what is held now.
    pub fn refresh_gauges(&self) {
        let now = Instant::now();
        let expired = Cell::new(0u64);
        self.cache.retain(|_key, answer| {
            let live = answer.expires_at > now;
            if !live {
                count_eviction(&answer.model, "expired");
                expired.set(expired.get() + 1);
            }
            live
        });
        if expired.get() > 0 {
            tracing::debug!(
                expired = expired.get(),
                "response cache: expired answers swept"
            );
        }
        metrics::gauge!("ferroserve_cache_entries", "tier" => "memory")
            .set(self.cache.len() as f64);
        metrics::gauge!("ferroserve_cache_bytes", "tier" => "memory")
            .set(self.cache.weight() as f64);
    }
}

/// quick_cache's default, four shards per CPU, but never so many that a shard holds
/// less than [`MIN_SHARD_BYTES`] (one shard for a smaller cache); a power of two no
/// larger than that (quick_cache rounds up).
fn shard_count(max_bytes: u64, parallelism: usize) -> usize {
    let shards = (max_bytes / MIN_SHARD_BYTES).clamp(1, 4 * parallelism as u64);
    1 << shards.ilog2()
}

/// What an answer weighs in the in-process tier: its tensors' bytes, the names,
/// and a fixed overhead; at most `u32::MAX`.
pub fn weight(outputs: &[(String, Tensor)]) -> u32 {
    let bytes = outputs
        .iter()
        .map(|(name, t)| name.len() + 64 + data_bytes(t))
        .fold(ENTRY_OVERHEAD, usize::saturating_add);
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The heap bytes a tensor's elements take (byte strings: their bytes and a
/// `Vec` header each).
pub fn data_bytes(t: &Tensor) -> usize {
    match t.data() {
        TensorData::Bytes(v) => v.iter().map(|b| b.len() + 24).sum(),
        other => match other.dtype().fixed_size() {
            Some(size) => other.len().saturating_mul(size),
            None => 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(ttl: Duration, floats: usize) -> Arc<CachedAnswer> {
        let t = Tensor::new(vec![floats], TensorData::F32(vec![0.5; floats])).unwrap();
        Arc::new(CachedAnswer::new("m".into(), vec![("y".into(), t)], ttl))
    }

    fn key(i: u64) -> CacheKey {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_le_bytes());
        CacheKey(k)
    }

    #[test]
    fn an_expired_answer_is_a_miss_and_is_swept_from_the_gauges() {
        let tier = MemoryTier::new(1 << 20);
        tier.insert(key(1), answer(Duration::from_millis(30), 4));
        tier.insert(key(2), answer(Duration::from_millis(30), 4));
        tier.insert(key(3), answer(Duration::from_secs(3600), 4));
        assert!(tier.get(&key(1)).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(tier.get(&key(1)).is_none(), "expired");
        assert!(tier.get(&key(3)).is_some(), "still valid");
        assert_eq!(tier.cache.len(), 2, "key 2 is held until swept");
        tier.refresh_gauges();
        assert_eq!(tier.cache.len(), 1);
        assert!(tier.get(&key(3)).is_some());
    }

    #[test]
    fn the_bytes_held_stay_within_the_bound() {
        let bound = 64 * 1024;
        let tier = MemoryTier::new(bound);
        for i in 0..1000 {
            tier.insert(key(i), answer(Duration::from_secs(3600), 100));
        }
        assert!(
            tier.cache.weight() <= bound,
            "{} bytes",
            tier.cache.weight()
        );
        assert!(
            tier.cache.len() > 10,
            "only {} answers kept",
            tier.cache.len()
        );
    }

    #[test]
    fn shards_never_get_smaller_than_their_minimum() {
        let mib = 1024 * 1024;
        // quick_cache's default on 64 CPUs would be 256 shards of 1 MiB.
        assert_eq!(shard_count(256 * mib, 64), 32);
        assert_eq!(shard_count(256 * mib, 2), 8);
        assert_eq!(shard_count(4096, 64), 1);
        assert_eq!(shard_count(20 * mib, 64), 2);
        for (bytes, cpus) in [(256 * mib, 64), (100 * mib, 7), (9 * mib, 1)] {
            let shards = shard_count(bytes, cpus) as u64;
            assert!(shards.is_power_of_two() && bytes / shards >= MIN_SHARD_BYTES);
        }
    }

    #[test]
    fn a_large_cache_keeps_answers_of_several_mib() {
        let tier = MemoryTier::new(256 * 1024 * 1024);
        // 4 MiB of floats: within one shard's share.
        tier.insert(key(1), answer(Duration::from_secs(3600), 1 << 20));
        assert!(tier.get(&key(1)).is_some());
    }
}
