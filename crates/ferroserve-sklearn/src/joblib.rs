//! joblib files: compression detection, bounded decompression, and the raw array
//! bytes that joblib (≥ 0.12) writes right after each `NumpyArrayWrapper`.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::sync::Arc;

use crate::pickle::reader::Reader;
use crate::pickle::vm::Vm;
use crate::pickle::{self, decode_array, element_count, shape_of, Handle, Limits, LoadError};
use crate::value::{DType, Value};

/// Reads a model file saved with `pickle.dump` or `joblib.dump` (plain, or compressed
/// with zlib, gzip, lz4 or xz), with the default [`Limits`].
pub fn read_model_file(bytes: &[u8]) -> Result<Value, LoadError> {
    read_model_file_with_limits(bytes, &Limits::default())
}

/// [`read_model_file`] with explicit limits.
pub fn read_model_file_with_limits(bytes: &[u8], limits: &Limits) -> Result<Value, LoadError> {
    let pickle = decompress(bytes, limits)?;
    pickle::read_pickle_with_limits(&pickle, limits)
}

/// The compression joblib applied to a file, recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zlib,
    Gzip,
    Lz4,
    Xz,
    Lzma,
    Bz2,
}

/// Recognises joblib's compressors by the prefixes joblib itself checks
/// (`joblib.compressor`). Anything else is taken to be a plain pickle stream.
pub fn detect_compression(bytes: &[u8]) -> Compression {
    if bytes.starts_with(b"\x78") {
        Compression::Zlib
    } else if bytes.starts_with(b"\x1f\x8b") {
        Compression::Gzip
    } else if bytes.starts_with(b"\x04\x22\x4d\x18") {
        Compression::Lz4
    } else if bytes.starts_with(b"\xfd7zXZ") {
        Compression::Xz
    } else if bytes.starts_with(b"\x5d\x00\x00") {
        Compression::Lzma
    } else if bytes.starts_with(b"BZh") {
        Compression::Bz2
    } else {
        Compression::None
    }
}

/// Decompresses a joblib file, refusing to produce more than the cap derived from
/// [`Limits`] (a multiple of the compressed size plus a floor, at most
/// [`Limits::max_decompressed_bytes`]) so that a small bomb cannot exhaust memory.
pub fn decompress<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Cow<'a, [u8]>, LoadError> {
    let cap = limits.decompressed_cap(bytes.len());
    let compression = detect_compression(bytes);
    let (format, result) = match compression {
        Compression::None => return Ok(Cow::Borrowed(bytes)),
        Compression::Zlib => ("zlib", zlib_capped(bytes, cap)),
        Compression::Gzip => (
            "gzip",
            read_capped(flate2::read::GzDecoder::new(bytes), cap),
        ),
        Compression::Lz4 => (
            "lz4",
            lz4_frame_is_complete(bytes)
                .and_then(|()| read_capped(lz4_flex::frame::FrameDecoder::new(bytes), cap)),
        ),
        Compression::Xz => ("xz", {
            let mut out = CappedWriter::new(cap);
            lzma_rs::xz_decompress(&mut io::BufReader::new(bytes), &mut out)
                .map(|()| out.buf)
                .map_err(|e| lzma_error(e, out.exceeded, cap))
        }),
        Compression::Lzma => ("lzma", {
            let mut out = CappedWriter::new(cap);
            lzma_rs::lzma_decompress(&mut io::BufReader::new(bytes), &mut out)
                .map(|()| out.buf)
                .map_err(|e| lzma_error(e, out.exceeded, cap))
        }),
        Compression::Bz2 => ("bz2", Err("bz2 compression is not supported".to_owned())),
    };
    result
        .map(Cow::Owned)
        .map_err(|message| LoadError::Decompress { format, message })
}

fn read_capped(reader: impl Read, cap: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    // Read one byte past the cap so that "exactly at the cap" and "beyond" differ.
    let limit = (cap as u64).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() > cap {
        return Err(format!("output exceeds the limit of {cap} bytes"));
    }
    Ok(out)
}

/// zlib through the low-level API, because flate2's `Read` adapter treats a stream cut
/// short as a clean end of file; a truncated file must be an error.
fn zlib_capped(input: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    let mut inflater = flate2::Decompress::new(true);
    let mut out: Vec<u8> = Vec::new();
    loop {
        if out.len() == out.capacity() {
            // Grow geometrically, never past one byte over the cap.
            let room = cap.saturating_add(1).saturating_sub(out.len());
            if room == 0 {
                return Err(format!("output exceeds the limit of {cap} bytes"));
            }
            out.reserve_exact(out.len().max(64 << 10).min(room));
        }
        let consumed = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
        let rest = input.get(consumed..).unwrap_or(&[]);
        let before = (inflater.total_in(), out.len());
        let status = inflater
            .decompress_vec(rest, &mut out, flate2::FlushDecompress::None)
            .map_err(|e| e.to_string())?;
        if out.len() > cap {
            return Err(format!("output exceeds the limit of {cap} bytes"));
        }
        if status == flate2::Status::StreamEnd {
            return Ok(out);
        }
        let stalled = (inflater.total_in(), out.len()) == before;
        if stalled && out.len() < out.capacity() {
            return Err("stream ends before its end marker (truncated file)".into());
        }
    }
}

/// lz4_flex ends a frame cleanly at end of input even without the frame's end mark, so
/// check that the input ends with the end mark (and the content checksum, if the frame
/// header announces one): a truncated file must be an error.
fn lz4_frame_is_complete(input: &[u8]) -> Result<(), String> {
    let truncated = || "frame ends before its end mark (truncated file)".to_owned();
    let flags = *input.get(4).ok_or_else(truncated)?;
    let trailer = if flags & 0x04 != 0 { 8 } else { 4 };
    let end = input
        .len()
        .checked_sub(trailer)
        .and_then(|start| input.get(start..start.checked_add(4)?))
        .ok_or_else(truncated)?;
    if end == [0, 0, 0, 0] {
        Ok(())
    } else {
        Err(truncated())
    }
}

fn lzma_error(error: lzma_rs::error::Error, exceeded: bool, cap: usize) -> String {
    if exceeded {
        format!("output exceeds the limit of {cap} bytes")
    } else {
        error.to_string()
    }
}

/// A `Write` that refuses to grow beyond `cap` bytes (lzma-rs writes into a sink
/// rather than being read from).
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    exceeded: bool,
}

impl CappedWriter {
    fn new(cap: usize) -> Self {
        CappedWriter {
            buf: Vec::new(),
            cap,
            exceeded: false,
        }
    }
}

impl Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.cap {
            self.exceeded = true;
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const MAX_WRAPPER_STATE_KEYS: usize = 32;

/// Completes a `NumpyArrayWrapper` whose `BUILD` state is `state`: reads the array that
/// joblib wrote right after it (`NumpyArrayWrapper.read_array` in joblib's
/// `numpy_pickle.py`) and leaves the reader just past it.
pub(crate) fn read_wrapped_array(vm: &mut Vm<'_, '_>, state: Handle) -> Result<Value, LoadError> {
    let offset = vm.offset();
    // joblib writes six keys; a bigger dict is not joblib's, and refusing it keeps the
    // linear key lookups below cheap however often a wrapper is rebuilt.
    if vm.heap.dict_len(state) > MAX_WRAPPER_STATE_KEYS {
        return Err(vm.malformed("joblib array wrapper state has too many keys"));
    }
    let field = |key: &str| {
        vm.heap
            .dict_get(state, key)
            .ok_or_else(|| LoadError::Malformed {
                offset,
                message: format!("joblib array wrapper state has no {key:?}"),
            })
    };
    let subclass = field("subclass")?;
    let shape = field("shape")?;
    let order = field("order")?;
    let dtype = field("dtype")?;
    let alignment = vm.heap.dict_get(state, "numpy_array_alignment_bytes");
    if !vm.heap.is_ndarray_type(subclass) {
        return Err(vm.malformed("joblib array subclass must be numpy.ndarray"));
    }
    let shape = shape_of(&vm.heap, shape, offset)?;
    let fortran = match vm.heap.str(order) {
        Some("C") => false,
        Some("F") => true,
        _ => return Err(vm.malformed("joblib array order must be 'C' or 'F'")),
    };
    let dt = vm.dtype_at(dtype)?;
    if matches!(dt.dtype, DType::Object) {
        // Object arrays are a complete nested pickle stream, read by a fresh unpickler
        // (with the same allowlist and budget) in which joblib arrays cannot nest again.
        let data = vm.reader.data();
        let start = vm.reader.pos();
        let nested = Vm::new(data, start, &mut *vm.budget, vm.limits, false);
        let (value, end) = nested.run()?;
        vm.reader = Reader::new(data, end);
        return match value {
            Value::Array(_) => Ok(value),
            _ => Err(vm.malformed("joblib object array did not contain an array")),
        };
    }
    let aligned = alignment.is_some_and(|h| !vm.heap.is_none(h));
    if aligned {
        // joblib ≥ 1.2 writes one byte of padding length, then that much padding, so
        // that the array data starts aligned in the file.
        let padding = vm.reader.u8()?;
        vm.reader.take(u64::from(padding))?;
    }
    let count = element_count(&shape, offset)?;
    let nbytes = count
        .checked_mul(dt.itemsize)
        .ok_or_else(|| vm.malformed("joblib array byte size overflows"))?;
    let raw = vm.reader.take(nbytes as u64)?;
    let array = decode_array(&dt, shape, fortran, raw, vm.budget, offset)?;
    Ok(Value::Array(Arc::new(array)))
}
