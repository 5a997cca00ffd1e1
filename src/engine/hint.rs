//! Hint files: a compact list of a sealed segment's records (no values), so that opening a
//! store reads keys and positions without reading values.
//!
//! Layout (little-endian): header `magic [8] | version u32 | count u32 | segment id u64 |
//! segment length u64 | crc32c u32` (the checksum covers the 32 bytes before it), then `count`
//! entries `seq u64 | kind u8 | key_len u32 | value_len u32 | offset u64 | key`, then a crc32c
//! u32 of all entry bytes. A hint that does not check out is ignored and the segment scanned.
//!
//! A hint is built as its segment is written ([`HintBuilder`]: the active segment's as it grows,
//! a compaction output's as it is copied) and written out a chunk at a time under a temporary
//! name, so that it is never held whole in memory; it takes its own name once complete.

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

/// Entry bytes buffered before [`HintBuilder::wants_write`] asks for them to be written out.
pub const HINT_CHUNK_BYTES: usize = 256 * 1024;

fn encode_entry(out: &mut Vec<u8>, e: &HintEntry<'_>) {
    out.extend_from_slice(&e.seq.to_le_bytes());
    out.push(e.kind as u8);
    out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.value_len.to_le_bytes());
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(e.key);
}

fn encode_header(count: u32, id: u64, segment_len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HINT_HEADER_BYTES);
    out.extend_from_slice(&HINT_MAGIC);
    out.extend_from_slice(&HINT_VERSION.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&segment_len.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Builds a hint file's bytes entry by entry, all in memory: the plain form of the format,
/// which the tests hold [`HintBuilder`] to and the format document's example is made with.
#[cfg(test)]
#[derive(Default)]
pub struct HintWriter {
    body: Vec<u8>,
    count: u32,
}

#[cfg(test)]
impl HintWriter {
    pub fn push(&mut self, e: &HintEntry<'_>) {
        encode_entry(&mut self.body, e);
        self.count += 1;
    }

    /// The complete file for segment `id` whose records end at `segment_len`.
    pub fn finish(self, id: u64, segment_len: u64) -> Vec<u8> {
        let mut out = encode_header(self.count, id, segment_len);
        out.reserve(self.body.len() + 4);
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&crc32c::crc32c(&self.body).to_le_bytes());
        out
    }
}

/// Builds the hint of a segment as the segment grows, a chunk at a time: the owner writes each
/// chunk [`HintBuilder::take`] hands it at the offset it names, and at the end the two pieces
/// [`HintBuilder::finish`] gives. The file is then byte for byte the format's one-piece layout
/// of the same entries (a test holds it to `HintWriter`), but no more than a chunk of it is
/// ever in memory (a whole hint is about 20 MB for a 64 MiB segment of 100-byte values).
///
/// Until `finish`, the header's place holds zeros, so a file cut short anywhere never checks
/// out.
#[derive(Default)]
pub struct HintBuilder {
    /// Entry bytes not yet taken.
    pending: Vec<u8>,
    count: u32,
    /// crc32c of the entry bytes taken so far.
    crc: u32,
    /// Entry bytes taken so far.
    taken: u64,
}

impl HintBuilder {
    pub fn push(&mut self, e: &HintEntry<'_>) {
        encode_entry(&mut self.pending, e);
        self.count += 1;
    }

    /// Whether enough entry bytes wait to be worth a write.
    pub fn wants_write(&self) -> bool {
        self.pending.len() >= HINT_CHUNK_BYTES
    }

    /// Takes the entry bytes not yet taken, with the file offset they belong at; `spare` (an
    /// earlier chunk's buffer, or a new one) collects the entries that follow.
    pub fn take(&mut self, mut spare: Vec<u8>) -> (u64, Vec<u8>) {
        spare.clear();
        let chunk = std::mem::replace(&mut self.pending, spare);
        let pos = HINT_HEADER_BYTES as u64 + self.taken;
        self.crc = crc32c::crc32c_append(self.crc, &chunk);
        self.taken += chunk.len() as u64;
        (pos, chunk)
    }

    /// Ends the hint of segment `id`, whose records end at `segment_len`: the header, to be
    /// written at offset 0, and the rest of the file (the entries not yet taken and the
    /// checksum) with its offset. Write the rest first, then the header.
    pub fn finish(mut self, id: u64, segment_len: u64) -> (Vec<u8>, u64, Vec<u8>) {
        let header = encode_header(self.count, id, segment_len);
        let (pos, mut rest) = self.take(Vec::new());
        rest.extend_from_slice(&self.crc.to_le_bytes());
        (header, pos, rest)
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
    fn hint_built_a_chunk_at_a_time_is_the_same_file() {
        // Guards against the active segment's hint, written in pieces, differing from the
        // one-piece hint the format describes (and that the decoder checks).
        let keys: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| format!("key-{i}").into_bytes())
            .collect();
        for every in [1, 7, 1000, usize::MAX] {
            let (mut whole, mut built) = (HintWriter::default(), HintBuilder::default());
            let mut file = vec![0u8; HINT_HEADER_BYTES];
            let place = |file: &mut Vec<u8>, pos: u64, bytes: &[u8]| {
                let pos = pos as usize;
                if file.len() < pos + bytes.len() {
                    file.resize(pos + bytes.len(), 0);
                }
                file[pos..pos + bytes.len()].copy_from_slice(bytes);
            };
            let mut spare = Vec::new();
            let mut offset = 32;
            for (i, key) in keys.iter().enumerate() {
                let e = HintEntry {
                    seq: i as u64 + 1,
                    kind: if i % 5 == 0 {
                        RecordKind::Delete
                    } else {
                        RecordKind::Put
                    },
                    key,
                    value_len: (i % 5 != 0) as u32 * 10,
                    offset,
                };
                offset += e.record_len();
                whole.push(&e);
                built.push(&e);
                if i % every == every - 1 {
                    let (pos, chunk) = built.take(std::mem::take(&mut spare));
                    place(&mut file, pos, &chunk);
                    spare = chunk;
                }
            }
            let (header, pos, rest) = built.finish(9, offset);
            place(&mut file, pos, &rest);
            place(&mut file, 0, &header);
            assert_eq!(
                file,
                whole.finish(9, offset),
                "a take every {every} entries"
            );
            assert_eq!(decode(&file, 9, offset).unwrap().len(), keys.len());
        }
    }

    #[test]
    fn hint_for_another_segment_is_rejected() {
        // Guards against a stale hint describing a rewritten segment.
        assert!(decode(&sample(), 6, 80).is_err());
        assert!(decode(&sample(), 5, 81).is_err());
    }
}
