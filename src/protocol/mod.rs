//! Wire codecs. Codecs do no I/O.
//!
//! This module owns the bytes that cross a socket and nothing else: no sockets, no buffers of
//! its own, no timeouts. Every decoder takes a slice and answers one of three ways:
//! `Ok(Some((value, consumed)))`, `Ok(None)` when more bytes are needed, or an error when the
//! bytes can never become valid (the connection should then be closed). Every encoder appends
//! to a caller's `Vec<u8>`.
//!
//! - [`resp`]: RESP2, the server side (commands in, replies out) and the client side.
//!
//! Promises: no decoder panics on any input; no allocation is sized by an untrusted length
//! before that length is checked against [`crate::limits`].

pub mod resp;

pub use resp::{Reply, RespError};
