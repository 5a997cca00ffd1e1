//! The RESP dialect driven as a session drives it, against an in-memory store.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::engine::meta::EngineKind;
use crate::engine::FsyncPolicy;
use crate::io_backend::IoBackendKind;
use crate::limits::FRAME_BYTES_MAX;
use crate::protocol::resp::{encode_command, parse_reply};
use crate::protocol::{PartitionStats, StatsReport};
use crate::server::auth::AuthConfig;
use crate::server::router::{LocalBoxFuture, Started};

/// A store in a `BTreeMap`, with a count of operations started.
#[derive(Clone, Default)]
struct MemStore {
    map: Rc<RefCell<BTreeMap<Bytes, Bytes>>>,
    calls: Rc<RefCell<usize>>,
}

impl Store for MemStore {
    fn start(&self, op: Op) -> Started {
        *self.calls.borrow_mut() += 1;
        let map = self.map.clone();
        let run = async move {
            let mut map = map.borrow_mut();
            match op {
                Op::Get(k) => Ok(map.get(&k).cloned()),
                Op::Set(k, v) => {
                    map.insert(k, v);
                    Ok(None)
                }
                Op::Remove(k) => map.remove(&k).map(|_| None).ok_or(KvsError::KeyNotFound),
            }
        };
        Started::Task(Box::pin(run), 0)
    }

    fn flush(&self) {}

    fn stats(&self) -> LocalBoxFuture<crate::Result<StatsReport>> {
        let keys = self.map.borrow().len() as u64;
        Box::pin(async move {
            Ok(StatsReport {
                io_backend: "test".into(),
                partitions: vec![PartitionStats {
                    partition: 0,
                    keys,
                    live_bytes: 0,
                    dead_bytes: 0,
                    segments: 1,
                    compactions: 0,
                }],
            })
        })
    }
}

fn facts() -> ServerFacts {
    ServerFacts {
        port: 6390,
        io_backend: IoBackendKind::Blocking,
        engine: EngineKind::Kvs,
        fsync: FsyncPolicy::Always,
        workers: 1,
        partitions: 1,
        max_connections: 10,
        idle_timeout: Duration::from_secs(300),
        started: Instant::now(),
    }
}

/// What one connection did with some input.
#[derive(Debug, PartialEq)]
struct Outcome {
    sent: Vec<u8>,
    closed: bool,
    /// Bytes consumed.
    used: usize,
}

/// Feeds `chunks` to `dialect` one read at a time, as a session does (unconsumed bytes stay
/// at the front of the buffer), and returns what the session would send.
fn converse_in(dialect: &mut Resp, store: &MemStore, chunks: &[&[u8]]) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut buf: Vec<u8> = Vec::new();
        let mut slots = Vec::new();
        let mut closed = false;
        let mut used = 0;
        'reading: for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match dialect.next(&buf, store) {
                    Step::More => break,
                    Step::Request { slot, used: n } => {
                        used += n;
                        buf.drain(..n);
                        slots.push(slot);
                    }
                    Step::Final { slot, used: n } => {
                        used += n;
                        slots.push(slot);
                        closed = true;
                        break 'reading;
                    }
                    Step::Fatal { reply } => {
                        slots.push(Slot::Ready(reply));
                        closed = true;
                        break 'reading;
                    }
                }
            }
        }
        let mut sent = Vec::new();
        for slot in slots {
            match slot {
                Slot::Ready(bytes) => sent.extend_from_slice(&bytes),
                Slot::Done { result, encode } => encode(result, &mut sent),
                Slot::Wait { rx, encode, .. } => encode(rx.await, &mut sent),
                Slot::Task(handle, _) => sent.extend_from_slice(&handle.await.unwrap()),
                Slot::Delayed { bytes, until } => {
                    tokio::time::sleep_until(until).await;
                    sent.extend_from_slice(&bytes);
                }
                Slot::Close => closed = true,
            }
        }
        Outcome { sent, closed, used }
    })
}

/// A connection to a server without a password.
fn resp() -> Resp {
    Resp::new(facts(), Gate::new(AuthConfig::default()))
}

fn converse(store: &MemStore, input: &[u8]) -> Outcome {
    converse_in(&mut resp(), store, &[input])
}

fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(args, &mut out);
    out
}

/// Every reply in `bytes`, in order.
fn replies(mut bytes: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (reply, used) = parse_reply(bytes).unwrap().unwrap();
        out.push(reply);
        bytes = &bytes[used..];
    }
    out
}

fn one(store: &MemStore, args: &[&[u8]]) -> Reply {
    let outcome = converse(store, &cmd(args));
    let mut all = replies(&outcome.sent);
    assert_eq!(all.len(), 1, "{args:?}: {all:?}");
    all.remove(0)
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn error(s: &str) -> Reply {
    Reply::Error(s.into())
}

fn value(v: &[u8]) -> Reply {
    Reply::Bulk(Some(Bytes::copy_from_slice(v)))
}

#[test]
fn data_commands_round_trip_binary_values() {
    // Guards against values with CRLF, NUL or high bytes being altered on the way through.
    let store = MemStore::default();
    let binary: Vec<u8> = (0..=255u8).chain(*b"\r\n\r\n$3\r\n*1\r\n").collect();
    assert_eq!(one(&store, &[b"SET", b"k\r\n1", &binary]), ok());
    assert_eq!(one(&store, &[b"get", b"k\r\n1"]), value(&binary));
    assert_eq!(
        store.map.borrow().get(&b"k\r\n1"[..]).map(|v| v.to_vec()),
        Some(binary.clone())
    );
    assert_eq!(one(&store, &[b"MSET", b"a", b"", b"b", b"2"]), ok());
    assert_eq!(
        one(&store, &[b"MGET", b"a", b"nope", b"b"]),
        Reply::Array(Some(vec![value(b""), Reply::Bulk(None), value(b"2")]))
    );
    assert_eq!(
        one(&store, &[b"EXISTS", b"a", b"a", b"nope"]),
        Reply::Integer(2)
    );
    assert_eq!(one(&store, &[b"DBSIZE"]), Reply::Integer(3));
    assert_eq!(
        one(&store, &[b"DEL", b"a", b"a", b"nope", b"b"]),
        Reply::Integer(2)
    );
    assert_eq!(one(&store, &[b"UNLINK", b"k\r\n1"]), Reply::Integer(1));
    assert_eq!(one(&store, &[b"GET", b"a"]), Reply::Bulk(None));
    assert_eq!(one(&store, &[b"DBSIZE"]), Reply::Integer(0));
}

#[test]
fn oversized_keys_and_values_are_refused_before_anything_is_written() {
    // Guards against a refused MSET or DEL having changed some keys, or closing the connection.
    let store = MemStore::default();
    let big_key = vec![b'k'; KEY_BYTES_MAX + 1];
    let big_value = vec![b'v'; VALUE_BYTES_MAX + 1];
    let key_err = format!(
        "ERR key is {} bytes; the limit is {KEY_BYTES_MAX} bytes",
        KEY_BYTES_MAX + 1
    );
    let value_err = format!(
        "ERR value is {} bytes; the limit is {VALUE_BYTES_MAX} bytes",
        VALUE_BYTES_MAX + 1
    );
    assert_eq!(one(&store, &[b"SET", &big_key, b"v"]), error(&key_err));
    assert_eq!(one(&store, &[b"SET", b"k", &big_value]), error(&value_err));
    assert_eq!(
        one(&store, &[b"MSET", b"a", b"1", b"b", &big_value]),
        error(&value_err)
    );
    assert_eq!(one(&store, &[b"GET", &big_key]), error(&key_err));
    assert_eq!(one(&store, &[b"DEL", b"a", &big_key]), error(&key_err));
    assert_eq!(one(&store, &[b"MGET", b"a", &big_key]), error(&key_err));
    assert_eq!(one(&store, &[b"EXISTS", &big_key]), error(&key_err));
    assert_eq!(*store.calls.borrow(), 0, "no operation may start");
    assert!(store.map.borrow().is_empty());
    // The connection stays usable after such a refusal.
    let mut input = cmd(&[b"SET", b"k", &big_value]);
    input.extend(cmd(&[b"SET", b"k", b"v"]));
    let outcome = converse(&store, &input);
    assert_eq!(replies(&outcome.sent), [error(&value_err), ok()]);
    assert!(!outcome.closed);
    // At the limits exactly, both are accepted.
    let key = vec![b'k'; KEY_BYTES_MAX];
    let limit_value = vec![b'v'; VALUE_BYTES_MAX];
    assert_eq!(one(&store, &[b"SET", &key, &limit_value]), ok());
}

#[test]
fn set_options_are_refused_clearly_not_ignored() {
    // Guards against SET ... EX 10 silently storing a key that never expires.
    let store = MemStore::default();
    for option in [
        &b"EX"[..],
        b"px",
        b"NX",
        b"xx",
        b"GET",
        b"KEEPTTL",
        b"exat",
        b"PXAT",
    ] {
        let reply = one(&store, &[b"SET", b"k", b"v", option, b"10"]);
        let Reply::Error(text) = reply else {
            panic!("{reply:?}")
        };
        let upper = String::from_utf8_lossy(option).to_ascii_uppercase();
        assert!(
            text.starts_with(&format!("ERR SET option '{upper}' is not supported by kvs")),
            "{text}"
        );
    }
    assert_eq!(
        one(&store, &[b"SET", b"k", b"v", b"bogus"]),
        error("ERR syntax error")
    );
    assert!(store.map.borrow().is_empty());
}

#[test]
fn malformed_input_gets_an_error_and_closes_after_earlier_replies() {
    // Guards against a broken stream being read on (misframing everything after it).
    let store = MemStore::default();
    let huge = format!("*1\r\n${}\r\n", FRAME_BYTES_MAX + 1);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"*1\r\n$-5\r\n".to_vec(),
            "ERR Protocol error: invalid bulk length",
        ),
        (huge.into_bytes(), "ERR Protocol error: invalid bulk length"),
        (
            b"*-3\r\n".to_vec(),
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*99999999\r\n".to_vec(),
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*1\r\n$4\r\nPINGxx".to_vec(),
            "ERR Protocol error: expected '\\r\\n' after bulk data",
        ),
        (
            b"*1\r\n+PING\r\n".to_vec(),
            "ERR Protocol error: expected '$', got '+'",
        ),
        (
            b"SET \"a\r\n".to_vec(),
            "ERR Protocol error: unbalanced quotes in request",
        ),
    ];
    for (bad, message) in cases {
        let mut input = cmd(&[b"PING"]);
        input.extend_from_slice(&bad);
        input.extend(cmd(&[b"SET", b"after", b"x"]));
        let outcome = converse(&store, &input);
        assert_eq!(
            replies(&outcome.sent),
            [Reply::Simple("PONG".into()), error(message)],
            "{bad:?}"
        );
        assert!(outcome.closed, "{bad:?}");
    }
    assert!(
        store.map.borrow().is_empty(),
        "nothing after the bad bytes may run"
    );
}

#[test]
fn pipelined_and_inline_commands_answer_in_order_however_the_bytes_arrive() {
    // Guards against replies that depend on where reads happen to split the stream.
    let mut input = cmd(&[b"SET", b"k", b"v\r\nw"]);
    input.extend_from_slice(b"GET k\r\n\r\nPING\nECHO \"a b\\x00\"\r\n");
    input.extend(cmd(&[]));
    input.extend(cmd(&[b"EXISTS", b"k"]));
    input.extend(cmd(&[b"del", b"k"]));
    input.extend_from_slice(b"GET k\n");
    let expected = vec![
        ok(),
        value(b"v\r\nw"),
        Reply::Simple("PONG".into()),
        value(b"a b\0"),
        Reply::Integer(1),
        Reply::Integer(1),
        Reply::Bulk(None),
    ];
    let whole = converse(&MemStore::default(), &input);
    assert_eq!(replies(&whole.sent), expected);
    assert_eq!((whole.used, whole.closed), (input.len(), false));
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let trickled = converse_in(&mut resp(), &MemStore::default(), &bytes);
    assert_eq!(trickled, whole);
    let halves: Vec<&[u8]> = input.chunks(input.len() / 2 + 1).collect();
    assert_eq!(
        converse_in(&mut resp(), &MemStore::default(), &halves),
        whole
    );
}

#[test]
fn quit_answers_ok_and_nothing_after_it_runs() {
    // Guards against commands pipelined after QUIT being executed.
    let store = MemStore::default();
    let mut input = cmd(&[b"PING"]);
    input.extend(cmd(&[b"quit"]));
    input.extend(cmd(&[b"SET", b"k", b"v"]));
    let outcome = converse(&store, &input);
    assert_eq!(replies(&outcome.sent), [Reply::Simple("PONG".into()), ok()]);
    assert!(outcome.closed);
    assert!(store.map.borrow().is_empty());
}

#[test]
fn client_names_belong_to_one_connection_and_are_checked() {
    // Guards against a name leaking between connections, or names that break CLIENT LIST lines.
    let store = MemStore::default();
    let mut first = resp();
    let mut second = resp();
    let talk = |d: &mut Resp, args: &[&[u8]]| {
        replies(&converse_in(d, &store, &[&cmd(args)]).sent).remove(0)
    };
    assert_eq!(
        talk(&mut first, &[b"CLIENT", b"GETNAME"]),
        Reply::Bulk(None)
    );
    assert_eq!(
        talk(&mut first, &[b"client", b"setname", b"worker-1"]),
        ok()
    );
    assert_eq!(
        talk(&mut first, &[b"CLIENT", b"GETNAME"]),
        value(b"worker-1")
    );
    assert_eq!(
        talk(&mut second, &[b"CLIENT", b"GETNAME"]),
        Reply::Bulk(None)
    );
    let bad = error("ERR Client names cannot contain spaces, newlines or special characters.");
    assert_eq!(talk(&mut first, &[b"CLIENT", b"SETNAME", b"a b"]), bad);
    assert_eq!(talk(&mut first, &[b"CLIENT", b"SETNAME", b"a\nb"]), bad);
    let long = vec![b'n'; CLIENT_NAME_BYTES_MAX + 1];
    assert!(
        matches!(talk(&mut first, &[b"CLIENT", b"SETNAME", &long]), Reply::Error(e) if e.contains("limit"))
    );
    assert_eq!(
        talk(&mut first, &[b"CLIENT", b"GETNAME"]),
        value(b"worker-1"),
        "a refused name changes nothing"
    );
    assert_eq!(talk(&mut first, &[b"CLIENT", b"SETNAME", b""]), ok());
    assert_eq!(
        talk(&mut first, &[b"CLIENT", b"GETNAME"]),
        Reply::Bulk(None)
    );
    let (Reply::Integer(a), Reply::Integer(b)) = (
        talk(&mut first, &[b"CLIENT", b"ID"]),
        talk(&mut second, &[b"CLIENT", b"ID"]),
    ) else {
        panic!()
    };
    assert_ne!(a, b);
    assert_eq!(
        talk(&mut first, &[b"CLIENT", b"KILL"]),
        error("ERR unknown subcommand 'KILL'. Try CLIENT HELP.")
    );
}

#[test]
fn hello_speaks_resp2_and_refuses_resp3() {
    // Guards against a RESP3 client believing it got RESP3.
    let store = MemStore::default();
    let mut d = resp();
    let mut talk =
        |args: &[&[u8]]| replies(&converse_in(&mut d, &store, &[&cmd(args)]).sent).remove(0);
    let Reply::Array(Some(map)) = talk(&[b"HELLO", b"2", b"SETNAME", b"me"]) else {
        panic!()
    };
    let fields: Vec<(Reply, Reply)> = map
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    assert!(fields.contains(&(value(b"server"), value(b"kvs"))));
    assert!(fields.contains(&(value(b"proto"), Reply::Integer(2))));
    assert!(fields.contains(&(value(b"modules"), Reply::Array(Some(Vec::new())))));
    assert_eq!(talk(&[b"CLIENT", b"GETNAME"]), value(b"me"));
    assert!(matches!(talk(&[b"HELLO"]), Reply::Array(Some(m)) if m.len() == 14));
    let noproto = error("NOPROTO unsupported protocol version (kvs speaks RESP2 only)");
    assert_eq!(talk(&[b"HELLO", b"3"]), noproto);
    assert_eq!(talk(&[b"HELLO", b"1"]), noproto);
    assert_eq!(
        talk(&[b"HELLO", b"x"]),
        error("ERR Protocol version is not an integer or out of range")
    );
    assert_eq!(
        talk(&[b"HELLO", b"2", b"SETNAME"]),
        error("ERR Syntax error in HELLO option 'SETNAME'")
    );
    assert_eq!(
        talk(&[b"HELLO", b"2", b"AUTH", b"u", b"p"]),
        error("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(
        talk(&[b"HELLO", b"2", b"SETNAME", b"a b"]),
        error("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(talk(&[b"CLIENT", b"GETNAME"]), value(b"me"));
}

#[test]
fn select_accepts_database_zero_only() {
    // Guards against a client believing it switched to an empty database that is the same one.
    let store = MemStore::default();
    assert_eq!(one(&store, &[b"SELECT", b"0"]), ok());
    assert!(
        matches!(one(&store, &[b"SELECT", b"1"]), Reply::Error(e) if e.starts_with("ERR DB index is out of range"))
    );
    assert_eq!(
        one(&store, &[b"SELECT", b"x"]),
        error("ERR value is not an integer or out of range")
    );
    assert_eq!(
        one(&store, &[b"SELECT", b"00"]),
        error("ERR value is not an integer or out of range")
    );
}

#[test]
fn info_config_and_command_answer_what_redis_tools_read() {
    // Guards against redis-benchmark and redis-cli start-up queries failing or misparsing.
    let store = MemStore::default();
    assert_eq!(one(&store, &[b"SET", b"k", b"v"]), ok());
    let Reply::Bulk(Some(info)) = one(&store, &[b"INFO"]) else {
        panic!()
    };
    let info = String::from_utf8(info.to_vec()).unwrap();
    assert!(
        info.contains("# Server\r\n") && info.contains("\r\ntcp_port:6390\r\n"),
        "{info}"
    );
    assert!(info.contains("\r\nfsync_policy:always\r\n"), "{info}");
    assert!(
        info.ends_with("# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n"),
        "{info}"
    );
    assert_eq!(
        one(&store, &[b"INFO", b"keyspace"]),
        value(b"# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n")
    );

    let config = converse(&store, b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$10\r\nappendonly\r\n");
    assert_eq!(
        config.sent,
        b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
    );
    assert_eq!(
        one(&store, &[b"CONFIG", b"GET", b"nosuch"]),
        Reply::Array(Some(Vec::new()))
    );

    let count = commands::COMMANDS.len() as i64;
    assert_eq!(one(&store, &[b"COMMAND", b"COUNT"]), Reply::Integer(count));
    assert!(
        matches!(one(&store, &[b"COMMAND"]), Reply::Array(Some(all)) if all.len() as i64 == count)
    );
    let Reply::Array(Some(infos)) = one(&store, &[b"COMMAND", b"INFO", b"get", b"nosuch"]) else {
        panic!()
    };
    assert_eq!(infos[1], Reply::Bulk(None));
    let Reply::Array(Some(get)) = &infos[0] else {
        panic!()
    };
    assert_eq!(get[..2], [value(b"get"), Reply::Integer(2)]);
    let Reply::Array(Some(docs)) = one(&store, &[b"COMMAND", b"DOCS"]) else {
        panic!()
    };
    assert_eq!(docs.len() as i64, 2 * count);
    let Reply::Array(Some(docs)) = one(&store, &[b"COMMAND", b"DOCS", b"GET", b"nosuch"]) else {
        panic!()
    };
    assert_eq!(docs[0], value(b"get"));
    assert_eq!(docs.len(), 2);
    assert!(
        matches!(one(&store, &[b"COMMAND", b"HELP"]), Reply::Array(Some(lines)) if lines.len() > 4)
    );
}

#[test]
fn unknown_commands_and_wrong_arity_use_redis_wording() {
    // Guards against clients that match Redis's error text seeing something else.
    let store = MemStore::default();
    assert_eq!(
        one(&store, &[b"FLUSHALL", b"ASYNC"]),
        error("ERR unknown command 'FLUSHALL', with args beginning with: 'ASYNC' ")
    );
    assert_eq!(
        one(&store, &[b"GET"]),
        error("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        one(&store, &[b"MSET", b"a", b"1", b"b"]),
        error("ERR wrong number of arguments for 'mset' command")
    );
    assert_eq!(
        one(&store, &[b"CONFIG", b"GET"]),
        error("ERR wrong number of arguments for 'config|get' command")
    );
    assert_eq!(*store.calls.borrow(), 0);
}

// ---- passwords ---------------------------------------------------------------------------------

/// A connection to a server whose password is `s3cret`, failures delayed from `first_ms`.
fn locked(first_ms: u64) -> Resp {
    Resp::new(
        facts(),
        Gate::new(AuthConfig {
            password: Some(std::sync::Arc::new(
                crate::auth::Password::new("s3cret").unwrap(),
            )),
            fail_delay: Duration::from_millis(first_ms),
        }),
    )
}

const WRONGPASS_TEXT: &str = "WRONGPASS invalid username-password pair or user is disabled.";

#[test]
fn nothing_but_auth_hello_and_quit_is_served_before_the_password() {
    // Guards against any command but AUTH, HELLO and QUIT being served before the password.
    let store = MemStore::default();
    let mut d = locked(1);
    let mut talk =
        |args: &[&[u8]]| replies(&converse_in(&mut d, &store, &[&cmd(args)]).sent).remove(0);
    let noauth = error("NOAUTH Authentication required.");
    for args in [
        &[&b"GET"[..], b"k"][..],
        &[b"SET", b"k", b"v"],
        &[b"PING"],
        &[b"DBSIZE"],
        &[b"INFO"],
        &[b"COMMAND"],
        &[b"CLIENT", b"GETNAME"],
        &[b"CONFIG", b"GET", b"*"],
        &[b"SELECT", b"0"],
    ] {
        assert_eq!(talk(args), noauth, "{args:?}");
    }
    assert_eq!(*store.calls.borrow(), 0);
    // Unknown commands and wrong arities are reported before authentication, as Redis does.
    assert_eq!(
        talk(&[b"NOSUCH", b"a"]),
        error("ERR unknown command 'NOSUCH', with args beginning with: 'a' ")
    );
    assert_eq!(
        talk(&[b"GET"]),
        error("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        talk(&[b"AUTH"]),
        error("ERR wrong number of arguments for 'auth' command")
    );
    assert_eq!(
        talk(&[b"AUTH", b"a", b"b", b"c"]),
        error("ERR syntax error")
    );
    assert_eq!(
        talk(&[b"HELLO"]),
        error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time"
        )
    );
    assert!(matches!(talk(&[b"HELLO", b"3"]), Reply::Error(e) if e.starts_with("NOPROTO")));
    assert_eq!(talk(&[b"GET", b"k"]), noauth, "still locked");
}

#[test]
fn auth_accepts_the_password_alone_or_for_the_default_user() {
    // Guards against `AUTH pw` or `AUTH default pw` refused, or another user let in.
    let store = MemStore::default();
    for good in [
        &[&b"AUTH"[..], b"s3cret"][..],
        &[b"auth", b"default", b"s3cret"],
    ] {
        let mut d = locked(1);
        let mut talk =
            |args: &[&[u8]]| replies(&converse_in(&mut d, &store, &[&cmd(args)]).sent).remove(0);
        assert_eq!(talk(good), ok(), "{good:?}");
        assert_eq!(talk(&[b"SET", b"k", b"v"]), ok());
        assert_eq!(talk(&[b"GET", b"k"]), value(b"v"));
        // A wrong password afterwards is refused but does not lock the connection again.
        assert_eq!(talk(&[b"AUTH", b"nope"]), error(WRONGPASS_TEXT));
        assert_eq!(talk(&[b"GET", b"k"]), value(b"v"));
    }
    let mut d = locked(1);
    let mut talk =
        |args: &[&[u8]]| replies(&converse_in(&mut d, &store, &[&cmd(args)]).sent).remove(0);
    for bad in [
        &[&b"AUTH"[..], b"nope"][..],
        &[b"AUTH", b"S3CRET"],
        &[b"AUTH", b"s3cret\0"],
        &[b"AUTH", b"default", b"nope"],
        &[b"AUTH", b"bob", b"s3cret"],
        &[b"AUTH", b"DEFAULT", b"s3cret"],
        &[b"AUTH", &[b'x'; 4096]],
    ] {
        assert_eq!(talk(bad), error(WRONGPASS_TEXT), "{bad:?}");
    }
    assert_eq!(
        talk(&[b"GET", b"k"]),
        error("NOAUTH Authentication required.")
    );
}

#[test]
fn hello_auth_authenticates_then_answers_as_hello_2() {
    // Guards against HELLO 2 AUTH refused, or a wrong one changing anything.
    let store = MemStore::default();
    let mut d = locked(1);
    let mut talk =
        |args: &[&[u8]]| replies(&converse_in(&mut d, &store, &[&cmd(args)]).sent).remove(0);
    assert_eq!(
        talk(&[b"HELLO", b"2", b"AUTH", b"default", b"nope", b"SETNAME", b"x"]),
        error(WRONGPASS_TEXT)
    );
    assert_eq!(
        talk(&[b"HELLO", b"2", b"AUTH", b"bob", b"s3cret"]),
        error(WRONGPASS_TEXT)
    );
    assert_eq!(
        talk(&[b"HELLO", b"2", b"AUTH", b"default"]),
        error("ERR Syntax error in HELLO option 'AUTH'")
    );
    // The protocol version is checked first, and a refused HELLO authenticates nobody.
    assert!(matches!(
        talk(&[b"HELLO", b"3", b"AUTH", b"default", b"s3cret"]),
        Reply::Error(e) if e.starts_with("NOPROTO")
    ));
    assert_eq!(talk(&[b"PING"]), error("NOAUTH Authentication required."));
    let Reply::Array(Some(map)) = talk(&[
        b"HELLO", b"2", b"AUTH", b"default", b"s3cret", b"SETNAME", b"me",
    ]) else {
        panic!()
    };
    assert_eq!(map.len(), 14);
    assert!(map.contains(&Reply::Integer(2)));
    assert_eq!(talk(&[b"CLIENT", b"GETNAME"]), value(b"me"));
    assert_eq!(talk(&[b"PING"]), Reply::Simple("PONG".into()));
    assert!(matches!(talk(&[b"HELLO"]), Reply::Array(Some(m)) if m.len() == 14));
}

#[test]
fn auth_without_a_server_password_answers_as_redis_does() {
    // Guards against AUTH without a server password answering otherwise than Redis does.
    let store = MemStore::default();
    assert_eq!(
        one(&store, &[b"AUTH", b"anything"]),
        error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?"
        )
    );
    assert_eq!(one(&store, &[b"AUTH", b"default", b"anything"]), ok());
    assert_eq!(
        one(&store, &[b"AUTH", b"bob", b"anything"]),
        error(WRONGPASS_TEXT)
    );
    assert!(matches!(
        one(&store, &[b"HELLO", b"2", b"AUTH", b"default", b"x"]),
        Reply::Array(Some(_))
    ));
}

#[test]
fn failed_attempts_are_answered_late_in_order_and_the_tenth_closes() {
    // Guards against guesses answered at full speed or out of order, or guessing forever.
    let store = MemStore::default();
    let mut d = locked(40);
    let mut input = cmd(&[b"AUTH", b"nope"]);
    input.extend(cmd(&[b"GET", b"k"]));
    let started = Instant::now();
    let outcome = converse_in(&mut d, &store, &[&input]);
    assert!(started.elapsed() >= Duration::from_millis(40));
    assert_eq!(
        replies(&outcome.sent),
        [
            error(WRONGPASS_TEXT),
            error("NOAUTH Authentication required.")
        ]
    );
    assert!(!outcome.closed);
    // Eight more pipelined guesses (failures 2 to 9): each waits for the one before, so
    // together at least 80 + 160 + 320 + 400 * 5 ms.
    let mut input = Vec::new();
    for _ in 2..=9 {
        input.extend(cmd(&[b"AUTH", b"nope"]));
    }
    let started = Instant::now();
    let outcome = converse_in(&mut d, &store, &[&input]);
    assert!(started.elapsed() >= Duration::from_millis(2560));
    assert_eq!(replies(&outcome.sent).len(), 8);
    assert!(!outcome.closed);
    // The tenth failure is answered, then the connection closes: the command after it is not.
    let mut input = cmd(&[b"AUTH", b"nope"]);
    input.extend(cmd(&[b"AUTH", b"s3cret"]));
    let outcome = converse_in(&mut d, &store, &[&input]);
    assert_eq!(replies(&outcome.sent), [error(WRONGPASS_TEXT)]);
    assert!(outcome.closed);
    assert_eq!(outcome.used, cmd(&[b"AUTH", b"nope"]).len());
}

#[test]
fn command_lists_auth_and_hello_documents_its_auth_option() {
    // Guards against redis-cli hints and COMMAND DOCS that do not know AUTH.
    let store = MemStore::default();
    let Reply::Array(Some(docs)) = one(&store, &[b"COMMAND", b"DOCS", b"auth"]) else {
        panic!()
    };
    assert_eq!(docs[0], value(b"auth"));
    let Reply::Array(Some(info)) = one(&store, &[b"COMMAND", b"INFO", b"auth"]) else {
        panic!()
    };
    let Reply::Array(Some(entry)) = &info[0] else {
        panic!()
    };
    assert_eq!(entry[0], value(b"auth"));
    assert_eq!(entry[1], Reply::Integer(-2));
}
