//! The hostile corpus (`tests/hostile/make_hostile.py`): every file must be refused with
//! a message naming the refused class or the problem, without panicking, without any
//! payload running (no canary file appears) and without unbounded memory use.

mod common;

use std::fs;
use std::path::Path;

use ferroserve_sklearn::{read_model_file, read_pickle};

/// Peak resident memory of this test process, from /proc (Linux only).
fn peak_rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn canaries() -> Vec<String> {
    fs::read_dir("/tmp")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("ferroserve-canary-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_hostile_file_is_refused_with_a_clear_message_and_bounded_memory() {
    let dir = common::crate_dir().join("tests/hostile");
    let expected: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&fs::read(dir.join("expected_errors.json")).unwrap()).unwrap();
    assert!(expected.len() >= 80, "hostile corpus missing");
    let on_disk = fs::read_dir(dir.join("files")).unwrap().count();
    assert_eq!(
        on_disk,
        expected.len(),
        "every hostile file needs an expected error"
    );
    let canaries_before = canaries();

    for (file, want) in &expected {
        let want = want.as_str().unwrap();
        let bytes = fs::read(dir.join("files").join(file)).unwrap();
        // Read on a thread with a small (1 MiB) stack: the reader must not depend on a
        // big stack to survive nesting bombs.
        let result = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || read_model_file(&bytes).map(|_| ()))
            .unwrap()
            .join()
            .unwrap_or_else(|_| panic!("{file}: reader panicked"));
        let message = match result {
            Ok(()) => panic!("{file}: loaded, but must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(
            message.contains(want),
            "{file}: error {message:?} does not mention {want:?}"
        );
    }

    assert_eq!(
        canaries(),
        canaries_before,
        "a payload created a canary file"
    );
    if let Some(peak) = peak_rss_bytes() {
        assert!(peak < 1 << 30, "peak RSS {peak} bytes exceeds 1 GiB");
    }
}

/// A payload that names the refused class, for the exact wording promised in the docs.
#[test]
fn refusal_message_names_the_class() {
    let err = read_pickle(b"cos\nsystem\n(S'touch /tmp/ferroserve-canary-doc'\ntR.").unwrap_err();
    assert_eq!(
        err.to_string(),
        "refused to load \"os.system\": not an allowlisted class"
    );
}

/// Every prefix of real pickles and joblib files is an error, never a panic.
#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let fixtures = common::crate_dir().join("tests/fixtures/pickle");
    for name in [
        "plain.p2.pkl",
        "plain.p5.pkl",
        "arrays.p0.pkl",
        "arrays.p5.pkl",
        "arrays.joblib",
        "arrays.joblib.z",
        "arrays.joblib.lz4",
        "arrays.joblib.xz",
    ] {
        let bytes = fs::read(fixtures.join(name)).unwrap();
        assert!(
            read_model_file(&bytes).is_ok(),
            "{name}: whole file must load"
        );
        for len in 0..bytes.len() {
            assert!(
                read_model_file(&bytes[..len]).is_err(),
                "{name}: prefix of {len} bytes loaded"
            );
        }
    }
}

/// Repeated memo references to one big list are shared, not copied: a file that refers
/// to a 1000-element list 100 000 times loads quickly and cheaply.
#[test]
fn repeated_memo_gets_of_a_container_share_one_copy() {
    let mut pickle = b"\x80\x02]q\x00(".to_vec();
    for i in 0..1000u32 {
        pickle.extend(b"J");
        pickle.extend(i.to_le_bytes());
    }
    pickle.extend(b"e(");
    for _ in 0..100_000 {
        pickle.extend(b"h\x00");
    }
    pickle.extend(b"l.");
    let value = read_pickle(&pickle).unwrap();
    let ferroserve_sklearn::value::Value::List(outer) = value else {
        panic!("not a list")
    };
    assert_eq!(outer.len(), 100_000);
    let (ferroserve_sklearn::value::Value::List(a), ferroserve_sklearn::value::Value::List(b)) =
        (&outer[0], &outer[99_999])
    else {
        panic!("not lists")
    };
    assert!(std::sync::Arc::ptr_eq(a, b), "memo references were copied");
}

/// zlib and gzip bombs (80 MiB of zeros in ~80 KB, too big to commit): refused once the
/// output passes 64 × input + 64 MiB, without holding more than that.
#[test]
fn zlib_and_gzip_bombs_are_refused() {
    use std::io::Write;

    let zeros = vec![0u8; 80 << 20];
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    zlib.write_all(&zeros).unwrap();
    let zlib = zlib.finish().unwrap();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip.write_all(&zeros).unwrap();
    let gzip = gzip.finish().unwrap();
    drop(zeros);
    for (format, bomb) in [("zlib", zlib), ("gzip", gzip)] {
        let err = read_model_file(&bomb).unwrap_err().to_string();
        assert!(err.contains("exceeds the limit"), "{format}: {err}");
    }
}

#[test]
fn hostile_dir_exists() {
    assert!(Path::new(&common::crate_dir().join("tests/hostile/files")).is_dir());
}
