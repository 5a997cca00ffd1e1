//! Passwords, through the real binaries: `kvs-server --requirepass-file` (and `--requirepass`),
//! the native protocol's `Auth`, RESP's `AUTH` and `HELLO ... AUTH`, `kvs-client --password`
//! and `KVS_PASSWORD`, the delay of failed attempts and the close after ten, the refusal of a
//! non-loopback address without a password, and a log that never holds the password.
//!
//! Every server here listens on 127.0.0.1. The non-loopback rule is checked by starting a
//! server that must refuse before binding anything; the rule's cases are unit tests in
//! `src/server/auth.rs`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kvs::client::ClientOptions;
use kvs::protocol::resp::Reply;
use kvs::protocol::{ErrorKind, Request, Response};
use kvs::{KvsClient, KvsError, Password};
use support::native::NativeConn;
use support::server::{io_backends, redis_tool, run_to_exit, Server, ServerBuilder};
use support::wire::RespClient;

/// The servers' password: distinctive, so a log search cannot miss it.
const PASSWORD: &str = "Kvs-s3cret-7a1e-horse";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOAUTH: &str = "NOAUTH Authentication required.";

/// A server with a password file, one unpinned worker (so every connection shares it), and
/// `extra` flags. The password file is written with `mode`.
struct Locked {
    server: Server,
    _dir: tempfile::TempDir,
}

impl Locked {
    fn start(io: &str, mode: u32, extra: &[&str]) -> Locked {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let server = ServerBuilder::new(&data)
            .io(io)
            .args(["--cores", "1", "--no-pin", "--requirepass-file"])
            .arg(file.to_str().unwrap())
            .args(extra.iter().copied())
            .start();
        Locked { server, _dir: dir }
    }
}

fn error(text: &str) -> Reply {
    Reply::Error(text.into())
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn auth(password: &str) -> Request {
    Request::Auth {
        password: bytes(password),
    }
}

fn error_kind(response: &Response) -> Option<ErrorKind> {
    match response {
        Response::Error { kind, .. } => Some(*kind),
        _ => None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn kvs_client(addr: std::net::SocketAddr, args: &[&str], env_password: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvs-client"));
    cmd.arg("--addr").arg(addr.to_string()).args(args);
    cmd.env_remove("KVS_PASSWORD");
    if let Some(p) = env_password {
        cmd.env("KVS_PASSWORD", p);
    }
    cmd.output().expect("run kvs-client")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).unwrap().next().is_none()
}

#[test]
fn a_non_loopback_address_without_a_password_is_refused_before_anything_is_bound() {
    // Guards against a server open to other machines without a password, or refusing after binding.
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let dir = tempfile::tempdir().unwrap();
        let cmd = ServerBuilder::new(dir.path())
            .addr(addr.parse().unwrap())
            .command();
        let (status, err) = run_to_exit(cmd, Duration::from_secs(30));
        assert!(!status.success(), "{addr}: {err}");
        let line = err
            .lines()
            .find(|l| l.starts_with("kvs-server: "))
            .unwrap_or_else(|| panic!("{addr}: no kvs-server: line in {err}"));
        assert!(
            line.contains(addr)
                && line.contains("--requirepass-file PATH")
                && line.contains("--requirepass PASSWORD")
                && line.contains("not a loopback address"),
            "{line}"
        );
        assert!(
            empty_dir(dir.path()),
            "{addr}: the data directory was touched"
        );
    }
}

#[test]
fn password_flags_that_cannot_work_are_refused_without_printing_the_password() {
    // Guards against starting without the password meant, or printing it when refusing it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let run = |args: &[&str]| {
        let cmd = ServerBuilder::new(&data)
            .args(args.iter().copied())
            .command();
        run_to_exit(cmd, Duration::from_secs(30))
    };
    let long = format!("{PASSWORD}{}", "x".repeat(600));
    let (status, err) = run(&["--requirepass", &long]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--requirepass <PASSWORD>") && err.contains("the limit is 512"));
    assert!(!err.contains(PASSWORD), "{err}");
    let (status, err) = run(&["--requirepass", ""]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("empty"), "{err}");
    std::fs::write(&file, "\n").unwrap();
    let (status, err) = run(&["--requirepass-file", file.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("password file") && err.contains("pw") && err.contains("empty"));
    let (status, err) = run(&[
        "--requirepass",
        PASSWORD,
        "--requirepass-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(empty_dir(&data));
}

#[test]
fn native_clients_get_nothing_before_the_password() {
    // Guards against native requests served before Auth, or a wrong password let in or misreported.
    for io in io_backends() {
        let locked = Locked::start(io, 0o600, &[]);
        let addr = locked.server.addr;
        let mut c = NativeConn::connect(addr);
        for request in [
            Request::Ping,
            Request::Stats,
            Request::Get { key: bytes("k") },
            Request::Set {
                key: bytes("k"),
                value: bytes("v"),
            },
        ] {
            let answer = c.call(request.clone());
            assert_eq!(
                error_kind(&answer),
                Some(ErrorKind::AuthRequired),
                "{io}: {request:?}: {answer:?}"
            );
        }
        let answer = c.call(auth("wrong"));
        assert_eq!(error_kind(&answer), Some(ErrorKind::WrongPassword), "{io}");
        assert_eq!(
            error_kind(&c.call(Request::Ping)),
            Some(ErrorKind::AuthRequired)
        );
        assert_eq!(c.call(auth(PASSWORD)), Response::Ok, "{io}");
        c.set("k", "v");
        assert_eq!(c.get("k").as_deref(), Some("v"));
        assert_eq!(c.call(Request::Ping), Response::Pong);

        let rt = runtime();
        rt.block_on(async {
            let mut anonymous = KvsClient::connect(addr).await.unwrap();
            assert!(matches!(
                anonymous.get("k").await,
                Err(KvsError::AuthRequired)
            ));
            let with = |p: &str| ClientOptions {
                password: Some(Password::new(p.to_owned()).unwrap()),
                ..ClientOptions::default()
            };
            assert!(matches!(
                KvsClient::connect_with(addr, with("wrong")).await,
                Err(KvsError::WrongPassword)
            ));
            let mut client = KvsClient::connect_with(addr, with(PASSWORD)).await.unwrap();
            assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
            client.set("k2", "v2").await.unwrap();
            // auth() on a connection opened without a password.
            anonymous
                .auth(&Password::new(PASSWORD).unwrap())
                .await
                .unwrap();
            assert_eq!(
                anonymous.get("k2").await.unwrap().as_deref(),
                Some(&b"v2"[..])
            );
        });
    }
}

#[test]
fn kvs_client_takes_the_password_from_the_flag_or_kvs_password() {
    // Guards against a CLI password source ignored, or a refusal without exit 1 and a sentence.
    let locked = Locked::start("blocking", 0o600, &[]);
    let addr = locked.server.addr;
    let out = kvs_client(addr, &["set", "k", "v"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "kvs-client: the server requires a password: give it with --password PASSWORD or in \
         the KVS_PASSWORD environment variable\n"
    );
    let refused = "kvs-client: the server refused the password (given with --password or \
                   KVS_PASSWORD)\n";
    let out = kvs_client(addr, &["set", "k", "v", "--password", "wrong"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), refused);
    let out = kvs_client(addr, &["get", "k"], Some("wrong"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), refused);
    // The flag, before or after the command.
    let out = kvs_client(addr, &["--password", PASSWORD, "set", "k", "v"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = kvs_client(addr, &["get", "k", "--password", PASSWORD], None);
    assert_eq!(text(&out.stdout), "v\n");
    // The variable, and the flag winning over it either way.
    let out = kvs_client(addr, &["get", "k"], Some(PASSWORD));
    assert_eq!(text(&out.stdout), "v\n", "{}", text(&out.stderr));
    let out = kvs_client(addr, &["get", "k", "--password", PASSWORD], Some("wrong"));
    assert_eq!(text(&out.stdout), "v\n", "{}", text(&out.stderr));
    let out = kvs_client(addr, &["get", "k", "--password", "wrong"], Some(PASSWORD));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), refused);
    // A password over the limit is a usage error that does not quote it.
    let long = "q".repeat(600);
    let out = kvs_client(addr, &["get", "k", "--password", &long], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(!text(&out.stderr).contains("qqq"));
    let out = kvs_client(addr, &["get", "k"], Some(&long));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "kvs-client: KVS_PASSWORD: the password is 600 bytes; the limit is 512 bytes\n"
    );
}

#[test]
fn resp_clients_get_redis_replies_before_and_after_auth() {
    // Guards against Redis clients failing to authenticate, or being served before they do.
    for io in io_backends() {
        let locked = Locked::start(io, 0o600, &[]);
        let addr = locked.server.addr;
        let mut c = RespClient::connect(addr);
        assert_eq!(c.command(&[b"GET", b"k"]), error(NOAUTH), "{io}");
        assert_eq!(c.command(&[b"PING"]), error(NOAUTH));
        assert_eq!(
            c.command(&[b"HELLO"]),
            error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise \
                 the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
                 client and select the RESP protocol version at the same time"
            )
        );
        assert_eq!(c.command(&[b"AUTH", b"wrong"]), error(WRONGPASS));
        assert_eq!(
            c.command(&[b"AUTH", b"bob", PASSWORD.as_bytes()]),
            error(WRONGPASS)
        );
        assert_eq!(c.command(&[b"AUTH", PASSWORD.as_bytes()]), ok());
        assert_eq!(c.command(&[b"SET", b"k", b"v"]), ok());

        let mut d = RespClient::connect(addr);
        assert_eq!(
            d.command(&[b"AUTH", b"default", PASSWORD.as_bytes()]),
            ok(),
            "{io}"
        );
        assert_eq!(d.command(&[b"GET", b"k"]), Reply::Bulk(Some(bytes("v"))));

        let mut e = RespClient::connect(addr);
        let hello = e.command(&[
            b"HELLO",
            b"2",
            b"AUTH",
            b"default",
            PASSWORD.as_bytes(),
            b"SETNAME",
            b"h",
        ]);
        assert!(
            matches!(&hello, Reply::Array(Some(m)) if m.len() == 14 && m.contains(&Reply::Integer(2))),
            "{io}: {hello:?}"
        );
        assert_eq!(
            e.command(&[b"CLIENT", b"GETNAME"]),
            Reply::Bulk(Some(bytes("h")))
        );
        assert_eq!(e.command(&[b"GET", b"k"]), Reply::Bulk(Some(bytes("v"))));
    }
    // A server without a password answers AUTH as Redis does.
    let dir = tempfile::tempdir().unwrap();
    let open = ServerBuilder::new(dir.path()).io("blocking").start();
    let mut c = RespClient::connect(open.addr);
    assert_eq!(
        c.command(&[b"AUTH", b"anything"]),
        error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?"
        )
    );
    assert_eq!(c.command(&[b"PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn redis_cli_with_a_password_works_against_kvs() {
    // Guards against `redis-cli -a` (the way operators reach a protected Redis) failing on kvs.
    let Some(cli) = redis_tool("redis-cli", "redis_cli_with_a_password_works_against_kvs") else {
        return;
    };
    let locked = Locked::start("blocking", 0o600, &[]);
    let port = locked.server.addr.port().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(&cli)
            .args(["-h", "127.0.0.1", "-p", &port, "--no-auth-warning"])
            .args(args)
            .output()
            .unwrap();
        (text(&out.stdout), text(&out.stderr))
    };
    let (out, _) = run(&["SET", "k", "v"]);
    assert_eq!(out.trim(), NOAUTH);
    let (out, err) = run(&["-a", "wrong", "GET", "k"]);
    assert!(
        err.contains(WRONGPASS) || out.contains(WRONGPASS),
        "{out} {err}"
    );
    let (out, _) = run(&["-a", PASSWORD, "SET", "k", "v"]);
    assert_eq!(out.trim(), "OK");
    let (out, _) = run(&["-a", PASSWORD, "GET", "k"]);
    assert_eq!(out.trim(), "v");
    let (out, _) = run(&["--user", "default", "--pass", PASSWORD, "GET", "k"]);
    assert_eq!(out.trim(), "v");
}

#[test]
fn a_failed_attempt_is_answered_late_without_holding_up_the_worker() {
    // Guards against guessing at full speed, or a delay blocking the worker's other connections.
    for io in io_backends() {
        let delay = Duration::from_millis(1000);
        let locked = Locked::start(io, 0o600, &["--auth-fail-delay-ms", "1000"]);
        let addr = locked.server.addr;
        let mut good = RespClient::connect(addr);
        assert_eq!(good.command(&[b"AUTH", PASSWORD.as_bytes()]), ok());
        assert_eq!(good.command(&[b"SET", b"k", b"v"]), ok());
        let resp_guess = std::thread::spawn(move || {
            let mut bad = RespClient::connect(addr);
            let started = Instant::now();
            let reply = bad.command(&[b"AUTH", b"guess"]);
            (reply, started.elapsed())
        });
        let native_guess = std::thread::spawn(move || {
            let mut bad = NativeConn::connect(addr);
            let started = Instant::now();
            let answer = bad.call(auth("guess"));
            (error_kind(&answer), started.elapsed())
        });
        let mut served = 0;
        let mut slowest = Duration::ZERO;
        while !(resp_guess.is_finished() && native_guess.is_finished()) {
            let started = Instant::now();
            assert_eq!(good.command(&[b"GET", b"k"]), Reply::Bulk(Some(bytes("v"))));
            slowest = slowest.max(started.elapsed());
            served += 1;
        }
        let (reply, resp_took) = resp_guess.join().unwrap();
        let (kind, native_took) = native_guess.join().unwrap();
        assert_eq!(reply, error(WRONGPASS), "{io}");
        assert_eq!(kind, Some(ErrorKind::WrongPassword), "{io}");
        assert!(
            resp_took >= delay,
            "{io}: RESP guess answered in {resp_took:?}"
        );
        assert!(
            native_took >= delay,
            "{io}: native guess answered in {native_took:?}"
        );
        assert!(
            served >= 5 && slowest < delay / 2,
            "{io}: the other client got {served} answers, the slowest in {slowest:?}"
        );
        eprintln!(
            "{io}: guesses answered after {resp_took:?} (RESP) and {native_took:?} (native); \
             meanwhile {served} GETs on the same worker, the slowest {slowest:?}"
        );
    }
}

#[test]
fn the_tenth_failure_closes_the_connection() {
    // Guards against a connection guessing forever, or pipelined guesses answered in parallel.
    for io in io_backends() {
        let locked = Locked::start(io, 0o600, &["--auth-fail-delay-ms", "5"]);
        let addr = locked.server.addr;
        // Delays 5, 10, 20, 40, then 50 (ten times the first) six times: 375 ms in all.
        let least = Duration::from_millis(375);
        let mut c = RespClient::connect(addr);
        let mut guesses = Vec::new();
        for i in 0..10 {
            kvs::protocol::resp::encode_command(
                &[b"AUTH", format!("g{i}").as_bytes()],
                &mut guesses,
            );
        }
        let started = Instant::now();
        c.send(&guesses);
        for i in 0..10 {
            assert_eq!(c.reply(), error(WRONGPASS), "{io}: guess {i}");
        }
        assert!(started.elapsed() >= least, "{io}: {:?}", started.elapsed());
        assert!(
            c.closed(),
            "{io}: RESP connection still open after ten failures"
        );

        let mut n = NativeConn::connect(addr);
        let started = Instant::now();
        n.send(&(0..10).map(|i| auth(&format!("g{i}"))).collect::<Vec<_>>());
        for i in 0..10 {
            let answer = n.recv().expect("an answer");
            assert_eq!(
                error_kind(&answer),
                Some(ErrorKind::WrongPassword),
                "{io}: {i}"
            );
        }
        assert!(started.elapsed() >= least, "{io}: {:?}", started.elapsed());
        assert_eq!(n.recv(), None, "{io}: native connection still open");
        // Others are not affected: a new connection authenticates at once.
        let mut fresh = RespClient::connect(addr);
        assert_eq!(fresh.command(&[b"AUTH", PASSWORD.as_bytes()]), ok());
    }
}

#[test]
fn the_password_never_reaches_the_log() {
    // Guards against the password or a guess in any server log line, at debug level too.
    let guesses = ["guess-Alpha-1", "guess-Bravo-2", "guess-Charlie-3"];
    let exercise = |addr| {
        let mut r = RespClient::connect(addr);
        assert_eq!(
            r.command(&[b"AUTH", guesses[0].as_bytes()]),
            error(WRONGPASS)
        );
        assert_eq!(r.command(&[b"AUTH", PASSWORD.as_bytes()]), ok());
        let mut h = RespClient::connect(addr);
        let hello = h.command(&[b"HELLO", b"2", b"AUTH", b"default", PASSWORD.as_bytes()]);
        assert!(matches!(hello, Reply::Array(_)));
        let mut n = NativeConn::connect(addr);
        n.send(&vec![auth(guesses[1]); 10]);
        for _ in 0..10 {
            assert!(n.recv().is_some());
        }
        assert_eq!(n.recv(), None);
        let mut n = NativeConn::connect(addr);
        assert_eq!(n.call(auth(PASSWORD)), Response::Ok);
        assert_eq!(
            error_kind(&n.call(auth(guesses[2]))),
            Some(ErrorKind::WrongPassword)
        );
    };
    let check = |log: &str, how: &str| {
        assert!(
            !log.contains(PASSWORD),
            "{how}: the password is in the log:\n{log}"
        );
        for guess in guesses {
            assert!(!log.contains(guess), "{how}: {guess} is in the log:\n{log}");
        }
        assert!(log.contains("password_required=true"), "{how}:\n{log}");
        assert!(
            log.contains("closing a connection after 10 failed password attempts"),
            "{how}:\n{log}"
        );
    };

    let dir = tempfile::tempdir().unwrap();
    let server = ServerBuilder::new(dir.path())
        .io("blocking")
        .args([
            "--cores",
            "1",
            "--auth-fail-delay-ms",
            "1",
            "--requirepass",
            PASSWORD,
        ])
        .env("RUST_LOG", "debug")
        .start();
    exercise(server.addr);
    assert!(server.wait_log("failed password attempts", Duration::from_secs(10)));
    let log = server.log();
    let status = server.terminate(Duration::from_secs(10));
    assert!(status.success());
    check(&log, "--requirepass");
    assert!(log.contains("--requirepass puts the password in the process list"));

    let locked = Locked::start("blocking", 0o644, &["--auth-fail-delay-ms", "1"]);
    exercise(locked.server.addr);
    assert!(locked
        .server
        .wait_log("failed password attempts", Duration::from_secs(10)));
    let log = locked.server.log();
    check(&log, "--requirepass-file");
    assert!(
        log.contains("can be read by other users (mode 0644); chmod 600 it"),
        "{log}"
    );
}

#[test]
fn kvs_bench_measures_a_protected_server_over_both_protocols() {
    // Guards against the load generator being unable to measure a server with a password.
    let locked = Locked::start("blocking", 0o600, &[]);
    let bench = |protocol: &str, password: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvs-bench"));
        cmd.arg("--addr")
            .arg(locked.server.addr.to_string())
            .args([
                "--protocol",
                protocol,
                "--connections",
                "2",
                "--pipeline",
                "4",
            ])
            .args(["--requests", "400", "--warmup", "0s", "--keys", "100"])
            .args(["--verify", "--json", "--no-progress"]);
        if let Some(p) = password {
            cmd.args(["--password", p]);
        }
        let out = cmd.output().expect("kvs-bench runs");
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    for protocol in ["native", "resp"] {
        let (ok, stdout, stderr) = bench(protocol, Some(PASSWORD));
        assert!(ok, "{protocol}: {stdout}\n{stderr}");
        let report: kvs::bench::Report = serde_json::from_str(stdout.trim()).unwrap();
        assert!(report.ops >= 400 && report.verified_gets > 0, "{protocol}");
        assert_eq!(report.errors.total, 0, "{protocol}: {:?}", report.errors);
        let (ok, _, stderr) = bench(protocol, Some("wrong"));
        assert!(
            !ok && stderr.contains("the server refused the password"),
            "{stderr}"
        );
        let (ok, _, _) = bench(protocol, None);
        assert!(!ok, "{protocol}: a run without the password succeeded");
    }
}

#[test]
fn shutdown_does_not_wait_for_a_held_back_answer() {
    // Guards against a password guesser keeping a SIGTERM'd server alive past its grace period.
    for io in io_backends() {
        let locked = Locked::start(io, 0o600, &["--auth-fail-delay-ms", "60000"]);
        let mut guess = RespClient::connect(locked.server.addr);
        guess.send(b"*2\r\n$4\r\nAUTH\r\n$5\r\nguess\r\n");
        let mut good = RespClient::connect(locked.server.addr);
        assert_eq!(good.command(&[b"AUTH", PASSWORD.as_bytes()]), ok());
        let started = Instant::now();
        let status = locked.server.terminate(Duration::from_secs(30));
        assert!(status.success(), "{io}: {status}");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{io}: exit took {:?}",
            started.elapsed()
        );
        assert!(
            guess.closed(),
            "{io}: the held-back answer was sent after all"
        );
    }
}
