//! The native protocol's messages: what a client asks ([`Request`]) and what the server
//! answers ([`Response`]).
//!
//! Messages are encoded with postcard, which writes an enum as the varint index of its
//! variant followed by the variant's fields in declaration order. The variant order of every
//! enum here is therefore part of the wire format: **variants are only ever appended, never
//! reordered, renamed into another position, or removed.** A peer that receives a variant index
//! it does not know reports the frame as malformed. The tests in `frame.rs` pin every index.
//!
//! This module also owns the limits a message must respect ([`Request::check_limits`],
//! [`Response::check_limits`]); the frame codec applies them on both encode and decode.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ProtocolError;
use crate::limits::{KEY_BYTES_MAX, PASSWORD_BYTES_MAX, VALUE_BYTES_MAX};

/// A client's request. One frame, one request; the server answers each with one [`Response`].
///
/// `Debug` shows an `Auth` request's password as `..`, so a request can be logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Index 0. Answered by [`Response::Value`] (`None` when the key is absent).
    Get { key: Bytes },
    /// Index 1. Answered by [`Response::Ok`] once the write is durable per the fsync policy.
    Set { key: Bytes, value: Bytes },
    /// Index 2. Answered by [`Response::Ok`], or [`Response::NotFound`] when the key is absent.
    Remove { key: Bytes },
    /// Index 3. Answered by [`Response::Pong`].
    Ping,
    /// Index 4. Answered by [`Response::Stats`].
    Stats,
    /// Index 5. Authenticates the connection: answered by [`Response::Ok`], or an
    /// [`ErrorKind::WrongPassword`] error (delayed, and after too many the server closes), or
    /// [`ErrorKind::Unsupported`] when the server has no password. On a server with a password,
    /// every other request before a successful `Auth` is answered [`ErrorKind::AuthRequired`].
    /// At most [`PASSWORD_BYTES_MAX`] bytes.
    Auth { password: Bytes },
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Get { key } => f.debug_struct("Get").field("key", key).finish(),
            Request::Set { key, value } => f
                .debug_struct("Set")
                .field("key", key)
                .field("value", value)
                .finish(),
            Request::Remove { key } => f.debug_struct("Remove").field("key", key).finish(),
            Request::Ping => f.write_str("Ping"),
            Request::Stats => f.write_str("Stats"),
            Request::Auth { .. } => f.write_str("Auth { password: .. }"),
        }
    }
}

/// The server's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Index 0. A `Set` or `Remove` succeeded.
    Ok,
    /// Index 1. The answer to `Get`: the value, or `None` when the key is absent.
    Value(Option<Bytes>),
    /// Index 2. `Remove` found no such key.
    NotFound,
    /// Index 3. The answer to `Ping`.
    Pong,
    /// Index 4. The answer to `Stats`.
    Stats(StatsReport),
    /// Index 5. The request failed; `message` is a sentence for humans, `kind` is for code.
    Error { kind: ErrorKind, message: String },
}

/// What `Stats` reports: the I/O backend in use and one entry per partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// The file-I/O backend the server chose at start-up, e.g. `"uring"` or `"blocking"`.
    pub io_backend: String,
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionStats>,
}

/// Counters for one partition of the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStats {
    /// The partition's number, from 0.
    pub partition: u32,
    /// Live keys.
    pub keys: u64,
    /// Bytes of records that are still the current value of their key.
    pub live_bytes: u64,
    /// Bytes of records superseded or removed, reclaimable by compaction.
    pub dead_bytes: u64,
    /// Segment files, sealed and active.
    pub segments: u32,
    /// Compactions run since the server started.
    pub compactions: u64,
}

/// Why a request failed, for code to act on. Variants are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Index 0. The key exceeds [`KEY_BYTES_MAX`].
    KeyTooLarge,
    /// Index 1. The value exceeds [`VALUE_BYTES_MAX`].
    ValueTooLarge,
    /// Index 2. A frame's length prefix exceeds [`crate::limits::FRAME_BYTES_MAX`].
    FrameTooLarge,
    /// Index 3. A frame body or hello could not be decoded.
    Malformed,
    /// Index 4. The store refuses writes after a failed write or fsync; reads still work.
    ReadOnly,
    /// Index 5. The disk is full; the write was not stored.
    DiskFull,
    /// Index 6. The server is at its connection cap.
    Busy,
    /// Index 7. Anything else that went wrong inside the server.
    Internal,
    /// Index 8. The server does not support this request.
    Unsupported,
    /// Index 9. The server requires a password and the connection has not authenticated.
    AuthRequired,
    /// Index 10. An `Auth` request's password is wrong.
    WrongPassword,
}

impl Request {
    /// Checks the key and value against [`KEY_BYTES_MAX`] and [`VALUE_BYTES_MAX`], and a
    /// password against [`PASSWORD_BYTES_MAX`].
    pub fn check_limits(&self) -> Result<(), ProtocolError> {
        match self {
            Request::Get { key } | Request::Remove { key } => check_key(key),
            Request::Set { key, value } => {
                check_key(key)?;
                check_value(value)
            }
            Request::Ping | Request::Stats => Ok(()),
            Request::Auth { password } if password.len() > PASSWORD_BYTES_MAX => {
                Err(ProtocolError::PasswordTooLarge {
                    len: password.len(),
                    max: PASSWORD_BYTES_MAX,
                })
            }
            Request::Auth { .. } => Ok(()),
        }
    }
}

impl Response {
    /// Checks a returned value against [`VALUE_BYTES_MAX`].
    pub fn check_limits(&self) -> Result<(), ProtocolError> {
        match self {
            Response::Value(Some(value)) => check_value(value),
            Response::Ok
            | Response::Value(None)
            | Response::NotFound
            | Response::Pong
            | Response::Stats(_)
            | Response::Error { .. } => Ok(()),
        }
    }
}

fn check_key(key: &[u8]) -> Result<(), ProtocolError> {
    if key.len() > KEY_BYTES_MAX {
        return Err(ProtocolError::KeyTooLarge {
            len: key.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), ProtocolError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(ProtocolError::ValueTooLarge {
            len: value.len(),
            max: VALUE_BYTES_MAX,
        });
    }
    Ok(())
}
