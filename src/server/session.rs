//! One client connection: a reader task that decodes requests and starts them, a writer task
//! that sends responses in request order, and a timer that enforces the idle and slow-frame
//! timeouts by shutting the socket down (never by dropping an in-flight read). When the writer
//! is idle and a pass of the reader leaves only answers already known (cache hits, pings), the
//! reader sends them itself with a non-blocking write, and the writer is not woken.
//!
//! The first byte decides the dialect: the native magic's first byte, or RESP. On a server
//! with a password, each dialect passes its requests through the connection's [`Gate`].
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

use super::auth::{AuthConfig, Gate, Verdict};
use super::net::NetStream;
use super::router::{Answer, Started, Store};
use super::ServerFacts;
use crate::engine::shard::{Op, OpResult};
use crate::limits::{
    FRAME_BYTES_MAX, REQUESTS_IN_FLIGHT_MAX, REQUEST_BYTES_IN_FLIGHT_MAX, RESPONSE_BYTES_QUEUED_MAX,
};
use crate::protocol::{
    decode_client_hello, decode_request, encode_response, encode_server_hello, frame_len_hint,
    is_native_magic_start, ErrorKind, HelloStatus, ProtocolError, Request, Response,
};
use crate::KvsError;

/// Initial read buffer; it grows as frames need (idle connections stay small).
const READ_BUFFER_BYTES_MIN: usize = 2048;
/// Bytes a connection reads, and starts requests from, before it lets the worker's other
/// connections run. Without it, on the epoll backend, a client pipelining large writes had its
/// reads answered at once, turn after turn, for up to 128 reads (tokio's budget): megabytes
/// copied and decoded while every other client of the worker waited.
const READ_TURN_BYTES: usize = 256 * 1024;
/// Responses are gathered up to this size before a write.
const WRITE_GATHER_BYTES: usize = 64 * 1024;

/// Per-connection limits and timeouts, and the password a connection must give.
#[derive(Clone, Debug)]
pub struct SessionLimits {
    pub idle_timeout: Duration,
    pub frame_timeout: Duration,
    pub auth: AuthConfig,
}

/// Appends the response for an operation's result to the output.
pub type Encoder = fn(OpResult, &mut Vec<u8>);

/// A response that is ready, one waiting on a channel, one being computed, or the end of the
/// stream.
pub enum Slot {
    Ready(Vec<u8>),
    /// A result known at once, encoded only when it is written (a large cached value is shared,
    /// not copied, however many requests wait for it).
    Done {
        result: OpResult,
        encode: Encoder,
    },
    Wait {
        rx: Answer,
        encode: Encoder,
        /// The bytes the answer may hold, charged to the connection.
        charge: usize,
    },
    /// A response being computed, and the bytes it may hold (charged to the connection).
    Task(JoinHandle<Vec<u8>>, usize),
    /// A response held back until `until` (a failed password attempt's). A server shutdown
    /// does not wait for it: the connection is closed instead.
    Delayed {
        bytes: Vec<u8>,
        until: Instant,
    },
    /// Send everything before this, then close.
    Close,
}

impl Slot {
    fn charge(&self) -> usize {
        match self {
            Slot::Task(_, bytes) | Slot::Wait { charge: bytes, .. } => *bytes,
            // A small cached value is a copy of its own (a large one is shared, and charged
            // the same, to keep the rule simple).
            Slot::Done {
                result: Ok(Some(value)),
                ..
            } => value.len(),
            _ => 0,
        }
    }
}

/// What a dialect made of the bytes at the head of the read buffer.
pub enum Step {
    /// Not enough bytes for a whole request.
    More,
    /// A request was decoded from the first `used` bytes; `slot` will answer it.
    Request { slot: Slot, used: usize },
    /// As `Request`, and the connection closes once `slot` has answered (the last failed
    /// password attempt a connection may make).
    Final { slot: Slot, used: usize },
    /// The input is not acceptable: send `reply` (may be empty), then close.
    Fatal { reply: Vec<u8> },
}

/// A wire protocol as a session sees it: requests in, slots out.
pub trait Dialect<S: Store>: 'static {
    /// Looks over the requests at the head of `buf` before they are started, one by one, by
    /// [`Dialect::next`]: a dialect may ask the store to prepare for them
    /// ([`Store::prefetch_gets`]).
    fn prepare(&mut self, _buf: &[u8], _store: &S) {}
    fn next(&mut self, buf: &[u8], store: &S) -> Step;
    /// How many bytes the request at the head of `buf` needs in all (a hint to size the read
    /// buffer; only called after `next` returned `More`, so the length is already checked).
    fn need(&self, buf: &[u8]) -> usize;
}

/// State shared by a connection's tasks.
pub struct Conn<N> {
    pub stream: N,
    /// Unanswered requests, each with the bytes it is charged.
    queue: RefCell<VecDeque<(Slot, usize)>>,
    inflight_bytes: Cell<usize>,
    /// Wakes the writer when it waits for a request (`writer_waits`).
    queued: Notify,
    /// Wakes the reader when it waits for answers (`reader_waits`).
    drained: Notify,
    /// Whether the writer waits on `queued` (only then is it notified: most pushes find it busy).
    writer_waits: Cell<bool>,
    /// Whether the reader waits on `drained`.
    reader_waits: Cell<bool>,
    last_request: Cell<Instant>,
    /// When the first byte of a still-incomplete request arrived.
    partial_since: Cell<Option<Instant>>,
    closed: Cell<bool>,
    /// The reader should stop at the next opportunity (server shutdown).
    stop_reading: Cell<bool>,
    /// Wakes the writer out of a [`Slot::Delayed`] wait at shutdown.
    stopping: Notify,
}

impl<N: NetStream> Conn<N> {
    pub fn new(stream: N) -> Conn<N> {
        Conn {
            stream,
            queue: RefCell::new(VecDeque::new()),
            inflight_bytes: Cell::new(0),
            queued: Notify::new(),
            drained: Notify::new(),
            writer_waits: Cell::new(false),
            reader_waits: Cell::new(false),
            last_request: Cell::new(Instant::now()),
            partial_since: Cell::new(None),
            closed: Cell::new(false),
            stop_reading: Cell::new(false),
            stopping: Notify::new(),
        }
    }

    /// Asks the session to stop reading and finish what it started (graceful shutdown).
    pub fn drain(&self) {
        self.stop_reading.set(true);
        self.stopping.notify_one();
        self.stream.shutdown(Shutdown::Read);
    }

    fn close(&self) {
        if !self.closed.replace(true) {
            self.stream.shutdown(Shutdown::Both);
            self.queued.notify_one();
            self.drained.notify_one();
        }
    }

    fn push(&self, slot: Slot, bytes: usize) {
        self.push_quiet(slot, bytes);
        if self.writer_waits.get() {
            self.queued.notify_one();
        }
    }

    /// Queues an answer without waking the writer: the reader wakes it, if it must, when it
    /// hands its pass over ([`Conn::hand_over`]).
    fn push_quiet(&self, slot: Slot, bytes: usize) {
        self.inflight_bytes.set(self.inflight_bytes.get() + bytes);
        self.queue.borrow_mut().push_back((slot, bytes));
    }

    /// Ends a pass of the reader. When the writer is idle and every queued answer is already
    /// known, they are encoded into `out` and sent at once from the reader's turn, with a
    /// non-blocking write: a response leaves without a wake-up of the writer, and before the
    /// next read is set up. Otherwise the writer is woken for the queue; it also takes the
    /// bytes the socket did not take at once. (Sending the known head of a queue here and its
    /// awaited rest from the writer made one write into two, and cost the two-worker workload
    /// 8% of its rate: BENCHMARKS.md.)
    ///
    /// Responses stay in request order: the queue is taken from its head, and only while the
    /// writer waits, which it does holding nothing.
    fn hand_over(&self, out: &mut Vec<u8>) {
        if self.writer_waits.get() && !self.closed.get() && self.all_known() {
            self.send_now(out);
        }
        if self.writer_waits.get() && !self.queue.borrow().is_empty() {
            self.queued.notify_one();
        }
    }

    fn all_known(&self) -> bool {
        let queue = self.queue.borrow();
        !queue.is_empty()
            && queue
                .iter()
                .all(|(slot, _)| matches!(slot, Slot::Ready(_) | Slot::Done { .. }))
    }

    /// Encodes the known answers at the head of the queue into `out` (up to the gathering
    /// limit) and writes them without waiting; what the socket does not take goes back to the
    /// head of the queue.
    fn send_now(&self, out: &mut Vec<u8>) {
        let mut answered = 0;
        {
            let mut queue = self.queue.borrow_mut();
            while out.len() < WRITE_GATHER_BYTES.min(RESPONSE_BYTES_QUEUED_MAX) {
                let Some((slot, charged)) = queue.pop_front() else {
                    break;
                };
                match slot {
                    Slot::Ready(bytes) => out.extend_from_slice(&bytes),
                    Slot::Done { result, encode } => encode(result, out),
                    other => {
                        queue.push_front((other, charged));
                        break;
                    }
                }
                answered += charged;
            }
        }
        self.inflight_bytes
            .set(self.inflight_bytes.get() - answered);
        if out.is_empty() {
            return;
        }
        match self.stream.try_write(out) {
            Ok(n) if n < out.len() => {
                let rest = out[n..].to_vec();
                self.queue.borrow_mut().push_front((Slot::Ready(rest), 0));
            }
            Ok(_) => {}
            Err(_) => self.close(),
        }
        out.clear();
        if out.capacity() > 4 * WRITE_GATHER_BYTES {
            *out = Vec::new();
        }
    }

    /// Whether the reader must wait for answers before starting more requests.
    fn full(&self) -> bool {
        let q = self.queue.borrow();
        !q.is_empty()
            && (q.len() >= REQUESTS_IN_FLIGHT_MAX
                || self.inflight_bytes.get() >= REQUEST_BYTES_IN_FLIGHT_MAX)
    }
}

/// Serves one connection to its end: sniffs the dialect from the first byte, then reads
/// requests and writes responses until either side closes.
pub async fn serve_connection<N: NetStream, S: Store>(
    conn: Rc<Conn<N>>,
    store: S,
    limits: SessionLimits,
    facts: ServerFacts,
) {
    let timer = tokio::task::spawn_local(watch_timeouts(conn.clone(), limits.clone()));
    let writer = tokio::task::spawn_local(write_responses(conn.clone()));
    let (res, first) = conn
        .stream
        .read(Vec::with_capacity(READ_BUFFER_BYTES_MIN))
        .await;
    match res {
        Ok(n) if n > 0 && !conn.stop_reading.get() => {
            let gate = Gate::new(limits.auth.clone());
            if is_native_magic_start(first[0]) {
                read_requests(&conn, &store, Native::new(gate), first).await;
            } else {
                let resp = super::resp::Resp::new(facts, gate);
                read_requests(&conn, &store, resp, first).await;
            }
        }
        _ => conn.push(Slot::Close, 0),
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
    let mut turn_bytes = 0;
    // Answers sent from the reader's turn ([`Conn::hand_over`]).
    let mut out = Vec::new();
    loop {
        // Start every complete request in the buffer.
        let mut used = 0;
        let mut fatal = false;
        // Whether a request was started since `last_request` was last set: the clock is read
        // once per pass over the buffer, not once per request.
        let mut started = false;
        dialect.prepare(&buf, store);
        while !conn.closed.get() {
            if conn.full() {
                if std::mem::take(&mut started) {
                    conn.last_request.set(Instant::now());
                }
                store.flush();
                conn.hand_over(&mut out);
                if conn.full() {
                    conn.reader_waits.set(true);
                    conn.drained.notified().await;
                    conn.reader_waits.set(false);
                }
                continue;
            }
            match dialect.next(&buf[used..], store) {
                Step::More => break,
                Step::Request { slot, used: n } => {
                    used += n;
                    started = true;
                    let close = matches!(slot, Slot::Close);
                    let charge = n + slot.charge();
                    conn.push_quiet(slot, charge);
                    if close {
                        fatal = true;
                        break;
                    }
                }
                Step::Final { slot, used: n } => {
                    used += n;
                    started = true;
                    conn.push_quiet(slot, n);
                    conn.push_quiet(Slot::Close, 0);
                    fatal = true;
                    break;
                }
                Step::Fatal { reply } => {
                    if !reply.is_empty() {
                        conn.push_quiet(Slot::Ready(reply), 0);
                    }
                    conn.push_quiet(Slot::Close, 0);
                    fatal = true;
                    break;
                }
            }
        }
        if started {
            conn.last_request.set(Instant::now());
        }
        store.flush();
        conn.hand_over(&mut out);
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
        if turn_bytes >= READ_TURN_BYTES {
            turn_bytes = 0;
            tokio::task::yield_now().await;
        }
        let (res, b) = conn.stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(n) => turn_bytes += n,
        }
    }
    conn.push(Slot::Close, 0);
}

async fn write_responses<N: NetStream>(conn: Rc<Conn<N>>) {
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let next = conn.queue.borrow_mut().pop_front();
        let Some((slot, charged)) = next else {
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
            conn.writer_waits.set(true);
            conn.queued.notified().await;
            conn.writer_waits.set(false);
            continue;
        };
        match slot {
            Slot::Ready(bytes) => out.extend_from_slice(&bytes),
            Slot::Done { result, encode } => encode(result, &mut out),
            Slot::Wait { mut rx, encode, .. } => {
                let result = match rx.try_take() {
                    Some(r) => r,
                    None => {
                        if !out.is_empty() {
                            out = match write_out(&conn, out).await {
                                Some(o) => o,
                                None => return,
                            };
                        }
                        rx.await
                    }
                };
                encode(result, &mut out);
            }
            Slot::Task(handle, _) => {
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
            Slot::Delayed { bytes, until } => {
                if !out.is_empty() {
                    out = match write_out(&conn, out).await {
                        Some(o) => o,
                        None => return,
                    };
                }
                // Only a timer and a notification are raced here; no I/O is dropped.
                let stopped = conn.stop_reading.get()
                    || tokio::select! {
                        () = tokio::time::sleep_until(until) => false,
                        () = conn.stopping.notified() => true,
                    };
                if stopped {
                    // Shutting down: the answer (and what follows it) is not worth the wait.
                    conn.close();
                    return;
                }
                out.extend_from_slice(&bytes);
            }
            Slot::Close => {
                if !out.is_empty() {
                    let _ = write_out(&conn, out).await;
                }
                conn.close();
                return;
            }
        }
        // Answered: the reader may start more.
        conn.inflight_bytes.set(conn.inflight_bytes.get() - charged);
        if conn.reader_waits.get() {
            conn.drained.notify_one();
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
pub struct Native {
    greeted: bool,
    gate: Gate,
}

impl Native {
    pub fn new(gate: Gate) -> Native {
        Native {
            greeted: false,
            gate,
        }
    }
}

/// A slot that answers `bytes` no earlier than `until` (a failed password attempt's answer).
/// The writer waits on a timer, so the worker and its other connections go on meanwhile.
pub fn delayed(bytes: Vec<u8>, until: Instant) -> Slot {
    Slot::Delayed { bytes, until }
}

fn encode(r: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(r, &mut out);
    out
}

/// The slot that answers a started operation, encoded by `encode`.
pub fn answer(started: Started, encode: Encoder) -> Slot {
    match started {
        Started::Now(result) => Slot::Done { result, encode },
        Started::Later(rx, charge) => Slot::Wait { rx, encode, charge },
        Started::Task(f, bytes) => Slot::Task(
            tokio::task::spawn_local(async move {
                let mut out = Vec::new();
                encode(f.await, &mut out);
                out
            }),
            bytes,
        ),
    }
}

fn encode_into(r: &Response, out: &mut Vec<u8>) {
    let start = out.len();
    if encode_response(r, out).is_err() {
        out.truncate(start);
        let e = Response::Error {
            kind: ErrorKind::Internal,
            message: "response could not be encoded".into(),
        };
        let _ = encode_response(&e, out);
    }
}

fn native_get(r: OpResult, out: &mut Vec<u8>) {
    match r {
        Ok(v) => encode_into(&Response::Value(v), out),
        Err(e) => encode_into(&error_response(&e), out),
    }
}

fn native_set(r: OpResult, out: &mut Vec<u8>) {
    match r {
        Ok(_) => encode_into(&Response::Ok, out),
        Err(e) => encode_into(&error_response(&e), out),
    }
}

fn native_remove(r: OpResult, out: &mut Vec<u8>) {
    match r {
        Ok(_) => encode_into(&Response::Ok, out),
        Err(KvsError::KeyNotFound) => encode_into(&Response::NotFound, out),
        Err(e) => encode_into(&error_response(&e), out),
    }
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

impl Native {
    /// Answers `Auth`: `Ok`, a delayed `WrongPassword` (the last one allowed closes the
    /// connection), or `Unsupported` on a server without a password.
    fn auth(&mut self, password: &[u8], used: usize) -> Step {
        if !self.gate.has_password() {
            let refusal = Response::Error {
                kind: ErrorKind::Unsupported,
                message: "Auth sent, but the server has no password configured".into(),
            };
            return Step::Request {
                slot: Slot::Ready(encode(&refusal)),
                used,
            };
        }
        match self.gate.attempt(None, password) {
            Verdict::Accepted => Step::Request {
                slot: Slot::Ready(encode(&Response::Ok)),
                used,
            },
            Verdict::Refused { until, close } => {
                let refusal = Response::Error {
                    kind: ErrorKind::WrongPassword,
                    message: "wrong password".into(),
                };
                let slot = delayed(encode(&refusal), until);
                if close {
                    Step::Final { slot, used }
                } else {
                    Step::Request { slot, used }
                }
            }
        }
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
            // The frame itself is sound (its length is within limits and all of it is here),
            // so the connection can go on past it.
            Err(e @ (ProtocolError::KeyTooLarge { .. } | ProtocolError::ValueTooLarge { .. })) => {
                if let Ok(Some(used)) = frame_len_hint(buf) {
                    return Step::Request {
                        slot: Slot::Ready(encode(&e.to_response())),
                        used,
                    };
                }
                return Step::Fatal {
                    reply: encode(&e.to_response()),
                };
            }
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
            Request::Auth { password } => return self.auth(&password, used),
            // Before authenticating, nothing else is served, not even Ping (as in Redis).
            _ if !self.gate.is_open() => Slot::Ready(encode(&Response::Error {
                kind: ErrorKind::AuthRequired,
                message: "authentication required: send Auth with the server's password first"
                    .into(),
            })),
            Request::Ping => Slot::Ready(encode(&Response::Pong)),
            Request::Stats => {
                let stats = store.stats();
                let task = tokio::task::spawn_local(async move {
                    encode(&match stats.await {
                        Ok(s) => Response::Stats(s),
                        Err(e) => error_response(&e),
                    })
                });
                Slot::Task(task, 0)
            }
            Request::Get { key } => answer(store.start(Op::Get(key)), native_get),
            Request::Set { key, value } => answer(store.start(Op::Set(key, value)), native_set),
            Request::Remove { key } => answer(store.start(Op::Remove(key)), native_remove),
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
