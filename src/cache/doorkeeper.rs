//! The doorkeeper of `[cache] admission = "second_miss"`: an answer is stored only
//! when its request misses for the second time, so requests seen once (most of
//! them, where inputs rarely repeat) cost the cache a lookup and no store.
//!
//! It is a Bloom filter of the keys that missed, two bits per key taken from the
//! key itself (a BLAKE3 output, so already uniformly spread), over 2^21 bits
//! (256 KiB, made at the first use). After [`RESET_AFTER`] first misses it starts
//! afresh, so it remembers roughly the last hundred thousand of them, and its false
//! positives (a first miss taken for a second one, whose answer is then stored at
//! once, as without a doorkeeper) stay under about 1 %. Updates are atomic bit
//! operations: a reset racing a lookup at worst forgets or keeps one key, which
//! changes only when an answer is first stored, never what any request is answered.

use std::sync::atomic::{AtomicU64, Ordering};

use super::CacheKey;

/// Bits in the filter.
const BITS: usize = 1 << 21;
/// First misses remembered before the filter starts afresh.
pub const RESET_AFTER: u64 = 100_000;

pub struct Doorkeeper {
    words: Box<[AtomicU64]>,
    /// First misses recorded since the last reset.
    recorded: AtomicU64,
}

impl Default for Doorkeeper {
    fn default() -> Doorkeeper {
        Doorkeeper {
            words: (0..BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            recorded: AtomicU64::new(0),
        }
    }
}

impl Doorkeeper {
    /// Whether `key` missed before (since the last reset), recording that it
    /// missed now.
    pub fn missed_before(&self, key: &CacheKey) -> bool {
        let bit = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&key.0[at..at + 8]);
            u64::from_le_bytes(b) as usize % BITS
        };
        let set = |bit: usize| {
            let mask = 1u64 << (bit % 64);
            self.words[bit / 64].fetch_or(mask, Ordering::Relaxed) & mask != 0
        };
        // Both bits are set, whatever the first one says.
        let first = set(bit(0));
        let second = set(bit(8));
        if first && second {
            return true;
        }
        if self.recorded.fetch_add(1, Ordering::Relaxed) + 1 >= RESET_AFTER {
            self.recorded.store(0, Ordering::Relaxed);
            for word in self.words.iter() {
                word.store(0, Ordering::Relaxed);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> CacheKey {
        CacheKey(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn a_key_is_admitted_at_its_second_miss_and_few_strangers_pass() {
        let door = Doorkeeper::default();
        let first: Vec<bool> = (0..50_000).map(|n| door.missed_before(&key(n))).collect();
        let strangers_passed = first.iter().filter(|&&b| b).count();
        // 50,000 keys in 2^21 bits: about 0.2 % false positives.
        assert!(strangers_passed < 500, "{strangers_passed} false positives");
        assert!((0..50_000).all(|n| door.missed_before(&key(n))));
    }

    #[test]
    fn it_starts_afresh_after_its_limit() {
        let door = Doorkeeper::default();
        assert!(!door.missed_before(&key(u64::MAX)));
        assert!(door.missed_before(&key(u64::MAX)));
        // Other first misses until the filter starts afresh (a false positive is
        // not a first miss, so it takes a few more than the limit).
        let mut n = 0;
        while door.recorded.load(Ordering::Relaxed) != 0 {
            door.missed_before(&key(n));
            n += 1;
        }
        assert!((RESET_AFTER - 1..RESET_AFTER + 2_000).contains(&n), "{n}");
        assert!(
            !door.missed_before(&key(u64::MAX)),
            "remembered past a reset"
        );
    }
}
