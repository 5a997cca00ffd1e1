//! The worked examples of `docs/format.md`, built with the codecs themselves: each test
//! renders an example as `xxd` would and checks that the document shows exactly that dump,
//! so the document cannot drift from the code.

use std::path::Path;

use super::hint::{HintEntry, HintWriter};
use super::manifest::CompactionManifest;
use super::meta::{EngineKind, StoreMeta};
use super::record::{self, RecordKind};
use super::segment::{Origin, SegmentHeader};

/// `bytes` as `xxd` prints them: offset, eight groups of two bytes, and the printable ASCII.
fn xxd(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (n, line) in bytes.chunks(16).enumerate() {
        let mut hex = String::new();
        for (i, pair) in line.chunks(2).enumerate() {
            if i > 0 {
                hex.push(' ');
            }
            for b in pair {
                hex.push_str(&format!("{b:02x}"));
            }
        }
        let ascii: String = line
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!("{:08x}: {hex:<39}  {ascii}\n", n * 16));
    }
    out
}

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/format.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fails, printing the dump to paste, unless the document shows it.
fn assert_documented(what: &str, bytes: &[u8]) {
    let dump = xxd(bytes);
    assert!(
        doc().contains(&dump),
        "docs/format.md does not show this {what} as the code writes it:\n{dump}"
    );
}

/// The two records of the examples: `key` set to `value`, then removed.
fn example_records() -> (Vec<u8>, Vec<u8>) {
    let (mut put, mut delete) = (Vec::new(), Vec::new());
    record::encode(&mut put, 1, RecordKind::Put, b"key", b"value");
    record::encode(&mut delete, 2, RecordKind::Delete, b"key", b"");
    (put, delete)
}

#[test]
fn format_doc_shows_the_segment_header_the_code_writes() {
    // Guards against docs/format.md describing a segment header the code does not write.
    let h = SegmentHeader::new(Origin::Log, 1, 3);
    assert_documented("segment header", &h.encode());
}

#[test]
fn format_doc_shows_the_sync_mark_the_code_writes() {
    // Guards against docs/format.md describing a sync mark the code does not write.
    let mut mark = Vec::new();
    record::encode_mark(&mut mark, 61);
    assert_documented("sync mark", &mark);
}

#[test]
fn format_doc_shows_the_records_the_code_writes() {
    // Guards against docs/format.md describing a record layout the code does not write.
    let (put, delete) = example_records();
    assert_documented("put record", &put);
    assert_documented("delete record", &delete);
}

#[test]
fn format_doc_shows_the_hint_the_code_writes() {
    // Guards against docs/format.md describing a hint layout the code does not write.
    let (put, delete) = example_records();
    let mut w = HintWriter::default();
    w.push(&HintEntry {
        seq: 1,
        kind: RecordKind::Put,
        key: b"key",
        value_len: 5,
        offset: 32,
    });
    w.push(&HintEntry {
        seq: 2,
        kind: RecordKind::Delete,
        key: b"key",
        value_len: 0,
        offset: 32 + put.len() as u64,
    });
    let segment_len = (32 + put.len() + delete.len()) as u64;
    let bytes = w.finish(1, segment_len);
    assert_eq!(
        super::hint::decode(&bytes, 1, segment_len).unwrap().len(),
        2
    );
    assert_documented("hint file", &bytes);
}

#[test]
fn format_doc_shows_the_manifest_the_code_writes() {
    // Guards against docs/format.md describing a compaction manifest the code does not write.
    let m = CompactionManifest {
        inputs: vec![1, 2],
        outputs: vec![4],
    };
    assert_documented("compaction manifest", &m.encode());
}

#[test]
fn format_doc_shows_the_meta_file_the_code_writes() {
    // Guards against docs/format.md describing a kvs.meta the code does not write.
    let dir = tempfile::tempdir().unwrap();
    StoreMeta {
        engine: EngineKind::Kvs,
        partitions: 16,
    }
    .store(dir.path())
    .unwrap();
    let text = std::fs::read_to_string(StoreMeta::path(dir.path())).unwrap();
    assert!(
        doc().contains(&format!("```text\n{text}```")),
        "docs/format.md does not show:\n{text}"
    );
    assert_documented("kvs.meta", text.as_bytes());
}
