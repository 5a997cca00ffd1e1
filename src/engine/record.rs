//! The log record codec: bytes to records and back, no I/O.
//!
//! Layout (little-endian, see `docs/format.md`):
//! `crc32c u32 | seq u64 | kind u8 | key_len u32 | value_len u32 | key | value`.
//! The checksum covers every byte after itself. A delete has an empty value.
//!
//! A *sync mark* (format 2 segments) has the same layout with kind 3, sequence number 0, an
//! empty key and an 8-byte value: the offset up to which the segment was known to be durable
//! when the mark was written. Recovery uses it to tell damage to durable records from a write
//! that never reached the disk (see `docs/format.md`, "Sync marks").

use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Bytes before the key.
pub const RECORD_HEADER_BYTES: usize = 21;
/// The longest record the codec accepts.
pub const RECORD_BYTES_MAX: usize = RECORD_HEADER_BYTES + KEY_BYTES_MAX + VALUE_BYTES_MAX;
/// The kind byte of a sync mark.
pub const MARK_KIND: u8 = 3;
/// Encoded length of a sync mark: the header and its 8-byte offset.
pub const MARK_BYTES: usize = RECORD_HEADER_BYTES + 8;

/// What a record does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Put = 1,
    Delete = 2,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<RecordKind> {
        match b {
            1 => Some(RecordKind::Put),
            2 => Some(RecordKind::Delete),
            _ => None,
        }
    }
}

/// A decoded record borrowing from the buffer it was read from.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub kind: RecordKind,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl RecordRef<'_> {
    /// Encoded length of this record.
    pub fn len(&self) -> usize {
        RECORD_HEADER_BYTES + self.key.len() + self.value.len()
    }
}

/// Why bytes are not a record.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The kind byte is neither put nor delete (zero-filled space reads as this); a sync mark
    /// where a record was expected reads as `BadKind(3)`.
    BadKind(u8),
    /// A length over the limits, or a delete carrying a value.
    BadLength { key_len: u64, value_len: u64 },
    /// The checksum does not match the bytes.
    Checksum { stored: u32, computed: u32 },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::BadKind(b) => {
                write!(f, "record kind byte {b} is not put (1) or delete (2)")
            }
            RecordError::BadLength { key_len, value_len } => {
                write!(
                    f,
                    "record lengths out of range (key {key_len}, value {value_len})"
                )
            }
            RecordError::Checksum { stored, computed } => {
                write!(
                    f,
                    "record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
        }
    }
}

/// Encoded length of a record with these parts.
pub fn encoded_len(key: &[u8], value: &[u8]) -> usize {
    RECORD_HEADER_BYTES + key.len() + value.len()
}

/// Appends one record to `out`. The caller has checked the limits.
pub fn encode(out: &mut Vec<u8>, seq: u64, kind: RecordKind, key: &[u8], value: &[u8]) {
    debug_assert!(key.len() <= KEY_BYTES_MAX && value.len() <= VALUE_BYTES_MAX);
    debug_assert!(kind == RecordKind::Put || value.is_empty());
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a sync mark saying the segment was durable up to offset `durable`.
pub fn encode_mark(out: &mut Vec<u8>, durable: u64) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&0u64.to_le_bytes());
    out.push(MARK_KIND);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&durable.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the header only: `Ok(Some(total_len))` once the 21 header bytes are present and
/// plausible (a sync mark's too, where `marks` is set). Lets a reader size its next read
/// before the checksum can be checked.
pub fn peek_entry_len(buf: &[u8], marks: bool) -> Result<Option<usize>, RecordError> {
    if buf.len() < RECORD_HEADER_BYTES {
        return Ok(None);
    }
    let kind_byte = buf[12];
    let key_len = u32::from_le_bytes(buf[13..17].try_into().expect("4 bytes")) as usize;
    let value_len = u32::from_le_bytes(buf[17..21].try_into().expect("4 bytes")) as usize;
    if marks && kind_byte == MARK_KIND {
        if key_len != 0 || value_len != 8 {
            return Err(RecordError::BadLength {
                key_len: key_len as u64,
                value_len: value_len as u64,
            });
        }
        return Ok(Some(MARK_BYTES));
    }
    let kind = RecordKind::from_byte(kind_byte).ok_or(RecordError::BadKind(kind_byte))?;
    if key_len > KEY_BYTES_MAX
        || value_len > VALUE_BYTES_MAX
        || (kind == RecordKind::Delete && value_len != 0)
    {
        return Err(RecordError::BadLength {
            key_len: key_len as u64,
            value_len: value_len as u64,
        });
    }
    Ok(Some(RECORD_HEADER_BYTES + key_len + value_len))
}

/// What a segment scan finds at a position of a format 2 segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    Record(RecordRef<'a>),
    /// A sync mark: the segment was durable up to this offset when the mark was written.
    Mark {
        durable: u64,
    },
}

/// Decodes the record or, where `marks` is set, the sync mark at the start of `buf`.
/// `Ok(None)`: not enough bytes yet.
pub fn decode_entry(buf: &[u8], marks: bool) -> Result<Option<Entry<'_>>, RecordError> {
    let Some(total) = peek_entry_len(buf, marks)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let stored = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&buf[4..total]);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    if buf[12] == MARK_KIND {
        let durable = u64::from_le_bytes(buf[21..29].try_into().expect("8 bytes"));
        return Ok(Some(Entry::Mark { durable }));
    }
    let seq = u64::from_le_bytes(buf[4..12].try_into().expect("8 bytes"));
    let kind = RecordKind::from_byte(buf[12]).expect("checked by peek_entry_len");
    let key_len = u32::from_le_bytes(buf[13..17].try_into().expect("4 bytes")) as usize;
    let key_end = RECORD_HEADER_BYTES + key_len;
    Ok(Some(Entry::Record(RecordRef {
        seq,
        kind,
        key: &buf[RECORD_HEADER_BYTES..key_end],
        value: &buf[key_end..total],
    })))
}

/// Decodes the record at the start of `buf`; a sync mark is `BadKind(3)`.
/// `Ok(None)`: not enough bytes yet.
pub fn decode(buf: &[u8]) -> Result<Option<RecordRef<'_>>, RecordError> {
    match decode_entry(buf, false)? {
        Some(Entry::Record(r)) => Ok(Some(r)),
        Some(Entry::Mark { .. }) => unreachable!("marks are refused by peek_entry_len"),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_put_and_delete() {
        // Guards against encode and decode disagreeing on the layout.
        let mut buf = Vec::new();
        encode(&mut buf, 7, RecordKind::Put, b"key", b"value\r\n\0");
        encode(&mut buf, 8, RecordKind::Delete, b"key", b"");
        let first = decode(&buf).unwrap().unwrap();
        assert_eq!(
            first,
            RecordRef {
                seq: 7,
                kind: RecordKind::Put,
                key: b"key",
                value: b"value\r\n\0"
            }
        );
        let second = decode(&buf[first.len()..]).unwrap().unwrap();
        assert_eq!(second.kind, RecordKind::Delete);
        assert_eq!(second.seq, 8);
        assert_eq!(first.len() + second.len(), buf.len());
    }

    #[test]
    fn record_partial_input_asks_for_more() {
        // Guards against a short read being mistaken for corruption.
        let mut buf = Vec::new();
        encode(&mut buf, 1, RecordKind::Put, b"k", b"v");
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn record_every_flipped_bit_is_detected() {
        // Guards against a corrupted record ever decoding as valid.
        let mut buf = Vec::new();
        encode(&mut buf, 42, RecordKind::Put, b"some key", b"some value");
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match decode(&bad) {
                Err(_) | Ok(None) => {}
                Ok(Some(r)) => panic!("bit {bit} flipped decoded as {r:?}"),
            }
        }
    }

    #[test]
    fn record_sync_mark_round_trips_only_where_marks_are_allowed() {
        // Guards against a sync mark being read as a record, or a damaged one as a mark.
        let mut buf = Vec::new();
        encode_mark(&mut buf, 4096);
        assert_eq!(buf.len(), MARK_BYTES);
        assert_eq!(
            decode_entry(&buf, true),
            Ok(Some(Entry::Mark { durable: 4096 }))
        );
        assert_eq!(decode(&buf), Err(RecordError::BadKind(MARK_KIND)));
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match decode_entry(&bad, true) {
                Err(_) | Ok(None) => {}
                Ok(Some(e)) => panic!("bit {bit} flipped decoded as {e:?}"),
            }
        }
    }

    #[test]
    fn record_zero_fill_reads_as_bad_kind() {
        // Guards against preallocated zeros being taken for a record.
        assert_eq!(decode(&[0u8; 64]), Err(RecordError::BadKind(0)));
    }

    #[test]
    fn record_oversized_lengths_rejected_from_header_alone() {
        // Guards against a garbage length sizing a huge read.
        let mut hdr = vec![0u8; RECORD_HEADER_BYTES];
        hdr[12] = 1;
        hdr[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            peek_entry_len(&hdr, false),
            Err(RecordError::BadLength { .. })
        ));
    }
}
