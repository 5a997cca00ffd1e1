//! `KvStore` killed with SIGKILL in the middle of its work, again and again, and filled up to
//! the last byte of a small filesystem.
//!
//! The kill test re-executes this binary as a child that writes and removes keys in a loop and
//! prints a ledger line (`ack <i> ...`) after each acknowledged operation. The parent kills it
//! after a seeded random number of acknowledgements, reopens the store, and checks every
//! acknowledged write against it: present with its exact value, acknowledged removes absent.
//! The one operation that may have been under way when the signal landed may show either way.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kvs::engine::{FsyncPolicy, StoreOptions};
use kvs::io_backend::IoChoice;
use kvs::{KvStore, KvsEngine, KvsError};

/// Set for the child process: the store's directory.
const CHILD_DIR_ENV: &str = "KVS_TEST_CRASH_CHILD_DIR";
/// Set for the child process: the backend (`blocking` or `uring`).
const CHILD_IO_ENV: &str = "KVS_TEST_CRASH_CHILD_IO";
/// Set for the child process: the fsync policy.
const CHILD_FSYNC_ENV: &str = "KVS_TEST_CRASH_CHILD_FSYNC";
/// Set for the child process: the index of its first operation.
const CHILD_START_ENV: &str = "KVS_TEST_CRASH_CHILD_START";
/// The child's test name, as libtest knows it.
const CHILD_TEST: &str = "child_writes_and_acknowledges_until_killed";

/// Kill cycles per backend, all on one directory.
const CYCLES: u64 = 15;
/// Seed of the kill points.
const SEED: u64 = 0x6b76_735f_6b69_6c6c;
/// Distinct keys the operations touch (spread over the store's partitions).
const KEYS: u64 = 256;
/// Longest value written, in bytes. Values of a few KiB fill 64 KiB segments quickly, so
/// segments rotate every few writes and compaction (which waits for 4 MiB of dead records
/// in a partition) runs in most fast cycles.
const VALUE_BYTES_MAX: u64 = 8 * 1024;
/// Segment size of the store.
const SEGMENT_BYTES: u64 = 64 * 1024;
/// How long the parent waits for the child's next ledger line before calling it hung.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

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

fn io_name(io: IoChoice) -> &'static str {
    match io {
        IoChoice::Blocking => "blocking",
        IoChoice::Uring => "uring",
        IoChoice::Auto => "auto",
    }
}

fn options(io: IoChoice, fsync: FsyncPolicy) -> StoreOptions {
    StoreOptions {
        partitions: 2,
        fsync,
        io: Some(io),
        segment_bytes: SEGMENT_BYTES,
        preallocate: true,
        // A small cache, so reads after a restart and under load use both paths.
        cache_bytes: 64 * 1024,
    }
}

/// splitmix64: a small, well-mixed, seedable sequence.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Operation `i` of the endless sequence both processes agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Set(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

fn op(i: u64) -> Op {
    let h = mix(i);
    let key = format!("key{:03}", h % KEYS).into_bytes();
    if (h >> 16).is_multiple_of(5) {
        return Op::Remove(key);
    }
    // The value names its operation, then bytes of every kind (binary-safe values).
    let len = ((h >> 32) % VALUE_BYTES_MAX) as usize;
    let mut value = format!("op{i}:").into_bytes();
    value.extend((0..len).map(|j| (i as usize).wrapping_add(j.wrapping_mul(31)) as u8));
    Op::Set(key, value)
}

/// The child: writes the sequence from `CHILD_START_ENV` on, one operation at a time, and
/// after each acknowledged one writes a ledger line to stderr in a single `write` (so a line
/// the parent reads whole was written whole).
#[test]
#[ignore = "the child half of kill_9_keeps_every_acknowledged_write, which runs it"]
fn child_writes_and_acknowledges_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        println!("skipped: runs only as the child of kill_9_keeps_every_acknowledged_write");
        return;
    };
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let io: IoChoice = env(CHILD_IO_ENV).parse().unwrap();
    let fsync: FsyncPolicy = env(CHILD_FSYNC_ENV).parse().unwrap();
    let start: u64 = env(CHILD_START_ENV).parse().unwrap();
    let store = KvStore::open_with(PathBuf::from(dir), options(io, fsync)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ledger = std::io::stderr().lock();
    rt.block_on(async {
        // Bounded only so that an orphaned child cannot run for ever; the parent kills it
        // long before.
        for i in start..start + 10_000_000 {
            let line = match op(i) {
                Op::Set(k, v) => {
                    store.set(Bytes::from(k), Bytes::from(v)).await.unwrap();
                    format!("ack {i} set\n")
                }
                Op::Remove(k) => match store.remove(Bytes::from(k)).await {
                    Ok(()) => format!("ack {i} removed\n"),
                    Err(KvsError::KeyNotFound) => format!("ack {i} absent\n"),
                    Err(e) => panic!("remove {i}: {e}"),
                },
            };
            ledger.write_all(line.as_bytes()).unwrap();
        }
    });
}

/// Kills the child if the parent fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one kill cycle saw.
struct Cycle {
    /// Ledger lines, whole, in order.
    acks: Vec<String>,
    /// Everything else the child wrote to stderr (a panic message, say).
    other: Vec<String>,
}

/// Runs the child from operation `start` and kills it with SIGKILL once it has acknowledged
/// `kill_after` operations; returns everything it wrote.
fn run_child(dir: &Path, io: IoChoice, fsync: FsyncPolicy, start: u64, kill_after: u64) -> Cycle {
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", CHILD_TEST, "--ignored", "--nocapture"])
            .args(["--test-threads=1"])
            .env(CHILD_DIR_ENV, dir)
            .env(CHILD_IO_ENV, io_name(io))
            .env(CHILD_FSYNC_ENV, fsync.to_string())
            .env(CHILD_START_ENV, start.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut cycle = Cycle {
        acks: Vec::new(),
        other: Vec::new(),
    };
    let mut killed = false;
    loop {
        let line = match rx.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "the child wrote nothing for {LINE_TIMEOUT:?}; it said: {:?}",
                cycle.other
            ),
        };
        // A line without its newline was cut short by the kill: not whole, not counted.
        match line.strip_suffix('\n') {
            Some(l) if l.starts_with("ack ") => cycle.acks.push(l.to_owned()),
            Some(l) => cycle.other.push(l.to_owned()),
            None => {}
        }
        if !killed && cycle.acks.len() as u64 >= kill_after {
            child.0.kill().unwrap();
            killed = true;
        }
    }
    reader.join().unwrap();
    let status = child.0.wait().unwrap();
    assert!(
        killed && status.signal() == Some(libc::SIGKILL),
        "the child ended on its own ({status}) after {} acknowledgements; it said: {:?}",
        cycle.acks.len(),
        cycle.other
    );
    cycle
}

/// What a kill left in the store's partition directories: segments that compaction wrote,
/// and whether a compaction was cut short (its manifest, or its `.tmp` outputs, are there
/// for the next open to deal with).
fn compaction_traces(dir: &Path) -> (usize, bool) {
    let (mut outputs, mut interrupted) = (0, false);
    for part in std::fs::read_dir(dir).unwrap() {
        let part = part.unwrap().path();
        if !part.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&part).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name == "compact.manifest" || name.ends_with(".hint.tmp") {
                interrupted = true;
            }
            if f.extension().is_some_and(|x| x == "seg") {
                let head = std::fs::read(&f).unwrap();
                // The segment header's origin field: 1 is compaction (docs/format.md).
                if head.len() >= 16 && head[12..16] == 1u32.to_le_bytes() {
                    outputs += 1;
                }
            }
        }
    }
    (outputs, interrupted)
}

#[test]
fn kill_9_keeps_every_acknowledged_write() {
    // Guards against an acknowledged write or remove lost (or a value damaged) when the
    // process is killed at any moment: mid-write, mid-rotation, mid-compaction, mid-recovery.
    for io in backends() {
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut rng = SEED;
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let (mut acked, mut in_flight_landed) = (0u64, 0u64);
        let (mut cycles_with_compaction, mut kills_mid_compaction) = (0u64, 0u64);
        let mut next = 0u64;
        for cycle in 0..CYCLES {
            // Every policy promises that an acknowledged write survives a kill -9; the fast
            // ones let a cycle reach rotations and compactions.
            let (fsync, kill_after) = match cycle % 3 {
                0 => (FsyncPolicy::Always, 1 + mix(rng) % 80),
                1 => (FsyncPolicy::Never, 100 + mix(rng) % 1500),
                _ => (
                    FsyncPolicy::Interval(Duration::from_millis(2)),
                    100 + mix(rng) % 1500,
                ),
            };
            rng = mix(rng);
            let what = format!(
                "{} cycle {cycle} ({fsync}, kill after {kill_after})",
                io_name(io)
            );
            let seen = run_child(dir.path(), io, fsync, next, kill_after);
            assert!(seen.acks.len() as u64 >= kill_after, "{what}");
            // Replay the ledger on the model. A remove's outcome is checked against it too.
            let mut last = None;
            for line in &seen.acks {
                let mut words = line.split(' ').skip(1);
                let i: u64 = words.next().unwrap().parse().unwrap();
                let outcome = words.next().unwrap();
                assert_eq!(
                    i,
                    last.map_or(next, |l| l + 1),
                    "{what}: ledger out of order"
                );
                last = Some(i);
                match (op(i), outcome) {
                    (Op::Set(k, v), "set") => {
                        model.insert(k, v);
                    }
                    (Op::Remove(k), "removed") => {
                        assert!(
                            model.remove(&k).is_some(),
                            "{what}: op {i} removed an absent key"
                        );
                    }
                    (Op::Remove(k), "absent") => {
                        assert!(
                            !model.contains_key(&k),
                            "{what}: op {i} found a present key absent"
                        );
                    }
                    (o, outcome) => panic!("{what}: op {i} is {o:?} but the ledger says {outcome}"),
                }
                acked += 1;
            }
            let last = last.expect("kill_after is at least 1");
            // The operation after the last acknowledged one may have been under way.
            let maybe = op(last + 1);
            if compaction_traces(dir.path()).1 {
                kills_mid_compaction += 1;
            }
            let store = KvStore::open_with(dir.path(), options(io, FsyncPolicy::Always))
                .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
            rt.block_on(async {
                for k in 0..KEYS {
                    let key = format!("key{k:03}").into_bytes();
                    let got = store
                        .get(Bytes::from(key.clone()))
                        .await
                        .unwrap_or_else(|e| panic!("{what}: get key{k:03}: {e}"))
                        .map(|v| v.to_vec());
                    let want = model.get(&key).cloned();
                    if got == want {
                        continue;
                    }
                    let landed = match &maybe {
                        Op::Set(mk, v) if *mk == key && got.as_ref() == Some(v) => true,
                        Op::Remove(mk) if *mk == key && got.is_none() => true,
                        _ => false,
                    };
                    assert!(
                        landed,
                        "{what}: key{k:03} holds {:?}, acknowledged {:?}",
                        got.as_deref()
                            .map(|v| String::from_utf8_lossy(&v[..v.len().min(16)])),
                        want.as_deref()
                            .map(|v| String::from_utf8_lossy(&v[..v.len().min(16)]))
                    );
                    in_flight_landed += 1;
                    match got {
                        Some(v) => model.insert(key, v),
                        None => model.remove(&key),
                    };
                }
            });
            drop(store);
            if compaction_traces(dir.path()).0 > 0 {
                cycles_with_compaction += 1;
            }
            // Skip the ambiguous operation, so that every value names one operation.
            next = last + 2;
        }
        assert!(
            cycles_with_compaction > 0,
            "no compaction ran in {CYCLES} cycles; the test no longer kills one mid-way"
        );
        println!(
            "kill -9 ({}): {CYCLES} cycles, {acked} acknowledged operations, \
             {in_flight_landed} unacknowledged ones found done, compaction output present \
             after {cycles_with_compaction} cycles, {kills_mid_compaction} kills mid-compaction, \
             {:.1?}",
            io_name(io),
            started.elapsed()
        );
    }
}

/// Unmounts a filesystem this test mounted, even if the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Mounts a tmpfs of `size` at `at`; `Err` says why it cannot be done here.
fn mount_tmpfs(at: &Path, size: &str) -> Result<Unmount, String> {
    let out = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "kvs-test",
        ])
        .arg(at)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mount -t tmpfs failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Unmount(at.to_owned()))
}

#[test]
fn full_filesystem_is_disk_full_until_space_is_freed() {
    // Guards against a full disk poisoning the store, losing or damaging acknowledged data,
    // or leaving behind a store that does not reopen once there is space again.
    for io in backends() {
        let base = tempfile::tempdir().unwrap();
        let mnt = base.path().join("fs");
        std::fs::create_dir(&mnt).unwrap();
        let _unmount = match mount_tmpfs(&mnt, "2m") {
            Ok(u) => u,
            Err(reason) => {
                {
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "skipped: needs a small tmpfs to fill: {reason}"
                    );
                };
                return;
            }
        };
        // Space to give back later, taken before the store fills the rest.
        let ballast = mnt.join("ballast");
        std::fs::write(&ballast, vec![0xa5u8; 256 * 1024]).unwrap();
        let dir = mnt.join("store");
        let value = |i: u64| {
            let mut v = format!("value{i}:").into_bytes();
            v.resize(4000, (i % 251) as u8);
            Bytes::from(v)
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut model: BTreeMap<String, Bytes> = BTreeMap::new();
        let mut refused = Vec::new();
        rt.block_on(async {
            let store = KvStore::open_with(&dir, options(io, FsyncPolicy::Always)).unwrap();
            // Distinct keys, so nothing becomes dead and compaction cannot free space.
            let mut i = 0u64;
            while refused.is_empty() {
                assert!(i < 2000, "2 MiB should be full long before 8 MB of writes");
                let k = format!("key{i:04}");
                match store.set(Bytes::from(k.clone()), value(i)).await {
                    Ok(()) => {
                        model.insert(k, value(i));
                    }
                    Err(KvsError::DiskFull) => refused.push(k),
                    Err(e) => panic!("{}: write {i} on a filling disk: {e}", io_name(io)),
                }
                i += 1;
            }
            // While full, writes are refused or (where a refused rotation freed a little
            // space) stored; nothing else. Every acknowledged value reads back.
            for _ in 0..5 {
                let k = format!("key{i:04}");
                match store.set(Bytes::from(k.clone()), value(i)).await {
                    Ok(()) => {
                        model.insert(k, value(i));
                    }
                    Err(KvsError::DiskFull) => refused.push(k),
                    Err(e) => panic!("{}: write {i} on a full disk: {e}", io_name(io)),
                }
                i += 1;
            }
            for (k, v) in &model {
                assert_eq!(
                    store.get(Bytes::from(k.clone())).await.unwrap().as_ref(),
                    Some(v)
                );
            }
            std::fs::remove_file(&ballast).unwrap();
            for _ in 0..20 {
                let k = format!("key{i:04}");
                store
                    .set(Bytes::from(k.clone()), value(i))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{}: write {i} after freeing space: {e}", io_name(io))
                    });
                model.insert(k, value(i));
                i += 1;
            }
            store.remove(Bytes::from("key0000")).await.unwrap();
            model.remove("key0000");
        });
        // A reopen shows exactly the acknowledged writes.
        rt.block_on(async {
            let store = KvStore::open_with(&dir, options(io, FsyncPolicy::Always))
                .unwrap_or_else(|e| panic!("{}: reopen after a full disk: {e}", io_name(io)));
            for (k, v) in &model {
                let got = store.get(Bytes::from(k.clone())).await.unwrap();
                assert_eq!(got.as_ref(), Some(v), "{}: {k}", io_name(io));
            }
            for k in refused.iter().chain(["key0000".to_owned()].iter()) {
                let got = store.get(Bytes::from(k.clone())).await.unwrap();
                assert_eq!(got, None, "{}: {k} was refused or removed", io_name(io));
            }
        });
        println!(
            "full tmpfs ({}): {} writes stored, {} refused as DiskFull, all stored ones back after a reopen",
            io_name(io),
            model.len() + 1,
            refused.len()
        );
    }
}
