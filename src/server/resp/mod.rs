//! The RESP2 dialect: Redis clients (`redis-cli`, `redis-benchmark`, client libraries) talk
//! to kvs on the same port as the native protocol, against the same partitions, durability
//! and limits.
//!
//! - [`commands`]: the table of commands; lookup, arity, `COMMAND` and `COMMAND DOCS`.
//! - [`info`]: `INFO` sections and `CONFIG GET` parameters.
//!
//! Commands are answered in Redis's wording where Redis has one (`-ERR unknown command ...`,
//! `-ERR wrong number of arguments for '...' command`). Options we do not support are refused
//! with a clear error, never silently ignored. Malformed RESP gets `-ERR Protocol error: ...`
//! and the connection is closed, as Redis does.
//!
//! Keys and values are checked against [`KEY_BYTES_MAX`] and [`VALUE_BYTES_MAX`] before any
//! operation of a command starts, so a refused `MSET` or `DEL` changes nothing.
//!
//! On a server with a password, a connection must `AUTH` (or `HELLO 2 AUTH default ...`)
//! before anything but `AUTH`, `HELLO` and `QUIT` is served, as in Redis 6 and later: other
//! commands get `-NOAUTH Authentication required.` (unknown commands and wrong arities are
//! reported first, as Redis does). A wrong password's `-WRONGPASS` is delayed by the
//! connection's [`Gate`].

mod commands;
mod info;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::future::join_all;

use super::auth::{Gate, Verdict};
use super::router::{LocalBoxFuture, Store, PREFETCH_KEYS_MAX};
use super::session::{answer, delayed, Dialect, Slot, Step};
use super::ServerFacts;
use crate::engine::shard::{Op, OpResult};
use crate::limits::{
    CLIENT_NAME_BYTES_MAX, KEY_BYTES_MAX, RESP_COMMAND_BYTES_MAX, VALUE_BYTES_MAX,
};
use crate::protocol::resp::{self, parse_command, parse_i64, Reply};
use crate::KvsError;
use commands::{Cmd, CommandSpec};

/// Connection ids, unique within the process (`CLIENT ID`, `HELLO`'s `id`).
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// Options of Redis's SET that kvs knows of and refuses (kvs has no expiry and no
/// conditional writes). Anything else after the value is a syntax error, as in Redis.
const SET_OPTIONS: &[&str] = &["NX", "XX", "GET", "EX", "PX", "EXAT", "PXAT", "KEEPTTL"];

/// Redis's answer to a command that needs authentication, before it.
const NOAUTH: &str = "NOAUTH Authentication required.";
/// Redis's answer to a wrong password or an unknown user.
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// Redis's answer to `AUTH <password>` on a server without a password.
const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the \
                           default user. Are you sure your configuration is correct?";
/// Redis's answer to `HELLO` without `AUTH` before authenticating (Redis 7.2's wording).
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, \
                            otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
                            authenticate the client and select the RESP protocol version at the \
                            same time";

/// Per-connection RESP state.
pub struct Resp {
    facts: ServerFacts,
    id: u64,
    name: Option<Bytes>,
    gate: Gate,
    /// The command being answered is the last failed password attempt allowed: close after it.
    closing: bool,
}

impl Resp {
    pub fn new(facts: ServerFacts, gate: Gate) -> Resp {
        Resp {
            facts,
            id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            name: None,
            gate,
            closing: false,
        }
    }
}

fn err(msg: &str) -> Vec<u8> {
    let mut out = Vec::new();
    resp::error(msg, &mut out);
    out
}

fn simple(msg: &str) -> Vec<u8> {
    let mut out = Vec::new();
    resp::simple(msg, &mut out);
    out
}

fn bulk(v: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Some(v) => resp::bulk(v, &mut out),
        None => resp::null_bulk(&mut out),
    }
    out
}

fn integer(n: i64) -> Vec<u8> {
    let mut out = Vec::new();
    resp::integer(n, &mut out);
    out
}

fn encoded(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    reply.encode(&mut out);
    out
}

/// The RESP error for an engine error.
fn engine_err(e: &KvsError) -> Vec<u8> {
    match e {
        KvsError::Poisoned { .. } => err(&format!("READONLY {e}")),
        _ => err(&format!("ERR {e}")),
    }
}

fn task(f: impl std::future::Future<Output = Vec<u8>> + 'static) -> Slot {
    Slot::Task(tokio::task::spawn_local(f), 0)
}

/// The error for the first key over [`KEY_BYTES_MAX`], if any.
fn check_keys<'a>(keys: impl IntoIterator<Item = &'a Bytes>) -> Result<(), Vec<u8>> {
    match keys.into_iter().find(|k| k.len() > KEY_BYTES_MAX) {
        Some(k) => Err(engine_err(&KvsError::KeyTooLarge {
            len: k.len(),
            max: KEY_BYTES_MAX,
        })),
        None => Ok(()),
    }
}

/// The error for the first key or value over its limit among `key value` pairs, if any.
fn check_pairs(pairs: &[Bytes]) -> Result<(), Vec<u8>> {
    for kv in pairs.chunks_exact(2) {
        check_keys([&kv[0]])?;
        if kv[1].len() > VALUE_BYTES_MAX {
            return Err(engine_err(&KvsError::ValueTooLarge {
                len: kv[1].len(),
                max: VALUE_BYTES_MAX,
            }));
        }
    }
    Ok(())
}

/// Checks a connection name as Redis does (printable ASCII without spaces), and against
/// [`CLIENT_NAME_BYTES_MAX`]. An empty name removes the name.
fn check_name(name: &Bytes) -> Result<Option<Bytes>, Vec<u8>> {
    if name.len() > CLIENT_NAME_BYTES_MAX {
        return Err(err(&format!(
            "ERR client name is {} bytes; the limit is {CLIENT_NAME_BYTES_MAX} bytes",
            name.len()
        )));
    }
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(err(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok((!name.is_empty()).then(|| name.clone()))
}

/// Requests [`Resp::prepare`] looks at, at most, per pass over the read buffer.
const PREPARE_REQUESTS_MAX: usize = PREFETCH_KEYS_MAX;

impl<S: Store> Dialect<S> for Resp {
    /// Prefetches the keys of the plain GETs at the head of the buffer (skipping plain SETs),
    /// up to the first request of any other kind.
    fn prepare(&mut self, mut buf: &[u8], store: &S) {
        if !self.gate.is_open() {
            return;
        }
        let mut keys: [&[u8]; PREPARE_REQUESTS_MAX] = [&[]; PREPARE_REQUESTS_MAX];
        let mut n = 0;
        for _ in 0..PREPARE_REQUESTS_MAX {
            if let Some((key, used)) = resp::plain_get(buf, KEY_BYTES_MAX) {
                keys[n] = key;
                n += 1;
                buf = &buf[used..];
            } else if let Some((.., used)) = resp::plain_set(buf, KEY_BYTES_MAX, VALUE_BYTES_MAX) {
                buf = &buf[used..];
            } else {
                break;
            }
        }
        if n > 1 {
            store.prefetch_gets(&keys[..n]);
        }
    }

    fn next(&mut self, buf: &[u8], store: &S) -> Step {
        // Most requests are plain GETs and SETs: those are read without the general parser's
        // allocations, and a GET is answered (when cached) from the key where it lies.
        if self.gate.is_open() {
            if let Some((key, used)) = resp::plain_get(buf, KEY_BYTES_MAX) {
                let slot = answer(store.start_get(key), reply_get);
                return Step::Request { slot, used };
            }
            if let Some((key, value, used)) = resp::plain_set(buf, KEY_BYTES_MAX, VALUE_BYTES_MAX) {
                let op = Op::Set(Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
                let slot = answer(store.start(op), reply_set);
                return Step::Request { slot, used };
            }
        }
        let (args, used) = match parse_command(buf) {
            Ok(None) => return Step::More,
            Ok(Some(c)) => c,
            Err(e) => {
                return Step::Fatal {
                    reply: err(&format!("ERR {e}")),
                }
            }
        };
        if args.is_empty() {
            // An empty command (a blank inline line, `*0`) gets no reply, as in Redis.
            return Step::Request {
                slot: Slot::Ready(Vec::new()),
                used,
            };
        }
        let slot = match commands::resolve(&args) {
            Err(text) => Slot::Ready(err(&text)),
            Ok(spec) if spec.cmd == Cmd::Quit => {
                return Step::Fatal {
                    reply: simple("OK"),
                }
            }
            Ok(spec) if !self.gate.is_open() && !matches!(spec.cmd, Cmd::Auth | Cmd::Hello) => {
                Slot::Ready(err(NOAUTH))
            }
            Ok(spec) => self.command(spec, &args, store),
        };
        if std::mem::take(&mut self.closing) {
            Step::Final { slot, used }
        } else {
            Step::Request { slot, used }
        }
    }

    fn need(&self, buf: &[u8]) -> usize {
        (buf.len() * 2).clamp(16 * 1024, RESP_COMMAND_BYTES_MAX)
    }
}

impl Resp {
    /// Answers a command whose arity has been checked.
    fn command<S: Store>(&mut self, spec: &'static CommandSpec, args: &[Bytes], store: &S) -> Slot {
        let ready = |r: Result<Vec<u8>, Vec<u8>>| Slot::Ready(r.unwrap_or_else(|e| e));
        match spec.cmd {
            Cmd::Get => match check_keys([&args[1]]) {
                Err(e) => Slot::Ready(e),
                Ok(()) => answer(store.start(Op::Get(args[1].clone())), reply_get),
            },
            Cmd::Set => {
                if let Some(option) = args.get(3) {
                    return Slot::Ready(set_option_error(option));
                }
                if let Err(e) = check_pairs(&args[1..3]) {
                    return Slot::Ready(e);
                }
                answer(
                    store.start(Op::Set(args[1].clone(), args[2].clone())),
                    reply_set,
                )
            }
            Cmd::Mset => {
                if args.len().is_multiple_of(2) {
                    return Slot::Ready(err(&commands::wrong_arity(spec)));
                }
                if let Err(e) = check_pairs(&args[1..]) {
                    return Slot::Ready(e);
                }
                let fs: Vec<_> = args[1..]
                    .chunks_exact(2)
                    .map(|kv| store.call(Op::Set(kv[0].clone(), kv[1].clone())))
                    .collect();
                task(async move {
                    for r in join_all(fs).await {
                        if let Err(e) = r {
                            return engine_err(&e);
                        }
                    }
                    simple("OK")
                })
            }
            // Both count the keys they found; a missing key is not an error.
            Cmd::Del => count_keys(store, &args[1..], Op::Remove, |r| match r {
                Ok(_) => Ok(true),
                Err(KvsError::KeyNotFound) => Ok(false),
                Err(e) => Err(e),
            }),
            Cmd::Exists => count_keys(store, &args[1..], Op::Get, |r| r.map(|v| v.is_some())),
            Cmd::Mget => {
                let fs = match per_key(store, &args[1..], Op::Get) {
                    Ok(fs) => fs,
                    Err(e) => return Slot::Ready(e),
                };
                task(async move {
                    let results = join_all(fs).await;
                    let mut out = Vec::new();
                    resp::array_len(results.len(), &mut out);
                    for r in results {
                        match r {
                            Ok(Some(v)) => resp::bulk(&v, &mut out),
                            Ok(None) => resp::null_bulk(&mut out),
                            Err(e) => return engine_err(&e),
                        }
                    }
                    out
                })
            }
            Cmd::Dbsize => {
                let f = store.key_count();
                task(async move {
                    match f.await {
                        Ok(n) => integer(i64::try_from(n).unwrap_or(i64::MAX)),
                        Err(e) => engine_err(&e),
                    }
                })
            }
            Cmd::Info => {
                let sections = info::Sections::parse(&args[1..]);
                let stats = sections.persistence.then(|| store.stats());
                let keys = sections.keyspace.then(|| store.key_count());
                let facts = self.facts;
                task(async move {
                    let log = match stats {
                        Some(f) => match f.await {
                            Ok(report) => Some(report),
                            Err(e) => return engine_err(&e),
                        },
                        None => None,
                    };
                    let keys = match keys {
                        Some(f) => match f.await {
                            Ok(n) => Some(n),
                            Err(e) => return engine_err(&e),
                        },
                        None => None,
                    };
                    bulk(Some(
                        info::render(&facts, sections, log.as_ref(), keys).as_bytes(),
                    ))
                })
            }
            // Redis's arity for PING is -1, and its handler refuses more than one argument.
            Cmd::Ping => Slot::Ready(match args {
                [_] => simple("PONG"),
                [_, message] => bulk(Some(message)),
                _ => err(&commands::wrong_arity(spec)),
            }),
            Cmd::Echo => Slot::Ready(bulk(Some(&args[1]))),
            Cmd::Select => Slot::Ready(match parse_i64(&args[1]) {
                Some(0) => simple("OK"),
                Some(_) => err("ERR DB index is out of range (kvs has database 0 only)"),
                None => err("ERR value is not an integer or out of range"),
            }),
            Cmd::Hello => self.hello(args),
            Cmd::Auth => self.auth(args),
            // QUIT closes the connection and is answered in `next`.
            Cmd::Quit => Slot::Ready(simple("OK")),
            Cmd::ClientSetname => ready(check_name(&args[2]).map(|name| {
                self.name = name;
                simple("OK")
            })),
            Cmd::ClientGetname => Slot::Ready(bulk(self.name.as_deref())),
            Cmd::ClientId => Slot::Ready(integer(self.id_i64())),
            Cmd::ConfigGet => {
                let mut out = Vec::new();
                let found = info::config_get(&self.facts, &args[2..]);
                resp::array_len(found.len() * 2, &mut out);
                for (name, value) in found {
                    resp::bulk(name.as_bytes(), &mut out);
                    resp::bulk(value.as_bytes(), &mut out);
                }
                Slot::Ready(out)
            }
            Cmd::Command => Slot::Ready(encoded(&Reply::Array(Some(
                commands::COMMANDS
                    .iter()
                    .map(commands::info_entry)
                    .collect(),
            )))),
            Cmd::CommandCount => Slot::Ready(integer(commands::COMMANDS.len() as i64)),
            Cmd::CommandInfo => {
                let entries = if args.len() == 2 {
                    commands::COMMANDS
                        .iter()
                        .map(commands::info_entry)
                        .collect()
                } else {
                    args[2..]
                        .iter()
                        .map(|name| {
                            commands::lookup(name).map_or(Reply::Bulk(None), commands::info_entry)
                        })
                        .collect()
                };
                Slot::Ready(encoded(&Reply::Array(Some(entries))))
            }
            Cmd::CommandDocs => {
                let named: Vec<&CommandSpec> = if args.len() == 2 {
                    commands::COMMANDS.iter().collect()
                } else {
                    // Unknown names are left out, as in Redis.
                    args[2..]
                        .iter()
                        .filter_map(|name| commands::lookup(name))
                        .collect()
                };
                let mut map = Vec::with_capacity(named.len() * 2);
                for spec in named {
                    map.push(Reply::Bulk(Some(Bytes::from_static(spec.name.as_bytes()))));
                    map.push(commands::docs_entry(spec));
                }
                Slot::Ready(encoded(&Reply::Array(Some(map))))
            }
            Cmd::Help => Slot::Ready(encoded(&commands::help_lines(spec))),
            // Containers are resolved to a subcommand, or refused for their arity, before here.
            Cmd::Client | Cmd::Config => Slot::Ready(err(&commands::wrong_arity(spec))),
        }
    }

    fn id_i64(&self) -> i64 {
        i64::try_from(self.id).unwrap_or(i64::MAX)
    }

    /// `AUTH [username] password`, whose arity (2 or more words) is checked.
    fn auth(&mut self, args: &[Bytes]) -> Slot {
        let (user, password) = match args {
            [_, password] => (None, password),
            [_, user, password] => (Some(&user[..]), password),
            _ => return Slot::Ready(err("ERR syntax error")),
        };
        if user.is_none() && !self.gate.has_password() {
            return Slot::Ready(err(NO_PASSWORD));
        }
        self.attempt(user, password)
            .map_or_else(|refused| refused, |()| Slot::Ready(simple("OK")))
    }

    /// Passes `user` and `password` to the gate: `Err` holds the delayed `-WRONGPASS`.
    fn attempt(&mut self, user: Option<&[u8]>, password: &[u8]) -> Result<(), Slot> {
        match self.gate.attempt(user, password) {
            Verdict::Accepted => Ok(()),
            Verdict::Refused { until, close } => {
                self.closing = close;
                Err(delayed(err(WRONGPASS), until))
            }
        }
    }

    /// `HELLO [protover [AUTH username password] [SETNAME clientname]]`. Everything is checked
    /// before anything changes; then `AUTH`, as in Redis.
    fn hello(&mut self, args: &[Bytes]) -> Slot {
        match self.hello_checked(args) {
            Ok(reply) | Err(reply) => reply,
        }
    }

    fn hello_checked(&mut self, args: &[Bytes]) -> Result<Slot, Slot> {
        let refuse = |e: &str| Slot::Ready(err(e));
        let mut at = 1;
        if let Some(version) = args.get(1) {
            match parse_i64(version) {
                Some(2) => {}
                Some(_) => {
                    return Err(refuse(
                        "NOPROTO unsupported protocol version (kvs speaks RESP2 only)",
                    ))
                }
                None => {
                    return Err(refuse(
                        "ERR Protocol version is not an integer or out of range",
                    ))
                }
            }
            at = 2;
        }
        let mut name = None;
        let mut auth = None;
        while at < args.len() {
            let more = args.len() - 1 - at;
            let option = &args[at];
            if option.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
                auth = Some((&args[at + 1], &args[at + 2]));
                at += 3;
            } else if option.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
                name = Some(check_name(&args[at + 1]).map_err(Slot::Ready)?);
                at += 2;
            } else {
                return Err(refuse(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                )));
            }
        }
        if let Some((user, password)) = auth {
            self.attempt(Some(user), password)?;
        }
        if !self.gate.is_open() {
            return Err(refuse(NOAUTH_HELLO));
        }
        if let Some(name) = name {
            self.name = name;
        }
        let text = |s: &str| Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())));
        Ok(Slot::Ready(encoded(&Reply::Array(Some(vec![
            text("server"),
            text("kvs"),
            text("version"),
            text(env!("CARGO_PKG_VERSION")),
            text("proto"),
            Reply::Integer(2),
            text("id"),
            Reply::Integer(self.id_i64()),
            text("mode"),
            text("standalone"),
            text("role"),
            text("master"),
            text("modules"),
            Reply::Array(Some(Vec::new())),
        ])))))
    }
}

/// The reply to `SET key value <option> ...`.
/// Checks `keys` against the limits, then starts `op` on each (DEL, EXISTS, MGET).
/// Runs `op` on every key and answers how many of them `found` counts; the first engine error
/// is the answer instead.
fn count_keys<S: Store>(
    store: &S,
    keys: &[Bytes],
    op: fn(Bytes) -> Op,
    found: fn(OpResult) -> Result<bool, KvsError>,
) -> Slot {
    let fs = match per_key(store, keys, op) {
        Ok(fs) => fs,
        Err(e) => return Slot::Ready(e),
    };
    task(async move {
        let mut n = 0;
        for r in join_all(fs).await {
            match found(r) {
                Ok(hit) => n += i64::from(hit),
                Err(e) => return engine_err(&e),
            }
        }
        integer(n)
    })
}

fn per_key<S: Store>(
    store: &S,
    keys: &[Bytes],
    op: fn(Bytes) -> Op,
) -> Result<Vec<LocalBoxFuture<OpResult>>, Vec<u8>> {
    check_keys(keys)?;
    Ok(keys.iter().map(|k| store.call(op(k.clone()))).collect())
}

/// GET's reply, appended to the output.
fn reply_get(r: OpResult, out: &mut Vec<u8>) {
    match r {
        Ok(Some(v)) => resp::bulk(&v, out),
        Ok(None) => resp::null_bulk(out),
        Err(e) => out.extend_from_slice(&engine_err(&e)),
    }
}

/// SET's reply, appended to the output.
fn reply_set(r: OpResult, out: &mut Vec<u8>) {
    match r {
        Ok(_) => resp::simple("OK", out),
        Err(e) => out.extend_from_slice(&engine_err(&e)),
    }
}

fn set_option_error(option: &[u8]) -> Vec<u8> {
    match SET_OPTIONS.iter().find(|o| o.as_bytes().eq_ignore_ascii_case(option)) {
        Some(known) => err(&format!(
            "ERR SET option '{known}' is not supported by kvs (kvs has no expiry or conditional writes; use plain SET key value)"
        )),
        None => err("ERR syntax error"),
    }
}

#[cfg(test)]
mod tests;
