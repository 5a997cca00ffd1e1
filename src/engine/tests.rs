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
    a_hint_written_in_chunks_across_a_reopen_lists_every_record,
    compaction_keeps_latest_values,
    close_stops_a_running_compaction,
    torn_tail_is_cut_on_open,
    garbage_after_long_zero_padding_is_a_torn_tail,
    flipped_bit_in_sealed_segment_is_never_served,
    flipped_bit_before_valid_records_refuses_open,
    gap_in_never_synced_writes_is_a_torn_tail,
    sync_marks_tell_lost_durable_writes_from_unsynced_gaps,
    interrupted_compaction_finishes_on_open,
    a_manifest_whose_outputs_are_gone_keeps_its_inputs,
    overwrites_keep_disk_within_twice_live_data,
    interval_fsync_holds_under_sustained_writes,
    a_write_flood_does_not_queue_other_clients_behind_it,
    write_back_is_started_as_an_unsynced_segment_fills,
    a_segment_written_during_a_background_seal_is_kept_only_after_a_whole_one,
    enospc_on_write_is_disk_full_and_recoverable,
    failed_fsync_poisons_writes_but_serves_reads,
    a_failed_disk_operation_while_writing_is_a_refusal_never_a_bare_io_error,
    crash_at_any_write_step_keeps_acknowledged_writes,
    enospc_at_any_write_step_keeps_exactly_acknowledged_writes,
);

fn cfg(dir: &Path) -> PartitionConfig {
    let mut c = PartitionConfig::new(0, dir.to_owned());
    c.segment_bytes = 4096;
    c.compaction_min_dead_bytes = 4096;
    c.preallocate = true;
    // Small enough to evict, so reads take both the cache and the disk path.
    c.cache_bytes = 8 * 1024;
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

// Guards against the active segment's hint, written a chunk at a time and rebuilt by an open,
// missing an entry: a hint that checks out but lacks a record would hide that record.
async fn a_hint_written_in_chunks_across_a_reopen_lists_every_record<D: Disk>(disk: D, dir: &Path) {
    use super::durability::FsyncPolicy;
    use super::hint;
    use super::record::{MARK_BYTES, RECORD_HEADER_BYTES};
    for (n, fsync) in [FsyncPolicy::Always, FsyncPolicy::Never]
        .into_iter()
        .enumerate()
    {
        let dir = dir.join(format!("p{n}"));
        std::fs::create_dir(&dir).unwrap();
        let mut c = cfg(&dir);
        c.fsync = fsync;
        c.auto_compact = false;
        // About 20,000 records of 49 bytes: each has a 33-byte hint entry, so the segment's
        // hint is several chunks long.
        c.segment_bytes = 1 << 20;
        let mut model = BTreeMap::new();
        let mut written = 0;
        for round in 0..3 {
            let p = open(&disk, c.clone()).await;
            let sets: Vec<_> = (written..written + 10_000)
                .map(|i| {
                    let (k, v) = (format!("key{i:05}"), format!("value-{i:014}"));
                    model.insert(k.clone().into_bytes(), v.clone().into_bytes());
                    p.set(b(k), b(v))
                })
                .collect();
            for r in futures::future::join_all(sets).await {
                r.unwrap();
            }
            written += 10_000;
            // The first segment fills in the third round, after two reopens.
            let segments = p.stats().segments;
            assert!(
                (segments > 1) == (round == 2),
                "{segments} segments in round {round}"
            );
            p.close().await;
        }
        // Checks the hint of segment `id`: it checks out, and its records follow each other
        // with at most a sync mark between two, to the segment's end: no entry is missing.
        let check = |id: u64| {
            let len = std::fs::metadata(segment::segment_path(&dir, id))
                .unwrap()
                .len();
            let bytes =
                std::fs::read(segment::hint_path(&dir, id)).expect("a sealed segment's hint");
            let entries = hint::decode(&bytes, id, len).expect("the hint checks out");
            let mut end = segment::SEGMENT_HEADER_BYTES;
            for e in &entries {
                let gap = e.offset - end;
                assert!(
                    gap == 0 || gap == MARK_BYTES as u64,
                    "segment {id}: a gap of {gap} at {}",
                    e.offset
                );
                assert_eq!(e.record_len(), (RECORD_HEADER_BYTES + 8 + 20) as u64);
                end = e.offset + e.record_len();
            }
            assert_eq!(end, len, "segment {id}: the last entry ends the segment");
            entries.len()
        };
        let entries = check(1);
        assert!(entries > 15_000, "{entries} entries");
        let p = open(&disk, c.clone()).await;
        assert_contents(&p, &model, &[]).await;
        // A compaction output's hint is written a chunk at a time too.
        assert!(
            p.compact().await.unwrap(),
            "the sealed segment is compacted"
        );
        p.close().await;
        let outputs: Vec<u64> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(
                |e| match segment::classify(e.unwrap().file_name().to_str().unwrap()) {
                    segment::FileKind::Hint(id) => Some(id),
                    _ => None,
                },
            )
            .collect();
        assert!(!outputs.contains(&1), "the input is gone: {outputs:?}");
        let largest = outputs.iter().map(|&id| check(id)).max().unwrap_or(0);
        assert!(largest > 15_000, "an output of {largest} entries");
        let p = open(&disk, c).await;
        assert_contents(&p, &model, &[]).await;
        p.close().await;
    }
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
    // Reopened without automatic compaction, which could start at open and have its own
    // outputs under way while the directory is listed.
    let mut quiet = cfg(dir);
    quiet.auto_compact = false;
    let p = open(&disk, quiet).await;
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

/// Which of keys `seal-0`.. `seal-{n-1}` a partition holds, each with the value it was given.
async fn sealed_keys_found<D: Disk>(p: &Partition<D>, n: usize) -> Vec<bool> {
    let mut found = Vec::new();
    for i in 0..n {
        let got = p.get(format!("seal-{i}").as_bytes()).await.unwrap();
        if let Some(v) = &got {
            assert_eq!(&v[..], format!("value-{i}").repeat(20).as_bytes());
        }
        found.push(got.is_some());
    }
    found
}

async fn a_segment_written_during_a_background_seal_is_kept_only_after_a_whole_one<D: Disk>(
    disk: D,
    dir: &Path,
) {
    // Guards against losing the writes a process crash left in a segment still under its
    // pending name (the page cache had them all), and against keeping that segment after a
    // power cut took records from the end of the segment before it (a hole in the log).
    let mut c = cfg(dir);
    c.fsync = super::durability::FsyncPolicy::Never;
    c.auto_compact = false;
    let n = 100;
    let p = open(&disk, c.clone()).await;
    for i in 0..n {
        let v = format!("value-{i}").repeat(20);
        p.set(b(format!("seal-{i}")), b(v)).await.unwrap();
    }
    p.close().await;
    // What a crash before the background seal finished leaves: the newest segment under its
    // pending name, the one before it without a hint.
    let segs = segment_files(dir);
    assert!(segs.len() >= 3, "the writes rotate segments");
    let id_of = |p: &Path| -> u64 { p.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
    let (newest, prev) = (&segs[segs.len() - 1], &segs[segs.len() - 2]);
    let prev_len = std::fs::metadata(prev).unwrap().len();
    let pending = segment::pending_path(dir, id_of(newest), id_of(prev), prev_len);
    let _ = std::fs::remove_file(segment::hint_path(dir, id_of(prev)));
    // Two power cuts, each on its own copy, in the segment before it: one tore its last
    // record; the other left zeros where its records were (a preallocated segment's lost
    // writes), so it scans cleanly but ends at its header, short of where the name says.
    let cuts = [prev_len - 10, segment::SEGMENT_HEADER_BYTES];
    let copies: Vec<_> = cuts.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    for copy in &copies {
        for e in std::fs::read_dir(dir).unwrap() {
            let from = e.unwrap().path();
            let name = if from == *newest {
                pending.file_name().unwrap().to_owned()
            } else {
                from.file_name().unwrap().to_owned()
            };
            std::fs::copy(&from, copy.path().join(name)).unwrap();
        }
    }
    std::fs::rename(newest, &pending).unwrap();

    // A process crash: the segment before it is whole, so the pending one joins the log.
    let p = open(&disk, c.clone()).await;
    assert_eq!(
        sealed_keys_found(&p, n).await,
        vec![true; n],
        "a process crash"
    );
    p.close().await;
    assert!(
        newest.exists() && !pending.exists(),
        "the segment has its own name"
    );

    // After each power cut the pending segment goes, and what is left is a prefix of the
    // writes.
    for (copy, cut_at) in copies.iter().zip(cuts) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(copy.path().join(prev.file_name().unwrap()))
            .unwrap();
        if cut_at == segment::SEGMENT_HEADER_BYTES {
            let zeros = vec![0u8; (prev_len - cut_at) as usize];
            std::os::unix::fs::FileExt::write_all_at(&f, &zeros, cut_at).unwrap();
        } else {
            f.set_len(cut_at).unwrap();
        }
        drop(f);
        let mut c2 = c.clone();
        c2.dir = copy.path().to_owned();
        let p = open(&disk, c2).await;
        let found = sealed_keys_found(&p, n).await;
        p.close().await;
        let kept = found.iter().take_while(|&&f| f).count();
        assert!(
            found[kept..].iter().all(|&f| !f),
            "cut at {cut_at}: only a prefix of the writes survives: {found:?}"
        );
        assert!(
            kept > 0 && kept < n - 1,
            "cut at {cut_at}: the pending segment and the lost records went: {found:?}"
        );
    }
}

/// The segment files in `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

fn newest_segment(dir: &Path) -> std::path::PathBuf {
    segment_files(dir).pop().unwrap()
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
            assert!(reason.contains("already durable"), "{reason}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a store with a corrupt record before valid ones"),
    }
}

// Guards against a compaction outliving `close`: it would go on writing and deleting files
// under a store reopened meanwhile in the same process.
async fn close_stops_a_running_compaction<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.auto_compact = false;
    let mut model = BTreeMap::new();
    let p = open(&disk, c.clone()).await;
    overwrite_keys(&p, 2000, 50, &mut model).await;
    let compacting = {
        let p = p.clone();
        tokio::task::spawn_local(async move { p.compact().await })
    };
    tokio::task::yield_now().await;
    p.close().await;
    // Whatever the compaction had done, nothing of it is under way or left half done.
    let leftovers = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| (n.ends_with(".tmp") && n != "spare.seg.tmp") || n.contains("manifest"))
            .collect()
    };
    assert_eq!(leftovers(dir), Vec::<String>::new());
    let outcome = compacting.await.unwrap();
    assert!(
        matches!(outcome, Ok(_) | Err(KvsError::Closed)),
        "{outcome:?}"
    );
    let p = open(&disk, c).await;
    assert_contents(&p, &model, &[]).await;
    p.close().await;
}

/// Where the record of `key` starts in `bytes` (keys in these tests are unique substrings).
fn record_at(bytes: &[u8], key: &[u8]) -> usize {
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .unwrap_or_else(|| panic!("{} not in the segment", String::from_utf8_lossy(key)));
    at - super::record::RECORD_HEADER_BYTES
}

/// Zeroes the records of keys `from..to` (`key{i:02}`) in `seg`, as a crash leaves pages of an
/// unsynced write that never reached the disk.
fn zero_records(seg: &Path, from: usize, to: usize) -> usize {
    let mut bytes = std::fs::read(seg).unwrap();
    let start = record_at(&bytes, format!("key{from:02}").as_bytes());
    let end = record_at(&bytes, format!("key{to:02}").as_bytes());
    bytes[start..end].fill(0);
    std::fs::write(seg, &bytes).unwrap();
    start
}

/// Opens a partition, sets `key{i:02}` to `value{i:02}` for `i` below `n` (one batch each),
/// and closes it. Returns what it wrote.
async fn write_numbered_keys<D: Disk>(
    disk: &D,
    c: &PartitionConfig,
    n: usize,
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let p = open(disk, c.clone()).await;
    let mut model = BTreeMap::new();
    for i in 0..n {
        let (k, v) = (format!("key{i:02}"), format!("value{i:02}"));
        p.set(b(&k), b(&v)).await.unwrap();
        model.insert(k.into_bytes(), v.into_bytes());
    }
    p.close().await;
    model
}

/// Makes `writes` sets on `p`, write `i` setting `key{i % keys}` to `value-{i}`, and records
/// them in `model`.
async fn overwrite_keys<D: Disk>(
    p: &Partition<D>,
    writes: usize,
    keys: usize,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) {
    for i in 0..writes {
        let (k, v) = (format!("key{}", i % keys), format!("value-{i}"));
        p.set(b(&k), b(&v)).await.unwrap();
        model.insert(k.into_bytes(), v.into_bytes());
    }
}

fn one_segment_cfg(dir: &Path, fsync: super::durability::FsyncPolicy) -> PartitionConfig {
    let mut c = cfg(dir);
    c.segment_bytes = 1 << 20;
    c.preallocate = false;
    c.fsync = fsync;
    c
}

// Guards against refusing to open after a power cut that kept later pages of an unsynced
// write but not earlier ones: nothing there was ever durable, so it is a torn tail.
async fn gap_in_never_synced_writes_is_a_torn_tail<D: Disk>(disk: D, dir: &Path) {
    let c = one_segment_cfg(dir, super::durability::FsyncPolicy::Never);
    write_numbered_keys(&disk, &c, 30).await;
    let seg = newest_segment(dir);
    let gap = zero_records(&seg, 10, 13);
    let p = open(&disk, c.clone()).await;
    for i in 0..30 {
        let got = p.get(format!("key{i:02}").as_bytes()).await.unwrap();
        let want = (i < 10).then(|| b(format!("value{i:02}")));
        assert_eq!(got, want, "key{i:02}");
    }
    // The records after the gap went with it: no hole in the history.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), gap as u64);
    p.set(b("after"), b("reopen")).await.unwrap();
    p.close().await;
    let p = open(&disk, c).await;
    assert_eq!(p.get(b"after").await.unwrap(), Some(b("reopen")));
    assert_eq!(p.get(b"key09").await.unwrap(), Some(b("value09")));
    p.close().await;
}

// Guards against a sync mark being ignored: damage where a mark says the log was durable
// (an acknowledged, synced write lost) refuses the open, while a gap after the last mark's
// offset is a torn tail.
async fn sync_marks_tell_lost_durable_writes_from_unsynced_gaps<D: Disk>(disk: D, dir: &Path) {
    use super::durability::FsyncPolicy;
    let interval = std::time::Duration::from_millis(20);
    let c = one_segment_cfg(dir, FsyncPolicy::Interval(interval));
    {
        let p = open(&disk, c.clone()).await;
        for i in 0..30 {
            if i == 15 {
                // Let the interval's sync run: the next write carries a mark naming the end of
                // key14's record.
                tokio::time::sleep(interval * 5).await;
            }
            p.set(b(format!("key{i:02}")), b(format!("value{i:02}")))
                .await
                .unwrap();
        }
        p.close().await;
    }
    let seg = newest_segment(dir);
    let pristine = std::fs::read(&seg).unwrap();

    // A gap after the durable offset: cut there, everything before it served.
    zero_records(&seg, 20, 23);
    {
        let p = open(&disk, c.clone()).await;
        for i in 0..30 {
            let got = p.get(format!("key{i:02}").as_bytes()).await.unwrap();
            assert_eq!(
                got,
                (i < 20).then(|| b(format!("value{i:02}"))),
                "key{i:02}"
            );
        }
        p.close().await;
    }

    // The same gap before the durable offset: refused, naming the offset.
    std::fs::write(&seg, &pristine).unwrap();
    let gap = zero_records(&seg, 5, 8);
    match Partition::open(disk.clone(), c.clone()).await {
        Err(KvsError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, gap as u64);
            assert!(reason.contains("already durable"), "{reason}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a store that lost a durable write"),
    }

    // Under `always` every batch after the first says the one before it is durable.
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let c = one_segment_cfg(dir, FsyncPolicy::Always);
    write_numbered_keys(&disk, &c, 30).await;
    zero_records(&newest_segment(dir), 27, 28);
    match Partition::open(disk.clone(), c).await {
        Err(KvsError::Corrupt { reason, .. }) => {
            assert!(reason.contains("already durable"), "{reason}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a store that lost a durable write"),
    }
}

// Guards against a crash at any step of compaction losing data or leaving files behind.
async fn interrupted_compaction_finishes_on_open<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.auto_compact = false;
    let mut model = BTreeMap::new();
    {
        let p = open(&disk, c.clone()).await;
        // Keys written once, early: their only records are in the segments compacted.
        for i in 0..10 {
            let (k, v) = (format!("cold{i}"), format!("cold value {i}"));
            p.set(b(&k), b(&v)).await.unwrap();
            model.insert(k.into_bytes(), v.into_bytes());
        }
        overwrite_keys(&p, 600, 30, &mut model).await;
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
    // A crash or a torn write ends every later operation; a single EIO, before or after the
    // operation took effect, lets the ones after it succeed (the failed compaction's clean-up
    // among them), as a filesystem that fails one call does.
    for fault in [Fault::Crash, Fault::Tear, Fault::Eio, Fault::EioAfter] {
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
                faulty_at.fault_hit().is_some() || faulty_at.ops() < faulty.ops() + n,
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
                !names.iter().any(
                    |n| n != "spare.seg.tmp" && (n.ends_with(".tmp") || n.contains("manifest"))
                ),
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

// Guards against deleting a compaction's inputs when its outputs are not there to replace
// them: a manifest left by a compaction that failed after its outputs were deleted.
async fn a_manifest_whose_outputs_are_gone_keeps_its_inputs<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.auto_compact = false;
    let mut model = BTreeMap::new();
    {
        let p = open(&disk, c.clone()).await;
        overwrite_keys(&p, 600, 30, &mut model).await;
        p.close().await;
    }
    let segments: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    assert!(segments.len() > 2, "the writes rotated: {segments:?}");
    let manifest = |inputs: Vec<u64>| {
        let m = super::manifest::CompactionManifest {
            inputs,
            outputs: vec![u64::from(u32::MAX) - 1],
        };
        std::fs::write(dir.join(super::manifest::MANIFEST_NAME), m.encode()).unwrap();
    };
    manifest(segments.clone());
    let p = open(&disk, c.clone()).await;
    assert_contents(&p, &model, &[]).await;
    p.close().await;
    assert!(!dir.join(super::manifest::MANIFEST_NAME).exists());

    // With an input gone as well, the data is not all there: the open says so.
    manifest(segments.clone());
    let first = segment::segment_path(dir, *segments.iter().min().unwrap());
    std::fs::rename(&first, dir.join("aside")).unwrap();
    let err = Partition::open(disk.clone(), c.clone())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("lacks output segments"), "{err}");
}

// Guards against compaction falling behind a pure-overwrite workload.
async fn overwrites_keep_disk_within_twice_live_data<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.segment_bytes = 64 * 1024;
    c.compaction_min_dead_bytes = c.segment_bytes;
    let p = open(&disk, c).await;
    let value = vec![b'v'; 1000];
    let keys = 400; // ~410 KiB of live records
    let mut worst = 0.0f64;
    for round in 0..25u32 {
        for k in 0..keys {
            let mut v = value.clone();
            v[..4].copy_from_slice(&round.to_le_bytes());
            p.set(b(format!("key{k:04}")), Bytes::from(v))
                .await
                .unwrap();
        }
        // Let a compaction that was started (or is due) run to completion before sampling.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while p.compaction_pending() {
            assert!(
                std::time::Instant::now() < deadline,
                "compaction did not finish"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let live = p.stats().live_bytes as f64;
        let on_disk: u64 = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != "spare.seg.tmp")
            .map(|e| e.metadata().unwrap().len())
            .sum();
        worst = worst.max(on_disk as f64 / live);
    }
    eprintln!("pure overwrites: worst disk/live ratio {worst:.2} (excluding the preallocated spare segment)");
    assert!(worst <= 2.0, "disk use reached {worst:.2}x the live data");
    p.close().await;
}

// Guards against one client's backlog of writes delaying every other client's: the writer
// takes clients in turn, so a write queued behind a flood goes in the next batch, not after
// the whole flood.
async fn a_write_flood_does_not_queue_other_clients_behind_it<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.segment_bytes = 256 * 1024 * 1024;
    c.preallocate = false;
    c.fsync = super::durability::FsyncPolicy::Never;
    let p = open(&disk, c).await;
    let (flooder, other) = (1, 2);
    // 25 MiB from the flooder, queued before the other client's one small write.
    let value = Bytes::from(vec![7u8; 256 * 1024]);
    let flood: Vec<_> = (0..100)
        .map(|i| {
            p.submit(flooder, b(format!("flood-{i}")), Some(value.clone()))
                .unwrap()
        })
        .collect();
    let mine = p.submit(other, b("mine"), Some(b("v"))).unwrap();
    mine.await.unwrap().unwrap();
    for ack in flood {
        ack.await.unwrap().unwrap();
    }
    assert_eq!(p.get(b"mine").await.unwrap().as_deref(), Some(&b"v"[..]));
    p.close().await;
    // The log's order is the order the writer took them in.
    let log = std::fs::read(segment::segment_path(dir, 1)).unwrap();
    let mut at = segment::SEGMENT_HEADER_BYTES as usize;
    let mut keys = Vec::new();
    while let Ok(Some(entry)) = super::record::decode_entry(&log[at..], true) {
        if let super::record::Entry::Record(r) = entry {
            keys.push(String::from_utf8_lossy(r.key).into_owned());
            at += r.len();
        } else {
            at += super::record::MARK_BYTES;
        }
    }
    assert_eq!(keys.len(), 101, "every write is in the log");
    let before = keys.iter().position(|k| k == "mine").unwrap();
    // First in, first out would have written all 100 first; in turns, one turn of the flood.
    assert!(
        before * value.len() <= super::fair_queue::TURN_BYTES.max(value.len()),
        "{before} of the flood's writes went before the other client's one"
    );
}

// Guards against the write-back kick disappearing: outside `always`, the writer starts the
// write-back of each 8 MiB of the active segment as it fills, in order and in whole pages, so
// the fdatasync that seals the segment does not write 64 MiB at once.
async fn write_back_is_started_as_an_unsynced_segment_fills<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.segment_bytes = 256 * 1024 * 1024;
    c.preallocate = false;
    c.fsync = super::durability::FsyncPolicy::Never;
    let counting = FaultyDisk::new(disk.clone(), u64::MAX, Fault::Crash);
    let p = Partition::open(counting.clone(), c).await.unwrap();
    let value = Bytes::from(vec![3u8; 64 * 1024]);
    let acks: Vec<_> = (0..400)
        .map(|i| {
            p.submit(1, b(format!("k{i}")), Some(value.clone()))
                .unwrap()
        })
        .collect();
    for ack in acks {
        ack.await.unwrap().unwrap();
    }
    p.close().await;
    let ranges = counting.writebacks();
    // 25 MiB written: three ranges of at least 8 MiB each.
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    let mut next = segment::SEGMENT_HEADER_BYTES;
    for (pos, len) in ranges {
        assert_eq!(pos, next, "ranges follow each other");
        assert!(len >= 8 * 1024 * 1024, "{len}");
        assert_eq!((pos + len) % 4096, 0, "whole pages only");
        next = pos + len;
    }
}

// Guards against the interval policy waiting for an idle moment that a busy log never has.
async fn interval_fsync_holds_under_sustained_writes<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.segment_bytes = 256 * 1024 * 1024;
    c.preallocate = false;
    c.fsync = super::durability::FsyncPolicy::Interval(std::time::Duration::from_millis(1));
    let counting = FaultyDisk::new(disk.clone(), u64::MAX, Fault::Crash).skipping_syncs();
    let p = Partition::open(counting.clone(), c).await.unwrap();
    let before = counting.data_syncs();
    // Queue everything at once, so the writer goes from one full batch to the next (400
    // batches of one 256 KiB write each) and its queue never empties until the end.
    let value = Bytes::from(vec![7u8; 256 * 1024]);
    let acks: Vec<_> = (0..400)
        .map(|i| {
            p.submit(super::EMBEDDED, b(format!("k{i}")), Some(value.clone()))
                .unwrap()
        })
        .collect();
    let started = std::time::Instant::now();
    for ack in acks {
        ack.await.unwrap().unwrap();
    }
    let took = started.elapsed();
    let syncs = counting.data_syncs() - before;
    eprintln!("{syncs} fdatasyncs while 100 MiB of queued writes took {took:?} at a 1 ms interval");
    if took >= std::time::Duration::from_millis(10) {
        assert!(
            syncs >= 3,
            "only {syncs} fdatasyncs in {took:?} of sustained writes"
        );
    }
    p.close().await;
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

/// One step of a write sequence.
#[derive(Clone, Debug)]
enum Step {
    Set(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

impl Step {
    fn key(&self) -> &[u8] {
        match self {
            Step::Set(k, _) | Step::Remove(k) => k,
        }
    }

    async fn apply<D: Disk>(&self, p: &Partition<D>) -> crate::Result<()> {
        match self {
            Step::Set(k, v) => p.set(b(k), b(v)).await,
            Step::Remove(k) => p.remove(b(k)).await,
        }
    }

    /// The model after this step was acknowledged.
    fn acknowledge(&self, model: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
        match self {
            Step::Set(k, v) => {
                model.insert(k.clone(), v.clone());
            }
            Step::Remove(k) => {
                model.remove(k);
            }
        }
    }
}

/// Writes and removes, about 250 bytes a record, enough to rotate a 4096-byte segment twice.
/// The `stable` keys are written once at the start, so their values live only in the first
/// segment; two of them are removed later, so a lost delete would resurrect them. The
/// `churn` keys are rewritten all along.
fn write_sequence() -> Vec<Step> {
    (0..36)
        .map(|i| {
            let value = || format!("value-{i}-{}", "x".repeat(200 + i * 3)).into_bytes();
            match i {
                0..6 => Step::Set(format!("stable{i}").into_bytes(), value()),
                15 => Step::Remove(b"churn3".to_vec()),
                20 => Step::Remove(b"stable2".to_vec()),
                29 => Step::Remove(b"stable4".to_vec()),
                _ => Step::Set(format!("churn{}", i % 4).into_bytes(), value()),
            }
        })
        .collect()
}

/// Every key the write sequence touches.
fn sequence_keys() -> std::collections::BTreeSet<Vec<u8>> {
    write_sequence().iter().map(|s| s.key().to_vec()).collect()
}

/// The configuration the fault sweeps run with: no automatic compaction (its own sweep is
/// `interrupted_compaction_finishes_on_open`), and preallocation as asked.
fn sweep_cfg(dir: &Path, preallocate: bool) -> PartitionConfig {
    let mut c = cfg(dir);
    c.auto_compact = false;
    c.preallocate = preallocate;
    c
}

/// Checks every key of the write sequence after a reopen: its acknowledged value, or (for the
/// key of `maybe`, a step that failed) the state that step would have left. Never anything else.
async fn assert_sequence_contents<D: Disk>(
    p: &Partition<D>,
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    maybe: Option<&Step>,
    what: &str,
) {
    for k in sequence_keys() {
        let name = String::from_utf8_lossy(&k).into_owned();
        let got = p
            .get(&k)
            .await
            .unwrap_or_else(|e| panic!("{what}: reading {name}: {e}"))
            .map(|v| v.to_vec());
        let acked = model.get(&k).cloned();
        if got == acked {
            continue;
        }
        let alternative = match maybe {
            Some(Step::Set(mk, v)) if *mk == k => Some(v.clone()),
            Some(Step::Remove(mk)) if *mk == k => None,
            _ => panic!(
                "{what}: {name} is {:?}, acknowledged {:?}",
                got.as_deref().map(String::from_utf8_lossy),
                acked.as_deref().map(String::from_utf8_lossy)
            ),
        };
        assert_eq!(
            got, alternative,
            "{what}: {name} is neither its acknowledged value nor the failed write's"
        );
    }
}

fn active_segment_len(dir: &Path) -> u64 {
    std::fs::metadata(newest_segment(dir)).unwrap().len()
}

// Guards against a full disk poisoning the store, leaving a partial record behind, or losing
// acknowledged writes.
async fn enospc_on_write_is_disk_full_and_recoverable<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.segment_bytes = 1 << 20;
    // Without preallocation the segment's length is where its records end.
    c.preallocate = false;
    let mut model = write_numbered_keys(&disk, &c, 10).await;
    // An open of an existing store makes no changes, so the next operation is the write.
    let probe = FaultyDisk::new(disk.clone(), u64::MAX, Fault::NoSpace);
    drop(Partition::open(probe.clone(), c.clone()).await.unwrap());
    let opened_at = probe.ops();
    for (n, op) in [(1, "write"), (2, "sync_data")] {
        let faulty = FaultyDisk::new(disk.clone(), opened_at + n, Fault::NoSpace);
        let p = Partition::open(faulty.clone(), c.clone()).await.unwrap();
        let len_before = active_segment_len(dir);
        let big = "y".repeat(3000);
        match p.set(b("full"), b(&big)).await {
            Err(KvsError::DiskFull) => {}
            other => panic!("ENOSPC at {op}: expected DiskFull, got {other:?}"),
        }
        assert_eq!(
            faulty.fault_hit(),
            Some(op),
            "the fault hit the batch's {op}"
        );
        assert_eq!(
            active_segment_len(dir),
            len_before,
            "ENOSPC at {op}: the partial batch is cut off"
        );
        assert!(p.poisoned().is_none(), "a full disk does not poison");
        assert_eq!(p.get(b"full").await.unwrap(), None);
        assert_contents(&p, &model, &[]).await;
        let k = format!("after-{op}");
        p.set(b(&k), b("stored")).await.unwrap();
        model.insert(k.into_bytes(), b"stored".to_vec());
        p.close().await;
    }
    let p = open(&disk, c).await;
    assert_contents(&p, &model, &[b"full"]).await;
    p.close().await;
}

// Guards against retrying after a failed fdatasync (the kernel may have dropped the dirty
// pages), and against refusing reads because of it.
// Guards against a write answered with a bare I/O error (which the server reports as an
// internal error) when a disk operation of the write path fails: the write of a batch, its
// fdatasync, or any step of making the next segment at a rotation (CI once saw a filesystem
// gone read-only refuse the new segment's creation, and the client got "Internal"). A failed
// operation must refuse writes from then on (Poisoned), or be a full disk; an EIO in work off
// the write path (a spare segment, a hint, a compaction) must not fail a write at all.
async fn a_failed_disk_operation_while_writing_is_a_refusal_never_a_bare_io_error<D: Disk>(
    disk: D,
    dir: &Path,
) {
    let c = |run: &str| {
        let mut c = cfg(&dir.join(run));
        c.auto_compact = false;
        c
    };
    const WRITES: usize = 40;
    let value = Bytes::from(vec![b'v'; 600]);
    let clean = FaultyDisk::new(disk.clone(), u64::MAX, Fault::Eio);
    let p = Partition::open(clean.clone(), c("clean")).await.unwrap();
    for i in 0..WRITES {
        p.set(b(format!("k{i}")), value.clone()).await.unwrap();
    }
    p.close().await;
    let ops = clean.ops();
    assert!(ops > 20, "only {ops} operations: the writes did not rotate");
    // The failed operation has no effect, or takes effect and still reports the error.
    for fault in [Fault::Eio, Fault::EioAfter] {
        for n in 1..=ops {
            let run = format!("run-{fault:?}-{n}");
            let faulty = FaultyDisk::new(disk.clone(), n, fault);
            let Ok(p) = Partition::open(faulty.clone(), c(&run)).await else {
                continue;
            };
            let mut refused = false;
            let mut acked = Vec::new();
            for i in 0..WRITES {
                match p.set(b(format!("k{i}")), value.clone()).await {
                    Ok(()) => {
                        assert!(!refused, "{run}: a write succeeded after a refusal");
                        acked.push(i);
                    }
                    Err(KvsError::Poisoned { .. }) | Err(KvsError::DiskFull) => refused = true,
                    Err(e) => panic!(
                        "{run} (fault at {:?}): write {i} answered {e:?}",
                        faulty.fault_hit()
                    ),
                }
            }
            p.close().await;
            // The store opens, with every acknowledged write.
            let p = Partition::open(disk.clone(), c(&run))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{run} (fault at {:?}): reopen failed: {e}",
                        faulty.fault_hit()
                    )
                });
            for i in acked {
                assert_eq!(
                    p.get(format!("k{i}").as_bytes()).await.unwrap(),
                    Some(value.clone()),
                    "{run} (fault at {:?}): acknowledged k{i}",
                    faulty.fault_hit()
                );
            }
            p.close().await;
        }
    }
}

async fn failed_fsync_poisons_writes_but_serves_reads<D: Disk>(disk: D, dir: &Path) {
    let mut c = cfg(dir);
    c.segment_bytes = 1 << 20;
    c.preallocate = false;
    let model = write_numbered_keys(&disk, &c, 10).await;
    let probe = FaultyDisk::new(disk.clone(), u64::MAX, Fault::Eio);
    drop(Partition::open(probe.clone(), c.clone()).await.unwrap());
    // The write of the next batch, then its fdatasync.
    let faulty = FaultyDisk::new(disk.clone(), probe.ops() + 2, Fault::Eio);
    let p = Partition::open(faulty.clone(), c.clone()).await.unwrap();
    match p.set(b("key3"), b("never acknowledged")).await {
        Err(KvsError::Poisoned { op: "fsync", .. }) => {}
        other => panic!("expected Poisoned after a failed fsync, got {other:?}"),
    }
    assert_eq!(faulty.fault_hit(), Some("sync_data"));
    assert!(p.poisoned().is_some());
    assert!(matches!(
        p.set(b("later"), b("v")).await,
        Err(KvsError::Poisoned { .. })
    ));
    assert!(matches!(
        p.remove(b("key1")).await,
        Err(KvsError::Poisoned { .. })
    ));
    // Reads go on, and never show the unacknowledged write.
    assert_contents(&p, &model, &[b"later"]).await;
    p.close().await;
    // A healthy reopen has every acknowledged write. The failed one may have reached the
    // file (its fdatasync failed, not its write), so key3 may hold it, but nothing else.
    let p = open(&disk, c.clone()).await;
    for (k, v) in &model {
        let got = p.get(k).await.unwrap();
        let failed_write_landed =
            k == b"key3" && got.as_deref() == Some(b"never acknowledged".as_slice());
        if !failed_write_landed {
            assert_eq!(
                got.as_deref(),
                Some(&v[..]),
                "{}",
                String::from_utf8_lossy(k)
            );
        }
    }
    assert_eq!(p.get(b"later").await.unwrap(), None);
    // The poison was the process's, not the directory's.
    p.set(b("later"), b("v")).await.unwrap();
    p.close().await;
}

/// Runs the write sequence on `p` until a step fails. Returns the acknowledged model and the
/// step that failed, if one did.
async fn run_sequence<D: Disk>(
    p: &Partition<D>,
    steps: &[Step],
) -> (BTreeMap<Vec<u8>, Vec<u8>>, Option<Step>) {
    let mut model = BTreeMap::new();
    for s in steps {
        match s.apply(p).await {
            Ok(()) => s.acknowledge(&mut model),
            Err(_) => return (model, Some(s.clone())),
        }
    }
    (model, None)
}

// Guards against a crash or a torn write at any step of writing (appends, fdatasyncs,
// preallocation, sealing, hints, segment creation) losing an acknowledged write, making the
// store unopenable, or leaving a failed write half visible.
async fn crash_at_any_write_step_keeps_acknowledged_writes<D: Disk>(disk: D, dir: &Path) {
    let steps = write_sequence();
    for preallocate in [false, true] {
        let c = sweep_cfg(dir, preallocate);
        // Count the mutating operations of the whole sequence, from a fresh directory.
        let total = {
            wipe_dir(dir);
            let counting = FaultyDisk::new(disk.clone(), u64::MAX, Fault::Crash).skipping_syncs();
            let p = Partition::open(counting.clone(), c.clone()).await.unwrap();
            let (_, failed) = run_sequence(&p, &steps).await;
            assert!(failed.is_none(), "the sequence runs on a healthy disk");
            assert!(p.stats().segments >= 3, "the sequence rotates segments");
            p.close().await;
            counting.ops()
        };
        // With preallocation, when the spare segment is ready (it is made in the background)
        // decides when the log moves to it, so a run can take a few operations more or less
        // than the counting run; a fault point past a run's end is not reached.
        let mut injected = 0;
        for fault in [Fault::Crash, Fault::Tear] {
            for n in 1..=total {
                let what = format!("preallocate {preallocate}, {fault:?} at op {n} of {total}");
                wipe_dir(dir);
                let faulty = FaultyDisk::new(disk.clone(), n, fault).skipping_syncs();
                let (model, failed) = match Partition::open(faulty.clone(), c.clone()).await {
                    Ok(p) => {
                        let run = run_sequence(&p, &steps).await;
                        // As the counting run does: what the partition still has to do in the
                        // background (a sealed segment's hint) is part of the sequence too.
                        p.close().await;
                        run
                    }
                    Err(_) => (BTreeMap::new(), None),
                };
                if !faulty.crashed() {
                    assert!(
                        preallocate && faulty.ops() < n,
                        "{what}: the fault was not injected, though the run made {} operations",
                        faulty.ops()
                    );
                    continue;
                }
                injected += 1;
                let p = Partition::open(disk.clone(), c.clone())
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{what} (hit {:?}): reopen failed: {e}", faulty.fault_hit())
                    });
                assert_sequence_contents(&p, &model, failed.as_ref(), &what).await;
                // Recovery left a log that takes writes and reopens.
                p.set(b("after"), b("crash")).await.unwrap();
                p.close().await;
                let p = Partition::open(disk.clone(), c.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{what}: second reopen failed: {e}"));
                assert_eq!(p.get(b"after").await.unwrap(), Some(b("crash")), "{what}");
                p.close().await;
            }
        }
        assert!(
            injected * 10 >= 2 * total as usize * 9,
            "only {injected} of {} fault points reached",
            2 * total
        );
        eprintln!("write crash sweep (preallocate {preallocate}): {total} operations, {injected} crash and tear points");
    }
}

// Guards against ENOSPC at any step of writing (appends, fdatasyncs, preallocation, sealing,
// hints, segment creation) being anything but a refused write: the store must keep exactly
// the acknowledged writes, take writes again once there is space, and reopen.
async fn enospc_at_any_write_step_keeps_exactly_acknowledged_writes<D: Disk>(disk: D, dir: &Path) {
    let steps = write_sequence();
    for preallocate in [false, true] {
        let c = sweep_cfg(dir, preallocate);
        let total = {
            wipe_dir(dir);
            let counting = FaultyDisk::new(disk.clone(), u64::MAX, Fault::NoSpace).skipping_syncs();
            let p = Partition::open(counting.clone(), c.clone()).await.unwrap();
            assert!(run_sequence(&p, &steps).await.1.is_none());
            p.close().await;
            counting.ops()
        };
        let (mut disk_full, mut poisoned) = (0, 0);
        for n in 1..=total {
            wipe_dir(dir);
            let faulty = FaultyDisk::new(disk.clone(), n, Fault::NoSpace).skipping_syncs();
            let what = || {
                format!(
                    "preallocate {preallocate}, ENOSPC at op {n} of {total} (hit {:?})",
                    faulty.fault_hit()
                )
            };
            let p = match Partition::open(faulty.clone(), c.clone()).await {
                Ok(p) => p,
                // The fault hit the first open; space is back, so a second open works.
                Err(_) => Partition::open(faulty.clone(), c.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{}: open after ENOSPC: {e}", what())),
            };
            let mut model = BTreeMap::new();
            for (i, s) in steps.iter().enumerate() {
                match s.apply(&p).await {
                    Ok(()) => s.acknowledge(&mut model),
                    Err(KvsError::DiskFull) => {
                        disk_full += 1;
                        let got = p.get(s.key()).await.unwrap().map(|v| v.to_vec());
                        assert_eq!(got, model.get(s.key()).cloned(), "{}, step {i}", what());
                        // Space is back: the same write now succeeds.
                        s.apply(&p).await.unwrap_or_else(|e| {
                            panic!("{}, step {i}: retry after DiskFull: {e}", what())
                        });
                        s.acknowledge(&mut model);
                    }
                    // A failed fdatasync refuses writes by design (fail-stop); only a batch's
                    // own fdatasync is undone by cutting the batch off.
                    Err(KvsError::Poisoned { .. }) if faulty.fault_hit() == Some("sync_data") => {
                        poisoned += 1;
                        break;
                    }
                    Err(e) => panic!(
                        "{}, step {i}: expected DiskFull or success, got {e}",
                        what()
                    ),
                }
            }
            assert_sequence_contents(&p, &model, None, &what()).await;
            p.close().await;
            let p = Partition::open(disk.clone(), c.clone())
                .await
                .unwrap_or_else(|e| panic!("{}: reopen failed: {e}", what()));
            assert_sequence_contents(&p, &model, None, &what()).await;
            p.close().await;
        }
        assert!(disk_full > 0, "some faults reached a writer");
        eprintln!(
            "ENOSPC sweep (preallocate {preallocate}): {total} operations, \
             {disk_full} writes refused as DiskFull, {poisoned} runs poisoned by a failed fdatasync"
        );
    }
}
