//! In-process timing of the pre-processing pipelines (issue 15), for
//! bench/preprocess.sh: image decoding + resize + normalization per image, and
//! tokenization per text, through the same functions the server runs.
//!
//! usage: preprocess_bench IMAGE_FILE WIDTH HEIGHT ITERATIONS TOKENIZER_DIR TEXTS_FILE
//! (TOKENIZER_DIR holds tokenizer.json and echo.onnx; ORT_DYLIB_PATH must be set.)
//! Prints `image_us_per_image <x>` and `tokenize_us_per_text <x>`.

use std::path::Path;
use std::time::Instant;

use ferroserve::backends::{load_backend, BackendOptions};
use ferroserve::model_config::{ImageConfig, ModelConfig};
use ferroserve::preprocess::image::images_to_tensor;
use ferroserve::preprocess::tokenizer::TextTokenizer;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: preprocess_bench IMAGE WIDTH HEIGHT ITERATIONS TOKENIZER_DIR TEXTS_FILE");
        std::process::exit(2);
    }
    let image = std::fs::read(&args[1]).expect("image file");
    let (width, height): (u32, u32) = (args[2].parse().unwrap(), args[3].parse().unwrap());
    let iterations: usize = args[4].parse().unwrap();
    let config: ModelConfig = ModelConfig::parse(&format!(
        "[preprocess]\nimage = {{ width = {width}, height = {height}, mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }}\n"
    ))
    .unwrap();
    let image_config: ImageConfig = config.preprocess.image.unwrap();
    let images = vec![image];
    for _ in 0..3 {
        images_to_tensor("image", &images, &image_config).unwrap();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(images_to_tensor("image", &images, &image_config).unwrap());
    }
    println!(
        "image_us_per_image {:.1}",
        started.elapsed().as_secs_f64() * 1e6 / iterations as f64
    );

    let dir = Path::new(&args[5]);
    let options = BackendOptions {
        onnx_sessions: 1,
        onnx_intra_threads: 1,
        ..BackendOptions::default()
    };
    let backend = load_backend(&dir.join("echo.onnx"), &options).unwrap();
    let config =
        ModelConfig::parse("[preprocess]\ntokenizer = \"tokenizer.json\"\nmax_length = 128\n")
            .unwrap();
    let tokenizer =
        TextTokenizer::load(dir, "tokenizer.json", &config.preprocess, &*backend).unwrap();
    let texts: Vec<Vec<u8>> = std::fs::read_to_string(&args[6])
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let started = Instant::now();
    let mut count = 0usize;
    while started.elapsed().as_secs_f64() < 3.0 {
        for t in &texts {
            std::hint::black_box(tokenizer.encode("text", std::slice::from_ref(t)).unwrap());
            count += 1;
        }
    }
    println!(
        "tokenize_us_per_text {:.1}",
        started.elapsed().as_secs_f64() * 1e6 / count as f64
    );
}
