//! The network side of a worker, behind two small traits so a worker is the same code on
//! io_uring sockets (tokio-uring) and on epoll sockets (tokio).
//!
//! Buffers are owned and handed back. A read appends into the vector's spare capacity.
//! In-flight io_uring operations are never dropped: to stop a read or an accept, the socket is
//! shut down, which completes the operation.

use std::io;
use std::net::{Shutdown, SocketAddr};

/// One accepted connection.
#[expect(
    async_fn_in_trait,
    reason = "connections belong to one worker thread; futures are not Send"
)]
pub trait NetStream: 'static {
    /// Reads into `buf`'s spare capacity (appending); `Ok(0)` at end of stream.
    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>);
    /// Writes all of `buf`.
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);
    /// Writes what the socket takes at once, without waiting: 0 when its send buffer is full.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Shuts down one or both directions; a pending read then completes.
    fn shutdown(&self, how: Shutdown);
}

/// A listening socket.
#[expect(
    async_fn_in_trait,
    reason = "listeners belong to one worker thread; futures are not Send"
)]
pub trait NetListener: 'static {
    type Stream: NetStream;
    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)>;
    /// Makes a pending and every later `accept` fail.
    fn stop(&self);
}

/// Room a read makes when the buffer it is given is full, so that it never reads zero bytes
/// (which would look like the end of the stream).
const READ_BYTES_MIN: usize = 64;

// ---- io_uring ----------------------------------------------------------------------------

pub struct UringStream(tokio_uring::net::TcpStream);

impl NetStream for UringStream {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        use tokio_uring::buf::BoundedBuf;
        // tokio-uring reads a Vec from its start, over what it holds; a slice from the
        // current length makes the read append, as this trait promises.
        if buf.len() == buf.capacity() {
            buf.reserve(READ_BYTES_MIN);
        }
        let len = buf.len();
        let (res, slice) = self.0.read(buf.slice(len..)).await;
        (res, slice.into_inner())
    }
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        use tokio_uring::buf::BoundedBuf;
        // Most responses fit the socket's send buffer: a non-blocking send from this thread
        // puts them on the wire at once, where an io_uring write would wait for the thread to
        // park (tokio-uring submits only then) and cost a completion and a wake-up more. What
        // the socket does not take at once goes through io_uring.
        let sent = match send_now(&self.0, &buf) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        if sent == buf.len() {
            return (Ok(()), buf);
        }
        let (res, slice) = self.0.write_all(buf.slice(sent..)).await;
        (res, slice.into_inner())
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        send_now(&self.0, buf)
    }
    fn shutdown(&self, how: Shutdown) {
        let _ = self.0.shutdown(how);
    }
}

/// Sends what the socket takes without blocking; 0 when its send buffer is full.
fn send_now(stream: &impl std::os::fd::AsRawFd, buf: &[u8]) -> io::Result<usize> {
    write_while_taken(buf, |rest| send_once(stream, rest))
}

/// One non-blocking `send`.
#[expect(
    unsafe_code,
    reason = "tokio-uring's stream has no non-blocking send; listed in UNSAFE.md"
)]
fn send_once(stream: &impl std::os::fd::AsRawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the duration of the call, and the
    // descriptor is the stream's own, open while `stream` is borrowed.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Calls `write` (one non-blocking write of what it is given) for the rest of `buf` until all
/// of it is sent or the socket takes no more; returns how much was sent.
fn write_while_taken(
    buf: &[u8],
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut sent = 0;
    while sent < buf.len() {
        match write(&buf[sent..]) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

pub struct UringListener {
    inner: tokio_uring::net::TcpListener,
    /// A duplicate of the listening descriptor, to shut it down.
    control: std::net::TcpListener,
}

impl UringListener {
    pub fn new(std: std::net::TcpListener) -> io::Result<UringListener> {
        let control = std.try_clone()?;
        Ok(UringListener {
            inner: tokio_uring::net::TcpListener::from_std(std),
            control,
        })
    }
}

impl NetListener for UringListener {
    type Stream = UringStream;
    async fn accept(&self) -> io::Result<(UringStream, SocketAddr)> {
        let (s, addr) = self.inner.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((UringStream(s), addr))
    }
    fn stop(&self) {
        let _ = socket2::SockRef::from(&self.control).shutdown(Shutdown::Read);
    }
}

// ---- epoll (tokio) -------------------------------------------------------------------------

pub struct EpollStream(tokio::net::TcpStream);

impl NetStream for EpollStream {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            if let Err(e) = self.0.readable().await {
                return (Err(e), buf);
            }
            match self.0.try_read_buf(&mut buf) {
                Ok(n) => return (Ok(n), buf),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return (Err(e), buf),
            }
        }
    }
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut at = 0;
        while at < buf.len() {
            if let Err(e) = self.0.writable().await {
                return (Err(e), buf);
            }
            match self.0.try_write(&buf[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        write_while_taken(buf, |rest| self.0.try_write(rest))
    }
    fn shutdown(&self, how: Shutdown) {
        let _ = socket2::SockRef::from(&self.0).shutdown(how);
    }
}

pub struct EpollListener {
    inner: tokio::net::TcpListener,
    stopped: tokio::sync::Notify,
    stopping: std::cell::Cell<bool>,
}

impl EpollListener {
    pub fn new(std: std::net::TcpListener) -> io::Result<EpollListener> {
        Ok(EpollListener {
            inner: tokio::net::TcpListener::from_std(std)?,
            stopped: tokio::sync::Notify::new(),
            stopping: std::cell::Cell::new(false),
        })
    }
}

impl NetListener for EpollListener {
    type Stream = EpollStream;
    async fn accept(&self) -> io::Result<(EpollStream, SocketAddr)> {
        if self.stopping.get() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "listener stopped",
            ));
        }
        // tokio's accept is cancel-safe (readiness-based), so selecting on it loses nothing.
        tokio::select! {
            r = self.inner.accept() => {
                let (s, addr) = r?;
                let _ = s.set_nodelay(true);
                Ok((EpollStream(s), addr))
            }
            _ = self.stopped.notified() => Err(io::Error::new(io::ErrorKind::Interrupted, "listener stopped")),
        }
    }
    fn stop(&self) {
        self.stopping.set(true);
        self.stopped.notify_waiters();
    }
}

// ---- binding -------------------------------------------------------------------------------

/// Binds `count` listening sockets sharing `addr` through SO_REUSEPORT, one per worker.
///
/// SO_REUSEPORT would let a second server silently share a busy port, so the address is first
/// bound by a probe socket without it: if anything listens there, that fails with
/// EADDRINUSE and so does this function. Port 0 resolves to one ephemeral port for all.
pub fn bind_shards(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let domain = Domain::for_address(addr);
    let probe = Socket::new(domain, Type::STREAM, None)?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(e.kind(), format!("address {addr} is already in use"))
        } else {
            io::Error::new(e.kind(), format!("cannot bind {addr}: {e}"))
        }
    })?;
    let bound = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))?;
    drop(probe);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let s = Socket::new(domain, Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        s.bind(&bound.into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {bound}: {e}")))?;
        s.listen(1024)?;
        out.push(s.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Sends `first`, reads it into a buffer already holding `held`, sends `second`, reads
    /// again; returns the buffer.
    async fn two_reads<L: NetListener>(listener: L, addr: SocketAddr, held: &[u8]) -> Vec<u8> {
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::with_capacity(held.len());
        buf.extend_from_slice(held);
        for part in [&b"first "[..], b"second"] {
            client.write_all(part).unwrap();
            let want = buf.len() + part.len();
            while buf.len() < want {
                let (res, b) = stream.read(buf).await;
                buf = b;
                assert!(
                    res.unwrap() > 0,
                    "a read into a full buffer must not look like the end"
                );
                assert!(
                    buf.starts_with(held),
                    "the read overwrote what was held: {:?}",
                    String::from_utf8_lossy(&buf)
                );
            }
        }
        buf
    }

    fn bound() -> (std::net::TcpListener, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[test]
    fn reads_append_to_what_the_buffer_holds_on_both_backends() {
        // Guards against a read overwriting a partial request kept from the previous read.
        let (std_listener, addr) = bound();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            two_reads(EpollListener::new(std_listener).unwrap(), addr, b"held ").await
        });
        assert_eq!(got, b"held first second");

        if let Err(e) = crate::io_backend::uring::probe() {
            {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: the io_uring half: io_uring is unavailable here: {e}"
                );
            }
            return;
        }
        let (std_listener, addr) = bound();
        let got = crate::io_backend::uring::runtime()
            .unwrap()
            .block_on(async {
                two_reads(UringListener::new(std_listener).unwrap(), addr, b"held ").await
            });
        assert_eq!(got, b"held first second");
    }
}
