//! TFRecord files (TensorFlow's `tf.io.TFRecordWriter` format), read whole.
//!
//! Each record is framed as
//! `u64 length (little-endian) · u32 masked CRC-32C of those 8 bytes · data · u32 masked
//! CRC-32C of data`, where the mask is TensorFlow's
//! (`tensorflow/core/lib/hash/crc32c.h`): `((crc >> 15) | (crc << 17)) + 0xa282ead8`.
//! Both checksums are verified: a record that is cut short or altered is an error
//! that says which record and why, never a panic. Compressed (GZIP, ZLIB) files are
//! not read.
//!
//! Used for TF Serving's warm-up file (`assets.extra/tf_serving_warmup_requests`,
//! see `crate::warmup`).

/// CRC-32C (Castagnoli), as TensorFlow's `crc32c::Value`.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TensorFlow's mask, so that a CRC of data that itself holds CRCs stays strong.
const MASK_DELTA: u32 = 0xa282_ead8;

/// The masked CRC-32C TFRecord framing stores.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = CRC32C.checksum(data);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Why a TFRecord file could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TfRecordError {
    #[error("record {index} at byte {offset} is truncated: {what}")]
    Truncated {
        index: usize,
        offset: usize,
        what: &'static str,
    },
    #[error("record {index} at byte {offset}: the {what} checksum does not match (corrupt file, or not a TFRecord file)")]
    Checksum {
        index: usize,
        offset: usize,
        what: &'static str,
    },
    #[error("more than {limit} records")]
    TooMany { limit: usize },
}

/// The records of an uncompressed TFRecord file, in order; at most `limit` of them.
pub fn read_records(bytes: &[u8], limit: usize) -> Result<Vec<&[u8]>, TfRecordError> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let index = records.len();
        if index == limit {
            return Err(TfRecordError::TooMany { limit });
        }
        let truncated = |what| TfRecordError::Truncated {
            index,
            offset,
            what,
        };
        let header = bytes
            .get(offset..offset + 12)
            .ok_or_else(|| truncated("the 12-byte header is incomplete"))?;
        let (length_bytes, length_crc) = header.split_at(8);
        if masked_crc32c(length_bytes) != u32::from_le_bytes(length_crc.try_into().expect("4")) {
            return Err(TfRecordError::Checksum {
                index,
                offset,
                what: "length",
            });
        }
        let length = u64::from_le_bytes(length_bytes.try_into().expect("8"));
        let start = offset + 12;
        let end = usize::try_from(length)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&end| end.checked_add(4).is_some_and(|e| e <= bytes.len()))
            .ok_or_else(|| truncated("the data is shorter than its length says"))?;
        let data = &bytes[start..end];
        let data_crc = u32::from_le_bytes(bytes[end..end + 4].try_into().expect("4"));
        if masked_crc32c(data) != data_crc {
            return Err(TfRecordError::Checksum {
                index,
                offset,
                what: "data",
            });
        }
        records.push(data);
        offset = end + 4;
    }
    Ok(records)
}

/// Frames `records` as a TFRecord file (for tests and tools).
pub fn write_records<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for data in records {
        let length = (data.len() as u64).to_le_bytes();
        out.extend_from_slice(&length);
        out.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_mask_match_tensorflow() {
        // CRC-32C check value, and TensorFlow's masked CRC of an empty length field
        // (crc32c_test.cc: Mask/Unmask round trip; value of "123456789" is e3069283).
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
        let crc = 0xe306_9283u32;
        let masked = masked_crc32c(b"123456789");
        assert_eq!(masked, crc.rotate_right(15).wrapping_add(MASK_DELTA));
        // Unmask gives the CRC back.
        assert_eq!(masked.wrapping_sub(MASK_DELTA).rotate_left(15), crc);
    }

    #[test]
    fn records_round_trip_and_damage_is_reported() {
        let file = write_records([&b"first"[..], b"", b"third record"]);
        let records = read_records(&file, 10).unwrap();
        assert_eq!(records, [&b"first"[..], b"", b"third record"]);
        assert!(read_records(&[], 10).unwrap().is_empty());
        assert_eq!(
            read_records(&file, 2).unwrap_err(),
            TfRecordError::TooMany { limit: 2 }
        );

        // Cut anywhere: truncated, never a panic.
        for cut in 1..file.len() {
            let err = read_records(&file[..cut], 10);
            if cut == 21 || cut == 37 {
                assert!(err.is_ok(), "{cut}"); // whole records
            } else {
                assert!(
                    matches!(err, Err(TfRecordError::Truncated { .. })),
                    "{cut}: {err:?}"
                );
            }
        }
        // Any flipped byte is caught by one of the checksums.
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            assert!(read_records(&bad, 10).is_err(), "byte {i}");
        }
        let mut bad = file.clone();
        bad[12] ^= 0xff; // data of record 0
        assert_eq!(
            read_records(&bad, 10).unwrap_err(),
            TfRecordError::Checksum {
                index: 0,
                offset: 0,
                what: "data"
            }
        );
        // A huge length is refused without allocating.
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&masked_crc32c(&u64::MAX.to_le_bytes()).to_le_bytes());
        assert!(matches!(
            read_records(&huge, 10),
            Err(TfRecordError::Truncated { .. })
        ));
    }
}
