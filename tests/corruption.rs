//! Damaged data directories under the real `kvs-server`: torn, zeroed and garbage tails of the
//! newest segment (cut, logged with the offset, everything before intact); flipped bits in a
//! sealed segment (without its hint: the server refuses to start and names the file and
//! offset; under a hint: it starts, and a read of the damaged key is an error, never a value);
//! in a hint (ignored, the segment scanned); and in `kvs.meta` (refuses to start, says why).
//!
//! Each test counts the corruptions it injected and the ones the server detected, and prints
//! them; `RELIABILITY.md` adds them up.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use kvs::protocol::{ErrorKind, Request, Response};
use support::ledger::mix;
use support::native::NativeConn;
use support::server::{run_to_exit, Server, ServerBuilder};

const SEED: u64 = 0x6b76_735f_666c_6970;
const KEYS: usize = 60;
const SEGMENT_HEADER_BYTES: usize = 32;
const RECORD_HEADER_BYTES: usize = 21;

fn key(i: usize) -> String {
    format!("key{i:03}")
}

fn value(i: usize) -> String {
    format!("value{i:03}:{}", "v".repeat(100 + i))
}

fn builder(dir: &Path) -> ServerBuilder {
    ServerBuilder::new(dir).io("blocking").args([
        "--partitions",
        "1",
        "--segment-bytes",
        "4096",
        "--cores",
        "1",
    ])
}

/// A store of one partition with `KEYS` keys over several 4 KiB segments, shut down cleanly.
fn make_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let server = builder(dir.path()).start();
    let mut c = NativeConn::connect(server.addr);
    for i in 0..KEYS {
        c.set(&key(i), &value(i));
    }
    // An open connection would hold the shutdown for its grace period.
    drop(c);
    assert!(server.terminate(Duration::from_secs(10)).success());
    dir
}

fn copy_store(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    let part = to.path().join("p0000");
    std::fs::create_dir(&part).unwrap();
    for f in ["kvs.meta", "LOCK"] {
        std::fs::copy(from.join(f), to.path().join(f)).unwrap();
    }
    for e in std::fs::read_dir(from.join("p0000")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), part.join(e.file_name())).unwrap();
    }
    to
}

/// Segments of the store's partition by id: (path, origin).
fn segments(store: &Path) -> Vec<(u64, PathBuf, u32)> {
    let mut v: Vec<_> = std::fs::read_dir(store.join("p0000"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| {
            let id: u64 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            let head = std::fs::read(&p).unwrap();
            let origin = u32::from_le_bytes(head[12..16].try_into().unwrap());
            (id, p, origin)
        })
        .collect();
    v.sort();
    v
}

/// The newest `log` segment: the one the writer appends to.
fn active_segment(store: &Path) -> PathBuf {
    segments(store)
        .into_iter()
        .rev()
        .find(|(.., origin)| *origin == 0)
        .unwrap()
        .1
}

/// The oldest segment, sealed (it has a hint).
fn sealed_segment(store: &Path) -> PathBuf {
    let (_, path, _) = segments(store).into_iter().next().unwrap();
    assert!(path.with_extension("hint").exists(), "{path:?} is sealed");
    path
}

/// The records of a segment as (offset, length, key), read by their headers alone; stops at
/// the first byte that is no record kind (zero padding).
fn records(bytes: &[u8]) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    // Kinds 1 and 2 are puts and deletes; 3 is a sync mark, which names no key.
    while at + RECORD_HEADER_BYTES <= bytes.len() && matches!(bytes[at + 12], 1..=3) {
        let klen = u32::from_le_bytes(bytes[at + 13..at + 17].try_into().unwrap()) as usize;
        let vlen = u32::from_le_bytes(bytes[at + 17..at + 21].try_into().unwrap()) as usize;
        let len = RECORD_HEADER_BYTES + klen + vlen;
        if bytes[at + 12] != 3 {
            let k = &bytes[at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + klen];
            out.push((at, len, String::from_utf8_lossy(k).into_owned()));
        }
        at += len;
    }
    out
}

/// A put record, encoded as docs/format.md lays it out.
fn encode_put(seq: u64, k: &[u8], v: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&seq.to_le_bytes());
    body.push(1);
    body.extend_from_slice(&(k.len() as u32).to_le_bytes());
    body.extend_from_slice(&(v.len() as u32).to_le_bytes());
    body.extend_from_slice(k);
    body.extend_from_slice(v);
    let mut out = crc32c::crc32c(&body).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn flip_bit(path: &Path, offset: usize, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 1 << bit;
    std::fs::write(path, bytes).unwrap();
}

/// Every key's answer, in order.
fn read_keys(server: &Server) -> Vec<Response> {
    let mut c = NativeConn::connect(server.addr);
    let reqs: Vec<_> = (0..KEYS)
        .map(|i| Request::Get {
            key: Bytes::from(key(i)),
        })
        .collect();
    c.send(&reqs);
    (0..KEYS).map(|_| c.recv().unwrap()).collect()
}

fn intact(i: usize) -> Response {
    Response::Value(Some(Bytes::from(value(i))))
}

/// Starts a server that must refuse the directory; returns its stderr.
fn refused(dir: &Path) -> String {
    let mut cmd = builder(dir).command();
    cmd.stderr(std::process::Stdio::piped());
    let t0 = std::time::Instant::now();
    let (status, err) = run_to_exit(cmd, Duration::from_secs(20));
    assert!(!status.success(), "started on a damaged directory: {err}");
    // A refusal is prompt: no shutdown grace period spent waiting for workers that never ran.
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "refusing took {:?}",
        t0.elapsed()
    );
    err
}

fn report(what: &str, injected: usize, detected: usize) {
    println!("corruption, {what}: {injected} injected, {detected} detected");
    assert_eq!(injected, detected, "{what}");
}

#[test]
fn damaged_tails_of_the_newest_segment_are_cut_and_logged() {
    // Guards against a crash mid-write (a torn record, a record whose pages never reached the
    // disk, or garbage) stopping the server or damaging the records before it.
    let base = make_store();
    let mut detected = 0;
    let kinds = ["torn", "zeroed", "garbage"];
    for kind in kinds {
        let store = copy_store(base.path());
        let seg = active_segment(store.path());
        let mut bytes = std::fs::read(&seg).unwrap();
        let recs = records(&bytes);
        let &(last_at, last_len, ref last_key) = recs.last().unwrap();
        let end = last_at + last_len;
        let (cut_at, lost_key) = match kind {
            // Half of one more record, as a write cut short by a crash leaves it.
            "torn" => {
                let rec = encode_put(1_000_000, b"torn-key", &[7u8; 200]);
                let half = &rec[..rec.len() / 2];
                bytes.truncate(end);
                bytes.extend_from_slice(half);
                (end, None)
            }
            // The last record's second half never reached the disk.
            "zeroed" => {
                bytes[last_at + last_len / 2..end].fill(0);
                (last_at, Some(last_key.clone()))
            }
            // Seeded garbage after the last record.
            _ => {
                let mut x = SEED;
                bytes.truncate(end);
                bytes.extend((0..300).map(|_| {
                    x = mix(x);
                    (x as u8) | 1
                }));
                (end, None)
            }
        };
        std::fs::write(&seg, &bytes).unwrap();
        let server = builder(store.path()).start();
        let name = seg.file_name().unwrap().to_str().unwrap();
        let log = server.log();
        let line = log
            .lines()
            .find(|l| l.contains("cutting torn tail") && l.contains(name))
            .unwrap_or_else(|| panic!("{kind}: no cut logged:\n{log}"));
        assert!(
            line.contains(&format!("at offset {cut_at} ")),
            "{kind}: the cut names offset {cut_at}: {line}"
        );
        detected += 1;
        for (i, got) in read_keys(&server).into_iter().enumerate() {
            if lost_key.as_deref() == Some(key(i).as_str()) {
                assert_eq!(got, Response::Value(None), "{kind}: the cut record's key");
            } else {
                assert_eq!(got, intact(i), "{kind}: {}", key(i));
            }
        }
        // The cut is durable and the store takes writes after it.
        let mut c = NativeConn::connect(server.addr);
        c.set("after-the-cut", "ok");
        server.kill9();
        let server = builder(store.path()).start();
        assert_eq!(
            NativeConn::connect(server.addr)
                .get("after-the-cut")
                .as_deref(),
            Some("ok")
        );
        assert!(
            !server.log().contains("cutting torn tail"),
            "{kind}: cut twice"
        );
    }
    report("damaged tails of the newest segment", kinds.len(), detected);
}

#[test]
fn bit_flip_in_a_sealed_segment_without_its_hint_refuses_to_start() {
    // Guards against a scan that serves, skips or cuts damaged records of a sealed segment:
    // without a hint every record is checked at start-up, and damage must stop the server
    // with a message naming the file and the offset.
    let base = make_store();
    let flips = 8;
    let mut detected = 0;
    let mut x = SEED;
    for n in 0..flips {
        let store = copy_store(base.path());
        let seg = sealed_segment(store.path());
        std::fs::remove_file(seg.with_extension("hint")).unwrap();
        let len = std::fs::metadata(&seg).unwrap().len() as usize;
        x = mix(x);
        // The first flip is in the header, the others anywhere.
        let at = if n == 0 {
            20
        } else {
            (x % len as u64) as usize
        };
        flip_bit(&seg, at, (x >> 32) as u8 % 8);
        let err = refused(store.path());
        let name = seg.file_name().unwrap().to_str().unwrap();
        assert!(
            err.contains(name) && err.contains("offset"),
            "flip at {at}: the refusal names the file and offset: {err}"
        );
        detected += 1;
    }
    report(
        "bit flips in a sealed segment without a hint",
        flips,
        detected,
    );
}

#[test]
fn bit_flip_under_a_hint_is_a_read_error_never_a_value() {
    // Guards against serving a damaged value: with a valid hint the open does not read values,
    // so the damage shows at the read, which must be an error (native and RESP), while every
    // other key reads back intact.
    let base = make_store();
    let flips = 8;
    let mut detected = 0;
    let mut x = SEED ^ 2;
    for n in 0..flips {
        let store = copy_store(base.path());
        let seg = sealed_segment(store.path());
        let bytes = std::fs::read(&seg).unwrap();
        let recs = records(&bytes);
        // A byte of a seeded record (a flip in a sync mark changes no value: under a valid
        // hint nothing reads it).
        x = mix(x);
        let (o, l, damaged) = recs[(x % recs.len() as u64) as usize].clone();
        x = mix(x);
        let at = o + (x % l as u64) as usize;
        flip_bit(&seg, at, (x >> 32) as u8 % 8);
        let server = builder(store.path()).start();
        for (i, got) in read_keys(&server).into_iter().enumerate() {
            if key(i) == damaged {
                match got {
                    Response::Error { kind, message } => {
                        assert_eq!(kind, ErrorKind::Internal);
                        assert!(
                            message.contains("corrupt")
                                && message.contains(seg.file_name().unwrap().to_str().unwrap()),
                            "flip at {at}: {message}"
                        );
                        detected += 1;
                    }
                    other => panic!("flip at {at}: {damaged} served {other:?}"),
                }
            } else {
                assert_eq!(got, intact(i), "flip at {at}: {}", key(i));
            }
        }
        if n == 0 {
            // The same through RESP: an error line, no bulk string.
            let mut s = TcpStream::connect(server.addr).unwrap();
            let cmd = format!("*2\r\n$3\r\nGET\r\n${}\r\n{damaged}\r\n", damaged.len());
            s.write_all(cmd.as_bytes()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            let line = String::from_utf8_lossy(&buf[..n]);
            assert!(line.starts_with("-ERR corrupt"), "RESP: {line}");
        }
    }
    // A flip in the header is caught at start-up, hint or not.
    let store = copy_store(base.path());
    let seg = sealed_segment(store.path());
    flip_bit(&seg, 3, 0);
    let err = refused(store.path());
    assert!(
        err.contains(seg.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    detected += 1;
    report(
        "bit flips in a sealed segment under its hint",
        flips + 1,
        detected,
    );
}

#[test]
fn bit_flip_in_a_hint_is_ignored_and_the_segment_scanned() {
    // Guards against trusting a damaged hint (wrong positions, missing keys): it must be
    // detected, logged and ignored, and the segment scanned instead.
    let base = make_store();
    let flips = 6;
    let mut detected = 0;
    let mut x = SEED ^ 3;
    for _ in 0..flips {
        let store = copy_store(base.path());
        let hint = sealed_segment(store.path()).with_extension("hint");
        let len = std::fs::metadata(&hint).unwrap().len();
        x = mix(x);
        flip_bit(&hint, (x % len) as usize, (x >> 32) as u8 % 8);
        let server = builder(store.path()).start();
        let name = hint.file_name().unwrap().to_str().unwrap();
        assert!(
            server
                .log()
                .lines()
                .any(|l| l.contains("ignoring hint") && l.contains(name)),
            "{}",
            server.log()
        );
        detected += 1;
        for (i, got) in read_keys(&server).into_iter().enumerate() {
            assert_eq!(got, intact(i), "{}", key(i));
        }
    }
    report("bit flips in a hint", flips, detected);
}

#[test]
fn bit_flip_in_kvs_meta_refuses_to_start_and_says_why() {
    // Guards against opening a directory whose identity (engine, partition count) may be
    // wrong: a wrong partition count would look for keys in the wrong place.
    let base = make_store();
    let len = std::fs::metadata(base.path().join("kvs.meta"))
        .unwrap()
        .len() as usize;
    let mut detected = 0;
    let offsets = [0, 5, 12, 20, len - 9, len - 1];
    for (n, at) in offsets.into_iter().enumerate() {
        let store = copy_store(base.path());
        flip_bit(&store.path().join("kvs.meta"), at, n as u8 % 7);
        let err = refused(store.path());
        assert!(
            err.contains("kvs.meta") && err.contains("corrupt"),
            "flip at {at}: {err}"
        );
        detected += 1;
    }
    report("bit flips in kvs.meta", offsets.len(), detected);
}
