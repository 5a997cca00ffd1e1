//! Hint files: a compact list of a sealed segment's records (no values), so that opening a
//! store reads keys and positions without reading values.
//!
//! Layout (little-endian): header `magic [8] | version u32 | count u32 | segment id u64 |
//! segment length u64 | crc32c u32` (the checksum covers the 32 bytes before it), then `count`
//! entries `seq u64 | kind u8 | key_len u32 | value_len u32 | offset u64 | key`, then a crc32c
//! u32 of all entry bytes. A hint that does not check out is ignored and the segment scanned.

use super::record::{RecordKind, RECORD_HEADER_BYTES};
use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

pub const HINT_MAGIC: [u8; 8] = *b"KVS\0HNT\0";
const HINT_VERSION: u32 = 1;
const HINT_HEADER_BYTES: usize = 36;
const ENTRY_FIXED_BYTES: usize = 25;

/// One record as a hint describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintEntry<'a> {
    pub seq: u64,
    pub kind: RecordKind,
    pub key: &'a [u8],
    pub value_len: u32,
    /// Offset of the record in the segment.
    pub offset: u64,
}

impl HintEntry<'_> {
    pub fn record_len(&self) -> u64 {
        (RECORD_HEADER_BYTES + self.key.len()) as u64 + u64::from(self.value_len)
    }
}

/// Builds a hint file's bytes entry by entry.
#[derive(Clone, Default)]
pub struct HintWriter {
    body: Vec<u8>,
    count: u32,
}

impl HintWriter {
    pub fn push(&mut self, e: &HintEntry<'_>) {
        self.body.extend_from_slice(&e.seq.to_le_bytes());
        self.body.push(e.kind as u8);
        self.body
            .extend_from_slice(&(e.key.len() as u32).to_le_bytes());
        self.body.extend_from_slice(&e.value_len.to_le_bytes());
        self.body.extend_from_slice(&e.offset.to_le_bytes());
        self.body.extend_from_slice(e.key);
        self.count += 1;
    }

    /// The complete file for segment `id` whose records end at `segment_len`.
    pub fn finish(self, id: u64, segment_len: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(HINT_HEADER_BYTES + self.body.len() + 4);
        out.extend_from_slice(&HINT_MAGIC);
        out.extend_from_slice(&HINT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&segment_len.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&crc32c::crc32c(&self.body).to_le_bytes());
        out
    }
}

/// Validates a whole hint file for segment `id` of length `segment_len` and returns its
/// entries. Every entry must lie inside the segment. The error is a sentence.
pub fn decode(buf: &[u8], id: u64, segment_len: u64) -> Result<Vec<HintEntry<'_>>, String> {
    if buf.len() < HINT_HEADER_BYTES + 4 {
        return Err("hint file is too short".into());
    }
    let (head, rest) = buf.split_at(HINT_HEADER_BYTES);
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    if head[0..8] != HINT_MAGIC || u32_at(head, 32) != crc32c::crc32c(&head[0..32]) {
        return Err("hint header is damaged".into());
    }
    if u32_at(head, 8) != HINT_VERSION {
        return Err("hint version not supported".into());
    }
    if u64_at(head, 16) != id || u64_at(head, 24) != segment_len {
        return Err("hint does not match its segment".into());
    }
    let count = u32_at(head, 12) as usize;
    let (body, trailer) = rest.split_at(rest.len() - 4);
    if u32_at(trailer, 0) != crc32c::crc32c(body) {
        return Err("hint body checksum mismatch".into());
    }
    // Each entry takes at least ENTRY_FIXED_BYTES, which bounds the allocation.
    if count > body.len() / ENTRY_FIXED_BYTES {
        return Err("hint entry count exceeds its size".into());
    }
    let mut entries = Vec::with_capacity(count);
    let mut at = 0;
    for _ in 0..count {
        if body.len() - at < ENTRY_FIXED_BYTES {
            return Err("hint entry truncated".into());
        }
        let seq = u64_at(body, at);
        let kind = match body[at + 8] {
            1 => RecordKind::Put,
            2 => RecordKind::Delete,
            k => return Err(format!("hint entry kind {k} unknown")),
        };
        let key_len = u32_at(body, at + 9) as usize;
        let value_len = u32_at(body, at + 13);
        let offset = u64_at(body, at + 17);
        at += ENTRY_FIXED_BYTES;
        if key_len > KEY_BYTES_MAX
            || value_len as usize > VALUE_BYTES_MAX
            || body.len() - at < key_len
        {
            return Err("hint entry lengths out of range".into());
        }
        let e = HintEntry {
            seq,
            kind,
            key: &body[at..at + key_len],
            value_len,
            offset,
        };
        at += key_len;
        if offset < super::segment::SEGMENT_HEADER_BYTES || offset + e.record_len() > segment_len {
            return Err("hint entry points outside its segment".into());
        }
        entries.push(e);
    }
    if at != body.len() {
        return Err("hint has trailing bytes".into());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = HintWriter::default();
        w.push(&HintEntry {
            seq: 1,
            kind: RecordKind::Put,
            key: b"a",
            value_len: 3,
            offset: 32,
        });
        w.push(&HintEntry {
            seq: 2,
            kind: RecordKind::Delete,
            key: b"bb",
            value_len: 0,
            offset: 57,
        });
        w.finish(5, 80)
    }

    #[test]
    fn hint_round_trips() {
        // Guards against writer and reader disagreeing.
        let buf = sample();
        let e = decode(&buf, 5, 80).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].key, b"bb");
        assert_eq!(e[1].kind, RecordKind::Delete);
    }

    #[test]
    fn hint_any_flipped_bit_is_rejected() {
        // Guards against a damaged hint steering the index to wrong positions.
        let buf = sample();
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad, 5, 80).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn hint_for_another_segment_is_rejected() {
        // Guards against a stale hint describing a rewritten segment.
        assert!(decode(&sample(), 6, 80).is_err());
        assert!(decode(&sample(), 5, 81).is_err());
    }
}
