//! Inputs the fuzzer (`fuzz/`, see FUZZING.md) flagged: crashes, timeouts, slow units and
//! out-of-memory reports. Each must now load or fail cleanly, quickly, on a small stack.

mod common;

use std::fs;
use std::time::{Duration, Instant};

#[test]
fn every_fuzzer_finding_is_handled_cleanly() {
    let dir = common::crate_dir().join("tests/fuzz_regressions");
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let started = Instant::now();
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                let _ = ferroserve_sklearn::read_model_file(&bytes);
            })
            .unwrap()
            .join()
            .unwrap_or_else(|_| panic!("{name}: reader panicked"));
        // Generous for a debug build on a busy machine; the point is "not minutes".
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name}: took {:?}",
            started.elapsed()
        );
        count += 1;
    }
    assert!(count >= 1, "no fuzz regression inputs found");
}
