//! The real `kvs-server` on disks that fail: a dead disk (every write and fsync fails with
//! EIO), a thin disk whose backing store runs out of room (writeback fails under the
//! filesystem), a full filesystem, a read-only one, and a second server on a directory in use.
//! Each needs root and mounts (except the last), and says so where it cannot run.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kvs::protocol::{ErrorKind, Request, Response};
use support::fs::{cannot_mount_here, remount, skip, tmpfs, Ext4};
use support::ledger::{read_all, Model, Workload, Writers};
use support::native::NativeConn;
use support::server::{io_backends, run_to_exit, ServerBuilder};

const PARTITIONS: u32 = 4;

fn builder(store: &Path, io: &str) -> ServerBuilder {
    ServerBuilder::new(store)
        .io(io)
        .args(["--fsync", "always", "--cores", "2", "--no-pin"])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args(["--segment-bytes", "65536", "--cache-bytes", "0"])
}

/// Sends a RESP command and returns the first line of the answer.
fn resp(addr: SocketAddr, args: &[&str]) -> String {
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(cmd.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n") && s.read(&mut byte).unwrap() == 1 {
        buf.push(byte[0]);
    }
    String::from_utf8_lossy(&buf).trim_end().to_owned()
}

fn set_request(k: &str, v: &str) -> Request {
    Request::Set {
        key: Bytes::copy_from_slice(k.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
    }
}

#[test]
fn eio_from_a_dead_disk_makes_the_store_read_only_and_says_why() {
    // Guards against acknowledging a write after the disk failed (Linux drops the dirty pages
    // a failed fsync covered, so a retry would report success for lost data), against a
    // vague error, and against losing what was acknowledged before the failure.
    if let Some(reason) = cannot_mount_here() {
        return skip(&format!("dead disk: {reason}"));
    }
    for io in io_backends() {
        let base = tempfile::tempdir().unwrap();
        let mut fs = Ext4::create(&base.path().join("disk.img"), 64, &base.path().join("mnt"))
            .unwrap_or_else(|e| panic!("ext4 image: {e}"));
        let store = fs.mount.at.join("store");
        let load = Workload {
            writers: 4,
            keys_per_writer: 16,
            partitions: PARTITIONS,
            value_bytes_max: 512,
            seed: 0xe10,
        };
        let mut model = Model::new(&load);
        let server = builder(&store, io).start();
        let mut writers = Writers::start(server.addr, &load, &model.next);
        assert!(writers.wait_acks(200, Duration::from_secs(20)));
        // From here on every write and fsync on the filesystem fails with EIO. An fdatasync
        // racing the shutdown can report success for a journal commit the shutdown abandons,
        // so acknowledgements that arrive while it is under way are not promised (as in
        // tests/power_cut.rs); everything acknowledged before it began is.
        let cut = Instant::now();
        fs.cut_power().unwrap();
        assert!(
            writers.wait_stopped(Duration::from_secs(10)),
            "{io}: writers still acknowledged after the disk died"
        );
        let logs = writers.finish();
        for (w, l) in logs.iter().enumerate() {
            match &l.refused {
                // The dead filesystem answers with EIO, or with EROFS (one CI run's fdatasync
                // got it) once its aborted journal has turned it read-only.
                Some((ErrorKind::ReadOnly, m)) => assert!(
                    m.contains("refuses writes")
                        && (m.contains("Input/output error")
                            || m.contains("Read-only file system")),
                    "{io}: writer {w}: {m}"
                ),
                other => panic!("{io}: writer {w} stopped with {other:?}"),
            }
        }
        // Every partition now refuses writes, through both protocols, and says why.
        let mut c = NativeConn::connect(server.addr);
        for w in 0..load.writers {
            let k = &load.keys(w)[0];
            match c.call(set_request(k, "after the failure")) {
                Response::Error { kind, message } => {
                    assert_eq!(kind, ErrorKind::ReadOnly, "{io}: {message}")
                }
                other => panic!("{io}: a write after the failure got {other:?}"),
            }
            let line = resp(server.addr, &["SET", k, "after"]);
            assert!(line.starts_with("-READONLY "), "{io}: RESP: {line}");
        }
        assert!(
            server.log().contains("refusing writes from now on"),
            "{io}: the log says why: {}",
            server.log()
        );
        server.kill9();
        fs.unmount().unwrap();
        fs.mount().unwrap();
        let server = builder(&store, io).start();
        let found = read_all(server.addr, &load).unwrap();
        let c = model
            .check_prefix(&logs, &found, cut)
            .unwrap_or_else(|e| panic!("{io}: {e}"));
        assert_eq!(
            c.lost_acked_before_fault, 0,
            "{io}: acknowledged before the disk died, then lost"
        );
        println!(
            "dead disk ({io}): {} acknowledged operations kept, every writer and both \
             protocols refused with ReadOnly",
            c.acked
        );
    }
}

#[test]
fn failed_writeback_on_a_thin_disk_is_a_clear_error_and_the_store_reopens() {
    // Guards against a store that hangs, crashes, answers with a vague error, fails to reopen
    // or serves garbage when writeback fails under the filesystem: an ext4 image on a tmpfs
    // too small for it fails writes with ENOSPC at the block layer. Writers must be refused
    // with DiskFull or ReadOnly; once the backing store has room, the store must open and
    // every value must be one that was written to its key.
    //
    // It does not demand every acknowledged write: when the block device fails ext4's own
    // metadata writes, ext4 can lose data whose fdatasync succeeded (the kernel logs "failed
    // to convert unwritten extents to written extents -- potential data loss"). The keys
    // that lost an acknowledged write are counted and printed (see RELIABILITY.md).
    if let Some(reason) = cannot_mount_here() {
        return skip(&format!("thin disk: {reason}"));
    }
    let base = tempfile::tempdir().unwrap();
    let backing = base.path().join("backing");
    std::fs::create_dir(&backing).unwrap();
    let thin = tmpfs(&backing, "12m").unwrap_or_else(|e| panic!("tmpfs: {e}"));
    let mut fs = Ext4::create(&backing.join("disk.img"), 128, &base.path().join("mnt"))
        .unwrap_or_else(|e| panic!("ext4 image: {e}"));
    let store = fs.mount.at.join("store");
    let load = Workload {
        writers: 4,
        keys_per_writer: 64,
        partitions: PARTITIONS,
        value_bytes_max: 16 * 1024,
        seed: 0x7417,
    };
    let mut model = Model::new(&load);
    let server = builder(&store, "blocking").start();
    let mut writers = Writers::start(server.addr, &load, &model.next);
    // About 8 KiB a write: 12 MiB of backing store runs out within a few thousand.
    assert!(
        writers.wait_stopped(Duration::from_secs(120)),
        "the writers never met the end of the thin disk"
    );
    let logs = writers.finish();
    let mut kinds = Vec::new();
    for (w, l) in logs.iter().enumerate() {
        match &l.refused {
            Some((kind @ (ErrorKind::DiskFull | ErrorKind::ReadOnly), _)) => kinds.push(*kind),
            other => panic!("writer {w} stopped with {other:?}\n{}", server.log()),
        }
    }
    server.kill9();
    fs.unmount().unwrap();
    remount(&thin, "size=512m").unwrap();
    fs.fsck().unwrap();
    fs.mount().unwrap();
    // The lost data can be a segment's header or a record: kvs must then refuse to open, or
    // refuse that read, naming the file and offset; either is detection, never garbage.
    let mut server = builder(&store, "blocking").spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !server.log().contains("listening on") {
        if let Ok(Some(_)) = server.child.try_wait() {
            let log = server.log();
            assert!(
                log.contains("corrupt data in"),
                "refused to open without naming the damage:\n{log}"
            );
            println!(
                "thin disk: the device lost synced data; the store refused to open and named it"
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no start:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(server);
    let server = builder(&store, "blocking").start();
    let found = match read_all(server.addr, &load) {
        Ok(found) => found,
        Err(e) => {
            assert!(
                e.contains("corrupt data in"),
                "a read failed without naming the damage: {e}"
            );
            println!("thin disk: the device lost synced data; a read refused it: {e}");
            return;
        }
    };
    let (acked, wrong) = model
        .check_known_values(&logs, &found)
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", server.log()));
    println!(
        "thin disk: writers refused with {kinds:?}; {acked} acknowledged operations; \
         {wrong} of {} keys do not hold their last acknowledged value; no value was garbage",
        load.writers * load.keys_per_writer
    );
}

#[test]
fn full_disk_is_a_clear_error_reads_go_on_and_writes_resume_when_space_is_freed() {
    // Guards against a full disk poisoning the store, failing reads, or staying stuck after
    // space is freed.
    if let Some(reason) = cannot_mount_here() {
        return skip(&format!("full disk: {reason}"));
    }
    for io in io_backends() {
        let base = tempfile::tempdir().unwrap();
        let _fs = tmpfs(base.path(), "4m").unwrap_or_else(|e| panic!("tmpfs: {e}"));
        let ballast = base.path().join("ballast");
        std::fs::write(&ballast, vec![0xa5u8; 512 * 1024]).unwrap();
        let store = base.path().join("store");
        let server = builder(&store, io).start();
        let mut c = NativeConn::connect(server.addr);
        let value = |i: usize| format!("{i}:{}", "x".repeat(4000));
        let mut stored = 0;
        let message = loop {
            assert!(stored < 2000, "{io}: 4 MiB should be full long before 8 MB");
            match c.call(set_request(&format!("k{stored}"), &value(stored))) {
                Response::Ok => stored += 1,
                Response::Error {
                    kind: ErrorKind::DiskFull,
                    message,
                } => break message,
                other => panic!("{io}: write {stored} on a filling disk: {other:?}"),
            }
        };
        assert!(message.contains("disk full"), "{io}: {message}");
        // Other partitions may still have room in a preallocated segment, so writes there
        // succeed until it too is used up; RESP must then report the same clear error.
        let mut resp_stored = Vec::new();
        let line = loop {
            let key = format!("resp-key{}", resp_stored.len());
            let line = resp(server.addr, &["SET", &key, &value(0)]);
            if line != "+OK" || resp_stored.len() >= 2000 {
                break line;
            }
            resp_stored.push(key);
        };
        assert!(line.starts_with("-ERR disk full"), "{io}: RESP: {line}");
        for key in &resp_stored {
            assert_eq!(c.get(key), Some(value(0)), "{io}: read {key}");
        }
        for i in 0..stored {
            assert_eq!(c.get(&format!("k{i}")), Some(value(i)), "{io}: read k{i}");
        }
        std::fs::remove_file(&ballast).unwrap();
        for i in stored..stored + 20 {
            assert_eq!(
                c.call(set_request(&format!("k{i}"), &value(i))),
                Response::Ok,
                "{io}: write {i} after space was freed"
            );
        }
        server.kill9();
        let server = builder(&store, io).start();
        let mut c = NativeConn::connect(server.addr);
        for i in 0..stored + 20 {
            assert_eq!(
                c.get(&format!("k{i}")),
                Some(value(i)),
                "{io}: k{i} after restart"
            );
        }
        println!("full disk ({io}): {stored} writes stored before DiskFull, reads served, 20 more after freeing space");
    }
}

#[test]
fn read_only_data_directory_is_a_clear_startup_error() {
    // Guards against a server that starts on a directory it cannot write (and fails later on
    // the first write), or that fails with a message that does not say what is wrong.
    if let Some(reason) = cannot_mount_here() {
        return skip(&format!("read-only directory: {reason}"));
    }
    let base = tempfile::tempdir().unwrap();
    let fs = tmpfs(base.path(), "8m").unwrap_or_else(|e| panic!("tmpfs: {e}"));
    let store = base.path().join("store");
    let fresh = base.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let server = builder(&store, "blocking").start();
    NativeConn::connect(server.addr).set("k", "v");
    assert!(server.terminate(Duration::from_secs(10)).success());
    remount(&fs, "ro").unwrap();
    for dir in [&store, &fresh] {
        let mut cmd = builder(dir, "blocking").command();
        cmd.stderr(std::process::Stdio::piped());
        let (status, err) = run_to_exit(cmd, Duration::from_secs(10));
        assert!(!status.success(), "started on a read-only directory");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.contains("Read-only file system") && last.contains(dir.to_str().unwrap()),
            "the error names the directory and the cause: {err}"
        );
    }
    remount(&fs, "rw").unwrap();
}

#[test]
fn second_server_on_the_same_directory_is_refused() {
    // Guards against two processes appending to the same logs.
    let dir = tempfile::tempdir().unwrap();
    let first = builder(dir.path(), "blocking").start();
    NativeConn::connect(first.addr).set("first", "1");
    let mut cmd = builder(dir.path(), "blocking").command();
    cmd.stderr(std::process::Stdio::piped());
    let (status, err) = run_to_exit(cmd, Duration::from_secs(10));
    assert!(!status.success());
    assert!(err.contains("in use by another process"), "{err}");
    assert_eq!(
        NativeConn::connect(first.addr).get("first").as_deref(),
        Some("1")
    );
}
