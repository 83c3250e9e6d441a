//! Any byte string must give `Ok` or `Err` from the fastText reader, never a panic,
//! an out-of-memory abort or a hang; a file that loads must then predict and give
//! sentence vectors without panicking.
#![no_main]

use ferroserve_fasttext::{FastText, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_file_bytes: 1 << 20,
    };
    if let Ok(model) = FastText::from_bytes(data, &limits) {
        for text in ["the team won the football match", "très bien", "今天 的 足球"] {
            let _ = model.predict(text, -1, 0.0);
            let _ = model.predict(text, 2, 0.1);
            let _ = model.sentence_vector(text);
        }
    }
});
