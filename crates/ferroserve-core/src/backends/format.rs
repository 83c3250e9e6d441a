//! Recognises a model file's format from its first bytes, whatever its name.
//!
//! Old services named their files `lr_iris.model` or `name_question_1591259822.bin`;
//! the extension says nothing then. Each check here is conservative: it answers a
//! format only when the bytes could not plausibly be anything else, so a text file
//! or another protobuf is refused with a clear message instead of reaching a
//! runtime's parser. When the content says nothing, [`ArtifactFormat::from_extension`]
//! still decides (so a corrupt `model.onnx` gets ONNX Runtime's own message).

use std::io::Read;
use std::path::Path;

/// How many bytes of a file [`sniff_file`] reads: enough to walk the top-level
/// fields of an ONNX model that precede its graph.
pub const SNIFF_BYTES: usize = 64 * 1024;

/// What a model file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactFormat {
    /// An ONNX `ModelProto`.
    Onnx,
    /// A plain pickle stream (`pickle.dump`, or `joblib.dump` without compression).
    Pickle,
    /// A pickle compressed the way `joblib.dump(compress=…)` does.
    CompressedJoblib,
    /// A fastText model (`.bin`, or `.ftz` quantized): its magic number and a
    /// format version fastText writes.
    FastText,
}

/// What a file must hold to be served, for error messages.
pub const EXPECTED_FORMATS: &str = "an ONNX model (a protobuf ModelProto), a pickle \
    (protocol 0 to 5), a joblib file (plain, or compressed with zlib, gzip, bz2, xz, \
    lzma or lz4) or a fastText model (.bin or .ftz)";

impl ArtifactFormat {
    /// The name an artifact of this format is stored under by an upload; one of
    /// the server's `backends::ARTIFACT_NAMES`.
    pub fn canonical_name(self) -> &'static str {
        match self {
            ArtifactFormat::Onnx => "model.onnx",
            ArtifactFormat::Pickle => "model.pkl",
            ArtifactFormat::CompressedJoblib => "model.joblib",
            ArtifactFormat::FastText => "model.bin",
        }
    }

    /// The backend that reads it, as in status (`"onnx"`, `"sklearn"`).
    pub fn backend(self) -> &'static str {
        match self {
            ArtifactFormat::Onnx => "onnx",
            ArtifactFormat::Pickle | ArtifactFormat::CompressedJoblib => "sklearn",
            ArtifactFormat::FastText => "fasttext",
        }
    }

    /// The format a file's extension names, when its content did not say.
    pub fn from_extension(path: &Path) -> Option<ArtifactFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "onnx" => Some(ArtifactFormat::Onnx),
            "pkl" | "pickle" => Some(ArtifactFormat::Pickle),
            "joblib" => Some(ArtifactFormat::CompressedJoblib),
            "ftz" => Some(ArtifactFormat::FastText),
            _ => None,
        }
    }
}

/// Reads the first [`SNIFF_BYTES`] of a file and recognises its format.
pub fn sniff_file(path: &Path) -> std::io::Result<Option<ArtifactFormat>> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    std::fs::File::open(path)?
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)?;
    let total = std::fs::metadata(path)?.len();
    Ok(sniff(&head, total))
}

/// Recognises a format from the first bytes of a file of `total_len` bytes.
pub fn sniff(head: &[u8], total_len: u64) -> Option<ArtifactFormat> {
    if is_fasttext(head) {
        Some(ArtifactFormat::FastText)
    } else if is_pickle(head, total_len) {
        Some(ArtifactFormat::Pickle)
    } else if is_compressed_joblib(head) {
        Some(ArtifactFormat::CompressedJoblib)
    } else if is_onnx(head) {
        Some(ArtifactFormat::Onnx)
    } else {
        None
    }
}

/// fastText's magic number (`793712314`, little-endian) and a version it writes.
fn is_fasttext(head: &[u8]) -> bool {
    let word = |i: usize| {
        head.get(i..i + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    word(0) == Some(ferroserve_fasttext::MAGIC)
        && word(4).is_some_and(|v| (11..=ferroserve_fasttext::MAX_VERSION).contains(&v))
}

/// A pickle: protocol 2 to 5 start with PROTO (0x80) and the protocol number.
/// Protocols 0 and 1 have no header: only a stream that starts the way pickle
/// writes objects (a GLOBAL `c<module>\n<name>\n`, or MARK / EMPTY_LIST /
/// EMPTY_DICT / EMPTY_TUPLE) and, when the whole file is in view, ends with STOP
/// (`.`) is taken for one.
fn is_pickle(head: &[u8], total_len: u64) -> bool {
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return true;
    }
    let whole = head.len() as u64 == total_len;
    if whole && head.last() != Some(&b'.') {
        return false;
    }
    match head.first() {
        Some(b'c') => is_global_line(&head[1..]),
        // After MARK (protocol 0): a container, a GLOBAL, a scalar or a memo get.
        Some(b'(') => matches!(
            head.get(1),
            Some(b'(' | b']' | b'}' | b')' | b'c' | b'd' | b'l' | b't')
                | Some(b'I' | b'L' | b'S' | b'V' | b'F' | b'N' | b'g')
        ),
        // After an empty container (protocol 1): a memo put, a MARK, or STOP.
        Some(b']' | b'}' | b')') => matches!(head.get(1), Some(b'q' | b'r' | b'p' | b'(' | b'.')),
        _ => false,
    }
}

/// `module\nname\n` of a GLOBAL opcode: two dotted Python identifiers.
fn is_global_line(rest: &[u8]) -> bool {
    let mut lines = rest.splitn(3, |b| *b == b'\n');
    let is_dotted_identifier = |s: &[u8]| {
        !s.is_empty()
            && s.len() <= 256
            && !s[0].is_ascii_digit()
            && s.iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
    };
    let (Some(module), Some(name)) = (lines.next(), lines.next()) else {
        return false;
    };
    // A third part exists only when `name` ended with a newline.
    is_dotted_identifier(module) && is_dotted_identifier(name) && lines.next().is_some()
}

/// joblib's compressors, by the prefixes `joblib.compressor` checks, each made a
/// little stricter so that a text file is not taken for one: zlib needs one of the
/// four header bytes zlib writes, gzip its deflate method, bz2 a block size digit.
fn is_compressed_joblib(head: &[u8]) -> bool {
    matches!(head, [0x78, 0x01 | 0x5e | 0x9c | 0xda, ..])
        || head.starts_with(&[0x1f, 0x8b, 0x08])
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00])
        || head.starts_with(&[0x5d, 0x00, 0x00])
        || head.starts_with(&[0x04, 0x22, 0x4d, 0x18])
        || matches!(head, [b'B', b'Z', b'h', b'1'..=b'9', ..])
}

/// An ONNX `ModelProto`: it starts with field 1 (`ir_version`, a varint), and its
/// top-level fields are all `ModelProto` fields with their wire types, among them
/// a `graph` (7) or `opset_import` (8). Walks the fields within `head`; a field
/// running past it ends the walk.
fn is_onnx(head: &[u8]) -> bool {
    if head.first() != Some(&0x08) {
        return false;
    }
    let mut at = 0usize;
    let mut saw_graph_or_opset = false;
    let mut first = true;
    while at < head.len() {
        let Some((tag, next)) = varint(head, at) else {
            break;
        };
        let (field, wire) = (tag >> 3, tag & 7);
        let expected_wire = match field {
            1 | 5 => 0,                                     // ir_version, model_version
            2 | 3 | 4 | 6 | 7 | 8 | 14 | 20 | 21 | 25 => 2, // strings and messages
            _ => return false,
        };
        if wire != expected_wire {
            return false;
        }
        if first {
            // ir_version: ONNX has used 1 to 11 so far.
            match varint(head, next) {
                Some((v, after)) if (1..=64).contains(&v) => {
                    at = after;
                    first = false;
                    continue;
                }
                _ => return false,
            }
        }
        saw_graph_or_opset |= field == 7 || field == 8;
        if wire == 0 {
            match varint(head, next) {
                Some((_, after)) => at = after,
                None => break,
            }
        } else {
            let Some((len, after)) = varint(head, next) else {
                break;
            };
            match after.checked_add(len as usize) {
                Some(end) if end <= head.len() => at = end,
                _ => break, // runs past what was read
            }
        }
    }
    saw_graph_or_opset
}

/// A protobuf varint at `at`: its value and where the next byte is.
fn varint(bytes: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(at)?;
        at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((value, at));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Option<ArtifactFormat> {
        sniff(bytes, bytes.len() as u64)
    }

    #[test]
    fn recognises_the_shipped_models() {
        // The repository's root, two levels above this crate.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let onnx = root.join("examples/models/iris_lr/1/model.onnx");
        assert_eq!(sniff_file(&onnx).unwrap(), Some(ArtifactFormat::Onnx));
        let joblib = root.join("examples/models/iris_sklearn/1/model.joblib");
        assert_eq!(sniff_file(&joblib).unwrap(), Some(ArtifactFormat::Pickle));
        let skl = root.join("crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1");
        let z3 = skl.join("decision_tree_classifier.z3.joblib");
        assert_eq!(
            sniff_file(&z3).unwrap(),
            Some(ArtifactFormat::CompressedJoblib)
        );
        let gz = skl.join("ct_ordinal_gb.gz3.joblib");
        assert_eq!(
            sniff_file(&gz).unwrap(),
            Some(ArtifactFormat::CompressedJoblib)
        );
    }

    #[test]
    fn recognises_old_pickle_protocols() {
        // pickle.dumps({'a': [1]}, protocol=0) and protocol=1.
        assert_eq!(
            whole(b"(dp0\nVa\np1\n(lp2\nI1\nas."),
            Some(ArtifactFormat::Pickle)
        );
        assert_eq!(
            whole(b"}q\x00X\x01\x00\x00\x00aq\x01]q\x02K\x01as."),
            Some(ArtifactFormat::Pickle)
        );
        assert_eq!(
            whole(b"ccopy_reg\n_reconstructor\np0\n(c__main__\nA\np1\nc__builtin__\nobject\np2\nNtp3\nRp4\n."),
            Some(ArtifactFormat::Pickle)
        );
    }

    #[test]
    fn refuses_what_is_no_model() {
        for text in [
            &b"sepal_length,sepal_width\n5.1,3.5\n"[..],
            b"this is not a protobuf",
            b"(just a remark in parentheses).",
            b"cat and dog.",
            b"x marks the spot",
            b"{\"json\": true}",
            b"",
            // Another protobuf: field 1 a varint, then a field ModelProto lacks.
            b"\x08\x01\x12\x03abc\x48\x07",
            // Field 1 then only strings: no graph or opset_import.
            b"\x08\x07\x12\x08skl2onnx",
            // A wrong wire type for graph.
            b"\x08\x07\x38\x01",
        ] {
            assert_eq!(whole(text), None, "{:?}", String::from_utf8_lossy(text));
        }
    }
}
