//! One load-generating connection: it keeps up to `pipeline` requests in flight, matches
//! replies to requests by order, timestamps both ends, and (with `--verify`) checks every
//! GET against what it wrote.
//!
//! A connection is one task on its thread's current-thread runtime, driving a non-blocking
//! socket itself: it writes every request it can in one `send`, reads every reply that has
//! arrived in one `recv`, and only then waits for readiness. The send and read buffers, the
//! in-flight queue and the per-key versions are allocated once; a request costs a few
//! `memcpy`s into the send buffer and a reply a parse in place.
//!
//! Latency is measured from a request's *intended* send time. In a closed loop that is when
//! it was queued; in an open loop (`--rate`) it is the request's slot in the schedule, even
//! when the connection is behind and sends it late, so a stalled server is charged for the
//! requests it delayed (no coordinated omission).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::os::fd::OwnedFd;

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::codec::{parse_reply, ReplyKind, RequestEncoder};
use super::stats::{Op, Phase, ThreadStats};
use super::workload::{read_threshold, Keyspace, Rng, Stripe, ValueTemplate};
use super::Protocol;
use crate::auth::Password;
use crate::limits::BENCH_CONNECT_TIMEOUT_MS;
use crate::protocol::resp::{self, Reply};
use crate::protocol::{
    decode_response, decode_server_hello, encode_client_hello, encode_request, ErrorKind,
    HelloStatus, Request, Response, HELLO_BYTES,
};
use crate::KvsError;

/// When the next scheduled send is this close, the connection yields to the runtime until
/// it is due rather than arming its alarm.
const SPIN_WINDOW: Duration = Duration::from_micros(50);
/// How early the alarm is set before a scheduled send, to absorb the wake-up latency.
const ALARM_EARLY: Duration = Duration::from_micros(30);
/// Smallest receive buffer; it also holds at least two of the largest replies.
const RECV_BUFFER_BYTES_MIN: usize = 64 * 1024;

/// What every connection of a thread shares.
pub struct Context {
    pub protocol: Protocol,
    pub pipeline: usize,
    pub keys: std::sync::Arc<Keyspace>,
    pub values: std::sync::Arc<ValueTemplate>,
    pub encoder: RequestEncoder,
    pub verify: bool,
    /// Sent first on every connection (native `Auth`, RESP `AUTH`) when set.
    pub password: Option<Password>,
    pub stats: RefCell<ThreadStats>,
}

/// A request sent and not yet answered.
#[derive(Clone, Copy, Debug)]
struct Pending {
    op: Op,
    /// The key's index within this connection's stripe.
    key: u32,
    /// When the request was meant to be sent.
    stamp: Instant,
    phase: Phase,
    /// For a GET: the versions a correct reply may carry (the last acknowledged write to
    /// the key when the GET was sent, up to the last write sent). For a SET: both are the
    /// version written.
    lo: u32,
    hi: u32,
}

/// What to send next.
pub enum Next {
    Send {
        op: Op,
        key: u32,
        stamp: Instant,
        phase: Phase,
    },
    /// Nothing until this instant (open loop).
    At(Instant),
    /// Nothing more, ever.
    Done,
}

/// Decides what a connection sends and when.
pub trait Source {
    fn next(&mut self, now: Instant) -> Next;
}

/// Writes keys once each, in order: the load phase before warm-up. The keys are indices
/// `first, first + step, ...` (`len` of them) of the connection's stripe.
pub struct Prefill {
    next: u32,
    step: u32,
    left: u32,
}

impl Prefill {
    pub fn new(first: u32, step: u32, len: u32) -> Prefill {
        Prefill {
            next: first,
            step,
            left: len,
        }
    }
}

impl Source for Prefill {
    fn next(&mut self, now: Instant) -> Next {
        if self.left == 0 {
            return Next::Done;
        }
        let key = self.next;
        self.left -= 1;
        self.next = self.next.wrapping_add(self.step);
        Next::Send {
            op: Op::Set,
            key,
            stamp: now,
            phase: Phase::Prefill,
        }
    }
}

/// When the phases start and end, shared by every connection of a run.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub start: Instant,
    pub warm_end: Instant,
    /// The end of the measured phase in a timed run; `None` when it is a request count.
    pub end: Option<Instant>,
}

/// The measured workload: random keys from the stripe, GET with probability `read_ratio`.
pub struct Workload {
    rng: Rng,
    keys: u32,
    read_threshold: u64,
    schedule: Schedule,
    /// Measured requests still to send in a counted run.
    quota: Option<u64>,
    /// Open loop: the first slot and the time between slots, in nanoseconds.
    pace: Option<(Instant, f64)>,
    slot: u64,
    done: bool,
}

impl Workload {
    /// `rate` is this connection's share of `--rate`; `phase_offset` in `0.0..1.0` staggers
    /// connections so their slots interleave instead of coinciding.
    pub fn new(
        rng: Rng,
        stripe: Stripe,
        read_ratio: f64,
        schedule: Schedule,
        quota: Option<u64>,
        rate: Option<(f64, f64)>,
    ) -> Workload {
        let pace = rate.map(|(per_sec, phase_offset)| {
            let interval_ns = 1e9 / per_sec;
            let offset = Duration::from_nanos((interval_ns * phase_offset) as u64);
            (schedule.start + offset, interval_ns)
        });
        Workload {
            rng,
            keys: stripe.len,
            read_threshold: read_threshold(read_ratio),
            schedule,
            quota,
            pace,
            slot: 0,
            done: stripe.len == 0 || quota == Some(0),
        }
    }
}

impl Source for Workload {
    fn next(&mut self, now: Instant) -> Next {
        if self.done {
            return Next::Done;
        }
        let stamp = match self.pace {
            None => now,
            Some((first, interval_ns)) => {
                let due = first + Duration::from_nanos((interval_ns * self.slot as f64) as u64);
                if due > now {
                    return Next::At(due);
                }
                due
            }
        };
        let phase = if stamp < self.schedule.warm_end {
            Phase::Warmup
        } else {
            if self.schedule.end.is_some_and(|end| stamp >= end) {
                self.done = true;
                return Next::Done;
            }
            if let Some(quota) = &mut self.quota {
                *quota -= 1;
                self.done = *quota == 0;
            }
            Phase::Measured
        };
        self.slot += 1;
        let op = if self.rng.chance(self.read_threshold) {
            Op::Get
        } else {
            Op::Set
        };
        Next::Send {
            op,
            key: self.rng.below(self.keys),
            stamp,
            phase,
        }
    }
}

/// Per-key versions of one connection's stripe, kept under `--verify`.
struct Versions {
    /// The last version sent to each key (0: never written).
    sent: Vec<u32>,
    /// The last version the server acknowledged for each key.
    acked: Vec<u32>,
}

/// One connection to the server under test.
pub struct Conn {
    stream: TcpStream,
    stripe: Stripe,
    out: Vec<u8>,
    /// Bytes of `out` already sent.
    out_sent: usize,
    recv: Vec<u8>,
    /// `recv[recv_start..recv_end]` is received and not yet parsed.
    recv_start: usize,
    recv_end: usize,
    inflight: VecDeque<Pending>,
    versions: Option<Versions>,
    /// Wakes an open-loop connection for its next slot; made when first needed.
    alarm: Option<Alarm>,
}

impl Conn {
    /// Connects and, for the native protocol, exchanges hellos; then authenticates if the
    /// run has a password.
    pub async fn open(addr: SocketAddr, ctx: &Context, stripe: Stripe) -> Result<Conn, KvsError> {
        let connect = TcpStream::connect(addr);
        let mut stream =
            tokio::time::timeout(Duration::from_millis(BENCH_CONNECT_TIMEOUT_MS), connect)
                .await
                .map_err(|_| KvsError::Timeout(format!("connecting to {addr}")))??;
        stream.set_nodelay(true)?;
        if ctx.protocol == Protocol::Native {
            let mut hello = Vec::with_capacity(HELLO_BYTES);
            encode_client_hello(&mut hello);
            stream.write_all(&hello).await?;
            let mut reply = [0; HELLO_BYTES];
            stream.read_exact(&mut reply).await?;
            let hello = decode_server_hello(&reply)?.expect("eight bytes are a whole hello");
            match hello.status {
                HelloStatus::Accepted => {}
                HelloStatus::VersionNotSupported => {
                    return Err(KvsError::VersionMismatch {
                        ours: crate::protocol::PROTOCOL_VERSION,
                        theirs: hello.version,
                    })
                }
                HelloStatus::Busy => {
                    return Err(KvsError::Server(
                        "the server is at its connection cap".into(),
                    ))
                }
            }
        }
        if let Some(password) = &ctx.password {
            authenticate(&mut stream, ctx.protocol, password).await?;
        }
        let request_max = ctx.encoder.get_len().max(ctx.encoder.set_len());
        // A reply is at most a value plus a small header.
        let reply_max = ctx.values.len() + 64;
        let recv_len = RECV_BUFFER_BYTES_MIN.max(2 * reply_max * ctx.pipeline.min(4));
        Ok(Conn {
            stream,
            stripe,
            out: Vec::with_capacity(2 * request_max * ctx.pipeline),
            out_sent: 0,
            recv: vec![0; recv_len],
            recv_start: 0,
            recv_end: 0,
            inflight: VecDeque::with_capacity(ctx.pipeline),
            versions: ctx.verify.then(|| Versions {
                sent: vec![0; stripe.len as usize],
                acked: vec![0; stripe.len as usize],
            }),
            alarm: None,
        })
    }

    /// Sends what `source` asks for, keeping up to `pipeline` requests in flight, until the
    /// source is done and every reply has arrived.
    pub async fn pump(&mut self, ctx: &Context, source: &mut impl Source) -> Result<(), KvsError> {
        let mut issuing_done = false;
        loop {
            let now = Instant::now();
            let mut wake_at = None;
            while !issuing_done && self.inflight.len() < ctx.pipeline {
                match source.next(now) {
                    Next::Send {
                        op,
                        key,
                        stamp,
                        phase,
                    } => {
                        if phase == Phase::Measured && stamp < now {
                            ctx.stats.borrow_mut().sent_late(now - stamp);
                        }
                        self.queue(ctx, op, key, stamp, phase)
                    }
                    Next::At(at) => {
                        wake_at = Some(at);
                        break;
                    }
                    Next::Done => issuing_done = true,
                }
            }
            self.flush()?;
            let progressed = self.receive(ctx)?;
            let unsent = self.out_sent < self.out.len();
            if issuing_done && self.inflight.is_empty() && !unsent {
                return Ok(());
            }
            if progressed {
                tokio::task::consume_budget().await;
                continue;
            }
            let mut interest = None;
            if !self.inflight.is_empty() {
                interest = Some(Interest::READABLE);
            }
            if unsent {
                interest = Some(interest.map_or(Interest::WRITABLE, |i| i | Interest::WRITABLE));
            }
            match (interest, wake_at) {
                (Some(interest), None) => {
                    self.stream.ready(interest).await?;
                }
                (interest, Some(at)) if at.saturating_duration_since(now) > SPIN_WINDOW => {
                    if self.alarm.is_none() {
                        self.alarm = Some(Alarm::new()?);
                    }
                    let alarm = self.alarm.as_ref().expect("just set");
                    alarm.set(at.saturating_duration_since(now) - ALARM_EARLY)?;
                    match interest {
                        Some(interest) => {
                            tokio::select! {
                                ready = self.stream.ready(interest) => { ready?; }
                                rung = alarm.wait() => rung?,
                            }
                        }
                        None => alarm.wait().await?,
                    }
                }
                (_, Some(_)) => tokio::task::yield_now().await,
                (None, None) => tokio::task::yield_now().await,
            }
        }
    }

    fn queue(&mut self, ctx: &Context, op: Op, key: u32, stamp: Instant, phase: Phase) {
        let global = self.stripe.global(key);
        let key_bytes = ctx.keys.key(global);
        let (lo, hi) = match op {
            Op::Get => {
                ctx.encoder.get(key_bytes, &mut self.out);
                match &self.versions {
                    Some(v) => (v.acked[key as usize], v.sent[key as usize]),
                    None => (0, 0),
                }
            }
            Op::Set => {
                let version = match &mut self.versions {
                    Some(v) => {
                        v.sent[key as usize] += 1;
                        v.sent[key as usize]
                    }
                    None => 0,
                };
                ctx.encoder.set(key_bytes, &mut self.out, |out| {
                    ctx.values.write(global, version, out)
                });
                (version, version)
            }
        };
        self.inflight.push_back(Pending {
            op,
            key,
            stamp,
            phase,
            lo,
            hi,
        });
    }

    /// Sends as much of the send buffer as the socket takes without blocking.
    fn flush(&mut self) -> Result<(), KvsError> {
        while self.out_sent < self.out.len() {
            match write_some(&self.stream, &self.out[self.out_sent..]) {
                Ok(n) => self.out_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        if self.out_sent == self.out.len() {
            self.out.clear();
            self.out_sent = 0;
        } else if self.out_sent > self.out.capacity() / 2 {
            self.out.drain(..self.out_sent);
            self.out_sent = 0;
        }
        Ok(())
    }

    /// Reads what has arrived and handles every complete reply in it. True if any reply
    /// was handled.
    fn receive(&mut self, ctx: &Context) -> Result<bool, KvsError> {
        let mut handled = false;
        loop {
            if self.recv_end == self.recv.len() {
                self.make_room();
            }
            let space = self.recv.len() - self.recv_end;
            match read_some(&self.stream, &mut self.recv[self.recv_end..]) {
                Ok(0) => {
                    return Err(KvsError::Protocol(format!(
                        "the server closed the connection with {} request(s) unanswered",
                        self.inflight.len()
                    )))
                }
                Ok(n) => {
                    self.recv_end += n;
                    handled |= self.handle_replies(ctx, Instant::now())?;
                    if n < space {
                        return Ok(handled);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(handled),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Moves unparsed bytes to the front of the receive buffer, growing it when a single
    /// reply does not fit.
    fn make_room(&mut self) {
        if self.recv_start > 0 {
            self.recv.copy_within(self.recv_start..self.recv_end, 0);
            self.recv_end -= self.recv_start;
            self.recv_start = 0;
        } else {
            // One reply is larger than the whole buffer; its length was checked against the
            // protocol's limits by the parser before we got here.
            let len = self.recv.len() * 2;
            self.recv.resize(len, 0);
        }
    }

    fn handle_replies(&mut self, ctx: &Context, now: Instant) -> Result<bool, KvsError> {
        let mut stats = ctx.stats.borrow_mut();
        let mut handled = false;
        while self.recv_start < self.recv_end {
            let window = &self.recv[self.recv_start..self.recv_end];
            let Some((kind, used)) = parse_reply(ctx.protocol, window)? else {
                break;
            };
            let Some(pending) = self.inflight.pop_front() else {
                return Err(KvsError::Protocol(
                    "the server sent a reply to no request".into(),
                ));
            };
            let global = self.stripe.global(pending.key);
            match (pending.op, kind) {
                (Op::Get, ReplyKind::Value(value)) => {
                    let found = value.is_some();
                    if self.versions.is_some() {
                        let got = value.map(|range| &window[range]);
                        if let Err(why) = check_read(ctx, global, &pending, got) {
                            stats.mismatch(format!(
                                "GET {}: {why}",
                                String::from_utf8_lossy(ctx.keys.key(global))
                            ));
                        } else {
                            stats.verified(pending.phase);
                        }
                    }
                    stats.get_reply(pending.phase, found);
                }
                (Op::Set, ReplyKind::Done) => {
                    if let Some(versions) = &mut self.versions {
                        let acked = &mut versions.acked[pending.key as usize];
                        *acked = (*acked).max(pending.hi);
                    }
                }
                (_, ReplyKind::ServerError(message)) => stats.server_error(message),
                (op, other) => stats.unexpected(format!("{op:?} answered by {other:?}")),
            }
            stats.record(pending.phase, pending.op, pending.stamp, now);
            self.recv_start += used;
            handled = true;
        }
        if self.recv_start == self.recv_end {
            self.recv_start = 0;
            self.recv_end = 0;
        }
        Ok(handled)
    }
}

/// Whether a GET's reply is a value this connection wrote to the key, no older than the last
/// write acknowledged before the GET was sent and no newer than the last write sent.
fn check_read(
    ctx: &Context,
    key: u32,
    pending: &Pending,
    got: Option<&[u8]>,
) -> Result<(), String> {
    let (lo, hi) = (pending.lo, pending.hi);
    match got {
        None if lo == 0 => Ok(()),
        None => Err(format!("no value, but version {lo} was acknowledged")),
        Some(value) => match ctx.values.version_of(key, value) {
            Some(v) if (lo..=hi).contains(&v) => Ok(()),
            Some(v) => Err(format!("version {v}, expected {lo} to {hi}")),
            None => Err(format!(
                "a {}-byte value this run did not write to this key (expected version {lo} to {hi})",
                value.len()
            )),
        },
    }
}

/// A one-shot timer with nanosecond resolution (a timerfd): tokio's own timer works in whole
/// milliseconds, which would send every open-loop request up to a millisecond late.
struct Alarm {
    fd: AsyncFd<OwnedFd>,
}

impl Alarm {
    #[expect(
        unsafe_code,
        reason = "tokio's AsyncFd registration is unsafe; listed in UNSAFE.md"
    )]
    fn new() -> io::Result<Alarm> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: the AsyncFd takes ownership of `fd`, an OwnedFd: its descriptor is valid and
        // open, `as_raw_fd` always returns that same descriptor, and it is closed only when
        // the AsyncFd (and with it the OwnedFd) is dropped, after it has been deregistered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Alarm { fd })
    }

    /// Arms the alarm to ring `after` from now, replacing any earlier setting.
    fn set(&self, after: Duration) -> io::Result<()> {
        // A zero value would disarm the timer instead.
        let after = after.max(Duration::from_nanos(1));
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: after.as_secs() as i64,
            tv_nsec: i64::from(after.subsec_nanos()),
        };
        timerfd_settime(
            self.fd.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )?;
        Ok(())
    }

    /// Waits until the alarm rings. A ring left over from an earlier setting was cleared by
    /// [`Alarm::set`], so the read finds nothing and the wait goes on.
    async fn wait(&self) -> io::Result<()> {
        loop {
            let mut ready = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut expirations)?)) {
                Ok(result) => return result.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Sends the password and reads the answer: [`KvsError::WrongPassword`] if refused. A server
/// without a password (kvs's `Unsupported`, Redis's `AUTH <password> called without any
/// password configured`) lets the connection go on, as `KvsClient` does.
async fn authenticate(
    stream: &mut TcpStream,
    protocol: Protocol,
    password: &Password,
) -> Result<(), KvsError> {
    let mut out = Vec::new();
    match protocol {
        Protocol::Native => {
            let request = Request::Auth {
                password: password.expose().clone(),
            };
            encode_request(&request, &mut out)?;
        }
        Protocol::Resp => resp::encode_command(&[b"AUTH", password.expose()], &mut out),
    }
    stream.write_all(&out).await?;
    let mut buf = Vec::with_capacity(512);
    loop {
        let answer = match protocol {
            Protocol::Native => decode_response(&buf)?.map(|(response, _)| match response {
                Response::Ok
                | Response::Error {
                    kind: ErrorKind::Unsupported,
                    ..
                } => Ok(()),
                Response::Error {
                    kind: ErrorKind::WrongPassword,
                    ..
                } => Err(KvsError::WrongPassword),
                Response::Error { message, .. } => Err(KvsError::Server(message)),
                _ => Err(KvsError::Protocol(
                    "the server answered Auth with neither Ok nor an error".into(),
                )),
            }),
            Protocol::Resp => resp::parse_reply(&buf)?.map(|(reply, _)| match reply {
                Reply::Simple(ok) if ok == "OK" => Ok(()),
                Reply::Error(e) if e.starts_with("WRONGPASS") => Err(KvsError::WrongPassword),
                Reply::Error(e) if e.starts_with("ERR AUTH <password> called without") => Ok(()),
                Reply::Error(e) => Err(KvsError::Server(e)),
                _ => Err(KvsError::Protocol(
                    "the server answered AUTH with neither +OK nor an error".into(),
                )),
            }),
        };
        if let Some(answer) = answer {
            return answer;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(KvsError::ConnectionLost(
                "the server closed the connection before answering the password".into(),
            ));
        }
    }
}

/// One non-blocking `recv`. A short read means the socket was drained, so it also clears
/// tokio's readiness flag, sparing the `recv` that would only return EAGAIN.
fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    let len = buf.len();
    let result = stream.try_io(Interest::READABLE, || {
        got = (&*SockRef::from(stream)).read(buf)?;
        if got > 0 && got < len {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        }
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

/// One non-blocking `send`; a short write clears the writable flag, as in [`read_some`].
fn write_some(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut put = 0;
    let result = stream.try_io(Interest::WRITABLE, || {
        put = (&*SockRef::from(stream)).write(buf)?;
        if put > 0 && put < buf.len() {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(put)
        }
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && put > 0 => Ok(put),
        other => other,
    }
}
