//! Any byte string must produce `Ok` or `Err` from the reader: never a panic, an
//! out-of-memory abort, a stack overflow or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferroserve_sklearn::read_model_file(data);
});
