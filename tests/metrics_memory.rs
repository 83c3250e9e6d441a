//! The metrics of a version that ended give back their memory (issue 9's soak found
//! 270–430 KiB held for good per version swapped under load).
//!
//! A histogram's samples wait in blocks of metrics-util's `AtomicBucket` until an
//! upkeep pass drains them; the bucket has no `Drop`, so samples recorded after the
//! last pass leaked with the version's recorder. This binary counts the bytes the
//! process holds through its own global allocator, so it runs alone in its process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use ferroserve::metrics::QueueMetrics;

struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only the byte count
// is added on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HELD.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One version's life: loaded, 5,000 requests answered (two histogram samples
/// each, as a batch of one records), ended before any upkeep pass ran.
fn serve_and_end(version: u64) {
    let metrics = QueueMetrics::new("metrics_memory_model", version);
    for _ in 0..5_000 {
        metrics.batch_size.record(1.0);
        metrics.compute_duration.record(0.000_2);
    }
}

#[test]
fn an_ended_versions_unscraped_samples_are_freed() {
    for version in 0..5 {
        serve_and_end(version);
    }
    let before = HELD.load(Ordering::Relaxed);
    for version in 5..105 {
        serve_and_end(version);
    }
    let grown = HELD.load(Ordering::Relaxed) - before;
    // 100 versions × 10,000 samples of 8 bytes: about 8 MB when the samples leak.
    // Freed ones leave at most the last few versions' blocks awaiting the epoch
    // collector.
    assert!(
        grown < 2 << 20,
        "100 ended versions still hold {} KiB",
        grown / 1024
    );
}
