//! In-process fastText predictions per second (issue 15), for bench/fasttext.sh:
//! `FastText::predict` on texts already segmented, and on raw texts segmented first
//! by the pipeline's `[preprocess] segmenter = "jieba"` step
//! (`preprocess::segmenter::TextSegmenter`), one text per call, as the Python loop
//! it is compared with.
//!
//! usage: fasttext_bench MODEL RAW_TEXTS SEGMENTED_TEXTS SECONDS
//! Prints `predict_per_s <x>` and `jieba_predict_per_s <x>`.

use std::path::Path;
use std::time::Instant;

use ferroserve::model_config::ModelConfig;
use ferroserve::preprocess::segmenter::TextSegmenter;
use ferroserve_fasttext::{FastText, Limits};

fn lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("texts file")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Calls `f` on every text, round after round, for `seconds`; calls per second.
fn per_second(texts: &[String], seconds: f64, mut f: impl FnMut(&str)) -> f64 {
    for t in texts.iter().take(50) {
        f(t);
    }
    let started = Instant::now();
    let mut count = 0usize;
    while started.elapsed().as_secs_f64() < seconds {
        for t in texts {
            f(t);
            count += 1;
        }
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: fasttext_bench MODEL RAW_TEXTS SEGMENTED_TEXTS SECONDS");
        std::process::exit(2);
    }
    let model_path = Path::new(&args[1]);
    let (raw, segmented) = (lines(&args[2]), lines(&args[3]));
    let seconds: f64 = args[4].parse().expect("SECONDS");

    let model = FastText::load(model_path, &Limits::default()).expect("fastText model");
    let rate = per_second(&segmented, seconds, |t| {
        std::hint::black_box(model.predict(t, 1, 0.0).expect("predict"));
    });
    println!("predict_per_s {rate:.0}");

    let config = ModelConfig::parse("[preprocess]\nsegmenter = \"jieba\"\n").expect("config");
    let segmenter = TextSegmenter::load(Path::new("."), &config.preprocess)
        .expect("segmenter")
        .expect("jieba");
    let rate = per_second(&raw, seconds, |t| {
        std::hint::black_box(
            model
                .predict(&segmenter.segment(t), 1, 0.0)
                .expect("predict"),
        );
    });
    println!("jieba_predict_per_s {rate:.0}");
}
