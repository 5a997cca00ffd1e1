//! Committed stores in the current on-disk format (`tests/fixtures/`), opened from copies.
//!
//! `v2/` is a small store: `kvs.meta` and one partition with a compaction output, sealed
//! segments with hints, and an active segment (its segments hold sync marks). `v2-torn/` is
//! the same store with half of one more record at the end of the active segment, as a crash
//! in the middle of a write leaves it. Both come from [`write_fixtures`], which
//! [`regenerate_fixtures`] runs on request. `v1/` and `v1-torn/` are the same stores in
//! format 1, written by the format 1 code: they are never regenerated, and still must open.
//!
//! These tests guard against silent format drift: if the code stops reading the committed
//! bytes the same way, or stops writing the same bytes, they fail. A deliberate format change
//! bumps the version and adds a fixture (see "Versioning" in `docs/format.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kvs::engine::{FsyncPolicy, StoreOptions};
use kvs::io_backend::IoChoice;
use kvs::{KvStore, KvsEngine, KvsError};

/// Set to `1` to let [`regenerate_fixtures`] rewrite `tests/fixtures/`.
const WRITE_ENV: &str = "KVS_WRITE_FIXTURES";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What the fixture store was made with.
enum FixtureOp {
    Set(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    Compact,
}

fn key(i: usize) -> Vec<u8> {
    match i {
        // A key no text protocol could carry.
        7 => b"bin\0\r\n\xff".to_vec(),
        _ => format!("key-{i:02}").into_bytes(),
    }
}

fn value(i: usize, round: usize) -> Vec<u8> {
    match (i, round) {
        (3, 0) => Vec::new(),
        (5, _) => vec![0, 13, 10, 255, round as u8],
        _ => {
            let mut v = format!("r{round}-value-{i:02}-").into_bytes();
            v.extend((0..(i * 37) % 180).map(|j| b'a' + (j % 26) as u8));
            v
        }
    }
}

/// The operations, in order. They fill 4096-byte segments: one is sealed before the
/// compaction, which rewrites its live records into a compaction output, and the writes
/// after it seal more and leave an active one.
fn fixture_ops() -> Vec<FixtureOp> {
    use FixtureOp::*;
    let mut ops = Vec::new();
    ops.extend((0..40).map(|i| Set(key(i), value(i, 0))));
    ops.extend((0..12).map(|i| Set(key(i), value(i, 1))));
    ops.extend((12..16).map(|i| Remove(key(i))));
    ops.push(Compact);
    ops.extend((40..70).map(|i| Set(key(i), value(i, 2))));
    ops.extend((20..24).map(|i| Set(key(i), value(i, 3))));
    ops.push(Remove(key(24)));
    ops.push(Remove(key(41)));
    ops.extend((70..KEY_COUNT).map(|i| Set(key(i), value(i, 4))));
    ops
}

/// Keys `key(0)..key(KEY_COUNT)` are the only ones the fixture ever held.
const KEY_COUNT: usize = 100;

/// The contents the fixture store holds.
fn fixture_model() -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for op in fixture_ops() {
        match op {
            FixtureOp::Set(k, v) => {
                model.insert(k, v);
            }
            FixtureOp::Remove(k) => {
                model.remove(&k);
            }
            FixtureOp::Compact => {}
        }
    }
    model
}

/// Every key the fixture ever held.
fn fixture_keys() -> Vec<Vec<u8>> {
    (0..KEY_COUNT).map(key).collect()
}

/// The key (and value) appended and then torn in `v1-torn/`.
const TORN_KEY: &[u8] = b"torn-key";
const TORN_VALUE: &[u8] = b"this record was half written when the process died";

fn options(io: IoChoice) -> StoreOptions {
    StoreOptions {
        partitions: 1,
        fsync: FsyncPolicy::Always,
        io: Some(io),
        segment_bytes: 4096,
        // Preallocation runs in the background; without it, the bytes are deterministic.
        preallocate: false,
        ..StoreOptions::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Files under `dir`, relative, sorted; `LOCK` (made by every open, empty) left out.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.file_name().unwrap() != "LOCK" {
                out.push(path.strip_prefix(root).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn copy_store(from: &Path, to: &Path) {
    for f in files(from) {
        let dest = to.join(&f);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&f), dest).unwrap();
    }
}

/// The newest segment of partition 0: the active one in these fixtures.
fn active_segment(store: &Path) -> PathBuf {
    files(store)
        .into_iter()
        .rfind(|f| f.extension().is_some_and(|x| x == "seg"))
        .map(|f| store.join(f))
        .unwrap()
}

/// The format the code writes, and so the fixtures [`write_fixtures`] makes.
const CURRENT: &str = "v2";

/// Makes `<out>/v2` and `<out>/v2-torn` (which must not exist yet).
fn write_fixtures(out: &Path) {
    let v1 = out.join(CURRENT);
    let rt = rt();
    rt.block_on(async {
        let store = KvStore::open_with(&v1, options(IoChoice::Blocking)).unwrap();
        for op in fixture_ops() {
            match op {
                FixtureOp::Set(k, v) => store.set(Bytes::from(k), Bytes::from(v)).await.unwrap(),
                FixtureOp::Remove(k) => store.remove(Bytes::from(k)).await.unwrap(),
                FixtureOp::Compact => store.compact().await.unwrap(),
            }
        }
    });
    std::fs::remove_file(v1.join("LOCK")).unwrap();

    // The same store after one more write, cut off halfway through its record.
    let torn = out.join(format!("{CURRENT}-torn"));
    copy_store(&v1, &torn);
    let active = active_segment(&torn);
    let before = std::fs::metadata(&active).unwrap().len();
    rt.block_on(async {
        let store = KvStore::open_with(&torn, options(IoChoice::Blocking)).unwrap();
        store
            .set(Bytes::from_static(TORN_KEY), Bytes::from_static(TORN_VALUE))
            .await
            .unwrap();
    });
    std::fs::remove_file(torn.join("LOCK")).unwrap();
    assert_eq!(
        active_segment(&torn),
        active,
        "the record went to the same segment"
    );
    let after = std::fs::metadata(&active).unwrap().len();
    assert!(after > before);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(before + (after - before) / 2)
        .unwrap();
}

#[test]
#[ignore = "rewrites tests/fixtures/; run with KVS_WRITE_FIXTURES=1 after a deliberate format change"]
fn regenerate_fixtures() {
    if std::env::var(WRITE_ENV).as_deref() != Ok("1") {
        println!("skipped: set {WRITE_ENV}=1 to rewrite tests/fixtures/");
        return;
    }
    for name in [CURRENT.to_owned(), format!("{CURRENT}-torn")] {
        let _ = std::fs::remove_dir_all(fixtures().join(name));
    }
    write_fixtures(&fixtures());
    println!("wrote {}", fixtures().display());
}

/// The backends to run on here: blocking always; uring where the machine allows it.
fn backends() -> Vec<IoChoice> {
    let mut v = vec![IoChoice::Blocking];
    match kvs::io_backend::uring::probe() {
        Ok(()) => v.push(IoChoice::Uring),
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: the uring half: io_uring is unavailable here: {e}"
            );
        }
    }
    v
}

/// A copy of a committed fixture in a temporary directory.
fn fixture_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_store(&fixtures().join(name), dir.path());
    dir
}

async fn assert_fixture_contents(store: &KvStore, what: &str) {
    let model = fixture_model();
    for k in fixture_keys() {
        let got = store.get(Bytes::from(k.clone())).await.unwrap();
        assert_eq!(
            got.as_deref(),
            model.get(&k).map(|v| &v[..]),
            "{what}: key {:?}",
            String::from_utf8_lossy(&k)
        );
    }
}

#[test]
fn v1_fixture_has_the_expected_files() {
    // Guards against the fixture losing what it is meant to cover (a compaction output,
    // sealed segments with hints, an active segment without one).
    fixture_has_the_expected_files("v1");
}

#[test]
fn v2_fixture_has_the_expected_files() {
    // Guards against the fixture losing what it is meant to cover, sync marks included.
    fixture_has_the_expected_files("v2");
    let v2 = fixtures().join("v2");
    let active = active_segment(&v2);
    let bytes = std::fs::read(&active).unwrap();
    assert_eq!(bytes[8], 2, "a version 2 segment");
    // A sync mark's kind, empty key and 8-byte value, after a record.
    let mark = [3u8, 0, 0, 0, 0, 8, 0, 0, 0];
    assert!(
        bytes[32..].windows(mark.len()).any(|w| w == mark),
        "{} holds a sync mark",
        active.display()
    );
}

fn fixture_has_the_expected_files(version: &str) {
    let v1 = fixtures().join(version);
    let names: Vec<String> = files(&v1)
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    let origin = |f: &str| std::fs::read(v1.join(f)).unwrap()[12];
    let segs: Vec<&String> = names.iter().filter(|n| n.ends_with(".seg")).collect();
    assert!(names.contains(&"kvs.meta".to_owned()), "{names:?}");
    assert!(segs.len() >= 4, "{names:?}");
    assert!(
        segs.iter().any(|s| origin(s) == 1),
        "a compaction output: {names:?}"
    );
    assert!(
        segs.iter().filter(|s| origin(s) == 0).count() >= 3,
        "sealed and active log segments: {names:?}"
    );
    let (active, sealed) = segs.split_last().unwrap();
    assert!(
        !names.contains(&active.replace(".seg", ".hint")),
        "{names:?}"
    );
    for s in sealed {
        assert!(
            names.contains(&s.replace(".seg", ".hint")),
            "{s} has a hint"
        );
    }
    assert!(names
        .iter()
        .all(|n| n == "kvs.meta" || n.starts_with("p0000/")));
}

#[test]
fn v1_fixture_opens_with_exact_contents() {
    // Guards against the code no longer reading stores written in format 1.
    fixture_opens_with_exact_contents("v1");
}

#[test]
fn v2_fixture_opens_with_exact_contents() {
    // Guards against the code no longer reading stores written in format 2.
    fixture_opens_with_exact_contents("v2");
}

fn fixture_opens_with_exact_contents(version: &str) {
    for io in backends() {
        let dir = fixture_copy(version);
        let rt = rt();
        rt.block_on(async {
            let store = KvStore::open_with(dir.path(), options(io)).unwrap();
            assert_fixture_contents(&store, &format!("{io:?}")).await;
            let stats = store.stats().await.unwrap();
            assert_eq!(stats[0].keys, fixture_model().len() as u64);
        });
        // Opening and closing a clean store changes no byte of it.
        for f in files(dir.path()) {
            assert!(
                std::fs::read(dir.path().join(&f)).unwrap()
                    == std::fs::read(fixtures().join(version).join(&f)).unwrap(),
                "{io:?}: {} changed",
                f.display()
            );
        }
        assert_eq!(files(dir.path()), files(&fixtures().join(version)));
        // And it takes writes.
        rt.block_on(async {
            let store = KvStore::open_with(dir.path(), options(io)).unwrap();
            store.set_string("new", "write").await.unwrap();
            store.remove(Bytes::from(key(0))).await.unwrap();
        });
        rt.block_on(async {
            let store = KvStore::open_with(dir.path(), options(io)).unwrap();
            assert_eq!(
                store.get_string("new").await.unwrap().as_deref(),
                Some("write")
            );
            assert_eq!(store.get(Bytes::from(key(0))).await.unwrap(), None);
        });
    }
}

#[test]
fn v1_torn_fixture_opens_with_the_tail_cut() {
    // Guards against a torn final record making a format-1 store unopenable, being served,
    // or being left in place for later appends to follow.
    torn_fixture_opens_with_the_tail_cut("v1");
}

#[test]
fn v2_torn_fixture_opens_with_the_tail_cut() {
    // Guards against a torn final record making a format-2 store unopenable, being served,
    // or being left in place for later appends to follow.
    torn_fixture_opens_with_the_tail_cut("v2");
}

fn torn_fixture_opens_with_the_tail_cut(version: &str) {
    for io in backends() {
        let dir = fixture_copy(&format!("{version}-torn"));
        let active = active_segment(dir.path());
        let intact = std::fs::metadata(active_segment(&fixtures().join(version)))
            .unwrap()
            .len();
        assert!(std::fs::metadata(&active).unwrap().len() > intact);
        let rt = rt();
        rt.block_on(async {
            let store = KvStore::open_with(dir.path(), options(io)).unwrap();
            assert_fixture_contents(&store, &format!("{io:?} torn")).await;
            assert_eq!(store.get(Bytes::from_static(TORN_KEY)).await.unwrap(), None);
        });
        assert_eq!(
            std::fs::metadata(&active).unwrap().len(),
            intact,
            "{io:?}: the torn record is cut off"
        );
        rt.block_on(async {
            let store = KvStore::open_with(dir.path(), options(io)).unwrap();
            store
                .set(Bytes::from_static(TORN_KEY), Bytes::from_static(b"whole"))
                .await
                .unwrap();
        });
        rt.block_on(async {
            let store = KvStore::open_with(dir.path(), options(io)).unwrap();
            assert_eq!(
                store.get(Bytes::from_static(TORN_KEY)).await.unwrap(),
                Some(Bytes::from_static(b"whole"))
            );
            assert_fixture_contents(&store, &format!("{io:?} torn, rewritten")).await;
        });
    }
}

#[test]
fn v1_fixture_flipped_bit_under_a_hint_is_a_read_error() {
    // Guards against a hint being ignored (the store would scan instead) and against damage
    // under a valid hint ever being served as a value.
    flipped_bit_under_a_hint_is_a_read_error("v1");
}

#[test]
fn v2_fixture_flipped_bit_under_a_hint_is_a_read_error() {
    // Guards against a hint being ignored, or damage under a valid hint being served, in
    // format 2.
    flipped_bit_under_a_hint_is_a_read_error("v2");
}

#[test]
fn v1_fixture_damage_before_valid_records_refuses_open() {
    // Guards against the format-1 rule being lost: a segment without sync marks refuses
    // damage with a newer valid record after it rather than cutting it off.
    let dir = fixture_copy("v1");
    let active = active_segment(dir.path());
    let mut bytes = std::fs::read(&active).unwrap();
    bytes[40] ^= 0x01; // inside the first record
    std::fs::write(&active, &bytes).unwrap();
    match KvStore::open_with(dir.path(), options(IoChoice::Blocking)) {
        Err(KvsError::Corrupt { file, reason, .. }) => {
            assert_eq!(file, active);
            assert!(reason.contains("valid record follows"), "{reason}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a store with damage before valid records"),
    }
}

fn flipped_bit_under_a_hint_is_a_read_error(version: &str) {
    let dir = fixture_copy(version);
    // key-45's only record is in a sealed log segment that has a hint.
    let target = key(45);
    let needle = value(45, 2);
    let (seg, at) = files(dir.path())
        .into_iter()
        .filter(|f| f.extension().is_some_and(|x| x == "seg"))
        .find_map(|f| {
            let bytes = std::fs::read(dir.path().join(&f)).unwrap();
            let at = bytes.windows(needle.len()).position(|w| w == needle)?;
            Some((dir.path().join(f), at + needle.len() - 1))
        })
        .unwrap();
    assert!(
        seg.with_extension("hint").exists(),
        "{} has a hint",
        seg.display()
    );
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let rt = rt();
    rt.block_on(async {
        let store = KvStore::open_with(dir.path(), options(IoChoice::Blocking)).unwrap();
        match store.get(Bytes::from(target.clone())).await {
            Err(KvsError::Corrupt { file, .. }) => assert_eq!(file, seg),
            other => panic!("expected a checksum error, got {other:?}"),
        }
        let model = fixture_model();
        for k in fixture_keys().into_iter().filter(|k| *k != target) {
            let got = store.get(Bytes::from(k.clone())).await.unwrap();
            assert_eq!(got.as_deref(), model.get(&k).map(|v| &v[..]));
        }
    });
    // Without the hint, the open scans the segment and refuses, naming file and offset.
    std::fs::remove_file(seg.with_extension("hint")).unwrap();
    match KvStore::open_with(dir.path(), options(IoChoice::Blocking)) {
        Err(KvsError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert!(offset >= 32 && (offset as usize) < at, "offset {offset}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a store with a corrupt sealed segment"),
    }
}

#[test]
fn fixture_generator_writes_the_committed_bytes() {
    // Guards against the writer drifting from the committed format: any change to what is
    // written (layout, checksums, names, which files exist) shows up here first.
    let out = tempfile::tempdir().unwrap();
    write_fixtures(out.path());
    for name in [CURRENT.to_owned(), format!("{CURRENT}-torn")] {
        let (made, committed) = (out.path().join(&name), fixtures().join(&name));
        assert_eq!(files(&made), files(&committed), "{name}: the files differ");
        for f in files(&made) {
            assert!(
                std::fs::read(made.join(&f)).unwrap() == std::fs::read(committed.join(&f)).unwrap(),
                "{name}/{} differs from the committed fixture: the on-disk format changed. \
                 If that is deliberate, bump the version and add a fixture (docs/format.md, \
                 Versioning)",
                f.display()
            );
        }
    }
}

#[test]
fn partition_function_is_pinned() {
    // Guards against a change to which partition a key lives in, which would strand every
    // existing key in the wrong directory.
    use kvs::engine::shard::partition_of;
    assert_eq!(
        crc32c::crc32c(b"123456789"),
        0xe306_9283,
        "the Castagnoli check value"
    );
    // crc32c(b"key-00") = 0x500c7744 and crc32c(b"user:42") = 0x35c33ced, computed by a
    // bitwise CRC-32C (polynomial 0x82f63b78, reflected) independent of this crate.
    for (key, partitions, expected) in [
        (&b"key-00"[..], 16, 4),
        (b"user:42", 16, 13),
        (b"", 16, 0),
        (b"key-00", 1, 0),
        (b"key-00", 1024, 836),
        (b"user:42", 1024, 237),
    ] {
        assert_eq!(
            partition_of(key, partitions),
            expected,
            "{key:?} % {partitions}"
        );
    }
}
