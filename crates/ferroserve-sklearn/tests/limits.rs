//! Each bound in `Limits` is enforced, and the defaults leave real files alone.

mod common;

use std::fs;

use ferroserve_sklearn::joblib::{detect_compression, read_model_file_with_limits, Compression};
use ferroserve_sklearn::pickle::read_pickle_with_limits;
use ferroserve_sklearn::Limits;

fn nested_lists(depth: usize) -> Vec<u8> {
    let mut pickle = b"\x80\x02]".to_vec();
    pickle.extend(b"(]".repeat(depth));
    pickle.extend(b"e".repeat(depth));
    pickle.push(b'.');
    pickle
}

#[test]
fn max_depth_is_enforced_exactly() {
    let limits = Limits {
        max_depth: 10,
        ..Limits::default()
    };
    assert!(read_pickle_with_limits(&nested_lists(10), &limits).is_ok());
    let err = read_pickle_with_limits(&nested_lists(11), &limits).unwrap_err();
    assert!(
        err.to_string().contains("nested deeper than 10 levels"),
        "{err}"
    );
}

#[test]
fn decoded_budget_scales_with_input() {
    let bytes = fs::read(common::crate_dir().join("tests/fixtures/pickle/arrays.p5.pkl")).unwrap();
    let tight = Limits {
        decoded_bytes_per_input_byte: 1,
        decoded_bytes_floor: 0,
        ..Limits::default()
    };
    let err = read_model_file_with_limits(&bytes, &tight).unwrap_err();
    assert!(err.to_string().contains("budget"), "{err}");
    assert!(read_model_file_with_limits(&bytes, &Limits::default()).is_ok());
}

#[test]
fn decompression_cap_is_enforced() {
    let dir = common::crate_dir().join("tests/fixtures/pickle");
    for (name, compression) in [
        ("arrays.joblib.z", Compression::Zlib),
        ("arrays.joblib.gz", Compression::Gzip),
        ("arrays.joblib.lz4", Compression::Lz4),
        ("arrays.joblib.xz", Compression::Xz),
        ("arrays.joblib.lzma", Compression::Lzma),
    ] {
        let bytes = fs::read(dir.join(name)).unwrap();
        assert_eq!(detect_compression(&bytes), compression, "{name}");
        let tight = Limits {
            decompressed_bytes_per_input_byte: 1,
            decompressed_bytes_floor: 0,
            ..Limits::default()
        };
        let err = read_model_file_with_limits(&bytes, &tight).unwrap_err();
        assert!(
            err.to_string().contains("exceeds the limit"),
            "{name}: {err}"
        );
    }
    assert_eq!(
        detect_compression(&fs::read(dir.join("arrays.joblib")).unwrap()),
        Compression::None
    );
}

/// A zlib stream of about `zeros` zero bytes in fixed-Huffman deflate: one literal
/// 0, then copies of (length 258, distance 1), 13 bits per 258 bytes. It is never
/// ended: a bomb needs no end.
fn zlib_zeros(zeros: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }
    impl Bits {
        /// A Huffman code, most significant bit first.
        fn code(&mut self, code: u32, len: u32) {
            for i in (0..len).rev() {
                self.acc |= ((code >> i) & 1) << self.n;
                self.n += 1;
                if self.n == 8 {
                    self.out.push(self.acc as u8);
                    (self.acc, self.n) = (0, 0);
                }
            }
        }
    }
    let mut bits = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        n: 0,
    };
    bits.code(1, 1); // BFINAL
    bits.code(0b10, 2); // BTYPE 01 (fixed Huffman), least significant bit first
    bits.code(0x30, 8); // literal 0
    for _ in 0..zeros / 258 {
        bits.code(0xC5, 8); // length code 285: 258 bytes
        bits.code(0, 5); // distance code 0: distance 1
    }
    bits.out
}

/// Peak resident memory of this process (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn padding_after_a_bomb_does_not_raise_the_decompression_cap() {
    // 200 MB of zeros in 1.3 MB of zlib, then 3 MB of noise: capped by the file's
    // length (×64 + 64 MiB = 340 MB) the whole 200 MB was decompressed; capped by
    // the compressed bytes actually read, it stops near 110 MB.
    let mut file = zlib_zeros(200 << 20);
    let stream_len = file.len();
    let mut x: u32 = 0x9E37_79B9;
    file.extend((0..3 << 20).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    fs::write("/proc/self/clear_refs", "5").unwrap(); // resets VmHWM
    let before = peak_rss();
    let started = std::time::Instant::now();
    let err = read_model_file_with_limits(&file, &Limits::default()).unwrap_err();
    let grown = peak_rss().saturating_sub(before);
    let message = err.to_string();
    assert!(message.contains("exceeds the limit"), "{message}");
    let consumed: usize = message
        .split(" after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no compressed byte count in {message}"));
    assert!(consumed <= stream_len, "{consumed} > {stream_len}");
    assert!(
        grown < 160 << 20,
        "decompression took {grown} bytes more memory"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn default_caps_are_two_gib_per_file_and_four_in_flight() {
    let d = Limits::default();
    assert_eq!(d.max_decompressed_bytes, 2 << 30);
    assert_eq!(d.max_decompressed_bytes_in_flight, 4 << 30);
}
