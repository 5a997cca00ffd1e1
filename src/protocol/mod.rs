//! Wire codecs: the native protocol and RESP2. Codecs do no I/O.
//!
//! This module owns the bytes that cross a socket and nothing else: no sockets, no buffers of
//! its own, no timeouts. Every decoder takes a slice and answers one of three ways:
//! `Ok(Some((value, consumed)))`, `Ok(None)` when more bytes are needed, or an error when the
//! bytes can never become valid (the connection should then be closed). Every encoder appends
//! to a caller's `Vec<u8>`. One codec therefore serves io_uring's owned buffers and the
//! blocking path alike.
//!
//! - [`frame`]: the native connection preamble ("hello") and length-prefixed postcard frames.
//! - [`message`]: the native [`Request`] and [`Response`] messages.
//! - [`resp`]: RESP2, the server side (commands in, replies out) and the client side.
//!
//! The server tells the two protocols apart by the first byte of a connection:
//! [`is_native_magic_start`] is true only for a byte no RESP command can start with.
//! `docs/protocol.md` describes all of this byte by byte.
//!
//! Promises: no decoder panics on any input; no allocation is sized by an untrusted length
//! before that length is checked against [`crate::limits`]; a decoded value exists only if it
//! is within those limits.

pub mod frame;
pub mod message;
pub mod resp;

pub use frame::{
    decode_client_hello, decode_request, decode_response, decode_server_hello, encode_client_hello,
    encode_request, encode_response, encode_server_hello, frame_len_hint, is_native_magic_start,
    HelloStatus, ServerHello, FRAME_HEADER_BYTES, HELLO_BYTES, MAGIC, PROTOCOL_VERSION,
};
pub use message::{ErrorKind, PartitionStats, Request, Response, StatsReport};
pub use resp::{Reply, RespError};

use crate::KvsError;

/// Why bytes on a native connection cannot be decoded, or a message cannot be encoded.
///
/// Decode errors are final for the connection: the server answers with
/// [`ProtocolError::to_response`] where it can and then closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The connection did not start with [`MAGIC`]. `found` holds the bytes that differ
    /// (up to four).
    #[error("the peer did not open with the kvs magic: got {}", hex(found))]
    BadMagic { found: Vec<u8> },

    /// The server's hello carried a status this version does not know.
    #[error("the server's hello carried unknown status {status}")]
    UnknownHelloStatus { status: u16 },

    /// A frame's length prefix exceeds [`crate::limits::FRAME_BYTES_MAX`].
    #[error("frame body is {len} bytes; the limit is {max} bytes")]
    FrameTooLarge { len: usize, max: usize },

    /// A key exceeds [`crate::limits::KEY_BYTES_MAX`].
    #[error("key is {len} bytes; the limit is {max} bytes")]
    KeyTooLarge { len: usize, max: usize },

    /// A value exceeds [`crate::limits::VALUE_BYTES_MAX`].
    #[error("value is {len} bytes; the limit is {max} bytes")]
    ValueTooLarge { len: usize, max: usize },

    /// An `Auth` request's password exceeds [`crate::limits::PASSWORD_BYTES_MAX`].
    #[error("password is {len} bytes; the limit is {max} bytes")]
    PasswordTooLarge { len: usize, max: usize },

    /// A frame body is not a valid postcard message of the expected type.
    #[error("malformed frame body: {0}")]
    Malformed(String),

    /// A frame body holds a complete message followed by `extra` more bytes.
    #[error("frame body has {extra} bytes after the end of the message")]
    TrailingBytes { extra: usize },

    /// A message could not be serialized (not expected for kvs's own message types).
    #[error("could not encode message: {0}")]
    Encode(String),
}

impl ProtocolError {
    /// The [`ErrorKind`] a server reports to the peer for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProtocolError::FrameTooLarge { .. } => ErrorKind::FrameTooLarge,
            ProtocolError::KeyTooLarge { .. } => ErrorKind::KeyTooLarge,
            ProtocolError::ValueTooLarge { .. } => ErrorKind::ValueTooLarge,
            ProtocolError::BadMagic { .. }
            | ProtocolError::UnknownHelloStatus { .. }
            | ProtocolError::Malformed(_)
            | ProtocolError::PasswordTooLarge { .. }
            | ProtocolError::TrailingBytes { .. } => ErrorKind::Malformed,
            ProtocolError::Encode(_) => ErrorKind::Internal,
        }
    }

    /// The [`Response::Error`] a server sends before closing a connection over this error.
    pub fn to_response(&self) -> Response {
        Response::Error {
            kind: self.kind(),
            message: self.to_string(),
        }
    }
}

/// Oversized keys and values keep their specific [`KvsError`] variants (so a client sees the
/// same error the embedded store gives); everything else is [`KvsError::Protocol`].
impl From<ProtocolError> for KvsError {
    fn from(err: ProtocolError) -> KvsError {
        match err {
            ProtocolError::KeyTooLarge { len, max } => KvsError::KeyTooLarge { len, max },
            ProtocolError::ValueTooLarge { len, max } => KvsError::ValueTooLarge { len, max },
            other => KvsError::Protocol(other.to_string()),
        }
    }
}

/// Lower-case hex, bytes separated by spaces: `fb 4b 56 53`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{FRAME_BYTES_MAX, KEY_BYTES_MAX};

    #[test]
    fn oversized_key_keeps_its_specific_kvs_error() {
        // Guards against a client reporting an oversized key as a vague protocol error.
        let err = ProtocolError::KeyTooLarge {
            len: KEY_BYTES_MAX + 1,
            max: KEY_BYTES_MAX,
        };
        assert!(matches!(
            KvsError::from(err),
            KvsError::KeyTooLarge { len, max } if len == KEY_BYTES_MAX + 1 && max == KEY_BYTES_MAX
        ));
    }

    #[test]
    fn framing_errors_become_kvs_protocol_errors_with_their_sentence() {
        // Guards against losing the reason when a protocol error crosses into the library error.
        let err = ProtocolError::FrameTooLarge {
            len: usize::MAX,
            max: FRAME_BYTES_MAX,
        };
        let sentence = err.to_string();
        match KvsError::from(err) {
            KvsError::Protocol(msg) => assert_eq!(msg, sentence),
            other => panic!("expected KvsError::Protocol, got {other:?}"),
        }
    }

    #[test]
    fn protocol_errors_turn_into_error_responses_of_the_right_kind() {
        // Guards against the server telling a peer "malformed" when the frame was only too big.
        let err = ProtocolError::FrameTooLarge { len: 10, max: 5 };
        assert_eq!(
            err.to_response(),
            Response::Error {
                kind: ErrorKind::FrameTooLarge,
                message: "frame body is 10 bytes; the limit is 5 bytes".to_owned(),
            }
        );
        assert_eq!(
            ProtocolError::Malformed("x".into()).kind(),
            ErrorKind::Malformed
        );
        assert_eq!(
            ProtocolError::BadMagic { found: vec![b'G'] }.to_string(),
            "the peer did not open with the kvs magic: got 47"
        );
    }
}
