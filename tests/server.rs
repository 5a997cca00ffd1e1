//! `kvs-server` driven through the real binary on free loopback ports, under both I/O
//! backends: persistence, start-up errors, fallback, concurrency, pipelining, limits,
//! graceful shutdown.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kvs::protocol::{ErrorKind, Request, Response};
use support::native::NativeConn;
use support::server::{
    free_addr, io_backends, mib, run_to_exit, status_kib, Server, ServerBuilder, SERVER_BIN,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn data_survives_kill9_and_restart() {
    // Guards against acknowledged writes living only in memory.
    for io in io_backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), io);
        let mut c = NativeConn::connect(server.addr);
        for i in 0..200 {
            c.set(&format!("key{i}"), &format!("value{i}"));
        }
        assert_eq!(c.call(Request::Remove { key: b("key7") }), Response::Ok);
        assert_eq!(
            c.call(Request::Remove { key: b("key7") }),
            Response::NotFound
        );
        server.kill9();
        let server = Server::start(dir.path(), io);
        let mut c = NativeConn::connect(server.addr);
        for i in 0..200 {
            let want = (i != 7).then(|| format!("value{i}"));
            assert_eq!(c.get(&format!("key{i}")), want, "{io}: key{i}");
        }
    }
}

#[test]
fn wrong_engine_exits_nonzero_and_leaves_data() {
    // Guards against starting the other engine on a directory and damaging it.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "blocking");
    NativeConn::connect(server.addr).set("k", "v");
    server.kill9();
    let before: Vec<_> = walk(dir.path());
    let mut cmd = ServerBuilder::new(dir.path())
        .arg("--engine")
        .arg("sled")
        .command();
    cmd.stderr(std::process::Stdio::piped());
    let (status, err) = run_to_exit(cmd, Duration::from_secs(10));
    assert!(!status.success());
    assert!(
        err.contains("'kvs'") && err.contains("sled"),
        "message names both engines: {err}"
    );
    assert_eq!(walk(dir.path()), before, "the directory is untouched");
    let server = Server::start(dir.path(), "blocking");
    assert_eq!(
        NativeConn::connect(server.addr).get("k").as_deref(),
        Some("v")
    );
}

fn walk(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push((e.path().display().to_string(), e.metadata().unwrap().len()));
        }
    }
    out.sort();
    out
}

#[test]
fn sled_engine_serves_and_persists() {
    // Guards against the alternative engine being wired up wrongly.
    let dir = tempfile::tempdir().unwrap();
    let server = ServerBuilder::new(dir.path())
        .arg("--engine")
        .arg("sled")
        .io("blocking")
        .start();
    NativeConn::connect(server.addr).set("s", "led");
    server.kill9();
    let server = Server::start(dir.path(), "blocking");
    assert_eq!(
        NativeConn::connect(server.addr).get("s").as_deref(),
        Some("led")
    );
}

#[test]
fn port_in_use_is_an_error_even_for_another_kvs_server() {
    // Guards against SO_REUSEPORT letting two servers silently share a port.
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), "blocking");
    let other = tempfile::tempdir().unwrap();
    let mut cmd = ServerBuilder::new(other.path())
        .addr(first.addr)
        .io("blocking")
        .command();
    cmd.stderr(std::process::Stdio::piped());
    let (status, err) = run_to_exit(cmd, Duration::from_secs(10));
    assert!(!status.success());
    assert!(err.contains("already in use"), "{err}");
    // The first server still serves.
    NativeConn::connect(first.addr).set("still", "here");
}

#[test]
fn bad_flags_exit_nonzero_with_a_message() {
    // Guards against a typo starting a server with defaults.
    for args in [
        &["--cores", "0"][..],
        &["--addr", "not-an-address"],
        &["--fsync", "sometimes"],
        &["--bogus"],
        &["--io", "carrier-pigeon"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(SERVER_BIN);
        cmd.arg("--dir")
            .arg(dir.path())
            .args(args)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        let (status, err) = run_to_exit(cmd, Duration::from_secs(10));
        assert!(!status.success(), "{args:?}");
        assert!(!err.trim().is_empty(), "{args:?} printed nothing");
    }
    let out = std::process::Command::new(SERVER_BIN)
        .arg("-V")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn auto_falls_back_to_blocking_when_io_uring_is_denied() {
    // Guards against a container's seccomp profile stopping the server: it must come up on
    // epoll and the blocking pool, and say why.
    let dir = tempfile::tempdir().unwrap();
    let mut builder = ServerBuilder::new(dir.path()).io("auto");
    builder.deny_io_uring = true;
    let server = builder.start();
    let log = server.log();
    assert!(log.contains("io_backend=blocking"), "{log}");
    assert!(
        log.contains("EPERM") || log.contains("not permitted"),
        "the reason is logged: {log}"
    );
    let mut c = NativeConn::connect(server.addr);
    c.set("fallback", "works");
    assert_eq!(c.get("fallback").as_deref(), Some("works"));
    match c.call(Request::Stats) {
        Response::Stats(s) => assert_eq!(s.io_backend, "blocking"),
        other => panic!("{other:?}"),
    }
    // Forcing io_uring where it is denied is a clear start-up error.
    let mut builder = ServerBuilder::new(tempfile::tempdir().unwrap().path()).io("uring");
    builder.deny_io_uring = true;
    let mut cmd = builder.command();
    cmd.stderr(std::process::Stdio::piped());
    let (status, err) = run_to_exit(cmd, Duration::from_secs(10));
    assert!(!status.success());
    assert!(err.contains("io_uring"), "{err}");
}

#[test]
fn restart_with_other_core_counts_serves_all_data() {
    // Guards against partition ownership depending on the worker count, and against a worker
    // that owns no partition (more workers than the directory has partitions) failing.
    for io in io_backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerBuilder::new(dir.path())
            .io(io)
            .arg("--cores")
            .arg("1")
            .start();
        let mut c = NativeConn::connect(server.addr);
        for i in 0..300 {
            c.set(&format!("k{i}"), &format!("v{i}"));
        }
        server.kill9();
        for cores in ["2", "3"] {
            let server = ServerBuilder::new(dir.path())
                .io(io)
                .arg("--cores")
                .arg(cores)
                .start();
            // The directory has one partition, so some workers own none. Connections are
            // spread over the workers by the kernel: with eight, some land on one that owns
            // nothing and is handed every operation's answer by the owner.
            for n in 0..8 {
                let mut c = NativeConn::connect(server.addr);
                for i in 0..300 {
                    assert_eq!(
                        c.get(&format!("k{i}")),
                        Some(format!("v{i}")),
                        "{io} --cores {cores}"
                    );
                }
                let key = format!("{cores}-{n}");
                c.set(&key, "after the restart");
                assert_eq!(c.get(&key).as_deref(), Some("after the restart"));
            }
            server.kill9();
        }
    }
}

#[test]
fn sixty_four_clients_at_once() {
    // Guards against cross-worker routing losing or mixing up requests under concurrency.
    for io in io_backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerBuilder::new(dir.path())
            .io(io)
            .arg("--cores")
            .arg("2")
            .start();
        let addr = server.addr;
        let threads: Vec<_> = (0..64)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut c = NativeConn::connect(addr);
                    for i in 0..30 {
                        c.set(&format!("c{t}-{i}"), &format!("v{t}-{i}"));
                    }
                    for i in 0..30 {
                        assert_eq!(c.get(&format!("c{t}-{i}")), Some(format!("v{t}-{i}")));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}

#[test]
fn pipelined_batch_of_1000_answers_in_order() {
    // Guards against responses overtaking each other when requests are pipelined.
    for io in io_backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerBuilder::new(dir.path())
            .io(io)
            .arg("--cores")
            .arg("2")
            .start();
        let mut c = NativeConn::connect(server.addr);
        let sets: Vec<_> = (0..1000)
            .map(|i| Request::Set {
                key: b(&format!("p{i}")),
                value: b(&format!("{i}")),
            })
            .collect();
        c.send(&sets);
        for _ in 0..1000 {
            assert_eq!(c.recv(), Some(Response::Ok));
        }
        let mut mixed = Vec::new();
        for i in 0..1000 {
            mixed.push(Request::Get {
                key: b(&format!("p{i}")),
            });
            if i % 100 == 0 {
                mixed.push(Request::Ping);
            }
        }
        c.send(&mixed);
        for i in 0..1000 {
            assert_eq!(
                c.recv(),
                Some(Response::Value(Some(b(&format!("{i}"))))),
                "{io}: response {i}"
            );
            if i % 100 == 0 {
                assert_eq!(c.recv(), Some(Response::Pong));
            }
        }
    }
}

#[test]
fn pipelined_gets_across_workers_answer_every_size_from_cache_and_disk() {
    // Guards against the gets sent to another worker together (their keys in one buffer,
    // small values answered in one shared buffer, large ones shared, the rest read from disk)
    // answering a get with another's value, a wrong length, or out of order.
    let value = |i: usize| -> Bytes {
        let len = [0, 1, 100, 1023, 1500, 5000][i % 6];
        (0..len)
            .map(|j| (i * 7 + j) as u8)
            .collect::<Vec<u8>>()
            .into()
    };
    for io in io_backends() {
        for cache in ["1000000", "0"] {
            let dir = tempfile::tempdir().unwrap();
            let server = ServerBuilder::new(dir.path())
                .io(io)
                .args(["--cores", "2", "--cache-bytes", cache])
                .start();
            let mut c = NativeConn::connect(server.addr);
            let sets: Vec<_> = (0..600)
                .map(|i| Request::Set {
                    key: b(&format!("g{i}")),
                    value: value(i),
                })
                .collect();
            c.send(&sets);
            for _ in 0..600 {
                assert_eq!(c.recv(), Some(Response::Ok));
            }
            // Every third key was never written: absent answers mixed with found ones.
            let gets: Vec<_> = (0..900)
                .map(|i| Request::Get {
                    key: b(&format!("g{}", if i % 3 == 2 { i + 10_000 } else { i })),
                })
                .collect();
            c.send(&gets);
            for i in 0..900 {
                let want = (i % 3 != 2 && i < 600).then(|| value(i));
                assert_eq!(
                    c.recv(),
                    Some(Response::Value(want)),
                    "{io}, cache {cache}: get {i}"
                );
            }
        }
    }
}

#[test]
fn an_answer_the_socket_cannot_take_at_once_arrives_whole_and_in_order() {
    // Guards against a response cut or reordered when the socket's send buffer fills in the
    // middle of it. The first answer of a pipeline is sent at once from the reader's turn; a
    // 6 MiB value does not fit a fresh connection's send buffer, so its rest, and everything
    // after it, must go out through the writer in order.
    for io in io_backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerBuilder::new(dir.path())
            .io(io)
            .args(["--cores", "1"])
            .start();
        let mut c = NativeConn::connect(server.addr);
        let big = Bytes::from(
            (0..6 << 20)
                .map(|i: u32| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        );
        c.send(&[
            Request::Set {
                key: b("big"),
                value: big.clone(),
            },
            Request::Set {
                key: b("small"),
                value: b("s"),
            },
        ]);
        assert_eq!(c.recv(), Some(Response::Ok), "{io}");
        assert_eq!(c.recv(), Some(Response::Ok), "{io}");
        // A new connection, so that the send buffer is at its initial size.
        let mut c = NativeConn::connect(server.addr);
        let get = |k: &str| Request::Get { key: b(k) };
        c.send(&[
            get("big"),
            Request::Ping,
            get("small"),
            get("big"),
            get("small"),
        ]);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(c.recv(), Some(Response::Value(Some(big.clone()))), "{io}");
        assert_eq!(c.recv(), Some(Response::Pong), "{io}");
        assert_eq!(c.recv(), Some(Response::Value(Some(b("s")))), "{io}");
        assert_eq!(c.recv(), Some(Response::Value(Some(big))), "{io}");
        assert_eq!(c.recv(), Some(Response::Value(Some(b("s")))), "{io}");
    }
}

#[test]
fn a_pipeline_reads_its_own_writes_in_order() {
    // Guards against a get answered from the store before an earlier set of its key, in the
    // same pipeline, is acknowledged: each request must act as if the ones before it were done.
    for io in io_backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerBuilder::new(dir.path())
            .io(io)
            .args(["--cores", "2", "--no-pin"])
            .start();
        let mut c = NativeConn::connect(server.addr);
        let mut requests = Vec::new();
        let mut expected = Vec::new();
        for i in 0..200 {
            let key = b(&format!("own{}", i % 20));
            let value = b(&format!("value {i}"));
            requests.push(Request::Set {
                key: key.clone(),
                value: value.clone(),
            });
            expected.push(Response::Ok);
            requests.push(Request::Get { key: key.clone() });
            expected.push(Response::Value(Some(value)));
            if i % 3 == 0 {
                requests.push(Request::Remove { key: key.clone() });
                expected.push(Response::Ok);
                requests.push(Request::Get { key: key.clone() });
                expected.push(Response::Value(None));
                requests.push(Request::Remove { key });
                expected.push(Response::NotFound);
            }
        }
        c.send(&requests);
        for (i, want) in expected.into_iter().enumerate() {
            assert_eq!(c.recv(), Some(want), "{io}: response {i}");
        }
    }
}

#[test]
fn idle_and_half_sent_connections_do_not_block_others() {
    // Guards against one slow or silent client holding up everyone else, and against idle
    // connections living forever.
    for io in io_backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerBuilder::new(dir.path())
            .io(io)
            .arg("--idle-timeout-ms")
            .arg("1500")
            .start();
        let mut idle: Vec<TcpStream> = (0..20)
            .map(|_| TcpStream::connect(server.addr).unwrap())
            .collect();
        let mut half: Vec<NativeConn> = (0..20).map(|_| NativeConn::connect(server.addr)).collect();
        for h in &mut half {
            // Three of a frame's four length bytes.
            h.stream.write_all(&[10, 0, 0]).unwrap();
        }
        let mut busy = NativeConn::connect(server.addr);
        for i in 0..200 {
            busy.set(&format!("busy{i}"), "x");
        }
        // The silent connections are closed at the idle timeout: a read sees end of stream.
        let t0 = Instant::now();
        let stream = &mut idle[0];
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).unwrap_or(0),
            0,
            "{io}: idle connection closed"
        );
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert!(
            half[0].recv().is_none(),
            "{io}: half-sent connection closed"
        );
        // A connection that keeps sending requests is not idle.
        busy.set("after", "timeout");
    }
}

#[test]
fn malformed_and_oversized_frames_close_only_that_connection() {
    // Guards against bad input crashing the server or reaching other clients.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "blocking");
    let mut good = NativeConn::connect(server.addr);
    good.set("good", "client");
    // A 4 GiB length prefix: an error response, then the connection is closed.
    let mut huge = NativeConn::connect(server.addr);
    huge.stream.write_all(&u32::MAX.to_le_bytes()).unwrap();
    match huge.recv() {
        Some(Response::Error { kind, .. }) => assert_eq!(kind, ErrorKind::FrameTooLarge),
        other => panic!("{other:?}"),
    }
    assert!(huge.recv().is_none());
    // Garbage inside a frame.
    let mut junk = NativeConn::connect(server.addr);
    junk.stream
        .write_all(&[3, 0, 0, 0, 0xff, 0xff, 0xff])
        .unwrap();
    assert!(matches!(
        junk.recv(),
        Some(Response::Error {
            kind: ErrorKind::Malformed,
            ..
        })
    ));
    assert!(junk.recv().is_none());
    // A wrong protocol version gets the hello with status 1.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(&[0xFB, b'K', b'V', b'S', 99, 0, 0, 0]).unwrap();
    let mut hello = [0u8; 8];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(&hello[6..8], &[1, 0]);
    // An oversized key gets an error and the connection stays usable.
    let big = Bytes::from(vec![b'k'; kvs::limits::KEY_BYTES_MAX + 1]);
    let mut frame = Vec::new();
    // Built by hand: the client-side encoder refuses oversized keys.
    let body = postcard::to_allocvec(&Request::Get { key: big }).unwrap();
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    good.stream.write_all(&frame).unwrap();
    assert!(matches!(
        good.recv(),
        Some(Response::Error {
            kind: ErrorKind::KeyTooLarge,
            ..
        })
    ));
    assert_eq!(good.get("good").as_deref(), Some("client"));
}

#[test]
fn connection_cap_answers_busy_then_closes() {
    // Guards against unbounded connections exhausting the server.
    let dir = tempfile::tempdir().unwrap();
    let server = ServerBuilder::new(dir.path())
        .io("blocking")
        .arg("--max-connections")
        .arg("2")
        .start();
    // The start-up helper's readiness probe holds a slot until the server sees it closed,
    // which a loaded machine can delay past the first connections: retry those until let in.
    let let_in = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match NativeConn::try_connect(server.addr) {
                Ok(conn) => return conn,
                Err(e) if Instant::now() > deadline => panic!("never let in: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    };
    let _a = let_in();
    let _b = let_in();
    let mut c = TcpStream::connect(server.addr).unwrap();
    let mut hello = Vec::new();
    kvs::protocol::encode_client_hello(&mut hello);
    c.write_all(&hello).unwrap();
    let mut reply = [0u8; 8];
    c.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[6..8], &[2, 0], "busy status");
    let mut r = TcpStream::connect(server.addr).unwrap();
    r.write_all(b"PING\r\n").unwrap();
    let mut text = String::new();
    r.read_to_string(&mut text).unwrap();
    assert_eq!(text, "-ERR max number of clients reached\r\n");
}

#[test]
fn sigterm_as_soon_as_the_port_accepts_is_a_graceful_exit() {
    // Guards against a SIGTERM that arrives once clients can be served, but before the signal
    // handler is in place, killing the server instead of shutting it down (a client that
    // connects, writes and stops the server at once saw that).
    for io in io_backends() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let addr = free_addr();
            let server = ServerBuilder::new(dir.path())
                .io(io)
                .addr(addr)
                .args(["--cores", "2"])
                .spawn();
            let deadline = Instant::now() + Duration::from_secs(30);
            while TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "{io}: the server never listened");
                std::thread::sleep(Duration::from_micros(200));
            }
            let status = server.terminate(Duration::from_secs(10));
            assert!(
                status.success(),
                "{io}: SIGTERM right after listening: {status}"
            );
        }
    }
}

#[test]
fn sigterm_under_load_keeps_every_acknowledged_write() {
    // Guards against a graceful shutdown dropping writes it acknowledged.
    for io in io_backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerBuilder::new(dir.path())
            .io(io)
            .arg("--cores")
            .arg("2")
            .start();
        let addr = server.addr;
        let ledger: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let ledger = ledger.clone();
                std::thread::spawn(move || {
                    let mut c = NativeConn::connect(addr);
                    for i in 0.. {
                        let (k, v) = (format!("w{t}-{i}"), format!("{i}"));
                        c.send(&[Request::Set {
                            key: b(&k),
                            value: b(&v),
                        }]);
                        match c.recv() {
                            Some(Response::Ok) => {
                                ledger.lock().unwrap().insert(k, v);
                            }
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        let t0 = Instant::now();
        while ledger.lock().unwrap().len() < 500 && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let stopped = Instant::now();
        let status = server.terminate(Duration::from_secs(10));
        assert!(status.success(), "{io}: exit status {status:?}");
        assert!(
            stopped.elapsed() < Duration::from_secs(6),
            "{io}: shutdown took {:?}",
            stopped.elapsed()
        );
        for w in writers {
            w.join().unwrap();
        }
        let ledger = ledger.lock().unwrap();
        let server = Server::start(dir.path(), io);
        let mut c = NativeConn::connect(server.addr);
        for (k, v) in ledger.iter() {
            assert_eq!(c.get(k).as_ref(), Some(v), "{io}: acknowledged {k} lost");
        }
    }
}

#[test]
fn empty_directory_starts_listening_quickly() {
    // Guards against start-up doing work proportional to nothing (the target is under 1 s;
    // this bound is loose because CI machines are shared).
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let server = Server::start(dir.path(), "uring");
    let took = t0.elapsed();
    eprintln!("empty directory listening after {took:?}");
    assert!(took < Duration::from_secs(5));
    drop(server);
}

#[test]
fn the_cache_budget_bounds_the_servers_memory() {
    // Guards against the value cache growing past `--cache-bytes`: 116 MB of values go through
    // a server with a 4 MiB cache (large values, kept apart, and small ones, kept with their
    // keys), are all read back, and the server's resident memory must grow by far less.
    const LARGE: usize = 2_000; // 32 KiB each
    const SMALL: usize = 60_000; // 900 B each
    let value = |i: usize, len: usize| Bytes::from(vec![(i % 251) as u8; len]);
    let keys: Vec<(Bytes, usize)> = (0..LARGE)
        .map(|i| (b(&format!("large{i}")), 32 * 1024))
        .chain((0..SMALL).map(|i| (b(&format!("small{i}")), 900)))
        .collect();
    for io in io_backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerBuilder::new(dir.path())
            .io(io)
            .args(["--cores", "1", "--no-pin", "--fsync", "never"])
            .args(["--cache-bytes", &(4 << 20).to_string()])
            .start();
        let pid = server.child.id();
        let mut c = NativeConn::connect(server.addr);
        let before_kib = status_kib(pid, "VmRSS");
        for (n, chunk) in keys.chunks(100).enumerate() {
            let sets: Vec<Request> = chunk
                .iter()
                .enumerate()
                .map(|(j, (key, len))| Request::Set {
                    key: key.clone(),
                    value: value(n * 100 + j, *len),
                })
                .collect();
            c.send(&sets);
            for _ in &sets {
                assert_eq!(c.recv(), Some(Response::Ok), "{io}");
            }
        }
        for (n, chunk) in keys.chunks(100).enumerate() {
            let gets: Vec<Request> = chunk
                .iter()
                .map(|(key, _)| Request::Get { key: key.clone() })
                .collect();
            c.send(&gets);
            for (j, (key, len)) in chunk.iter().enumerate() {
                let want = Response::Value(Some(value(n * 100 + j, *len)));
                assert_eq!(c.recv(), Some(want), "{io}: {key:?}");
            }
        }
        let grown = mib(status_kib(pid, "VmRSS").saturating_sub(before_kib));
        println!(
            "{io}: 116 MB written and read through a 4 MiB cache: resident memory grew {grown} MiB"
        );
        // The index of 62,000 keys, the buffers of a 100-request pipeline and the allocator's
        // slack stay well under 40 MiB; a cache that kept everything would add 116 MB.
        assert!(grown < 40, "{io}: resident memory grew {grown} MiB");
    }
}
