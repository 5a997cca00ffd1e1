//! Hostile clients against the real `kvs-server`: oversized length prefixes, huge RESP bulk
//! lengths, a client that pipelines and never reads, slowloris, thousands of idle connections,
//! random bytes, resets in the middle of a frame, and writers faster than the disk.
//!
//! Each test starts its own server, measures a well-behaved native client's p99 latency (SET
//! then GET, one request at a time) while nothing else runs, then again while the attack runs,
//! and reads the server's peak resident memory (VmHWM in /proc/PID/status). The server must stay
//! up, keep answering the well-behaved client, and stay under a stated memory bound.
//!
//! Timing on a shared 2-core machine is noisy and the attacker shares the cores with the server,
//! so the latency assertion is generous (see [`LATENCY_RATIO_FAIL`]); the measured ratio is
//! printed on a `hostile:` line and recorded in RELIABILITY.md. The tests hold one lock, so
//! they never measure each other.
//!
//! The CI run keeps to a few seconds per attack. `KVS_HOSTILE_LONG=1` runs the full counts
//! (100,000 pipelined 64 KiB SETs, 10,000 idle connections, longer measurements).
//!
//! `KVS_HOSTILE_PINNED=1` measures fairness the way the benchmarks measure speed: the server
//! runs one worker pinned to CPU 0 (`--cores 1`), and the attacker and the well-behaved client
//! run on CPU 1, so the attacker's own work does not take the server's core; the attacker runs
//! under `SCHED_IDLE` there, so it does not take the client's time either. Run it on a
//! release build: `KVS_HOSTILE_PINNED=1 cargo test --release --test hostile -- --nocapture
//! --test-threads 1` (`ci/hostile-fairness.sh`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kvs::protocol::{encode_client_hello, encode_request, ErrorKind, Request, Response};
use support::native::NativeConn;
use support::server::{io_backends, mib, status_kib, Server, ServerBuilder};

/// A test fails when the attacked p99 is more than this many times the quiet p99 *and* more
/// than [`LATENCY_FLOOR`]: a bound meant to catch a server that stops serving others, not to
/// measure fairness, which is a benchmark's job (a timed test on a shared 2-core machine, where
/// attacker, server and client share the cores, would be flaky). The real ratios are printed
/// and recorded in RELIABILITY.md.
const LATENCY_RATIO_FAIL: f64 = 20.0;
/// Below this, an attacked p99 passes whatever the ratio. A well-behaved write queued behind an
/// attacker's 4 MiB group commit and its fdatasync was measured at up to 98 ms on a loaded
/// machine; a server that stopped serving others would take seconds.
const LATENCY_FLOOR: Duration = Duration::from_secs(1);
/// The value cache the servers here run with, so that resident memory shows connection state
/// rather than cached values.
const CACHE_BYTES: &str = "16777216";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn pinned() -> bool {
    std::env::var_os("KVS_HOSTILE_PINNED").is_some_and(|v| v != "0")
}

/// Pins the calling thread to `cpu`; returns the mask it had, for [`restore_cpus`].
fn pin_thread(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data, and sched_{get,set}affinity with pid 0 act on the
    // calling thread through valid pointers of the right size.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_getaffinity(0, size, &mut old), 0);
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size, &set),
            0,
            "pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
        old
    }
}

/// Puts the calling thread (and the threads it starts) under `SCHED_IDLE`: on the CPU it shares
/// with the well-behaved client it runs only while the client waits. The attacker stands for
/// other machines; sharing a core with it, the client otherwise waited out the attacker's time
/// slices, which is the test's own contention, not the server's.
fn yield_cpu_to_the_probe() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler with pid 0 acts on the calling thread, through a valid pointer.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    assert_eq!(rc, 0, "SCHED_IDLE: {}", std::io::Error::last_os_error());
}

fn restore_cpus(old: &libc::cpu_set_t) {
    // SAFETY: as in pin_thread.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), old);
    }
}

fn long_run() -> bool {
    std::env::var_os("KVS_HOSTILE_LONG").is_some_and(|v| v != "0")
}

/// CI count, or the long-run count under `KVS_HOSTILE_LONG=1`.
fn count(ci: usize, long: usize) -> usize {
    if long_run() {
        long
    } else {
        ci
    }
}

/// The I/O backends an attack runs on: in CI one of them (attacks alternate, so both are
/// covered), in a long run every backend.
fn backends(pick: usize) -> Vec<&'static str> {
    let all = io_backends();
    if long_run() {
        all
    } else {
        vec![all[pick % all.len()]]
    }
}

fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

fn start_server(dir: &std::path::Path, io: &str, extra: &[&str]) -> Server {
    // Pinned: one worker, which the server pins to CPU 0 itself.
    let cores: &[&str] = if pinned() {
        &["--cores", "1"]
    } else {
        &["--cores", "2", "--no-pin"]
    };
    let mut builder = ServerBuilder::new(dir)
        .io(io)
        .args(cores.iter().copied())
        .args(["--cache-bytes", CACHE_BYTES]);
    for a in extra {
        builder = builder.arg(*a);
    }
    builder.start()
}

/// A connected native stream past the hello.
fn native_stream(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut hello = Vec::new();
    encode_client_hello(&mut hello);
    s.write_all(&hello)?;
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply)?;
    Ok(s)
}

/// Reads until the server closes; the bytes read. An error (a reset) also ends it.
fn read_to_close(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + within;
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return (all, true),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (all, true),
        }
    }
    (all, false)
}

/// Latencies of a well-behaved client: SET then GET of small values, one at a time (SETs at
/// even places, GETs at odd).
fn probe(addr: SocketAddr, for_: Duration) -> Vec<Duration> {
    let mut c = NativeConn::connect(addr);
    let mut lat = Vec::new();
    let start = Instant::now();
    let value = Bytes::from(vec![b'v'; 100]);
    let mut i = 0u64;
    while start.elapsed() < for_ {
        let key = Bytes::from(format!("probe-{}", i % 64));
        let t = Instant::now();
        let r = c
            .try_call(&Request::Set {
                key: key.clone(),
                value: value.clone(),
            })
            .expect("the well-behaved client is served");
        lat.push(t.elapsed());
        assert_eq!(r, Response::Ok, "SET of the well-behaved client");
        let t = Instant::now();
        let r = c
            .try_call(&Request::Get { key })
            .expect("the well-behaved client is served");
        lat.push(t.elapsed());
        assert_eq!(r, Response::Value(Some(value.clone())));
        i += 1;
    }
    lat
}

fn p99(mut lat: Vec<Duration>) -> Duration {
    lat.sort();
    lat[(lat.len() * 99 / 100).min(lat.len() - 1)]
}

/// The probe's p99 over all its requests, and over its SETs and its GETs alone.
#[derive(Clone, Copy, Debug)]
struct P99s {
    all: Duration,
    sets: Duration,
    gets: Duration,
}

/// The medians over a few runs of the probe's p99s.
fn median_p99(addr: SocketAddr) -> P99s {
    let runs = count(3, 5);
    let each = Duration::from_millis(count(300, 2000) as u64);
    let mut all = Vec::new();
    let mut sets = Vec::new();
    let mut gets = Vec::new();
    for _ in 0..runs {
        let lat = probe(addr, each);
        sets.push(p99(lat.iter().step_by(2).copied().collect()));
        gets.push(p99(lat.iter().skip(1).step_by(2).copied().collect()));
        all.push(p99(lat));
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    P99s {
        all: median(all),
        sets: median(sets),
        gets: median(gets),
    }
}

/// What one attack did to the server.
struct Outcome {
    quiet: Duration,
    attacked: Duration,
    rss_base_kib: u64,
    hwm_kib: u64,
    attacks: u64,
}

/// Runs `attack` on its own thread until told to stop, measures the well-behaved client before
/// and during it, and checks the server is still up. `attack(addr, ready, stop)` sets `ready`
/// once the attack is in place and returns how many hostile acts it performed.
fn under_attack<F>(name: &str, server: &mut Server, mem_bound_mib: u64, attack: F) -> Outcome
where
    F: FnOnce(SocketAddr, Arc<AtomicBool>, Arc<AtomicBool>) -> u64 + Send + 'static,
{
    under_attack_with(name, server, mem_bound_mib, None, attack)
}

/// [`under_attack`], with an absolute bound on the attacked p99 instead of a ratio (for
/// overload, where the well-behaved client's requests queue behind everyone else's).
fn under_attack_with<F>(
    name: &str,
    server: &mut Server,
    mem_bound_mib: u64,
    p99_bound: Option<Duration>,
    attack: F,
) -> Outcome
where
    F: FnOnce(SocketAddr, Arc<AtomicBool>, Arc<AtomicBool>) -> u64 + Send + 'static,
{
    let addr = server.addr;
    let pid = server.child.id();
    // The server was started before this, with every CPU; its worker pinned itself to CPU 0.
    let client_cpus = pinned().then(|| pin_thread(1));
    let quiet_p99s = median_p99(addr);
    let quiet = quiet_p99s.all;
    let rss_base_kib = status_kib(pid, "VmRSS");
    let ready = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (ready, stop) = (ready.clone(), stop.clone());
        let pin = client_cpus.is_some();
        std::thread::spawn(move || {
            if pin {
                pin_thread(1);
                yield_cpu_to_the_probe();
            }
            attack(addr, ready, stop)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready.load(Ordering::Acquire) && !attacker.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{name}: the attack did not get in place"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let attacked_p99s = median_p99(addr);
    let attacked = attacked_p99s.all;
    stop.store(true, Ordering::Release);
    let attacks = attacker.join().expect("the attacker thread");
    if let Some(old) = &client_cpus {
        restore_cpus(old);
    }
    let hwm_kib = status_kib(pid, "VmHWM");
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "{name}: the server exited; log:\n{}",
        server.log()
    );
    // Still serving after the attack, too.
    let mut c = NativeConn::connect(addr);
    c.set("after", name);
    let ratio = attacked.as_secs_f64() / quiet.as_secs_f64().max(1e-6);
    println!(
        "hostile: {name}: {attacks} hostile acts; well-behaved p99 quiet {quiet:?}, attacked {attacked:?} (x{ratio:.1}; SETs {:?} to {:?}, GETs {:?} to {:?}); server RSS {} MiB before, peak {} MiB (bound {mem_bound_mib} MiB)",
        quiet_p99s.sets,
        attacked_p99s.sets,
        quiet_p99s.gets,
        attacked_p99s.gets,
        mib(rss_base_kib),
        mib(hwm_kib),
    );
    match p99_bound {
        None => assert!(
            attacked <= LATENCY_FLOOR || ratio <= LATENCY_RATIO_FAIL,
            "{name}: the well-behaved client's p99 went from {quiet:?} to {attacked:?}"
        ),
        Some(bound) => assert!(
            attacked <= bound,
            "{name}: the well-behaved client's p99 went from {quiet:?} to {attacked:?}, over {bound:?}"
        ),
    }
    assert!(
        mib(hwm_kib) <= mem_bound_mib,
        "{name}: the server's peak RSS was {} MiB, over the {mem_bound_mib} MiB bound",
        mib(hwm_kib)
    );
    Outcome {
        quiet,
        attacked,
        rss_base_kib,
        hwm_kib,
        attacks,
    }
}

#[test]
fn four_gib_length_prefixes_on_a_thousand_connections_are_refused_without_allocating() {
    // Guards against a length prefix sizing an allocation, or against refused frames leaving
    // connections (or memory) behind.
    let _g = serial();
    raise_nofile();
    for io in backends(1) {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start_server(dir.path(), io, &[]);
        let conns = count(1000, 1000);
        under_attack(
            &format!("{io}: 4 GiB prefix x{conns}"),
            &mut server,
            128,
            move |addr, ready, stop| {
                let mut acts = 0;
                while !stop.load(Ordering::Acquire) {
                    let mut open = Vec::with_capacity(conns);
                    for _ in 0..conns {
                        let mut s = native_stream(addr).expect("connect");
                        s.write_all(&u32::MAX.to_le_bytes()).unwrap();
                        open.push(s);
                    }
                    for mut s in open {
                        let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(10));
                        assert!(closed, "a refused frame's connection was not closed");
                        match kvs::protocol::decode_response(&bytes) {
                            Ok(Some((Response::Error { kind, .. }, _))) => {
                                assert_eq!(kind, ErrorKind::FrameTooLarge)
                            }
                            other => panic!("a 4 GiB prefix was answered {other:?}"),
                        }
                        acts += 1;
                    }
                    ready.store(true, Ordering::Release);
                }
                acts
            },
        );
    }
}

#[test]
fn huge_resp_bulk_and_array_lengths_are_refused_without_allocating() {
    // Guards against a RESP length (bulk or array) sizing an allocation before it is checked,
    // and against a refused command leaving the connection open.
    let _g = serial();
    raise_nofile();
    let attacks: &[&[u8]] = &[
        b"*1\r\n$4294967296\r\n",
        b"*2\r\n$3\r\nGET\r\n$99999999999999\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$-7\r\n",
        b"*4294967296\r\n",
        b"*9223372036854775807\r\n$1\r\n",
        b"*1048576\r\n",
        b"*1\r\n$8389632\r\n",
    ];
    for io in backends(2) {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start_server(dir.path(), io, &["--frame-timeout-ms", "2000"]);
        under_attack(
            &format!("{io}: huge RESP lengths"),
            &mut server,
            128,
            move |addr, ready, stop| {
                let mut acts = 0;
                while !stop.load(Ordering::Acquire) {
                    let mut open = Vec::new();
                    for _ in 0..count(100, 1000) {
                        for a in attacks {
                            let mut s = TcpStream::connect(addr).expect("connect");
                            s.write_all(a).unwrap();
                            open.push((s, *a));
                        }
                    }
                    for (mut s, a) in open {
                        let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(10));
                        assert!(
                            closed,
                            "{:?} left its connection open",
                            String::from_utf8_lossy(a)
                        );
                        // A count or length within limits waits for data until the frame
                        // timeout, which closes the connection without a reply.
                        assert!(
                            bytes.is_empty() || bytes.starts_with(b"-ERR Protocol error"),
                            "{:?} was answered {:?}",
                            String::from_utf8_lossy(a),
                            String::from_utf8_lossy(&bytes)
                        );
                        acts += 1;
                    }
                    ready.store(true, Ordering::Release);
                }
                acts
            },
        );
    }
}

/// Writes `frames` until done or until the server has stopped taking bytes for `stall`;
/// returns the bytes the server took.
fn write_until_stalled(s: &mut TcpStream, frames: &mut dyn Iterator<Item = Vec<u8>>) -> u64 {
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut sent = 0u64;
    for f in frames {
        let mut at = 0;
        while at < f.len() {
            match s.write(&f[at..]) {
                Ok(n) => at += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return sent + at as u64;
                }
                Err(e) => panic!("the server dropped a pipelining client: {e}"),
            }
        }
        sent += f.len() as u64;
    }
    sent
}

#[test]
fn a_client_that_pipelines_sets_and_never_reads_is_bounded() {
    // Guards against a client that never reads its responses growing the server's memory
    // without bound: past the per-connection in-flight limits the server stops reading it.
    let _g = serial();
    for io in backends(3) {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start_server(dir.path(), io, &["--fsync", "never"]);
        let sets = count(2_000, 100_000);
        let took = Arc::new(AtomicU64::new(0));
        let took_by_attacker = took.clone();
        under_attack(
            &format!("{io}: {sets} pipelined 64 KiB SETs, never read"),
            &mut server,
            // Base RSS, the 16 MiB cache, one connection's 32 MiB of requests in flight, a
            // write batch and the buffers around them.
            256,
            move |addr, ready, stop| {
                let mut s = native_stream(addr).expect("connect");
                let value = Bytes::from(vec![b'x'; 64 * 1024]);
                let mut frames = (0..sets).map(|i| {
                    let mut f = Vec::new();
                    encode_request(
                        &Request::Set {
                            key: Bytes::from(format!("pipe-{}", i % 1000)),
                            value: value.clone(),
                        },
                        &mut f,
                    )
                    .unwrap();
                    f
                });
                // In place once the first batch is in the server's hands; the rest keeps
                // coming while the well-behaved client is measured.
                let first: Vec<Vec<u8>> = frames.by_ref().take(64).collect();
                let mut sent = write_until_stalled(&mut s, &mut first.into_iter());
                ready.store(true, Ordering::Release);
                while !stop.load(Ordering::Acquire) {
                    let batch: Vec<Vec<u8>> = frames.by_ref().take(64).collect();
                    if batch.is_empty() {
                        break;
                    }
                    let n = write_until_stalled(&mut s, &mut batch.into_iter());
                    sent += n;
                    if n == 0 {
                        // The server stopped reading: hold the connection until told to stop.
                        while !stop.load(Ordering::Acquire) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                took_by_attacker.store(sent, Ordering::Release);
                sets as u64
            },
        );
        println!(
            "hostile: {io}: the never-reading client got {} MiB of SETs into the server",
            took.load(Ordering::Acquire) >> 20
        );
    }
}

/// Pipelines GETs of one `value_bytes` value on `conns` connections and never reads.
fn never_reading_getters(io: &str, value_bytes: usize, conns: usize, mem_bound_mib: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), io, &["--fsync", "never"]);
    let mut c = NativeConn::connect(server.addr);
    c.call(Request::Set {
        key: Bytes::from_static(b"big"),
        value: Bytes::from(vec![b'b'; value_bytes]),
    });
    under_attack(
        &format!(
            "{io}: pipelined GETs of a {} KiB value on {conns} connections, never read",
            value_bytes >> 10
        ),
        &mut server,
        mem_bound_mib,
        move |addr, ready, stop| {
            let mut frame = Vec::new();
            encode_request(
                &Request::Get {
                    key: Bytes::from_static(b"big"),
                },
                &mut frame,
            )
            .unwrap();
            // Several connections, so that some land on the worker that does not own the key.
            let mut streams: Vec<TcpStream> = (0..conns)
                .map(|_| native_stream(addr).expect("connect"))
                .collect();
            let mut sent = 0;
            for s in &mut streams {
                loop {
                    let n = write_until_stalled(s, &mut std::iter::repeat_n(frame.clone(), 1000));
                    sent += n;
                    if n < 1000 * frame.len() as u64 {
                        break;
                    }
                    assert!(
                        sent < 100 << 20,
                        "the server read 100 MiB of GETs from clients that never read"
                    );
                }
            }
            ready.store(true, Ordering::Release);
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(20));
            }
            sent / frame.len() as u64
        },
    );
}

#[test]
fn a_client_that_pipelines_cached_gets_and_never_reads_stops_being_read() {
    // Guards against a client that never reads making the server queue responses without
    // bound: once its responses back up, the server must stop reading its requests. The value
    // is cached, so every waiting response shares it.
    let _g = serial();
    for io in backends(3) {
        never_reading_getters(io, 256 * 1024, 4, 256);
    }
}

#[test]
#[ignore = "slow (about 25 s): run with --ignored; see RELIABILITY.md"]
fn a_client_that_pipelines_uncached_gets_and_never_reads_stops_being_read() {
    // Guards against values read from disk for a client that never reads piling up: each is
    // 1 MiB (too large for the 16 MiB cache), so every waiting response holds its own copy.
    let _g = serial();
    for io in backends(3) {
        never_reading_getters(io, 1 << 20, 4, 256);
    }
}

#[test]
fn slowloris_connections_are_closed_at_the_frame_timeout() {
    // Guards against clients that trickle a request one byte at a time holding connections
    // (and their buffers) forever.
    let _g = serial();
    raise_nofile();
    for io in backends(5) {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start_server(
            dir.path(),
            io,
            &["--frame-timeout-ms", "1500", "--idle-timeout-ms", "3000"],
        );
        let conns = count(200, 2000);
        under_attack(
            &format!("{io}: slowloris x{conns}"),
            &mut server,
            128,
            move |addr, ready, stop| {
                // Half native (a SET frame one byte at a time), half RESP.
                let mut frame = Vec::new();
                encode_request(
                    &Request::Set {
                        key: Bytes::from_static(b"slow"),
                        value: Bytes::from(vec![b's'; 4000]),
                    },
                    &mut frame,
                )
                .unwrap();
                let resp = b"*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$4000\r\n".to_vec();
                let mut open: Vec<(TcpStream, usize, Instant)> = (0..conns)
                    .map(|i| {
                        let s = if i % 2 == 0 {
                            native_stream(addr).unwrap()
                        } else {
                            TcpStream::connect(addr).unwrap()
                        };
                        s.set_nonblocking(true).unwrap();
                        (s, 0, Instant::now())
                    })
                    .collect();
                ready.store(true, Ordering::Release);
                let mut closed = 0u64;
                let mut longest = Duration::ZERO;
                while !open.is_empty() {
                    let mut i = 0;
                    while i < open.len() {
                        let (s, at, since) = &mut open[i];
                        let bytes = if i % 2 == 0 { &frame } else { &resp };
                        let gone = match s.write(&bytes[*at % bytes.len()..][..1]) {
                            Ok(_) => {
                                *at += 1;
                                let mut b = [0u8; 64];
                                matches!(s.read(&mut b), Ok(0))
                                    || matches!(s.read(&mut b), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
                            }
                            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                        };
                        if gone {
                            longest = longest.max(since.elapsed());
                            closed += 1;
                            open.swap_remove(i);
                        } else {
                            i += 1;
                        }
                    }
                    assert!(
                        open.iter()
                            .all(|(_, _, since)| since.elapsed() < Duration::from_secs(10)),
                        "a slowloris connection outlived the 1.5 s frame timeout by far"
                    );
                    // One byte every 300 ms per connection.
                    std::thread::sleep(Duration::from_millis(300));
                    let _ = stop;
                }
                println!("hostile: slowloris: every connection closed, the last after {longest:?}");
                closed
            },
        );
    }
}

#[test]
fn ten_thousand_idle_connections_cost_little_and_are_closed_at_the_idle_timeout() {
    // Guards against idle connections costing much memory each, and against them living
    // forever.
    let _g = serial();
    let limit = raise_nofile();
    let conns = count(10_000, 10_000).min(limit.saturating_sub(200) as usize);
    if conns < 1000 {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: ten_thousand_idle_connections: RLIMIT_NOFILE is {limit}"
        );
        return;
    }
    for io in backends(6) {
        let dir = tempfile::tempdir().unwrap();
        // Long enough to connect them all and measure; short enough to wait for.
        let idle_ms = count(8_000, 30_000).to_string();
        let mut server = start_server(dir.path(), io, &["--idle-timeout-ms", &idle_ms]);
        let pid = server.child.id();
        let held = Arc::new(Mutex::new(Vec::new()));
        let held_by_attacker = held.clone();
        let out = under_attack(
            &format!("{io}: {conns} idle connections"),
            &mut server,
            256,
            move |addr, ready, stop| {
                let mut open = Vec::with_capacity(conns);
                for i in 0..conns {
                    // Half send nothing at all; half finish the native hello and go quiet.
                    let s = if i % 2 == 0 {
                        TcpStream::connect(addr)
                    } else {
                        native_stream(addr)
                    };
                    open.push(s.expect("connect"));
                }
                ready.store(true, Ordering::Release);
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                *held_by_attacker.lock().unwrap() = open;
                conns as u64
            },
        );
        let per_conn = (out.hwm_kib.saturating_sub(out.rss_base_kib)) * 1024 / conns as u64;
        println!("hostile: {io}: about {per_conn} bytes of RSS per idle connection");
        // The idle timeout closes them all.
        let mut open = std::mem::take(&mut *held.lock().unwrap());
        let t0 = Instant::now();
        for (i, s) in open.iter_mut().enumerate() {
            let left = Duration::from_secs(40).saturating_sub(t0.elapsed());
            let (_, closed) = read_to_close(s, left);
            assert!(
                closed,
                "{io}: idle connection {i} outlived the idle timeout"
            );
        }
        println!(
            "hostile: {io}: every idle connection closed within {:?} after the attack ended",
            t0.elapsed()
        );
        let _ = pid;
    }
}

#[test]
fn random_bytes_never_crash_the_server() {
    // Guards against a decoder panicking (and taking the worker down) on arbitrary input,
    // whether it arrives first on a connection or after a valid native hello or RESP command.
    let _g = serial();
    for io in backends(7) {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start_server(dir.path(), io, &["--frame-timeout-ms", "1000"]);
        under_attack(
            &format!("{io}: random bytes"),
            &mut server,
            128,
            move |addr, ready, stop| {
                let mut rng = 0x6b76_735f_686f_7374u64;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut acts = 0;
                while !stop.load(Ordering::Acquire) || acts < 300 {
                    let mut open = Vec::new();
                    for _ in 0..50 {
                        let mut bytes = match next() % 3 {
                            0 => {
                                let mut h = Vec::new();
                                encode_client_hello(&mut h);
                                h
                            }
                            1 => b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec(),
                            _ => Vec::new(),
                        };
                        let len = (next() % 512) as usize;
                        bytes.extend((0..len).map(|_| next() as u8));
                        let Ok(mut s) = TcpStream::connect(addr) else {
                            continue;
                        };
                        let _ = s.write_all(&bytes);
                        let _ = s.shutdown(std::net::Shutdown::Write);
                        open.push(s);
                    }
                    for mut s in open {
                        let (_, closed) = read_to_close(&mut s, Duration::from_secs(10));
                        assert!(
                            closed,
                            "random input left a connection open past the frame timeout"
                        );
                        acts += 1;
                    }
                    ready.store(true, Ordering::Release);
                }
                acts
            },
        );
    }
}

#[test]
fn resets_in_the_middle_of_frames_leave_nothing_behind() {
    // Guards against a connection reset mid-frame (SO_LINGER 0, then close) leaking the
    // session, its buffer, or a started request, applying the cut request, or taking the
    // worker down. Each hostile connection sends a whole request (started when the reset
    // comes), then part of a 256 KiB SET of another key, then resets. The large SET is never
    // whole, so it must never land. The whole request is a GET, then, in a second attack, a
    // small SET: under `--fsync always` that attacker is also a writer whose syncs the
    // well-behaved client's SETs share.
    let _g = serial();
    let request = |request: Request| {
        let mut frame = Vec::new();
        encode_request(&request, &mut frame).unwrap();
        frame
    };
    let set = |key: &'static [u8], len: usize| Request::Set {
        key: Bytes::from_static(key),
        value: Bytes::from(vec![b'r'; len]),
    };
    let cut_short = request(set(b"reset-cut", 256 * 1024));
    let attacks = [
        (
            "resets mid-frame",
            request(Request::Get {
                key: Bytes::from_static(b"reset"),
            }),
        ),
        (
            "resets mid-frame after a whole SET",
            request(set(b"reset", 100)),
        ),
    ];
    for io in backends(8) {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start_server(dir.path(), io, &[]);
        for (name, whole) in &attacks {
            let (whole, cut_short) = (whole.clone(), cut_short.clone());
            under_attack(
                &format!("{io}: {name}"),
                &mut server,
                128,
                move |addr, ready, stop| {
                    let mut acts = 0u64;
                    while !stop.load(Ordering::Acquire) || acts < 500 {
                        let Ok(mut s) = native_stream(addr) else {
                            continue;
                        };
                        // A whole request, then part of the next, then a reset.
                        let cut = (acts as usize * 7919) % cut_short.len();
                        let _ = s.write_all(&whole);
                        let _ = s.write_all(&cut_short[..cut]);
                        socket2::SockRef::from(&s)
                            .set_linger(Some(Duration::ZERO))
                            .unwrap();
                        drop(s);
                        acts += 1;
                        if acts == 50 {
                            ready.store(true, Ordering::Release);
                        }
                    }
                    acts
                },
            );
        }
        // The reset sessions are gone: the server can still take its full share.
        let mut c = NativeConn::connect(server.addr);
        assert_eq!(c.get("reset").map(|v| v.len()), Some(100));
        assert_eq!(
            c.get("reset-cut"),
            None,
            "a request cut by a reset was applied"
        );
    }
}

#[test]
fn writers_faster_than_the_disk_get_back_pressure_not_errors() {
    // Guards against overload (many connections pipelining SETs under --fsync always) growing
    // memory without bound or failing requests: the only answer to overload is back-pressure.
    let _g = serial();
    for io in backends(9) {
        let dir = tempfile::tempdir().unwrap();
        let mut server = start_server(dir.path(), io, &["--fsync", "always"]);
        let writers = count(16, 64);
        let acked = Arc::new(AtomicU64::new(0));
        let acked_by_attack = acked.clone();
        let out = under_attack_with(
            &format!("{io}: overload, {writers} writers pipelining 16 KiB SETs, fsync always"),
            &mut server,
            512,
            // Graceful: a p99 of a few group commits behind every writer's window, not a stall.
            Some(Duration::from_secs(2)),
            move |addr, ready, stop| {
                let handles: Vec<_> = (0..writers)
                    .map(|w| {
                        let stop = stop.clone();
                        let acked = acked_by_attack.clone();
                        std::thread::spawn(move || {
                            let mut c = NativeConn::connect(addr);
                            let value = Bytes::from(vec![b'o'; 16 * 1024]);
                            let window = 32;
                            let mut i = 0u64;
                            while !stop.load(Ordering::Acquire) {
                                let reqs: Vec<Request> = (0..window)
                                    .map(|j| Request::Set {
                                        key: Bytes::from(format!("w{w}-{}", (i + j) % 256)),
                                        value: value.clone(),
                                    })
                                    .collect();
                                c.send(&reqs);
                                for _ in 0..window {
                                    let r = c.recv().expect("an overloaded server keeps answering");
                                    assert_eq!(r, Response::Ok, "overload answered with an error");
                                    acked.fetch_add(1, Ordering::Relaxed);
                                }
                                i += window;
                            }
                        })
                    })
                    .collect();
                let deadline = Instant::now() + Duration::from_secs(30);
                while acked_by_attack.load(Ordering::Relaxed) < 1000 {
                    assert!(
                        Instant::now() < deadline,
                        "the overload writers made no progress"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                ready.store(true, Ordering::Release);
                for h in handles {
                    h.join().expect("an overload writer");
                }
                acked_by_attack.load(Ordering::Relaxed)
            },
        );
        println!(
            "hostile: {io}: overload: {} SETs acknowledged; the well-behaved p99 went from {:?} to {:?}",
            acked.load(Ordering::Relaxed),
            out.quiet,
            out.attacked
        );
        let _ = out.attacks;
    }
}
