//! joblib files: compression detection, bounded decompression, and the raw array
//! bytes that joblib (≥ 0.12) writes right after each `NumpyArrayWrapper`.

use std::borrow::Cow;
use std::cell::Cell;
use std::io::{self, BufRead, Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::pickle::reader::Reader;
use crate::pickle::vm::Vm;
use crate::pickle::{
    self, decode_array, element_count, shape_of, Handle, Limits, LoadError, ReadOptions,
};
use crate::value::{DType, Value};

/// Reads a model file saved with `pickle.dump` or `joblib.dump` (plain, or compressed
/// with zlib, gzip, lz4 or xz), with the default [`Limits`].
pub fn read_model_file(bytes: &[u8]) -> Result<Value, LoadError> {
    read_model_file_with_limits(bytes, &Limits::default())
}

/// [`read_model_file`] with explicit limits.
pub fn read_model_file_with_limits(bytes: &[u8], limits: &Limits) -> Result<Value, LoadError> {
    read_model_file_with_options(bytes, limits, &ReadOptions::default())
}

/// [`read_model_file`] with explicit limits and options.
pub fn read_model_file_with_options(
    bytes: &[u8],
    limits: &Limits,
    options: &ReadOptions,
) -> Result<Value, LoadError> {
    // The decompressed stream stays counted against the process-wide budget until
    // the pickle read from it is done.
    let pickle = decompress(bytes, limits)?;
    pickle::read_pickle_with_options(&pickle, limits, options)
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

/// A decompressed (or borrowed, when the file was not compressed) pickle stream.
/// While it lives, its size counts against the process-wide
/// [`Limits::max_decompressed_bytes_in_flight`].
pub struct Decompressed<'a> {
    bytes: Cow<'a, [u8]>,
    _held: InFlight,
}

impl std::ops::Deref for Decompressed<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Decompresses a joblib file, refusing to produce more than [`Limits`] allow: at
/// every step the output may be at most a multiple of the compressed bytes *read so
/// far* plus a floor (so padding after a small bomb buys it nothing), at most
/// [`Limits::max_decompressed_bytes`], and, with every other decompression in the
/// process, at most [`Limits::max_decompressed_bytes_in_flight`].
pub fn decompress<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Decompressed<'a>, LoadError> {
    let compression = detect_compression(bytes);
    let consumed = Rc::new(Cell::new(0usize));
    let output = Output::new(limits, consumed.clone());
    let (format, result) = match compression {
        Compression::None => {
            return Ok(Decompressed {
                bytes: Cow::Borrowed(bytes),
                _held: InFlight::default(),
            })
        }
        Compression::Zlib => ("zlib", zlib_capped(bytes, output)),
        Compression::Gzip => (
            "gzip",
            read_capped(
                flate2::read::GzDecoder::new(Counting::new(bytes, consumed)),
                output,
            ),
        ),
        Compression::Lz4 => (
            "lz4",
            lz4_frame_is_complete(bytes).and_then(|()| {
                read_capped(
                    lz4_flex::frame::FrameDecoder::new(Counting::new(bytes, consumed)),
                    output,
                )
            }),
        ),
        Compression::Xz => ("xz", {
            let mut sink = Sink::new(output);
            let result = lzma_rs::xz_decompress(&mut Counting::new(bytes, consumed), &mut sink);
            sink.finish(result)
        }),
        Compression::Lzma => ("lzma", {
            let mut sink = Sink::new(output);
            let result = lzma_rs::lzma_decompress(&mut Counting::new(bytes, consumed), &mut sink);
            sink.finish(result)
        }),
        Compression::Bz2 => ("bz2", Err("bz2 compression is not supported".to_owned())),
    };
    result
        .map(|output| Decompressed {
            bytes: Cow::Owned(output.buf),
            _held: output.held,
        })
        .map_err(|message| LoadError::Decompress { format, message })
}

/// Decompressed bytes held by every decompression in this process, so that several
/// concurrent loads together stay under [`Limits::max_decompressed_bytes_in_flight`].
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// This decompression's share of [`IN_FLIGHT`], given back when dropped.
#[derive(Default)]
struct InFlight {
    held: usize,
}

impl InFlight {
    fn grow_to(&mut self, total: usize, limit: usize) -> Result<(), String> {
        let Some(extra) = total.checked_sub(self.held).filter(|&e| e > 0) else {
            return Ok(());
        };
        IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(extra).filter(|&n| n <= limit)
            })
            .map_err(|now| {
                format!(
                    "model files being read at the same time already hold {now} decompressed \
                     bytes; {extra} more would pass the limit of {limit} bytes for all of them \
                     together (try again when other loads have finished)"
                )
            })?;
        self.held = total;
        Ok(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// The growing decompressed buffer. Every growth is checked against the limits,
/// given how many compressed bytes the decompressor has read so far.
struct Output<'l> {
    buf: Vec<u8>,
    limits: &'l Limits,
    consumed: Rc<Cell<usize>>,
    held: InFlight,
}

impl<'l> Output<'l> {
    fn new(limits: &'l Limits, consumed: Rc<Cell<usize>>) -> Self {
        Output {
            buf: Vec::new(),
            limits,
            consumed,
            held: InFlight::default(),
        }
    }

    /// The most output allowed now.
    fn cap(&self) -> usize {
        self.limits.decompressed_cap(self.consumed.get())
    }

    fn exceeded(&self, cap: usize) -> String {
        format!(
            "output exceeds the limit of {cap} bytes after {} compressed bytes (at most {} \
             bytes per compressed byte read plus {}, and {} in all)",
            self.consumed.get(),
            self.limits.decompressed_bytes_per_input_byte,
            self.limits.decompressed_bytes_floor,
            self.limits.max_decompressed_bytes
        )
    }

    /// Makes room for `extra` more bytes, or says which limit forbids it.
    fn make_room(&mut self, extra: usize) -> Result<(), String> {
        let cap = self.cap();
        let want = self.buf.len().saturating_add(extra);
        if want > cap {
            return Err(self.exceeded(cap));
        }
        self.grow(want, cap)
    }

    /// Makes the buffer's capacity at least `want` (at most `most`), counted
    /// against the process-wide budget: capacity is what the allocator hands out.
    fn grow(&mut self, want: usize, most: usize) -> Result<(), String> {
        if want > self.buf.capacity() {
            // Grow geometrically, never past `most`.
            let new_capacity = want
                .max(self.buf.capacity().saturating_mul(2))
                .max(64 << 10)
                .min(most);
            self.held
                .grow_to(new_capacity, self.limits.max_decompressed_bytes_in_flight)?;
            self.buf.reserve_exact(new_capacity - self.buf.len());
        }
        Ok(())
    }

    fn extend(&mut self, data: &[u8]) -> Result<(), String> {
        self.make_room(data.len())?;
        self.buf.extend_from_slice(data);
        Ok(())
    }
}

/// The compressed input, counting what the decompressor has read of it.
struct Counting<'a> {
    rest: &'a [u8],
    consumed: Rc<Cell<usize>>,
}

impl<'a> Counting<'a> {
    fn new(bytes: &'a [u8], consumed: Rc<Cell<usize>>) -> Self {
        Counting {
            rest: bytes,
            consumed,
        }
    }
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.rest.read(buf)?;
        self.consumed.set(self.consumed.get() + n);
        Ok(n)
    }
}

impl BufRead for Counting<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        Ok(self.rest)
    }

    fn consume(&mut self, n: usize) {
        self.rest.consume(n);
        self.consumed.set(self.consumed.get() + n);
    }
}

fn read_capped<'l>(mut reader: impl Read, mut out: Output<'l>) -> Result<Output<'l>, String> {
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        out.extend(&chunk[..n])?;
    }
}

/// zlib through the low-level API, because flate2's `Read` adapter treats a stream cut
/// short as a clean end of file; a truncated file must be an error.
fn zlib_capped<'l>(input: &[u8], mut out: Output<'l>) -> Result<Output<'l>, String> {
    let mut inflater = flate2::Decompress::new(true);
    loop {
        if out.buf.len() == out.buf.capacity() {
            // Room up to one byte past the cap, so that "exactly at the cap" and
            // "beyond" differ.
            let cap = out.cap();
            let len = out.buf.len();
            let room = cap.saturating_add(1).saturating_sub(len).min(64 << 10);
            if room == 0 {
                return Err(out.exceeded(cap));
            }
            out.grow(len + room, cap.saturating_add(1))?;
        }
        let consumed = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
        let rest = input.get(consumed..).unwrap_or(&[]);
        let before = (inflater.total_in(), out.buf.len());
        let status = inflater
            .decompress_vec(rest, &mut out.buf, flate2::FlushDecompress::None)
            .map_err(|e| e.to_string())?;
        out.consumed
            .set(usize::try_from(inflater.total_in()).unwrap_or(usize::MAX));
        let cap = out.cap();
        if out.buf.len() > cap {
            return Err(out.exceeded(cap));
        }
        if status == flate2::Status::StreamEnd {
            return Ok(out);
        }
        let stalled = (inflater.total_in(), out.buf.len()) == before;
        if stalled && out.buf.len() < out.buf.capacity() {
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

/// A `Write` into an [`Output`] (lzma-rs writes into a sink rather than being read
/// from); the first refusal is kept to report instead of lzma-rs's I/O error.
struct Sink<'l> {
    out: Output<'l>,
    refused: Option<String>,
}

impl<'l> Sink<'l> {
    fn new(out: Output<'l>) -> Self {
        Sink { out, refused: None }
    }

    fn finish(self, result: Result<(), lzma_rs::error::Error>) -> Result<Output<'l>, String> {
        match (result, self.refused) {
            (_, Some(refused)) => Err(refused),
            (Err(e), None) => Err(e.to_string()),
            (Ok(()), None) => Ok(self.out),
        }
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Err(refused) = self.out.extend(data) {
            self.refused = Some(refused);
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn concurrent_decompressions_share_one_budget() {
        let file = zlib(&[7u8; 1 << 20]);
        // Another load holds 1 GiB (counted, not allocated).
        let mut other = InFlight::default();
        other.grow_to(1 << 30, usize::MAX).unwrap();
        let limits = Limits {
            max_decompressed_bytes_in_flight: (1 << 30) + (512 << 10),
            ..Limits::default()
        };
        let err = match decompress(&file, &limits) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("the shared budget was not enforced"),
        };
        assert!(err.contains("for all of them together"), "{err}");
        drop(other);
        let out = decompress(&file, &limits).unwrap();
        assert_eq!(out.len(), 1 << 20);
        // While `out` lives its bytes stay counted; dropped, they are given back.
        assert!(IN_FLIGHT.load(Ordering::Acquire) >= 1 << 20);
    }
}
