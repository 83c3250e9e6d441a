//! What a file is, in the words every refusal of a file that is not a regular one
//! uses (the server's `regular_file` reader, the SavedModel check).

use std::fs::FileType;
use std::os::unix::fs::FileTypeExt as _;

/// `kind` as the object of "it is …": "a directory", "a FIFO (named pipe)", "a
/// socket", "a device", or, for a regular file or anything else, "not a regular
/// file" (a caller asks only of what it refuses).
pub fn describe(kind: FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}
