//! `[cache]`: whether a model's answers are kept and reused.

use std::time::Duration;

use serde::Deserialize;

/// The `[cache]` table: whether answers of this model are kept and reused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Answer repeated requests from the response cache (the in-process tier,
    /// `--cache-max-bytes`, and the Redis tier, `--redis-url`). Default false.
    pub enabled: bool,
    /// How long an answer is kept, in seconds, from when it was computed.
    /// Default 300; between 1 and 2592000 (30 days).
    pub ttl_secs: u64,
    /// When a computed answer is stored. Default `first_miss`.
    pub admission: Admission,
}

/// When a missed request's answer is stored (`[cache] admission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// At once: the next identical request is a hit.
    #[default]
    FirstMiss,
    /// When the same request misses a second time (`crate::cache::doorkeeper`):
    /// requests that never repeat cost a lookup and no store, and the third
    /// identical request is the first hit.
    SecondMiss,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            enabled: false,
            ttl_secs: 300,
            admission: Admission::FirstMiss,
        }
    }
}

impl CacheConfig {
    /// The longest `ttl_secs` allowed: a typo must not keep answers for years.
    pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.ttl_secs == 0 || self.ttl_secs > Self::MAX_TTL_SECS {
            return Err(format!(
                "cache.ttl_secs must be between 1 and {} (30 days), not {}",
                Self::MAX_TTL_SECS,
                self.ttl_secs
            ));
        }
        Ok(())
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }
}
