//! The in-process tier: a `moka` cache bounded by the bytes its answers take
//! (`--cache-max-bytes`), each entry expiring after its model's `ttl_secs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;

use super::{CacheKey, CachedAnswer};
use crate::tensor::{Tensor, TensorData};

/// Bytes counted for an entry besides its tensors: the key, moka's bookkeeping,
/// the `Arc`s and `Vec` headers.
const ENTRY_OVERHEAD: usize = 256;

pub struct MemoryTier {
    cache: moka::future::Cache<CacheKey, Arc<CachedAnswer>>,
}

/// Each entry lives as long as its model's TTL said when it was stored, so a model
/// with a short TTL and one with a long one share the same bounded space.
struct PerEntryTtl;

impl moka::Expiry<CacheKey, Arc<CachedAnswer>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedAnswer>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl MemoryTier {
    pub fn new(max_bytes: u64) -> MemoryTier {
        let cache = moka::future::Cache::builder()
            .name("ferroserve-response-cache")
            .max_capacity(max_bytes)
            .weigher(|_key, value: &Arc<CachedAnswer>| value.weight)
            .expire_after(PerEntryTtl)
            .eviction_listener(|_key, value: Arc<CachedAnswer>, cause| {
                let reason = match cause {
                    RemovalCause::Size => "size",
                    RemovalCause::Expired => "expired",
                    // Replaced by the same answer stored again, or removed by us:
                    // neither is an eviction.
                    RemovalCause::Replaced | RemovalCause::Explicit => return,
                };
                metrics::counter!(
                    "ferroserve_cache_evictions_total",
                    "model" => value.model.to_string(),
                    "tier" => "memory",
                    "reason" => reason
                )
                .increment(1);
            })
            .build();
        MemoryTier { cache }
    }

    pub async fn get(&self, key: &CacheKey) -> Option<Arc<CachedAnswer>> {
        self.cache.get(key).await
    }

    pub async fn insert(&self, key: CacheKey, answer: Arc<CachedAnswer>) {
        self.cache.insert(key, answer).await;
    }

    /// Sets the entries and bytes gauges, after applying pending evictions and
    /// expirations so that they describe what is held now.
    pub async fn refresh_gauges(&self) {
        self.cache.run_pending_tasks().await;
        metrics::gauge!("ferroserve_cache_entries", "tier" => "memory")
            .set(self.cache.entry_count() as f64);
        metrics::gauge!("ferroserve_cache_bytes", "tier" => "memory")
            .set(self.cache.weighted_size() as f64);
    }
}

/// What an answer weighs in the in-process tier: its tensors' bytes, the names,
/// and a fixed overhead; at most `u32::MAX` (moka's weight type).
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
