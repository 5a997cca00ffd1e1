//! Segment files: naming and the 32-byte header codec.
//!
//! A segment is `<id>.seg` in its partition directory, `id` 20 zero-padded decimal digits;
//! ids grow while a store is open (see `docs/format.md` for when one is used again). Header (little-endian): `magic [8] | version u32 | origin u32 |
//! id u64 | partition u32 | crc32c u32` (the checksum covers the 28 bytes before it).
//! Records follow from offset 32.

use std::path::{Path, PathBuf};

pub const SEGMENT_MAGIC: [u8; 8] = *b"KVS\0SEG\0";
/// The version new segments are written in: 2 added sync marks.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest segment version this build reads (version 1 segments have no sync marks).
pub const FORMAT_VERSION_MIN: u32 = 1;
pub const SEGMENT_HEADER_BYTES: u64 = 32;

/// Who wrote a segment: the writer loop, or compaction. Only the newest `Log` segment may
/// have a torn tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Log = 0,
    Compaction = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// [`FORMAT_VERSION`] for every segment this build creates.
    pub version: u32,
    pub origin: Origin,
    pub id: u64,
    pub partition: u32,
}

impl SegmentHeader {
    /// A header for a segment this build creates.
    pub fn new(origin: Origin, id: u64, partition: u32) -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            origin,
            id,
            partition,
        }
    }

    /// Whether the segment may hold sync marks (format 2 on).
    pub fn has_marks(&self) -> bool {
        self.version >= 2
    }

    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES as usize];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(self.origin as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.id.to_le_bytes());
        b[24..28].copy_from_slice(&self.partition.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Validates and decodes a header; the error is a sentence.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < SEGMENT_HEADER_BYTES as usize {
            return Err(format!("segment header is {} bytes, expected 32", b.len()));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err("not a kvs segment (bad magic)".into());
        }
        let stored = u32::from_le_bytes(b[28..32].try_into().expect("4 bytes"));
        if stored != crc32c::crc32c(&b[0..28]) {
            return Err("segment header checksum mismatch".into());
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
            return Err(format!("segment format version {version} is not supported (this build reads {FORMAT_VERSION_MIN} to {FORMAT_VERSION})"));
        }
        let origin = match u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")) {
            0 => Origin::Log,
            1 => Origin::Compaction,
            o => return Err(format!("unknown segment origin {o}")),
        };
        Ok(SegmentHeader {
            version,
            origin,
            id: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            partition: u32::from_le_bytes(b[24..28].try_into().expect("4 bytes")),
        })
    }
}

pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

pub fn hint_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.hint"))
}

/// The hint of active segment `id` while it is being built (see `ActiveHint`): never part of
/// the store until the segment is sealed and it is renamed to [`hint_path`]; deleted at open.
pub fn active_hint_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.hint.active"))
}

/// A temporary name: files ending in `.tmp` are never part of the store and are deleted at open.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The name a new log segment has until the segment before it, `prev`, is on disk (see
/// `Partition::rotate`): it says which segment it continues, and where that one ends.
pub fn pending_path(dir: &Path, id: u64, prev: u64, prev_len: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg.after-{prev:020}-{prev_len}"))
}

/// What a file name in a partition directory is.
#[derive(Debug, PartialEq, Eq)]
pub enum FileKind {
    Segment(u64),
    Hint(u64),
    /// A log segment written while segment `prev`, `prev_len` bytes long, was being synced.
    Pending {
        id: u64,
        prev: u64,
        prev_len: u64,
    },
    Temporary,
    CompactionManifest,
    Unknown,
}

pub fn classify(name: &str) -> FileKind {
    if name.ends_with(".tmp") || name.ends_with(".hint.active") {
        return FileKind::Temporary;
    }
    if name == super::manifest::MANIFEST_NAME {
        return FileKind::CompactionManifest;
    }
    let parse = |stem: &str| {
        (stem.len() == 20)
            .then(|| stem.parse::<u64>().ok())
            .flatten()
    };
    if let Some(stem) = name.strip_suffix(".seg") {
        if let Some(id) = parse(stem) {
            return FileKind::Segment(id);
        }
    }
    if let Some((stem, after)) = name.split_once(".seg.after-") {
        if let (Some(id), Some((prev, len))) = (parse(stem), after.split_once('-')) {
            // u64's parser takes a leading '+'; a name has digits only.
            let len = len.parse::<u64>().ok().filter(|_| !len.starts_with('+'));
            if let (Some(prev), Some(prev_len)) = (parse(prev), len) {
                return FileKind::Pending { id, prev, prev_len };
            }
        }
    }
    if let Some(stem) = name.strip_suffix(".hint") {
        if let Some(id) = parse(stem) {
            return FileKind::Hint(id);
        }
    }
    FileKind::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trips_and_rejects_flips() {
        // Guards against a damaged header being accepted.
        let h = SegmentHeader::new(Origin::Compaction, 99, 3);
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for bit in 0..b.len() * 8 {
            let mut bad = b;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&bad).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn segment_file_names_classify() {
        // Guards against stray files being mistaken for segments.
        let dir = Path::new("/x");
        let seg = segment_path(dir, 12);
        let name = seg.file_name().unwrap().to_str().unwrap();
        assert_eq!(classify(name), FileKind::Segment(12));
        assert_eq!(classify("00000000000000000012.hint"), FileKind::Hint(12));
        assert_eq!(
            classify("00000000000000000012.seg.tmp"),
            FileKind::Temporary
        );
        assert_eq!(
            classify("00000000000000000012.hint.active"),
            FileKind::Temporary
        );
        assert_eq!(classify("12.seg"), FileKind::Unknown);
        let pending = pending_path(dir, 13, 12, 4096);
        assert_eq!(
            classify(pending.file_name().unwrap().to_str().unwrap()),
            FileKind::Pending {
                id: 13,
                prev: 12,
                prev_len: 4096
            }
        );
        for stray in [
            "00000000000000000013.seg.after-12-4096",
            "00000000000000000013.seg.after-00000000000000000012-",
            "00000000000000000013.seg.after-00000000000000000012-+4",
            "00000000000000000013.seg.after-00000000000000000012",
        ] {
            assert_eq!(classify(stray), FileKind::Unknown, "{stray}");
        }
    }
}
