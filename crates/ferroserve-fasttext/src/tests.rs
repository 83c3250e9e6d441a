//! Fidelity against the fasttext package (fixtures written by
//! python/make_fasttext_models.py) and refusal of hostile files.

use super::*;
use serde_json::Value;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fasttext")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(file: &str) -> FastText {
    FastText::load(&fixtures().join(file), &Limits::default()).unwrap()
}

#[test]
fn every_fixture_predicts_as_the_fasttext_package() {
    let expected = expected();
    let mut checked = 0;
    for (name, fixture) in expected.as_object().unwrap() {
        let model = load(fixture["file"].as_str().unwrap());
        let labels: Vec<&str> = fixture["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(model.labels(), labels.as_slice(), "{name}: labels");
        for case in fixture["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let k = case["k"].as_i64().unwrap() as i32;
            let threshold = case["threshold"].as_f64().unwrap() as f32;
            let got = model.predict(text, k, threshold).unwrap();
            let want_labels: Vec<&str> = case["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect();
            let got_labels: Vec<&str> = got.iter().map(|p| p.label.as_str()).collect();
            assert_eq!(
                got_labels, want_labels,
                "{name}: {text:?} k={k} threshold={threshold}"
            );
            for (p, want) in got.iter().zip(case["probabilities"].as_array().unwrap()) {
                let want = want.as_f64().unwrap();
                assert!(
                    (p.probability as f64 - want).abs() <= 1e-5,
                    "{name}: {text:?} k={k}: {} vs {want}",
                    p.probability
                );
            }
            checked += 1;
        }
        for case in fixture["sentence_vectors"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let got = model.sentence_vector(text).unwrap();
            let want: Vec<f64> = case["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (*g as f64 - w).abs() <= 1e-5,
                    "{name}: vector of {text:?}: {g} vs {w}"
                );
            }
        }
    }
    assert!(checked > 300, "only {checked} cases");
}

#[test]
fn reads_each_loss_and_matrix_kind() {
    let kinds: Vec<(&str, Loss, bool)> = vec![
        ("softmax.bin", Loss::Softmax, false),
        ("ova.bin", Loss::OneVsAll, false),
        ("ns.bin", Loss::NegativeSampling, false),
        ("hs.bin", Loss::HierarchicalSoftmax, false),
        ("quantized.ftz", Loss::Softmax, true),
        ("quantized_pruned.ftz", Loss::Softmax, true),
        ("quantized_qout.ftz", Loss::Softmax, true),
        ("lid.176.ftz", Loss::HierarchicalSoftmax, true),
    ];
    for (file, loss, quantized) in kinds {
        let m = load(file);
        assert_eq!(m.args().loss, loss, "{file}");
        assert_eq!(m.is_quantized(), quantized, "{file}");
    }
    assert!(load("quantized_pruned.ftz").dict.pruneidx_size > 0);
    assert!(matches!(
        load("quantized_qout.ftz").output,
        Matrix::Quantized { norms: Some(_), .. }
    ));
    assert_eq!(load("lid.176.ftz").labels().len(), 176);
}

#[test]
fn hash_is_fnv1a_over_sign_extended_bytes() {
    assert_eq!(hash(b""), 2_166_136_261);
    assert_eq!(hash(b"a"), 0xe40c292c);
    // A byte over 0x7f is sign-extended before the xor, as fastText's C++ does.
    assert_ne!(hash("é".as_bytes()), {
        let mut h: u32 = 2_166_136_261;
        for &b in "é".as_bytes() {
            h ^= b as u32;
            h = h.wrapping_mul(16_777_619);
        }
        h
    });
}

#[test]
fn bad_requests_are_errors() {
    let m = load("softmax.bin");
    assert!(matches!(
        m.predict("two\nlines", 1, 0.0),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        m.predict("text", 0, 0.0),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        m.predict("text", -2, 0.0),
        Err(Error::InvalidRequest(_))
    ));
    assert_eq!(m.predict("text", i32::MAX, 0.0).unwrap().len(), 4);
    assert!(m.predict("text", 3, 1.5).unwrap().is_empty());
}

#[test]
fn every_truncation_is_refused_with_a_message() {
    for file in ["softmax.bin", "quantized_pruned.ftz", "hs.bin"] {
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        for len in 0..bytes.len() {
            let err = FastText::from_bytes(&bytes[..len], &Limits::default()).unwrap_err();
            let msg = err.to_string();
            assert!(!msg.is_empty());
        }
        assert!(FastText::from_bytes(&bytes, &Limits::default()).is_ok());
    }
}

#[test]
fn flipped_bytes_never_panic() {
    // Every byte of the header and dictionary, and a sample of the rest, changed to
    // values that are sizes, signs and types an attacker would try.
    for file in ["softmax.bin", "quantized_pruned.ftz", "hs.bin"] {
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        let positions: Vec<usize> = (0..bytes.len().min(1500))
            .chain((1500..bytes.len()).step_by(97))
            .collect();
        for pos in positions {
            for v in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[pos] = v;
                if let Ok(m) = FastText::from_bytes(&b, &Limits::default()) {
                    let _ = m.predict("the team won the football match", -1, 0.0);
                    let _ = m.predict("très bien", 2, 0.1);
                    let _ = m.sentence_vector("goal");
                }
            }
        }
    }
}

#[test]
fn hostile_headers_are_refused_clearly() {
    let bytes = std::fs::read(fixtures().join("softmax.bin")).unwrap();
    let limits = Limits::default();
    let mut b = bytes.clone();
    b[0] ^= 1;
    assert!(matches!(
        FastText::from_bytes(&b, &limits),
        Err(Error::NotFastText)
    ));
    let mut b = bytes.clone();
    b[4..8].copy_from_slice(&13i32.to_le_bytes());
    assert!(FastText::from_bytes(&b, &limits)
        .unwrap_err()
        .to_string()
        .contains("version 13"));
    // The dictionary size (after magic, version, 12 args and t) set to i32::MAX.
    let mut b = bytes.clone();
    b[64..68].copy_from_slice(&i32::MAX.to_le_bytes());
    let err = FastText::from_bytes(&b, &limits).unwrap_err().to_string();
    assert!(err.contains("dictionary"), "{err}");
    let small = Limits {
        max_file_bytes: 100,
    };
    assert!(matches!(
        FastText::from_bytes(&bytes, &small),
        Err(Error::TooLarge { .. })
    ));
    let mut b = bytes.clone();
    b.push(0);
    assert!(FastText::from_bytes(&b, &limits)
        .unwrap_err()
        .to_string()
        .contains("after the output matrix"));
}
