//! `kvs-server` speaking RESP to the real Redis tools and to raw sockets: redis-benchmark,
//! redis-cli (one-shot and interactive), values crossing between RESP and the native
//! protocol, malformed and half-sent input against a live server, and replies compared with
//! a real redis-server's. Every scenario runs on each I/O backend the machine allows.

mod support;

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use kvs::limits::{FRAME_BYTES_MAX, KEY_BYTES_MAX, RESP_LINE_BYTES_MAX, VALUE_BYTES_MAX};
use kvs::protocol::resp::{encode_command, Reply};
use kvs::protocol::{Request, Response};
use support::server::{backends, redis_tool, KvsServer, RedisServer};
use support::wire::{NativeClient, RespClient};

/// Longest a Redis tool may run in these tests.
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(args, &mut out);
    out
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn pong() -> Reply {
    Reply::Simple("PONG".into())
}

fn value(v: &[u8]) -> Reply {
    Reply::Bulk(Some(Bytes::copy_from_slice(v)))
}

/// Runs a tool to completion, feeding it `stdin`; kills it and fails after [`TOOL_TIMEOUT`].
fn run(program: &Path, args: &[&OsStr], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        // redis-cli keeps a history file and reads an rc file in $HOME unless told otherwise.
        .env("REDISCLI_HISTFILE", "/dev/null")
        .env("REDISCLI_RCFILE", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", program.display()));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Written from its own thread, so a tool that prints before it reads cannot deadlock us.
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(TOOL_TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("{} ran longer than {TOOL_TIMEOUT:?}", program.display());
        }
    }
}

/// Runs redis-cli against `port` with `args`; asserts it succeeded and printed no error.
fn redis_cli(cli: &Path, port: u16, args: &[&[u8]], stdin: &[u8]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let port = port.to_string();
    let mut all: Vec<&OsStr> = vec![OsStr::new("-p"), OsStr::new(&port), OsStr::new("--raw")];
    all.extend(args.iter().map(|a| OsStr::from_bytes(a)));
    let out = run(cli, &all, &[], stdin);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "redis-cli {args:?}: {out:?}"
    );
    out.stdout
}

#[test]
fn redis_benchmark_set_get_mset_pipelined_completes_without_errors() {
    // Guards against replies redis-benchmark rejects, failed start-up CONFIG queries, and
    // pipelined commands misframed where they span reads.
    let Some(bench) = redis_tool("redis-benchmark", "redis_benchmark_set_get_mset") else {
        return;
    };
    for backend in backends() {
        let server = KvsServer::start(backend);
        let port = server.port().to_string();
        let args = [
            "-p",
            &port,
            "-t",
            "set,get,mset",
            "-n",
            "100000",
            "-P",
            "16",
            "-q",
        ];
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let out = run(&bench, &args, &[], b"");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{backend:?}: {stdout}\n{stderr}\nserver log:\n{}",
            server.log()
        );
        assert!(
            !format!("{stdout}{stderr}")
                .to_ascii_lowercase()
                .contains("error"),
            "{backend:?}: {stdout}\n{stderr}"
        );
        assert!(
            !stderr.contains("Could not fetch server CONFIG"),
            "{backend:?}: {stderr}"
        );
        let results: Vec<&str> = stdout
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|l| l.contains("requests per second"))
            .collect();
        for test in ["SET:", "GET:", "MSET (10 keys):"] {
            assert!(
                results.iter().any(|l| l.starts_with(test)),
                "{backend:?}: no {test} result in {results:?}"
            );
        }
        println!("{backend:?}: {results:?}");
        // Without -r every command uses the one key `key:__rand_int__`.
        let mut resp = RespClient::connect(server.addr());
        assert_eq!(resp.command(&[b"DBSIZE"]), Reply::Integer(1));
        assert!(
            matches!(resp.command(&[b"GET", b"key:__rand_int__"]), Reply::Bulk(Some(v)) if v.len() == 3)
        );
    }
}

#[test]
fn redis_cli_round_trips_binary_values_and_values_with_crlf() {
    // Guards against redis-cli writes or reads of unusual bytes being altered by the server.
    let Some(cli) = redis_tool("redis-cli", "redis_cli_round_trips") else {
        return;
    };
    let binary: Vec<u8> = (0..=255u8)
        .chain(*b"\r\n$3\r\n*1\r\n\r\n")
        .chain((0..=255u8).rev())
        .collect();
    for backend in backends() {
        let server = KvsServer::start(backend);
        let port = server.port();
        // -x takes the last argument from standard input, byte for byte.
        assert_eq!(
            redis_cli(&cli, port, &[b"-x", b"SET", b"bin"], &binary),
            b"OK\n"
        );
        assert_eq!(
            redis_cli(
                &cli,
                port,
                &[b"SET", b"crlf\r\nkey", b"line1\r\nline2\r\n"],
                b""
            ),
            b"OK\n"
        );
        // Commands read from standard input are split like inline commands, escapes included.
        let script = b"SET esc \"a\\x00b\\r\\nc\\xff\"\nGET esc\n";
        let replies = redis_cli(&cli, port, &[], script);
        assert_eq!(
            replies,
            b"OK\na\0b\r\nc\xff\n",
            "{:?}",
            String::from_utf8_lossy(&replies)
        );

        let mut with_newline = binary.clone();
        with_newline.push(b'\n');
        assert_eq!(redis_cli(&cli, port, &[b"GET", b"bin"], b""), with_newline);
        assert_eq!(
            redis_cli(&cli, port, &[b"GET", b"crlf\r\nkey"], b""),
            b"line1\r\nline2\r\n\n"
        );
        assert_eq!(
            redis_cli(
                &cli,
                port,
                &[b"EXISTS", b"bin", b"crlf\r\nkey", b"esc", b"nope"],
                b""
            ),
            b"3\n"
        );
        assert_eq!(redis_cli(&cli, port, &[b"DBSIZE"], b""), b"3\n");

        // The same bytes as a RESP client sees them.
        let mut resp = RespClient::connect(server.addr());
        assert_eq!(resp.command(&[b"GET", b"bin"]), value(&binary));
        assert_eq!(resp.command(&[b"GET", b"esc"]), value(b"a\0b\r\nc\xff"));

        let info = String::from_utf8(redis_cli(&cli, port, &[b"INFO"], b"")).unwrap();
        assert!(
            info.contains(&format!("io_backend:{}\r\n", backend.flag())),
            "{info}"
        );
        assert!(info.contains(&format!("tcp_port:{port}\r\n")), "{info}");
        assert!(
            info.contains("# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n"),
            "{info}"
        );
        assert_eq!(
            redis_cli(&cli, port, &[b"DEL", b"bin", b"esc", b"nope"], b""),
            b"2\n"
        );

        // Asked for RESP3, redis-cli reports the refusal and carries on in RESP2.
        let port_arg = port.to_string();
        let words = ["-3", "-p", port_arg.as_str(), "PING"];
        let args: Vec<&OsStr> = words.iter().map(OsStr::new).collect();
        let out = run(&cli, &args, &[], b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && out.stdout == b"PONG\n",
            "{backend:?}: {out:?}"
        );
        assert!(
            stderr.contains("NOPROTO unsupported protocol version"),
            "{backend:?}: {stderr}"
        );
    }
}

#[test]
fn redis_cli_interactive_start_up_reads_command_docs() {
    // Guards against redis-cli crashing or showing no help on COMMAND DOCS at start-up.
    let Some(cli) = redis_tool("redis-cli", "redis_cli_interactive_start_up") else {
        return;
    };
    let Some(script) = which("script") else {
        {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: redis_cli_interactive_start_up: `script` (util-linux) is not installed"
            );
        }
        return;
    };
    for backend in backends() {
        let server = KvsServer::start(backend);
        // `script` gives redis-cli a terminal, so it starts its interactive mode and loads help
        // with COMMAND DOCS; TERM=dumb keeps its line editor from querying the terminal.
        let line = format!("{} -p {}", cli.display(), server.port());
        let words = ["-qec", line.as_str(), "/dev/null"];
        let args: Vec<&OsStr> = words.iter().map(OsStr::new).collect();
        let session = b"help get\nhelp mset\nset k \"v\\r\\nw\"\nget k\nclient setname me\nclient getname\nquit\n";
        let out = run(&script, &args, &[("TERM", "dumb")], session);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{backend:?}: {out:?}");
        assert!(
            text.contains("Returns the value of a key"),
            "{backend:?}: no GET summary in {text}"
        );
        assert!(
            text.contains("key value [key value ...]"),
            "{backend:?}: no MSET arguments in {text}"
        );
        assert!(
            text.contains("\"v\\r\\nw\"") && text.contains("\"me\""),
            "{backend:?}: {text}"
        );
        assert!(
            !text.contains("Unknown type") && !text.contains("ERR"),
            "{backend:?}: {text}"
        );
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Values that tend to break text protocols.
fn awkward_values() -> Vec<Vec<u8>> {
    let mut big = Vec::with_capacity(1 << 20);
    for i in 0..(1 << 20) {
        big.push(if i % 100 == 98 {
            b'\r'
        } else if i % 100 == 99 {
            b'\n'
        } else {
            (i % 251) as u8
        });
    }
    vec![
        Vec::new(),
        b"plain".to_vec(),
        b"a\r\nb".to_vec(),
        b"$5\r\nfake\r\n*1\r\n".to_vec(),
        (0..=255u8).collect(),
        vec![0xff, 0xfe, 0x00, 0x80],
        big,
    ]
}

#[test]
fn values_written_over_resp_read_back_identical_over_native_and_back() {
    // Guards against either protocol altering bytes the other wrote, on any backend.
    for backend in backends() {
        let server = KvsServer::start(backend);
        let mut resp = RespClient::connect(server.addr());
        let mut native = NativeClient::connect(server.addr());
        for (i, v) in awkward_values().iter().enumerate() {
            let resp_key = format!("resp\r\n{i}\0").into_bytes();
            let native_key = format!("native\r\n{i}\u{ff}").into_bytes();
            assert_eq!(
                resp.command(&[b"SET", &resp_key, v]),
                ok(),
                "{backend:?} value {i}"
            );
            assert_eq!(
                native.get(&resp_key).as_deref(),
                Some(&v[..]),
                "{backend:?} value {i}"
            );
            native.set(&native_key, v);
            assert_eq!(
                resp.command(&[b"GET", &native_key]),
                value(v),
                "{backend:?} value {i}"
            );
            assert_eq!(
                resp.command(&[b"MGET", &native_key, b"absent", &resp_key]),
                Reply::Array(Some(vec![value(v), Reply::Bulk(None), value(v)])),
                "{backend:?} value {i}"
            );
            assert_eq!(resp.command(&[b"DEL", &resp_key]), Reply::Integer(1));
            assert_eq!(native.get(&resp_key), None);
            assert_eq!(
                native.request(&Request::Remove {
                    key: Bytes::from(native_key.clone())
                }),
                Response::Ok
            );
            assert_eq!(resp.command(&[b"EXISTS", &native_key]), Reply::Integer(0));
        }
    }
}

#[test]
fn malformed_resp_gets_an_error_and_a_close_and_the_server_stays_up() {
    // Guards against bad input crashing the server, hanging a connection, or being read on.
    let too_long_inline = vec![b'a'; RESP_LINE_BYTES_MAX + 10];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"*1\r\n$-5\r\n".to_vec(),
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$99999999999999\r\n".to_vec(),
            "ERR Protocol error: invalid bulk length",
        ),
        (
            format!("*1\r\n${}\r\n", FRAME_BYTES_MAX + 1).into_bytes(),
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*-3\r\n".to_vec(),
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*4294967296\r\n".to_vec(),
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*2\r\n$4\r\nECHO\r\n$1\r\nabc\r\n".to_vec(),
            "ERR Protocol error: expected '\\r\\n' after bulk data",
        ),
        (
            b"*2\r\n$4\r\nECHO\r\n$3\r\nabc\rX".to_vec(),
            "ERR Protocol error: expected '\\r\\n' after bulk data",
        ),
        (
            b"*1\r\n:1\r\n".to_vec(),
            "ERR Protocol error: expected '$', got ':'",
        ),
        (
            b"ECHO \"unterminated\r\n".to_vec(),
            "ERR Protocol error: unbalanced quotes in request",
        ),
        (
            too_long_inline,
            "ERR Protocol error: too big inline request",
        ),
    ];
    for backend in backends() {
        let mut server = KvsServer::start(backend);
        for (bad, message) in &cases {
            let mut c = RespClient::connect(server.addr());
            let mut input = cmd(&[b"PING"]);
            input.extend_from_slice(bad);
            c.send(&input);
            assert_eq!(c.reply(), pong(), "{backend:?}: {message}");
            assert_eq!(c.reply(), Reply::Error((*message).into()), "{backend:?}");
            assert!(c.closed(), "{backend:?}: still open after {message}");
        }
        let mut fresh = RespClient::connect(server.addr());
        assert_eq!(fresh.command(&[b"PING"]), pong());
        assert!(server.is_running(), "{backend:?}: {}", server.log());
    }
}

#[test]
fn half_sent_command_waits_for_its_rest_and_one_abandoned_changes_nothing() {
    // Guards against acting on an incomplete command, or a partial one stalling other clients.
    for backend in backends() {
        let mut server = KvsServer::start(backend);
        let mut other = RespClient::connect(server.addr());
        let value_bytes = b"v\r\nw".repeat(2000);
        for n in 0..8 {
            let key = format!("half{n}").into_bytes();
            let full = cmd(&[b"SET", &key, &value_bytes]);
            // In the array header, a bulk header, a bulk's CRLF, the payload, and just before
            // and between the last CR and LF.
            let split = [1, 2, 5, 12, 20, 30, full.len() - 2, full.len() - 1][n];
            let mut writer = RespClient::connect(server.addr());
            writer.send(&full[..split]);
            assert_eq!(
                other.command(&[b"PING"]),
                pong(),
                "{backend:?} split {split}"
            );
            assert_eq!(
                other.command(&[b"GET", &key]),
                Reply::Bulk(None),
                "{backend:?} split {split}"
            );
            writer.send(&full[split..]);
            assert_eq!(writer.reply(), ok(), "{backend:?} split {split}");
            assert_eq!(
                other.command(&[b"GET", &key]),
                value(&value_bytes),
                "{backend:?} split {split}"
            );

            let abandoned = format!("gone{n}").into_bytes();
            let mut quitter = RespClient::connect(server.addr());
            quitter.send(&cmd(&[b"SET", &abandoned, b"x"])[..split.min(20)]);
            drop(quitter);
            assert_eq!(
                other.command(&[b"GET", &abandoned]),
                Reply::Bulk(None),
                "{backend:?} split {split}"
            );
        }
        assert!(server.is_running(), "{backend:?}: {}", server.log());
    }
}

#[test]
fn oversized_keys_and_values_over_resp_are_refused_and_the_connection_stays_open() {
    // Guards against the RESP path skipping the limits the native protocol enforces.
    for backend in backends() {
        let server = KvsServer::start(backend);
        let mut c = RespClient::connect(server.addr());
        let big_value = vec![b'v'; VALUE_BYTES_MAX + 1];
        let big_key = vec![b'k'; KEY_BYTES_MAX + 1];
        let value_err = format!(
            "ERR value is {} bytes; the limit is {VALUE_BYTES_MAX} bytes",
            VALUE_BYTES_MAX + 1
        );
        let key_err = format!(
            "ERR key is {} bytes; the limit is {KEY_BYTES_MAX} bytes",
            KEY_BYTES_MAX + 1
        );
        assert_eq!(
            c.command(&[b"SET", b"k", &big_value]),
            Reply::Error(value_err)
        );
        assert_eq!(
            c.command(&[b"MSET", b"a", b"1", &big_key, b"v"]),
            Reply::Error(key_err)
        );
        assert_eq!(c.command(&[b"PING"]), pong());
        assert_eq!(c.command(&[b"DBSIZE"]), Reply::Integer(0));
        let at_limit = vec![b'v'; VALUE_BYTES_MAX];
        assert_eq!(c.command(&[b"SET", b"k", &at_limit]), ok());
        assert_eq!(
            NativeClient::connect(server.addr())
                .get(b"k")
                .map(|v| v.len()),
            Some(VALUE_BYTES_MAX)
        );
    }
}

#[test]
fn replies_match_redis_server_for_the_same_commands() {
    // Guards against wording or reply shapes that differ from Redis where kvs claims to match.
    let Some(redis_server) = redis_tool("redis-server", "replies_match_redis_server") else {
        return;
    };
    let redis = RedisServer::start(&redis_server);
    let long = vec![b'x'; 200];
    let script: Vec<Vec<&[u8]>> = vec![
        vec![b"PING"],
        vec![b"PING", b"hello\r\n"],
        vec![b"ECHO", b"a\r\n\0b"],
        vec![b"SET", b"k", b"v"],
        vec![b"GET", b"k"],
        vec![b"GET", b"nosuch"],
        vec![b"SET", b"k", b"v", b"bogus"],
        vec![b"EXISTS", b"k", b"k", b"nosuch"],
        vec![b"MSET", b"a", b"1", b"b", b"2"],
        vec![b"MGET", b"a", b"nosuch", b"b"],
        vec![b"DBSIZE"],
        vec![b"INFO", b"keyspace"],
        vec![b"DEL", b"a", b"b", b"nosuch", b"a"],
        vec![b"UNLINK", b"k"],
        vec![b"DBSIZE"],
        vec![b"INFO", b"keyspace"],
        vec![b"SELECT", b"0"],
        vec![b"SELECT", b"x"],
        vec![b"CLIENT", b"GETNAME"],
        vec![b"CLIENT", b"SETNAME", b"n1"],
        vec![b"client", b"getname"],
        vec![b"CLIENT", b"SETNAME", b"a b"],
        vec![b"CLIENT", b"SETNAME", b""],
        vec![b"CLIENT", b"GETNAME"],
        vec![b"CLIENT", b"NOSUCH"],
        vec![b"CLIENT"],
        vec![b"CLIENT", b"SETNAME"],
        vec![b"CONFIG", b"GET", b"save"],
        vec![b"CONFIG", b"GET", b"appendonly"],
        vec![b"CONFIG", b"GET", b"nosuch*"],
        vec![b"CONFIG", b"GET"],
        vec![b"CONFIG", b"NOSUCH", b"x"],
        vec![b"COMMAND", b"INFO", b"nosuch"],
        vec![b"COMMAND", b"DOCS", b"nosuch"],
        vec![b"COMMAND", b"NOSUCH"],
        vec![b"HELLO", b"x"],
        vec![b"HELLO", b"2", b"bogus"],
        vec![b"HELLO", b"2", b"SETNAME"],
        vec![b"GET"],
        vec![b"SET", b"k"],
        vec![b"MSET", b"a", b"1", b"b"],
        vec![b"ECHO"],
        vec![b"PING", b"a", b"b"],
        vec![b"DBSIZE", b"x"],
        vec![b"NOSUCH"],
        vec![b"nosuch", b"a", b"b c", b""],
        vec![&long, &long, &long],
        vec![b"FOO", &long[..100], &long[..100], b"z"],
    ];
    for backend in backends() {
        let kvs = KvsServer::start(backend);
        let mut theirs = RespClient::connect(redis.addr());
        let mut ours = RespClient::connect(kvs.addr());
        theirs.command(&[b"FLUSHALL"]);
        for args in &script {
            assert_eq!(
                ours.command(args),
                theirs.command(args),
                "{backend:?}: {args:?}"
            );
        }
        // Inline commands: escapes in double quotes, single quotes, a blank line (no reply),
        // then a closing quote followed by text, which ends the connection.
        let inline = b"ECHO \"a\\x00b\\r\\n\\\"\"\r\nECHO 'c d'\r\n\r\nPING\nECHO 'it''s'\nPING\n";
        ours.send(inline);
        theirs.send(inline);
        for _ in 0..4 {
            assert_eq!(ours.reply(), theirs.reply(), "{backend:?}: inline");
        }
        assert!(ours.closed() && theirs.closed(), "{backend:?}: inline");
        // A protocol error is answered the same way and ends both connections.
        for bad in [&b"*1\r\n$-5\r\n"[..], b"*1\r\n:1\r\n"] {
            let mut ours = RespClient::connect(kvs.addr());
            let mut theirs = RespClient::connect(redis.addr());
            ours.send(bad);
            theirs.send(bad);
            assert_eq!(ours.reply(), theirs.reply(), "{backend:?}: {bad:?}");
            assert!(ours.closed() && theirs.closed(), "{backend:?}: {bad:?}");
        }
    }
}

#[test]
fn a_pipeline_across_workers_is_answered_in_order_from_memory_and_from_disk() {
    // One connection's commands act in order, as in Redis: a GET after a SET of its key in the
    // same pipeline reads what the SET wrote, though the SET is not yet acknowledged when the
    // GET is read. Half the keys belong to the other worker: their gets go there in one batch
    // per pass and come back in one message. With no cache, each of those gets reads the disk
    // there, and the batch's answers wait for the reads. MGET and EXISTS wait on the same
    // batches from tasks of their own, alongside the plain GETs around them.
    let key = |n: usize| format!("cross{n}").into_bytes();
    let val = |n: usize, round: usize| format!("value {n} of round {round}").into_bytes();
    for backend in backends() {
        // sled answers each command in a task of its own, started in order.
        for cache in ["--cache-bytes=0", "--cache-bytes=1048576", "--engine=sled"] {
            let mut server = KvsServer::start_with(backend, &[cache]);
            let mut client = RespClient::connect(server.addr());
            let mut model: Vec<Option<Vec<u8>>> = vec![None; 64];
            for round in 0..4 {
                let mut sent = Vec::new();
                let mut want = Vec::new();
                for n in 0..64 {
                    // Each key read, written on some rounds, read again, removed on others:
                    // a get after a set in one pipeline sees the set.
                    sent.extend(cmd(&[b"GET", &key(n)]));
                    want.push(Reply::Bulk(model[n].clone().map(Bytes::from)));
                    if (n + round) % 3 == 0 {
                        sent.extend(cmd(&[b"SET", &key(n), &val(n, round)]));
                        want.push(ok());
                        model[n] = Some(val(n, round));
                        sent.extend(cmd(&[b"GET", &key(n)]));
                        want.push(value(&val(n, round)));
                    }
                    if (n + round) % 7 == 0 {
                        sent.extend(cmd(&[b"DEL", &key(n)]));
                        want.push(Reply::Integer(i64::from(model[n].is_some())));
                        model[n] = None;
                    }
                    if n % 8 == 7 {
                        let (a, b, c) = (key(n - 7), key(n - 3), key(n));
                        sent.extend(cmd(&[b"MGET", &a, b"cross-none", &b, &c]));
                        want.push(Reply::Array(Some(
                            [n - 7, usize::MAX, n - 3, n]
                                .iter()
                                .map(|&i| {
                                    Reply::Bulk(model.get(i).cloned().flatten().map(Bytes::from))
                                })
                                .collect(),
                        )));
                        sent.extend(cmd(&[b"EXISTS", &a, &b, &c, b"cross-none"]));
                        let found = [n - 7, n - 3, n]
                            .iter()
                            .filter(|&&i| model[i].is_some())
                            .count();
                        want.push(Reply::Integer(found as i64));
                    }
                }
                client.send(&sent);
                for (i, w) in want.iter().enumerate() {
                    assert_eq!(
                        &client.reply(),
                        w,
                        "{backend:?} {cache} round {round}, reply {i}"
                    );
                }
            }
            assert!(server.is_running(), "{backend:?}: {}", server.log());
        }
    }
}
