//! One client connection: a reader task that decodes requests and starts them, a writer task
//! that sends responses in request order, and a timer that enforces the idle and slow-frame
//! timeouts by shutting the socket down (never by dropping an in-flight read).
//!
//! The first byte decides the dialect: the native magic's first byte, or RESP.
//!
//! Invariants:
//! - Responses leave in request order.
//! - At most `REQUESTS_IN_FLIGHT_MAX` requests are started and unanswered per connection;
//!   past that the reader stops reading (a client that never reads stops being read).
//! - No buffer is sized by an untrusted length before the codec has checked it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::net::NetStream;
use super::router::Store;
use crate::engine::shard::Op;
use crate::limits::{FRAME_BYTES_MAX, REQUESTS_IN_FLIGHT_MAX, RESPONSE_BYTES_QUEUED_MAX};
use crate::protocol::{
    decode_client_hello, decode_request, encode_response, encode_server_hello, frame_len_hint,
    is_native_magic_start, ErrorKind, HelloStatus, Request, Response,
};
use crate::KvsError;

/// Initial read buffer; it grows as frames need (idle connections stay small).
const READ_BUFFER_BYTES_MIN: usize = 2048;
/// Responses are gathered up to this size before a write.
const WRITE_GATHER_BYTES: usize = 64 * 1024;

/// Per-connection limits and timeouts.
#[derive(Clone, Debug)]
pub struct SessionLimits {
    pub idle_timeout: Duration,
    pub frame_timeout: Duration,
}

/// A response that is ready, one that is being computed, or the end of the stream.
pub enum Slot {
    Ready(Vec<u8>),
    Task(JoinHandle<Vec<u8>>),
    /// Send everything before this, then close.
    Close,
}

/// What a dialect made of the bytes at the head of the read buffer.
pub enum Step {
    /// Not enough bytes for a whole request.
    More,
    /// A request was decoded from the first `used` bytes; `slot` will answer it.
    Request { slot: Slot, used: usize },
    /// The input is not acceptable: send `reply` (may be empty), then close.
    Fatal { reply: Vec<u8> },
}

/// A wire protocol as a session sees it: requests in, slots out.
pub trait Dialect<S: Store>: 'static {
    fn next(&mut self, buf: &[u8], store: &S) -> Step;
    /// How many bytes the request at the head of `buf` needs in all (a hint to size the read
    /// buffer; only called after `next` returned `More`, so the length is already checked).
    fn need(&self, buf: &[u8]) -> usize;
}

/// State shared by a connection's tasks.
pub struct Conn<N> {
    pub stream: N,
    queue: RefCell<VecDeque<Slot>>,
    queued: Notify,
    drained: Notify,
    last_request: Cell<Instant>,
    /// When the first byte of a still-incomplete request arrived.
    partial_since: Cell<Option<Instant>>,
    closed: Cell<bool>,
    /// The reader should stop at the next opportunity (server shutdown).
    stop_reading: Cell<bool>,
}

impl<N: NetStream> Conn<N> {
    pub fn new(stream: N) -> Conn<N> {
        Conn {
            stream,
            queue: RefCell::new(VecDeque::new()),
            queued: Notify::new(),
            drained: Notify::new(),
            last_request: Cell::new(Instant::now()),
            partial_since: Cell::new(None),
            closed: Cell::new(false),
            stop_reading: Cell::new(false),
        }
    }

    /// Asks the session to stop reading and finish what it started (graceful shutdown).
    pub fn drain(&self) {
        self.stop_reading.set(true);
        self.stream.shutdown(Shutdown::Read);
    }

    fn close(&self) {
        if !self.closed.replace(true) {
            self.stream.shutdown(Shutdown::Both);
            self.queued.notify_one();
            self.drained.notify_one();
        }
    }

    fn push(&self, slot: Slot) {
        self.queue.borrow_mut().push_back(slot);
        self.queued.notify_one();
    }
}

/// Serves one connection to its end: sniffs the dialect from the first byte, then reads
/// requests and writes responses until either side closes.
pub async fn serve_connection<N: NetStream, S: Store>(
    conn: Rc<Conn<N>>,
    store: S,
    limits: SessionLimits,
) {
    let timer = tokio::task::spawn_local(watch_timeouts(conn.clone(), limits));
    let writer = tokio::task::spawn_local(write_responses(conn.clone()));
    let (res, first) = conn
        .stream
        .read(Vec::with_capacity(READ_BUFFER_BYTES_MIN))
        .await;
    match res {
        Ok(n) if n > 0 && !conn.stop_reading.get() => {
            if is_native_magic_start(first[0]) {
                read_requests(&conn, &store, Native::default(), first).await;
            } else {
                read_requests(&conn, &store, super::resp::Resp::default(), first).await;
            }
        }
        _ => conn.push(Slot::Close),
    }
    let _ = writer.await;
    conn.close();
    // The timer only sleeps; ending it drops no I/O.
    timer.abort();
}

async fn read_requests<N: NetStream, S: Store, T: Dialect<S>>(
    conn: &Conn<N>,
    store: &S,
    mut dialect: T,
    first: Vec<u8>,
) {
    let mut buf = first;
    buf.reserve(READ_BUFFER_BYTES_MIN.saturating_sub(buf.len()));
    loop {
        // Start every complete request in the buffer.
        let mut used = 0;
        let mut fatal = false;
        while !conn.closed.get() {
            if conn.queue.borrow().len() >= REQUESTS_IN_FLIGHT_MAX {
                store.flush();
                conn.drained.notified().await;
                continue;
            }
            match dialect.next(&buf[used..], store) {
                Step::More => break,
                Step::Request { slot, used: n } => {
                    used += n;
                    conn.last_request.set(Instant::now());
                    let close = matches!(slot, Slot::Close);
                    conn.push(slot);
                    if close {
                        fatal = true;
                        break;
                    }
                }
                Step::Fatal { reply } => {
                    if !reply.is_empty() {
                        conn.push(Slot::Ready(reply));
                    }
                    conn.push(Slot::Close);
                    fatal = true;
                    break;
                }
            }
        }
        store.flush();
        if fatal || conn.closed.get() || conn.stop_reading.get() {
            break;
        }
        buf.drain(..used);
        conn.partial_since.set(if buf.is_empty() {
            None
        } else {
            Some(conn.partial_since.get().unwrap_or_else(Instant::now))
        });
        let need = if buf.is_empty() {
            0
        } else {
            dialect.need(&buf).min(FRAME_BYTES_MAX + 64)
        };
        let want = need.max(buf.len() + READ_BUFFER_BYTES_MIN / 2);
        if buf.capacity() < want {
            buf.reserve(want - buf.len());
        }
        let (res, b) = conn.stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    conn.push(Slot::Close);
}

async fn write_responses<N: NetStream>(conn: Rc<Conn<N>>) {
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let slot = conn.queue.borrow_mut().pop_front();
        let Some(slot) = slot else {
            if !out.is_empty() {
                out = match write_out(&conn, out).await {
                    Some(o) => o,
                    None => return,
                };
                continue;
            }
            if conn.closed.get() {
                return;
            }
            conn.queued.notified().await;
            continue;
        };
        conn.drained.notify_one();
        match slot {
            Slot::Ready(bytes) => out.extend_from_slice(&bytes),
            Slot::Task(handle) => {
                if !out.is_empty() && !handle.is_finished() {
                    out = match write_out(&conn, out).await {
                        Some(o) => o,
                        None => return,
                    };
                }
                match handle.await {
                    Ok(bytes) => out.extend_from_slice(&bytes),
                    Err(_) => {
                        conn.close();
                        return;
                    }
                }
            }
            Slot::Close => {
                if !out.is_empty() {
                    let _ = write_out(&conn, out).await;
                }
                conn.close();
                return;
            }
        }
        if out.len() >= WRITE_GATHER_BYTES.min(RESPONSE_BYTES_QUEUED_MAX) {
            out = match write_out(&conn, out).await {
                Some(o) => o,
                None => return,
            };
        }
    }
}

/// Writes the gathered responses; `None` when the connection is gone.
async fn write_out<N: NetStream>(conn: &Conn<N>, out: Vec<u8>) -> Option<Vec<u8>> {
    let (res, mut out) = conn.stream.write_all(out).await;
    if res.is_err() {
        conn.close();
        return None;
    }
    out.clear();
    if out.capacity() > 4 * WRITE_GATHER_BYTES {
        out = Vec::with_capacity(4096);
    }
    Some(out)
}

/// Closes the connection when it has been idle too long or a request is arriving too slowly.
async fn watch_timeouts<N: NetStream>(conn: Rc<Conn<N>>, limits: SessionLimits) {
    loop {
        if conn.closed.get() {
            return;
        }
        let idle_deadline = conn.last_request.get() + limits.idle_timeout;
        let frame_deadline = conn.partial_since.get().map(|t| t + limits.frame_timeout);
        let deadline = frame_deadline.map_or(idle_deadline, |f| f.min(idle_deadline));
        let now = Instant::now();
        if now >= deadline {
            conn.close();
            return;
        }
        // Wake at the deadline, or within a second to notice a close or a new partial frame.
        tokio::time::sleep_until(deadline.min(now + Duration::from_secs(1))).await;
    }
}

// ---- the native dialect ----------------------------------------------------------------------

/// kvs's own protocol: a hello, then length-prefixed postcard frames.
#[derive(Default)]
pub struct Native {
    greeted: bool,
}

fn encode(r: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    if encode_response(r, &mut out).is_err() {
        out.clear();
        let e = Response::Error {
            kind: ErrorKind::Internal,
            message: "response could not be encoded".into(),
        };
        let _ = encode_response(&e, &mut out);
    }
    out
}

/// The error response for an engine error.
pub fn error_response(e: &KvsError) -> Response {
    let kind = match e {
        KvsError::KeyTooLarge { .. } => ErrorKind::KeyTooLarge,
        KvsError::ValueTooLarge { .. } => ErrorKind::ValueTooLarge,
        KvsError::Poisoned { .. } => ErrorKind::ReadOnly,
        KvsError::DiskFull => ErrorKind::DiskFull,
        _ => ErrorKind::Internal,
    };
    Response::Error {
        kind,
        message: e.to_string(),
    }
}

impl<S: Store> Dialect<S> for Native {
    fn next(&mut self, buf: &[u8], store: &S) -> Step {
        if !self.greeted {
            return match decode_client_hello(buf) {
                Ok(None) => Step::More,
                Ok(Some(version)) => {
                    let status = HelloStatus::for_client_version(version);
                    let mut reply = Vec::new();
                    encode_server_hello(status, &mut reply);
                    if status != HelloStatus::Accepted {
                        return Step::Fatal { reply };
                    }
                    self.greeted = true;
                    Step::Request {
                        slot: Slot::Ready(reply),
                        used: crate::protocol::HELLO_BYTES,
                    }
                }
                Err(_) => Step::Fatal { reply: Vec::new() },
            };
        }
        let (request, used) = match decode_request(buf) {
            Ok(None) => return Step::More,
            Ok(Some(r)) => r,
            Err(e) => {
                return Step::Fatal {
                    reply: encode(&e.to_response()),
                }
            }
        };
        if let Err(e) = request.check_limits() {
            return Step::Request {
                slot: Slot::Ready(encode(&e.to_response())),
                used,
            };
        }
        let slot = match request {
            Request::Ping => Slot::Ready(encode(&Response::Pong)),
            Request::Stats => {
                let stats = store.stats();
                Slot::Task(tokio::task::spawn_local(async move {
                    encode(&match stats.await {
                        Ok(s) => Response::Stats(s),
                        Err(e) => error_response(&e),
                    })
                }))
            }
            Request::Get { key } => {
                let f = store.call(Op::Get(key));
                Slot::Task(tokio::task::spawn_local(async move {
                    encode(&match f.await {
                        Ok(v) => Response::Value(v),
                        Err(e) => error_response(&e),
                    })
                }))
            }
            Request::Set { key, value } => {
                let f = store.call(Op::Set(key, value));
                Slot::Task(tokio::task::spawn_local(async move {
                    encode(&match f.await {
                        Ok(_) => Response::Ok,
                        Err(e) => error_response(&e),
                    })
                }))
            }
            Request::Remove { key } => {
                let f = store.call(Op::Remove(key));
                Slot::Task(tokio::task::spawn_local(async move {
                    encode(&match f.await {
                        Ok(_) => Response::Ok,
                        Err(KvsError::KeyNotFound) => Response::NotFound,
                        Err(e) => error_response(&e),
                    })
                }))
            }
        };
        Step::Request { slot, used }
    }

    fn need(&self, buf: &[u8]) -> usize {
        if !self.greeted {
            return crate::protocol::HELLO_BYTES;
        }
        match frame_len_hint(buf) {
            Ok(Some(n)) => n,
            _ => crate::protocol::FRAME_HEADER_BYTES,
        }
    }
}
