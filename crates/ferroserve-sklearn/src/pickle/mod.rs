//! A pickle reader that rebuilds plain data and never executes anything.
//!
//! Code map:
//! * `reader`: bounds-checked byte cursor (every length is checked before allocating).
//! * `vm`: the opcode loop (protocols 0–5), iterative; globals only via the allowlist.
//! * `heap`: the VM's mutable object arena and its conversion into [`Value`].
//! * `numpy`: dtype and ndarray decoding.
//!
//! Invariants:
//! * No input can make the reader panic, recurse without bound, or allocate beyond
//!   [`Limits`], which scale with the input size.
//! * A module/name pair in the file becomes data only through
//!   [`crate::allowlist::resolve`]; nothing is ever imported or called.

mod error;
mod heap;
mod numpy;
pub(crate) mod reader;
pub(crate) mod vm;

pub use error::LoadError;

pub(crate) use heap::{Budget, Handle};
pub(crate) use numpy::{decode_array, element_count, shape_of};

use crate::value::Value;

/// Resource bounds for reading one file. The defaults suit models up to several GiB;
/// every bound that matters for hostile input scales with the input's own size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Deepest container nesting accepted in the rebuilt value. Default: 200 (a
    /// Pipeline of ColumnTransformers of Pipelines needs about 20).
    pub max_depth: usize,
    /// Decoded data may use this many bytes per byte of (decompressed) pickle input,
    /// plus [`Limits::decoded_bytes_floor`]. Default: 64.
    pub decoded_bytes_per_input_byte: usize,
    /// Decoded-size allowance independent of the input size. Default: 64 MiB.
    pub decoded_bytes_floor: usize,
    /// A compressed file may expand to this many bytes per compressed byte the
    /// decompressor has *read so far* (not per byte of the file, so padding after
    /// the compressed stream buys nothing), plus
    /// [`Limits::decompressed_bytes_floor`]. Default: 64.
    pub decompressed_bytes_per_input_byte: usize,
    /// Decompressed-size allowance independent of the input size. Default: 64 MiB.
    pub decompressed_bytes_floor: usize,
    /// Absolute cap on the decompressed size of one file. Default: 2 GiB.
    pub max_decompressed_bytes: usize,
    /// Cap on the decompressed bytes held by every file being read in this process
    /// at once (concurrent loads and uploads together); a read that would pass it
    /// fails at once. Default: 4 GiB.
    pub max_decompressed_bytes_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 200,
            decoded_bytes_per_input_byte: 64,
            decoded_bytes_floor: 64 << 20,
            decompressed_bytes_per_input_byte: 64,
            decompressed_bytes_floor: 64 << 20,
            max_decompressed_bytes: 2 << 30,
            max_decompressed_bytes_in_flight: 4 << 30,
        }
    }
}

impl Limits {
    pub(crate) fn decoded_budget(&self, input_len: usize) -> usize {
        input_len
            .saturating_mul(self.decoded_bytes_per_input_byte)
            .saturating_add(self.decoded_bytes_floor)
    }

    /// The most decompressed output allowed after `consumed` compressed bytes.
    pub(crate) fn decompressed_cap(&self, consumed: usize) -> usize {
        consumed
            .saturating_mul(self.decompressed_bytes_per_input_byte)
            .saturating_add(self.decompressed_bytes_floor)
            .min(self.max_decompressed_bytes)
    }
}

/// What a read accepts beyond the allowlist. The default accepts nothing more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Rebuild classes that are on no list as inert attribute bags when the pickle only
    /// creates them (`NEWOBJ` without arguments, or `copyreg._reconstructor` with base
    /// `object`) and fills them with `BUILD`: the user's own wrapper classes around an
    /// estimator. Calling such a class (`REDUCE`, `INST`, `OBJ`) stays refused, and
    /// nothing of it ever runs. Default: false (refused by name).
    pub wrapper_objects: bool,
}

/// Reads an uncompressed pickle stream (protocols 0–5, including uncompressed joblib
/// files) into a [`Value`], with the default [`Limits`].
pub fn read_pickle(bytes: &[u8]) -> Result<Value, LoadError> {
    read_pickle_with_limits(bytes, &Limits::default())
}

/// [`read_pickle`] with explicit limits.
pub fn read_pickle_with_limits(bytes: &[u8], limits: &Limits) -> Result<Value, LoadError> {
    read_pickle_with_options(bytes, limits, &ReadOptions::default())
}

/// [`read_pickle`] with explicit limits and options.
pub fn read_pickle_with_options(
    bytes: &[u8],
    limits: &Limits,
    options: &ReadOptions,
) -> Result<Value, LoadError> {
    let mut budget = Budget::new(limits.decoded_budget(bytes.len()));
    let (value, _end) = vm::Vm::new(bytes, 0, &mut budget, limits, true)
        .with_inert_classes(options.wrapper_objects)
        .run()?;
    Ok(value)
}
