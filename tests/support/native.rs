//! A small blocking client of the native protocol, for tests that want raw control (pipelining
//! by hand, half-sent frames) without the async client library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use kvs::protocol::{
    decode_response, decode_server_hello, encode_client_hello, encode_request, HelloStatus,
    Request, Response,
};

pub struct NativeConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl NativeConn {
    /// Connects and completes the hello.
    pub fn connect(addr: SocketAddr) -> NativeConn {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut hello = Vec::new();
        encode_client_hello(&mut hello);
        stream.write_all(&hello).unwrap();
        let mut conn = NativeConn {
            stream,
            buf: Vec::new(),
        };
        let hello = loop {
            if let Some(h) = decode_server_hello(&conn.buf).unwrap() {
                break h;
            }
            conn.fill();
        };
        assert_eq!(hello.status, HelloStatus::Accepted);
        conn.buf.drain(..kvs::protocol::HELLO_BYTES);
        conn
    }

    fn fill(&mut self) -> usize {
        self.try_fill().expect("read")
    }

    fn try_fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Connects and completes the hello; `Err` instead of a panic when the server is gone.
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<NativeConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        let mut conn = NativeConn {
            stream,
            buf: Vec::new(),
        };
        let mut hello = Vec::new();
        encode_client_hello(&mut hello);
        conn.stream.write_all(&hello)?;
        loop {
            if let Some(h) = decode_server_hello(&conn.buf).map_err(std::io::Error::other)? {
                if h.status != HelloStatus::Accepted {
                    return Err(std::io::Error::other(format!("hello refused: {h:?}")));
                }
                break;
            }
            if conn.try_fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        conn.buf.drain(..kvs::protocol::HELLO_BYTES);
        Ok(conn)
    }

    /// Sends one request and reads its response; `Err` when the connection fails or closes
    /// first (the server was killed, say).
    pub fn try_call(&mut self, r: &Request) -> std::io::Result<Response> {
        let mut out = Vec::new();
        encode_request(r, &mut out).map_err(std::io::Error::other)?;
        self.stream.write_all(&out)?;
        loop {
            if let Some((r, n)) = decode_response(&self.buf).map_err(std::io::Error::other)? {
                self.buf.drain(..n);
                return Ok(r);
            }
            if self.try_fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    pub fn send(&mut self, reqs: &[Request]) {
        let mut out = Vec::new();
        for r in reqs {
            encode_request(r, &mut out).unwrap();
        }
        self.stream.write_all(&out).unwrap();
    }

    /// Reads one response; `None` if the server closed the connection.
    pub fn recv(&mut self) -> Option<Response> {
        loop {
            if let Some((r, n)) = decode_response(&self.buf).unwrap() {
                self.buf.drain(..n);
                return Some(r);
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    pub fn call(&mut self, r: Request) -> Response {
        self.send(&[r]);
        self.recv().expect("a response")
    }

    pub fn set(&mut self, k: &str, v: &str) {
        let r = self.call(Request::Set {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        });
        assert_eq!(r, Response::Ok, "set {k}");
    }

    pub fn get(&mut self, k: &str) -> Option<String> {
        match self.call(Request::Get {
            key: Bytes::copy_from_slice(k.as_bytes()),
        }) {
            Response::Value(v) => v.map(|b| String::from_utf8(b.to_vec()).unwrap()),
            other => panic!("get {k}: {other:?}"),
        }
    }
}
