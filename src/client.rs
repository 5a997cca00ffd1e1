//! [`KvsClient`]: an async client for kvs's native protocol, one TCP connection per client.
//!
//! The bytes are the codecs' business ([`crate::protocol`], `docs/protocol.md`); this module
//! owns the socket, its buffers and the deadlines. It promises:
//!
//! - No buffer is sized by a length the server sent until [`frame_len_hint`] has checked that
//!   length against [`FRAME_BYTES_MAX`]; an oversized length fails the request at once,
//!   without waiting for the body.
//! - Responses are paired with requests by order, as the protocol says, and each must be an
//!   answer its request can have (`Get` gets `Value`, `Set` gets `Ok`, ...); anything else is
//!   a [`KvsError::Protocol`] error.
//! - Once an exchange goes wrong partway (an I/O error, a timeout, a malformed or mismatched
//!   response, or a request future dropped before its response arrived), the connection is
//!   never used again: pairing by order can no longer be trusted, so every later call fails
//!   with [`KvsError::ConnectionLost`]. Errors the server *answers* with (`KeyNotFound`,
//!   `DiskFull`, a read-only store, ...) leave the connection usable.
//! - Keys and values over [`KEY_BYTES_MAX`] / [`VALUE_BYTES_MAX`] are refused before anything
//!   is sent, and leave the connection usable.
//! - A password ([`ClientOptions::password`], [`KvsClient::auth`]) is sent only in an `Auth`
//!   request and never appears in an error or a log line.

use std::fmt;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::auth::Password;
use crate::limits::{
    CONNECT_TIMEOUT_MS, FRAME_BYTES_MAX, KEY_BYTES_MAX, REQUEST_TIMEOUT_MS, VALUE_BYTES_MAX,
};
use crate::protocol::{
    decode_response, decode_server_hello, encode_client_hello, encode_request, frame_len_hint,
    ErrorKind, HelloStatus, ProtocolError, Request, Response, StatsReport, FRAME_HEADER_BYTES,
    HELLO_BYTES, PROTOCOL_VERSION,
};
use crate::{KvsError, Result};

/// Capacity each connection buffer starts with.
const BUFFER_BYTES_INITIAL: usize = 8 * 1024;
/// A buffer that grew past this for one large frame is given back once the exchange is over,
/// so a client that fetched one 8 MiB value does not hold 8 MiB for the rest of its life.
const BUFFER_BYTES_RETAINED_MAX: usize = 1024 * 1024;
/// Smallest read the client asks the socket for, so small responses arrive in one call.
const READ_BYTES_MIN: usize = 4 * 1024;
/// A batch is encoded and written in chunks of about this size rather than all at once, so
/// a batch of large values is never held in memory twice.
const BATCH_WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Deadlines and the password for [`KvsClient::connect_with`]. `Debug` does not show the
/// password.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest time to resolve the address, open the TCP connection and exchange hellos.
    /// Default [`CONNECT_TIMEOUT_MS`].
    pub connect_timeout: Duration,
    /// Longest time one request may take, from sending it to its whole response having
    /// arrived. In a [`KvsClient::batch`] each response gets this long, counted from the one
    /// before it. A request that runs out of time fails with [`KvsError::Timeout`] and the
    /// connection is not used again. Default [`REQUEST_TIMEOUT_MS`].
    pub request_timeout: Duration,
    /// The server's password: when set, [`KvsClient::connect_with`] authenticates right after
    /// the hello, within `connect_timeout`, as [`KvsClient::auth`] does. Default `None`.
    pub password: Option<Password>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS),
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
            password: None,
        }
    }
}

/// Whether the connection can carry another request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    /// Every request sent so far has had its response read.
    Ready,
    /// A request is being exchanged. Seen at the start of a call, it means the previous
    /// call's future was dropped halfway, so its response may still be on the way.
    InFlight,
    /// An exchange went wrong; the reason, for the error every later call returns.
    Broken(String),
}

/// An async client for one kvs server, over one TCP connection.
///
/// Methods take `&mut self`: a connection carries one exchange at a time, and the borrow
/// checker says so instead of a lock. To share a client between tasks, put it in a
/// `tokio::sync::Mutex`, or give each task its own client. For many requests at once on one
/// connection, use [`KvsClient::batch`]. All futures are `Send`, so the client works from any
/// task of a multi-threaded tokio runtime.
///
/// Keys and values are anything that converts into [`Bytes`] without copying: `Bytes`,
/// `Vec<u8>`, `String`, `&'static str`, `&'static [u8]`.
///
/// ```no_run
/// # async fn demo() -> kvs::Result<()> {
/// let mut client = kvs::KvsClient::connect("127.0.0.1:4000").await?;
/// client.set("key", "value").await?;
/// assert_eq!(client.get("key").await?.as_deref(), Some(&b"value"[..]));
/// client.remove("key").await?;
/// # Ok(())
/// # }
/// ```
pub struct KvsClient {
    stream: TcpStream,
    peer: SocketAddr,
    options: ClientOptions,
    /// Bytes received and not yet decoded; can hold the start of the next response.
    read_buf: BytesMut,
    /// Encoded requests not yet written.
    write_buf: Vec<u8>,
    health: Health,
}

impl fmt::Debug for KvsClient {
    // The buffers can hold megabytes of user data; leave them out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvsClient")
            .field("peer", &self.peer)
            .field("options", &self.options)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl KvsClient {
    /// Connects to the server at `addr` with [`ClientOptions::default`].
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<KvsClient> {
        KvsClient::connect_with(addr, ClientOptions::default()).await
    }

    /// Connects to the server at `addr` and exchanges hellos.
    ///
    /// Each address `addr` resolves to is tried in turn until one accepts the TCP
    /// connection. Errors: [`KvsError::Connect`] naming the address if none does;
    /// [`KvsError::VersionMismatch`] if the server does not speak our protocol version;
    /// [`KvsError::Busy`] if it is at its connection cap; [`KvsError::Protocol`] if it is not
    /// a kvs server at all; [`KvsError::Timeout`] after `options.connect_timeout`. With a
    /// password, the errors of [`KvsClient::auth`] too.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        options: ClientOptions,
    ) -> Result<KvsClient> {
        let mut trying = None;
        let connect_timeout = options.connect_timeout;
        let connect = async {
            let mut client = KvsClient::establish(addr, options, &mut trying).await?;
            if let Some(password) = client.options.password.clone() {
                client.auth(&password).await?;
            }
            Ok(client)
        };
        let outcome = tokio::time::timeout(connect_timeout, connect).await;
        match outcome {
            Ok(result) => result,
            Err(_elapsed) => Err(KvsError::Timeout(match trying {
                Some(peer) => {
                    format!("connecting to {peer} did not finish within {connect_timeout:?}")
                }
                None => format!("the server address did not resolve within {connect_timeout:?}"),
            })),
        }
    }

    /// Authenticates the connection with the server's password. Errors:
    /// [`KvsError::WrongPassword`] (the server answers it only after a delay, and closes the
    /// connection after too many); [`KvsError::Protocol`] for a password over
    /// [`crate::limits::PASSWORD_BYTES_MAX`] (not sent). A server without a password answers
    /// that it needs none, which is `Ok` here: the connection can be used.
    pub async fn auth(&mut self, password: &Password) -> Result<()> {
        let request = Request::Auth {
            password: password.expose().clone(),
        };
        match self.call_raw(&request).await? {
            Response::Ok => Ok(()),
            Response::Error {
                kind: ErrorKind::Unsupported,
                ..
            } => {
                tracing::debug!(peer = %self.peer, "the server has no password; Auth was not needed");
                Ok(())
            }
            Response::Error { kind, message } => Err(self.server_error(&request, kind, message)),
            other => Err(self.mismatch(&request, &other)),
        }
    }

    /// Resolves, connects and exchanges hellos; records the address being tried in `trying`
    /// so that a timeout can name it.
    async fn establish(
        addr: impl ToSocketAddrs,
        options: ClientOptions,
        trying: &mut Option<SocketAddr>,
    ) -> Result<KvsClient> {
        let addrs = tokio::net::lookup_host(addr).await.map_err(|err| {
            KvsError::Io(io::Error::new(
                err.kind(),
                format!("could not resolve the server address: {err}"),
            ))
        })?;
        let mut refused = None;
        for peer in addrs {
            *trying = Some(peer);
            match TcpStream::connect(peer).await {
                Ok(stream) => return KvsClient::handshake(stream, peer, options).await,
                Err(source) => refused = Some(KvsError::Connect { addr: peer, source }),
            }
        }
        Err(refused.unwrap_or_else(|| {
            KvsError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the server address resolved to no IP addresses",
            ))
        }))
    }

    async fn handshake(
        mut stream: TcpStream,
        peer: SocketAddr,
        options: ClientOptions,
    ) -> Result<KvsClient> {
        // Requests are small and answered one by one; Nagle would hold each back for an ACK.
        stream.set_nodelay(true)?;
        let mut hello = Vec::with_capacity(HELLO_BYTES);
        encode_client_hello(&mut hello);
        stream.write_all(&hello).await?;

        let mut read_buf = BytesMut::with_capacity(BUFFER_BYTES_INITIAL);
        let server = loop {
            match decode_server_hello(&read_buf) {
                Ok(Some(server)) => break server,
                Ok(None) => {}
                Err(err @ ProtocolError::BadMagic { .. }) => {
                    return Err(KvsError::Protocol(format!(
                        "{peer} does not speak the kvs protocol: {err}"
                    )))
                }
                Err(err) => {
                    return Err(KvsError::Protocol(format!("bad hello from {peer}: {err}")))
                }
            }
            if stream.read_buf(&mut read_buf).await? == 0 {
                return Err(KvsError::ConnectionLost(format!(
                    "{peer} closed the connection during the hello ({} of {HELLO_BYTES} bytes received)",
                    read_buf.len()
                )));
            }
        };
        read_buf.advance(HELLO_BYTES);
        match server.status {
            HelloStatus::Accepted => {
                tracing::debug!(%peer, version = server.version, "connected");
                Ok(KvsClient {
                    stream,
                    peer,
                    options,
                    read_buf,
                    write_buf: Vec::with_capacity(BUFFER_BYTES_INITIAL),
                    health: Health::Ready,
                })
            }
            HelloStatus::VersionNotSupported => Err(KvsError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: server.version,
            }),
            HelloStatus::Busy => Err(KvsError::Busy(format!(
                "{peer} is at its connection cap; try again later"
            ))),
        }
    }

    /// The address of the server this client is connected to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The value stored under `key`, or `None` if there is none.
    pub async fn get(&mut self, key: impl Into<Bytes>) -> Result<Option<Bytes>> {
        let request = Request::Get { key: key.into() };
        match self.call(&request).await? {
            Response::Value(value) => Ok(value),
            other => Err(self.mismatch(&request, &other)),
        }
    }

    /// Stores `value` under `key`. Returns once the server reports the write durable under
    /// its fsync policy.
    pub async fn set(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        let request = Request::Set {
            key: key.into(),
            value: value.into(),
        };
        match self.call(&request).await? {
            Response::Ok => Ok(()),
            other => Err(self.mismatch(&request, &other)),
        }
    }

    /// Removes `key`; [`KvsError::KeyNotFound`] if it is not there.
    pub async fn remove(&mut self, key: impl Into<Bytes>) -> Result<()> {
        let request = Request::Remove { key: key.into() };
        match self.call(&request).await? {
            Response::Ok => Ok(()),
            Response::NotFound => Err(KvsError::KeyNotFound),
            other => Err(self.mismatch(&request, &other)),
        }
    }

    /// Asks the server to answer; succeeds when it does.
    pub async fn ping(&mut self) -> Result<()> {
        let request = Request::Ping;
        match self.call(&request).await? {
            Response::Pong => Ok(()),
            other => Err(self.mismatch(&request, &other)),
        }
    }

    /// The server's I/O backend and per-partition counters. [`stats_table`] formats them.
    pub async fn stats(&mut self) -> Result<StatsReport> {
        let request = Request::Stats;
        match self.call(&request).await? {
            Response::Stats(report) => Ok(report),
            other => Err(self.mismatch(&request, &other)),
        }
    }

    /// Sends every request before reading any response, and returns the responses in request
    /// order. Requests are written while responses are read, so a batch larger than the
    /// socket buffers cannot deadlock.
    ///
    /// Answers are returned as the server gave them: `NotFound` and `Error` responses are
    /// entries of the result, not errors. The call fails only if the connection does: an
    /// oversized key or value in any request (checked before anything is sent), an I/O
    /// error, a response that cannot answer its request, or a response that takes longer
    /// than `request_timeout` after the one before it.
    pub async fn batch(&mut self, requests: &[Request]) -> Result<Vec<Response>> {
        self.check_ready()?;
        for request in requests {
            request.check_limits()?;
        }
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        self.health = Health::InFlight;
        let result = self.pipeline(requests).await;
        match &result {
            Ok(responses) => {
                self.health = Health::Ready;
                if let Some(kind) = responses.iter().find_map(closing_error_kind) {
                    self.mark_broken(format!("the server closed it after a {kind:?} error"));
                }
            }
            Err(err) => self.mark_broken(format!("an earlier batch failed ({err})")),
        }
        self.release_large_buffers();
        result
    }

    /// Writes and reads concurrently: the writer encodes requests in chunks while the reader
    /// decodes responses, each under its own deadline.
    async fn pipeline(&mut self, requests: &[Request]) -> Result<Vec<Response>> {
        let timeout = self.options.request_timeout;
        let peer = self.peer;
        let (mut reader, mut writer) = self.stream.split();
        let write_buf = &mut self.write_buf;
        let read_buf = &mut self.read_buf;
        write_buf.clear();

        let send = async move {
            for request in requests {
                encode_request(request, write_buf)?;
                if write_buf.len() >= BATCH_WRITE_CHUNK_BYTES {
                    writer.write_all(write_buf).await?;
                    write_buf.clear();
                }
            }
            writer.write_all(write_buf).await?;
            write_buf.clear();
            Ok::<(), KvsError>(())
        };
        let receive = async move {
            let total = requests.len();
            let mut responses = Vec::with_capacity(total);
            for (i, request) in requests.iter().enumerate() {
                let response = tokio::time::timeout(timeout, read_response(&mut reader, read_buf))
                    .await
                    .map_err(|_elapsed| {
                        KvsError::Timeout(format!(
                            "no response to request {} of {total} from {peer} within {timeout:?}",
                            i + 1
                        ))
                    })??;
                if !answers(request, &response) {
                    return Err(KvsError::Protocol(format!(
                        "the server answered request {} of {total} ({}) with {}",
                        i + 1,
                        request_name(request),
                        response_name(&response)
                    )));
                }
                responses.push(response);
            }
            Ok(responses)
        };
        let ((), responses) = tokio::try_join!(send, receive)?;
        Ok(responses)
    }

    /// Sends `request`, reads its response and turns an `Error` response into a [`KvsError`].
    /// The caller checks that the response answers the request.
    async fn call(&mut self, request: &Request) -> Result<Response> {
        match self.call_raw(request).await? {
            Response::Error { kind, message } => Err(self.server_error(request, kind, message)),
            other => Ok(other),
        }
    }

    /// Sends `request` and reads its response, `Error` responses included.
    async fn call_raw(&mut self, request: &Request) -> Result<Response> {
        self.check_ready()?;
        // Encoding refuses oversized keys and values before anything is sent, so such an
        // error leaves the connection as it was.
        self.write_buf.clear();
        encode_request(request, &mut self.write_buf)?;

        self.health = Health::InFlight;
        let deadline = self.options.request_timeout;
        let outcome = tokio::time::timeout(deadline, self.exchange()).await;
        let response = match outcome {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => {
                self.mark_broken(format!("an earlier request failed ({err})"));
                return Err(err);
            }
            Err(_elapsed) => {
                self.mark_broken("an earlier request timed out".to_owned());
                return Err(KvsError::Timeout(format!(
                    "no response from {} within {deadline:?}",
                    self.peer
                )));
            }
        };
        self.health = Health::Ready;
        self.release_large_buffers();
        Ok(response)
    }

    async fn exchange(&mut self) -> Result<Response> {
        self.stream.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        read_response(&mut self.stream, &mut self.read_buf).await
    }

    fn check_ready(&self) -> Result<()> {
        match &self.health {
            Health::Ready => Ok(()),
            Health::InFlight => Err(KvsError::ConnectionLost(
                "an earlier request was cancelled before its response arrived, so responses \
                 can no longer be paired with requests; connect again"
                    .to_owned(),
            )),
            Health::Broken(reason) => {
                Err(KvsError::ConnectionLost(format!("{reason}; connect again")))
            }
        }
    }

    fn mark_broken(&mut self, reason: String) {
        tracing::debug!(peer = %self.peer, %reason, "connection no longer usable");
        self.health = Health::Broken(reason);
    }

    /// The error for a response that cannot answer `request`. Pairing by order is in doubt
    /// from here on, so the connection is not used again.
    fn mismatch(&mut self, request: &Request, response: &Response) -> KvsError {
        let what = format!(
            "the server answered {} with {}",
            request_name(request),
            response_name(response)
        );
        self.mark_broken(what.clone());
        KvsError::Protocol(what)
    }

    /// The [`KvsError`] for an `Error { kind, message }` answer to `request`. Kinds the
    /// server closes the connection after also retire the connection here.
    fn server_error(&mut self, request: &Request, kind: ErrorKind, message: String) -> KvsError {
        if closes_connection(kind) {
            self.mark_broken(format!("the server closed it after a {kind:?} error"));
        }
        let message = if message.is_empty() {
            format!("{kind:?}")
        } else {
            message
        };
        match (kind, request) {
            (
                ErrorKind::KeyTooLarge,
                Request::Get { key } | Request::Set { key, .. } | Request::Remove { key },
            ) => KvsError::KeyTooLarge {
                len: key.len(),
                max: KEY_BYTES_MAX,
            },
            (ErrorKind::ValueTooLarge, Request::Set { value, .. }) => KvsError::ValueTooLarge {
                len: value.len(),
                max: VALUE_BYTES_MAX,
            },
            // The same variant the embedded store returns, so code handles both alike.
            (ErrorKind::ReadOnly, _) => KvsError::Poisoned {
                op: "write or fsync on the server",
                cause: message,
            },
            (ErrorKind::DiskFull, _) => KvsError::DiskFull,
            (ErrorKind::Busy, _) => KvsError::Busy(message),
            (ErrorKind::AuthRequired, _) => KvsError::AuthRequired,
            (ErrorKind::WrongPassword, _) => KvsError::WrongPassword,
            _ => KvsError::Server(message),
        }
    }

    fn release_large_buffers(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > BUFFER_BYTES_RETAINED_MAX {
            self.read_buf = BytesMut::with_capacity(BUFFER_BYTES_INITIAL);
        }
        if self.write_buf.capacity() > BUFFER_BYTES_RETAINED_MAX {
            self.write_buf = Vec::with_capacity(BUFFER_BYTES_INITIAL);
        }
    }
}

/// Reads until `buf` holds one whole response frame, then decodes and consumes it.
async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Response> {
    loop {
        // decode_response checks the length prefix against FRAME_BYTES_MAX as soon as its four
        // bytes are in, so an oversized frame fails here before its body is awaited.
        let decoded = decode_response(buf)
            .map_err(|err| KvsError::Protocol(format!("the server sent a bad response: {err}")))?;
        if let Some((response, used)) = decoded {
            buf.advance(used);
            return Ok(response);
        }
        // Size the buffer for the rest of this frame. frame_len_hint has vetted the length,
        // so the reservation is bounded by FRAME_BYTES_MAX.
        let frame_len = frame_len_hint(buf)
            .map_err(|err| KvsError::Protocol(format!("the server sent a bad response: {err}")))?
            .unwrap_or(FRAME_HEADER_BYTES);
        debug_assert!(frame_len <= FRAME_HEADER_BYTES + FRAME_BYTES_MAX);
        buf.reserve(frame_len.saturating_sub(buf.len()).max(READ_BYTES_MIN));
        if reader.read_buf(buf).await? == 0 {
            return Err(KvsError::ConnectionLost(if buf.is_empty() {
                "the server closed the connection before answering".to_owned()
            } else {
                format!(
                    "the server closed the connection partway through a response ({} bytes of it received)",
                    buf.len()
                )
            }));
        }
    }
}

/// Whether `response` is an answer `request` can have. Any request may be answered by
/// `Error`.
fn answers(request: &Request, response: &Response) -> bool {
    matches!(
        (request, response),
        (_, Response::Error { .. })
            | (Request::Get { .. }, Response::Value(_))
            | (Request::Set { .. }, Response::Ok)
            | (Request::Remove { .. }, Response::Ok | Response::NotFound)
            | (Request::Ping, Response::Pong)
            | (Request::Stats, Response::Stats(_))
            | (Request::Auth { .. }, Response::Ok)
    )
}

/// Error kinds the server sends only when a frame could not be decoded or the connection is
/// refused, right before it closes (`docs/protocol.md`, "Errors and closing").
fn closes_connection(kind: ErrorKind) -> bool {
    match kind {
        ErrorKind::KeyTooLarge
        | ErrorKind::ValueTooLarge
        | ErrorKind::FrameTooLarge
        | ErrorKind::Malformed
        | ErrorKind::Busy => true,
        ErrorKind::ReadOnly
        | ErrorKind::DiskFull
        | ErrorKind::Internal
        | ErrorKind::Unsupported
        | ErrorKind::AuthRequired
        // After the last attempt allowed the server closes too; the next request finds out.
        | ErrorKind::WrongPassword => false,
    }
}

fn closing_error_kind(response: &Response) -> Option<ErrorKind> {
    match response {
        Response::Error { kind, .. } if closes_connection(*kind) => Some(*kind),
        _ => None,
    }
}

/// A request's variant name. Not `Debug`: that would print the value, which can be 8 MiB.
fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Get { .. } => "Get",
        Request::Set { .. } => "Set",
        Request::Remove { .. } => "Remove",
        Request::Ping => "Ping",
        Request::Stats => "Stats",
        Request::Auth { .. } => "Auth",
    }
}

fn response_name(response: &Response) -> &'static str {
    match response {
        Response::Ok => "Ok",
        Response::Value(_) => "Value",
        Response::NotFound => "NotFound",
        Response::Pong => "Pong",
        Response::Stats(_) => "Stats",
        Response::Error { .. } => "Error",
    }
}

/// `report` as a table for people: the I/O backend, then one right-aligned row per
/// partition and a total row.
pub fn stats_table(report: &StatsReport) -> String {
    const HEADERS: [&str; 6] = [
        "partition",
        "keys",
        "live bytes",
        "dead bytes",
        "segments",
        "compactions",
    ];
    let mut rows: Vec<[String; 6]> = Vec::with_capacity(report.partitions.len() + 2);
    rows.push(HEADERS.map(str::to_owned));
    let mut total = [0u64; 5];
    for p in &report.partitions {
        let counters = [
            p.keys,
            p.live_bytes,
            p.dead_bytes,
            u64::from(p.segments),
            p.compactions,
        ];
        // Saturating: the counters come from the server and are not to be trusted to fit.
        for (sum, n) in total.iter_mut().zip(counters) {
            *sum = sum.saturating_add(n);
        }
        let [a, b, c, d, e] = counters.map(|n| n.to_string());
        rows.push([p.partition.to_string(), a, b, c, d, e]);
    }
    let [a, b, c, d, e] = total.map(|n| n.to_string());
    rows.push(["total".to_owned(), a, b, c, d, e]);

    let mut widths = [0usize; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    // The backend name is the server's text; escape it so it cannot drive the terminal.
    let mut out = format!("io backend: {}\n", report.io_backend.escape_debug());
    for row in &rows {
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            let gap = if i == 0 { "" } else { "  " };
            // Writing to a String cannot fail.
            let _ = write!(out, "{gap}{cell:>width$}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
