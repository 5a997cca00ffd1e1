//! Small blocking clients for tests: raw RESP and the native protocol, built on the crate's
//! own codecs. Every read has a timeout, so a server that never answers fails the test
//! instead of hanging it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use kvs::protocol::resp::{encode_command, parse_reply, Reply};
use kvs::protocol::{
    decode_response, decode_server_hello, encode_client_hello, encode_request, HelloStatus,
    Request, Response,
};

/// Longest a test waits for one reply (a debug build under a loaded machine can be slow).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads more bytes into `buf`; `false` at the end of the stream.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A reset after the server closed is the end of the stream too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return false,
            Err(e) => panic!("read failed (timed out?): {e}"),
        }
    }
}

/// A RESP connection.
pub struct RespClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RespClient {
    pub fn connect(addr: SocketAddr) -> RespClient {
        RespClient {
            stream: connect(addr),
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends one command as a multibulk array and reads its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> Reply {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        self.send(&out);
        self.reply()
    }

    /// Reads the next reply.
    pub fn reply(&mut self) -> Reply {
        self.try_reply()
            .expect("the server closed the connection before replying")
    }

    /// Reads the next reply, or `None` if the server closes first.
    pub fn try_reply(&mut self) -> Option<Reply> {
        loop {
            if let Some((reply, used)) = parse_reply(&self.buf).expect("a valid RESP reply") {
                self.buf.drain(..used);
                return Some(reply);
            }
            if !fill(&mut self.stream, &mut self.buf) {
                assert!(
                    self.buf.is_empty(),
                    "the server closed in the middle of a reply: {:?}",
                    self.buf
                );
                return None;
            }
        }
    }

    /// Whether the server has closed the connection (after any replies still unread).
    pub fn closed(&mut self) -> bool {
        self.try_reply().is_none()
    }
}

/// A native-protocol connection, past the hello.
pub struct NativeClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl NativeClient {
    pub fn connect(addr: SocketAddr) -> NativeClient {
        let mut stream = connect(addr);
        let mut hello = Vec::new();
        encode_client_hello(&mut hello);
        stream.write_all(&hello).unwrap();
        let mut buf = Vec::new();
        loop {
            if let Some(server) = decode_server_hello(&buf).expect("a valid server hello") {
                assert_eq!(server.status, HelloStatus::Accepted);
                buf.drain(..kvs::protocol::HELLO_BYTES);
                return NativeClient { stream, buf };
            }
            assert!(
                fill(&mut stream, &mut buf),
                "the server closed during the hello"
            );
        }
    }

    pub fn request(&mut self, request: &Request) -> Response {
        let mut out = Vec::new();
        encode_request(request, &mut out).expect("an encodable request");
        self.stream.write_all(&out).unwrap();
        loop {
            if let Some((response, used)) = decode_response(&self.buf).expect("a valid response") {
                self.buf.drain(..used);
                return response;
            }
            assert!(
                fill(&mut self.stream, &mut self.buf),
                "the server closed before responding"
            );
        }
    }

    pub fn get(&mut self, key: &[u8]) -> Option<Bytes> {
        match self.request(&Request::Get {
            key: Bytes::copy_from_slice(key),
        }) {
            Response::Value(v) => v,
            other => panic!("GET answered {other:?}"),
        }
    }

    pub fn set(&mut self, key: &[u8], value: &[u8]) {
        let request = Request::Set {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        };
        assert_eq!(self.request(&request), Response::Ok);
    }
}
