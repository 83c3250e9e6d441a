//! The one error type of the reader: every way a file can be refused.

/// Why a pickle or joblib file could not be read.
///
/// Messages are meant for the person who uploaded the model: they name the refused
/// class or the problem, and the byte offset in the (decompressed) pickle stream
/// where it was found.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `GLOBAL` / `STACK_GLOBAL` / `INST` named something that is not on the allowlist.
    #[error("refused to load \"{module}.{name}\": not an allowlisted class")]
    Refused { module: String, name: String },
    /// An allowlisted name was used in a way the reader does not rebuild
    /// (e.g. `REDUCE` on `numpy.ndarray`, which is a type, not a constructor we mimic).
    #[error("refused to call \"{module}.{name}\" at offset {offset}: {reason}")]
    RefusedCall {
        module: String,
        name: String,
        offset: usize,
        reason: String,
    },
    /// The stream ended before an opcode's argument or before `STOP`.
    #[error(
        "truncated input at offset {offset}: needed {needed} more bytes, {available} available"
    )]
    Truncated {
        offset: usize,
        needed: u64,
        available: usize,
    },
    /// Structurally invalid pickle (bad opcode, stack underflow, wrong argument types…).
    #[error("invalid pickle at offset {offset}: {message}")]
    Malformed { offset: usize, message: String },
    /// A valid pickle feature the reader does not support (persistent ids,
    /// out-of-band buffers, extension registry codes…).
    #[error("unsupported pickle feature at offset {offset}: {feature}")]
    Unsupported { offset: usize, feature: String },
    /// A resource bound (size, depth, memo index, decoded-size budget) was exceeded.
    #[error("limit exceeded at offset {offset}: {message}")]
    LimitExceeded { offset: usize, message: String },
    /// A numpy array or dtype whose description does not add up.
    #[error("invalid numpy data at offset {offset}: {message}")]
    Numpy { offset: usize, message: String },
    /// A compressed joblib file that could not be decompressed (or grew too large).
    #[error("cannot decompress {format} data: {message}")]
    Decompress {
        format: &'static str,
        message: String,
    },
}
