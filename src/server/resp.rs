//! The RESP2 dialect: Redis clients (`redis-cli`, `redis-benchmark`, client libraries) talk
//! to kvs on the same port as the native protocol, against the same partitions, durability
//! and limits.
//!
//! Commands are answered in Redis's wording where Redis has one (`-ERR unknown command ...`,
//! `-ERR wrong number of arguments for '...' command`). Options we do not support are refused
//! with a clear error, never silently ignored.

use bytes::Bytes;
use futures_util::future::join_all;

use super::router::Store;
use super::session::{Dialect, Slot, Step};
use crate::engine::shard::Op;
use crate::limits::RESP_COMMAND_BYTES_MAX;
use crate::protocol::resp::{self, parse_command};
use crate::KvsError;

/// Per-connection RESP state.
#[derive(Default)]
pub struct Resp {
    name: Option<Bytes>,
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

/// The RESP error for an engine error.
fn engine_err(e: &KvsError) -> Vec<u8> {
    match e {
        KvsError::Poisoned { .. } => err(&format!("READONLY {e}")),
        _ => err(&format!("ERR {e}")),
    }
}

fn wrong_args(cmd: &str) -> Vec<u8> {
    err(&format!(
        "ERR wrong number of arguments for '{cmd}' command"
    ))
}

fn task(f: impl std::future::Future<Output = Vec<u8>> + 'static) -> Slot {
    Slot::Task(tokio::task::spawn_local(f))
}

impl<S: Store> Dialect<S> for Resp {
    fn next(&mut self, buf: &[u8], store: &S) -> Step {
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
            return Step::Request {
                slot: Slot::Ready(Vec::new()),
                used,
            };
        }
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        if name == "quit" {
            return Step::Fatal {
                reply: simple("OK"),
            };
        }
        let slot = self.command(&name, &args, store);
        Step::Request { slot, used }
    }

    fn need(&self, buf: &[u8]) -> usize {
        (buf.len() * 2).clamp(16 * 1024, RESP_COMMAND_BYTES_MAX)
    }
}

impl Resp {
    fn command<S: Store>(&mut self, name: &str, args: &[Bytes], store: &S) -> Slot {
        let argc = args.len();
        match name {
            "ping" => match argc {
                1 => Slot::Ready(simple("PONG")),
                2 => Slot::Ready(bulk(Some(&args[1]))),
                _ => Slot::Ready(wrong_args("ping")),
            },
            "echo" if argc == 2 => Slot::Ready(bulk(Some(&args[1]))),
            "get" if argc == 2 => {
                let f = store.call(Op::Get(args[1].clone()));
                task(async move {
                    match f.await {
                        Ok(v) => bulk(v.as_deref()),
                        Err(e) => engine_err(&e),
                    }
                })
            }
            "set" if argc == 3 => {
                let f = store.call(Op::Set(args[1].clone(), args[2].clone()));
                task(async move {
                    match f.await {
                        Ok(_) => simple("OK"),
                        Err(e) => engine_err(&e),
                    }
                })
            }
            "set" if argc > 3 => Slot::Ready(err(&format!(
                "ERR SET option '{}' is not supported by kvs (plain SET key value only)",
                String::from_utf8_lossy(&args[3])
            ))),
            "del" | "unlink" if argc >= 2 => {
                let fs: Vec<_> = args[1..]
                    .iter()
                    .map(|k| store.call(Op::Remove(k.clone())))
                    .collect();
                task(async move {
                    let mut n = 0;
                    for r in join_all(fs).await {
                        match r {
                            Ok(_) => n += 1,
                            Err(KvsError::KeyNotFound) => {}
                            Err(e) => return engine_err(&e),
                        }
                    }
                    integer(n)
                })
            }
            "exists" if argc >= 2 => {
                let fs: Vec<_> = args[1..]
                    .iter()
                    .map(|k| store.call(Op::Get(k.clone())))
                    .collect();
                task(async move {
                    let mut n = 0;
                    for r in join_all(fs).await {
                        match r {
                            Ok(Some(_)) => n += 1,
                            Ok(None) => {}
                            Err(e) => return engine_err(&e),
                        }
                    }
                    integer(n)
                })
            }
            "mget" if argc >= 2 => {
                let fs: Vec<_> = args[1..]
                    .iter()
                    .map(|k| store.call(Op::Get(k.clone())))
                    .collect();
                task(async move {
                    let results = join_all(fs).await;
                    let mut out = Vec::new();
                    resp::array_len(results.len(), &mut out);
                    for r in results {
                        match r {
                            Ok(v) => out.extend_from_slice(&bulk(v.as_deref())),
                            Err(e) => return engine_err(&e),
                        }
                    }
                    out
                })
            }
            "mset" if argc >= 3 && argc % 2 == 1 => {
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
            "dbsize" if argc == 1 => {
                let f = store.key_count();
                task(async move {
                    match f.await {
                        Ok(n) => integer(n as i64),
                        Err(e) => engine_err(&e),
                    }
                })
            }
            "select" if argc == 2 => match &args[1][..] {
                b"0" => Slot::Ready(simple("OK")),
                _ => Slot::Ready(err(
                    "ERR DB index is out of range (kvs has database 0 only)",
                )),
            },
            _ if matches!(
                name,
                "get"
                    | "set"
                    | "del"
                    | "unlink"
                    | "exists"
                    | "mget"
                    | "mset"
                    | "dbsize"
                    | "select"
                    | "echo"
            ) =>
            {
                Slot::Ready(wrong_args(name))
            }
            _ => {
                let _ = &self.name;
                let shown: String = String::from_utf8_lossy(&args[0])
                    .chars()
                    .take(128)
                    .collect();
                // Redis's wording, including the space after each quoted argument.
                let rest: String = args[1..]
                    .iter()
                    .take(8)
                    .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
                    .collect();
                Slot::Ready(err(&format!(
                    "ERR unknown command '{shown}', with args beginning with: {rest}"
                )))
            }
        }
    }
}
