//! Scenario tests of a partition, each run under every disk backend.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;

use bytes::Bytes;

use super::partition::{Partition, PartitionConfig};
use super::segment;
use crate::io_backend::faulty::{Fault, FaultyDisk, StdDisk};
use crate::io_backend::Disk;
use crate::KvsError;

/// Runs `f` on a current-thread runtime with a `LocalSet`, as a partition's owner thread does.
pub(crate) fn run_local<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// Generates one test per backend from a scenario `async fn(D, &Path)`.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod std_disk {
            $(#[test]
            fn $name() {
                let dir = tempfile::tempdir().unwrap();
                super::run_local(super::$name(super::StdDisk, dir.path()));
            })*
        }
        mod on_uring {
            $(#[test]
            fn $name() {
                crate::io_backend::tests::run_on_uring(|d, p| async move { super::$name(d, &p).await });
            })*
        }
        mod on_blocking {
            $(#[test]
            fn $name() {
                crate::io_backend::tests::run_on_blocking(|d, p| async move { super::$name(d, &p).await });
            })*
        }
    };
}

backend_tests!(
    set_get_remove_round_trip,
    data_survives_reopen,
    rotation_and_hints_reopen,
    compaction_keeps_latest_values,
    torn_tail_is_cut_on_open,
    garbage_after_long_zero_padding_is_a_torn_tail,
    flipped_bit_in_sealed_segment_is_never_served,
    flipped_bit_before_valid_records_refuses_open,
    interrupted_compaction_finishes_on_open,
);

fn cfg(dir: &Path) -> PartitionConfig {
    let mut c = PartitionConfig::new(0, dir.to_owned());
    c.segment_bytes = 4096;
    c.compaction_min_dead_bytes = 4096;
    c.preallocate = true;
    c
}

fn b(s: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(s.as_ref())
}

async fn open<D: Disk>(disk: &D, c: PartitionConfig) -> Partition<D> {
    Partition::open(disk.clone(), c).await.unwrap()
}

async fn assert_contents<D: Disk>(
    p: &Partition<D>,
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    absent: &[&[u8]],
) {
    for (k, v) in model {
        assert_eq!(
            p.get(k).await.unwrap().as_deref(),
            Some(&v[..]),
            "key {:?}",
            String::from_utf8_lossy(k)
        );
    }
    for k in absent {
        assert_eq!(p.get(k).await.unwrap(), None);
    }
}

// Guards against the basic contract: binary-safe keys and values, empty values, KeyNotFound.
async fn set_get_remove_round_trip<D: Disk>(disk: D, dir: &Path) {
    let p = open(&disk, cfg(dir)).await;
    p.set(b("k\r\n\0"), b("v\r\n\0")).await.unwrap();
    p.set(b("empty"), Bytes::new()).await.unwrap();
    assert_eq!(p.get(b"k\r\n\0").await.unwrap(), Some(b("v\r\n\0")));
    assert_eq!(p.get(b"empty").await.unwrap(), Some(Bytes::new()));
    assert_eq!(p.get(b"missing").await.unwrap(), None);
    p.remove(b("k\r\n\0")).await.unwrap();
    assert_eq!(p.get(b"k\r\n\0").await.unwrap(), None);
    assert!(matches!(
        p.remove(b("k\r\n\0")).await,
        Err(KvsError::KeyNotFound)
    ));
    let too_big = Bytes::from(vec![0u8; crate::limits::KEY_BYTES_MAX + 1]);
    assert!(matches!(
        p.set(too_big, b("v")).await,
        Err(KvsError::KeyTooLarge { .. })
    ));
    p.close().await;
}

// Guards against acknowledged writes (and removes) being lost across a restart.
async fn data_survives_reopen<D: Disk>(disk: D, dir: &Path) {
    let mut model = BTreeMap::new();
    {
        let p = open(&disk, cfg(dir)).await;
        for i in 0..50 {
            let (k, v) = (format!("key{i}"), format!("value{i}"));
            p.set(b(&k), b(&v)).await.unwrap();
            model.insert(k.into_bytes(), v.into_bytes());
        }
        p.remove(b("key7")).await.unwrap();
        model.remove(&b"key7"[..]);
        p.close().await;
    }
    let p = open(&disk, cfg(dir)).await;
    assert_contents(&p, &model, &[b"key7"]).await;
    p.set(b("after"), b("reopen")).await.unwrap();
    p.close().await;
}

// Guards against sealed segments or their hints losing data on reopen.
async fn rotation_and_hints_reopen<D: Disk>(disk: D, dir: &Path) {
    let mut model = BTreeMap::new();
    let mut c = cfg(dir);
    c.auto_compact = false;
    {
        let p = open(&disk, c.clone()).await;
        for i in 0..400 {
            let (k, v) = (
                format!("key{}", i % 97),
                format!("value-{i}-{}", "x".repeat(i % 50)),
            );
            p.set(b(&k), b(&v)).await.unwrap();
            model.insert(k.into_bytes(), v.into_bytes());
        }
        assert!(p.stats().segments > 3, "segments rotate at the size limit");
        p.close().await;
    }
    let hints = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "hint")
        })
        .count();
    assert!(hints >= 3, "sealed segments get hint files");
    let p = open(&disk, c.clone()).await;
    assert_contents(&p, &model, &[]).await;
    p.close().await;
    // Without hints, a scan gives the same answer.
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let p = open(&disk, c).await;
    assert_contents(&p, &model, &[]).await;
    p.close().await;
}

// Guards against compaction losing or resurrecting data, and against unbounded disk use.
async fn compaction_keeps_latest_values<D: Disk>(disk: D, dir: &Path) {
    let mut model = BTreeMap::new();
    let p = open(&disk, cfg(dir)).await;
    for i in 0..3000 {
        let k = format!("key{}", i % 20);
        if i % 13 == 0 && model.contains_key(k.as_bytes()) {
            p.remove(b(&k)).await.unwrap();
            model.remove(k.as_bytes());
        } else {
            let v = format!("value-{i}");
            p.set(b(&k), b(&v)).await.unwrap();
            model.insert(k.into_bytes(), v.into_bytes());
        }
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    p.compact().await.unwrap();
    let stats = p.stats();
    assert!(stats.compactions >= 1, "compaction ran: {stats:?}");
    assert_contents(&p, &model, &[]).await;
    let disk_bytes: u64 = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        disk_bytes < 64 * 1024,
        "disk use stays bounded: {disk_bytes} bytes"
    );
    p.close().await;
    let p = open(&disk, cfg(dir)).await;
    assert_contents(&p, &model, &[]).await;
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp") || n.contains("manifest"))
        .collect();
    assert!(
        leftovers.is_empty() || leftovers == ["spare.seg.tmp"],
        "no leftover files: {leftovers:?}"
    );
    p.close().await;
}

fn newest_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

// Guards against a torn final write making the store unopenable or serving garbage.
async fn torn_tail_is_cut_on_open<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.segment_bytes = 1 << 20;
    {
        let p = open(&disk, c.clone()).await;
        p.set(b("a"), b("1")).await.unwrap();
        p.set(b("b"), b("2")).await.unwrap();
        p.close().await;
    }
    let seg = newest_segment(dir);
    let good_len = std::fs::metadata(&seg).unwrap().len();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Half a record: a plausible header and a few bytes.
    let mut rec = Vec::new();
    super::record::encode(
        &mut rec,
        99,
        super::record::RecordKind::Put,
        b"c",
        b"3333333333",
    );
    bytes.extend_from_slice(&rec[..rec.len() / 2]);
    std::fs::write(&seg, &bytes).unwrap();
    let p = open(&disk, c.clone()).await;
    assert_eq!(p.get(b"a").await.unwrap(), Some(b("1")));
    assert_eq!(p.get(b"c").await.unwrap(), None);
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        good_len,
        "torn tail cut off"
    );
    p.set(b("d"), b("4")).await.unwrap();
    p.close().await;
    let p = open(&disk, c).await;
    assert_eq!(p.get(b"d").await.unwrap(), Some(b("4")));
    p.close().await;
}

// Guards against the zero padding of a preallocated segment hiding garbage after it: the
// padding is checked in chunks, and a non-zero byte past the first chunk must still count.
async fn garbage_after_long_zero_padding_is_a_torn_tail<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.segment_bytes = 64 << 20;
    {
        let p = open(&disk, c.clone()).await;
        p.set(b("a"), b("1")).await.unwrap();
        p.close().await;
    }
    let seg = newest_segment(dir);
    let good_len = std::fs::metadata(&seg).unwrap().len();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.resize(good_len as usize + (9 << 20), 0);
    std::fs::write(&seg, &bytes).unwrap();
    // Zero padding alone is kept, and writes go after the last record.
    let p = open(&disk, c.clone()).await;
    assert_eq!(p.get(b"a").await.unwrap(), Some(b("1")));
    p.close().await;
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), bytes.len() as u64);
    // A stray byte far into the padding makes it a torn tail, cut off on open.
    bytes.push(0x5a);
    std::fs::write(&seg, &bytes).unwrap();
    let p = open(&disk, c.clone()).await;
    assert_eq!(p.get(b"a").await.unwrap(), Some(b("1")));
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        good_len,
        "torn tail cut off"
    );
    p.set(b("b"), b("2")).await.unwrap();
    p.close().await;
    let p = open(&disk, c).await;
    assert_eq!(p.get(b"b").await.unwrap(), Some(b("2")));
    p.close().await;
}

// Guards against a bit flip in a sealed segment ever being served as a value.
async fn flipped_bit_in_sealed_segment_is_never_served<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.auto_compact = false;
    {
        let p = open(&disk, c.clone()).await;
        for i in 0..200 {
            p.set(b(format!("key{i}")), b(format!("value{i:05}")))
                .await
                .unwrap();
        }
        p.close().await;
    }
    let first = segment::segment_path(dir, 1);
    let mut bytes = std::fs::read(&first).unwrap();
    let at = bytes.len() - 3; // inside the last record's value
    bytes[at] ^= 0x10;
    std::fs::write(&first, &bytes).unwrap();
    // With a hint the store opens, and reading the damaged record is an error.
    let p = open(&disk, c.clone()).await;
    let mut errors = 0;
    for i in 0..200 {
        match p.get(format!("key{i}").as_bytes()).await {
            Ok(v) => assert_eq!(v, Some(b(format!("value{i:05}")))),
            Err(KvsError::Corrupt { offset, .. }) => {
                errors += 1;
                assert!(offset > 0);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(errors, 1);
    p.close().await;
    // Without the hint, opening scans and refuses, naming the segment.
    std::fs::remove_file(segment::hint_path(dir, 1)).unwrap();
    match Partition::open(disk.clone(), c).await {
        Err(KvsError::Corrupt { file, .. }) => assert_eq!(file, first),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a corrupt store"),
    }
}

// Guards against corruption in the newest segment being mistaken for a torn tail.
async fn flipped_bit_before_valid_records_refuses_open<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.segment_bytes = 1 << 20;
    {
        let p = open(&disk, c.clone()).await;
        for i in 0..20 {
            p.set(b(format!("key{i}")), b("some value")).await.unwrap();
        }
        p.close().await;
    }
    let seg = newest_segment(dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0x01; // inside the first record
    std::fs::write(&seg, &bytes).unwrap();
    match Partition::open(disk.clone(), c).await {
        Err(KvsError::Corrupt { reason, .. }) => {
            assert!(reason.contains("valid record follows"), "{reason}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a store with a corrupt record before valid ones"),
    }
}

// Guards against a crash at any step of compaction losing data or leaving files behind.
async fn interrupted_compaction_finishes_on_open<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.auto_compact = false;
    let mut model = BTreeMap::new();
    {
        let p = open(&disk, c.clone()).await;
        for i in 0..600 {
            let k = format!("key{}", i % 30);
            let v = format!("value-{i}");
            p.set(b(&k), b(&v)).await.unwrap();
            model.insert(k.into_bytes(), v.into_bytes());
        }
        p.remove(b("key3")).await.unwrap();
        model.remove(&b"key3"[..]);
        p.close().await;
    }
    let pristine = tempfile::tempdir().unwrap();
    copy_dir(dir, pristine.path());
    // Count the mutating operations of a full compaction.
    let total = {
        let faulty = FaultyDisk::new(disk.clone(), u64::MAX, Fault::Crash);
        let p = Partition::open(faulty.clone(), c.clone()).await.unwrap();
        let before = faulty.ops();
        assert!(p.compact().await.unwrap());
        faulty.ops() - before
    };
    assert!(total > 5);
    let mut finished_on_open = 0;
    for fault in [Fault::Crash, Fault::Tear] {
        for n in 1..=total {
            wipe_dir(dir);
            copy_dir(pristine.path(), dir);
            let faulty = FaultyDisk::new(disk.clone(), u64::MAX, fault);
            let p = Partition::open(faulty.clone(), c.clone()).await.unwrap();
            let faulty_at = FaultyDisk::new(disk.clone(), faulty.ops() + n, fault);
            drop(p);
            let p = Partition::open(faulty_at.clone(), c.clone()).await.unwrap();
            let _ = p.compact().await;
            assert!(
                faulty_at.crashed() || faulty_at.ops() < faulty.ops() + n,
                "fault {fault:?} at {n} was injected"
            );
            drop(p);
            if dir.join(super::manifest::MANIFEST_NAME).exists() {
                finished_on_open += 1;
            }
            let p = Partition::open(disk.clone(), c.clone())
                .await
                .unwrap_or_else(|e| panic!("{fault:?} at op {n}: reopen failed: {e}"));
            for (k, v) in &model {
                assert_eq!(
                    p.get(k).await.unwrap().as_deref(),
                    Some(&v[..]),
                    "{fault:?} at op {n}"
                );
            }
            assert_eq!(
                p.get(b"key3").await.unwrap(),
                None,
                "{fault:?} at op {n}: deleted key resurrected"
            );
            p.close().await;
            let names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(
                !names
                    .iter()
                    .any(|n| n.ends_with(".tmp") || n.contains("manifest")),
                "{fault:?} at op {n}: leftovers {names:?}"
            );
        }
    }
    // Crashes past the commit point leave a manifest that the open must finish.
    assert!(
        finished_on_open >= 4,
        "only {finished_on_open} of {total} crash points were past the commit point"
    );
    eprintln!(
        "compaction crash sweep: {total} operations, {finished_on_open} crashes finished on open"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn wipe_dir(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
}
