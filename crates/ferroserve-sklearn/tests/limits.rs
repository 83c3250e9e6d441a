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
