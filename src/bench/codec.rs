//! The load generator's own encoders and reply parsers for the two requests it sends (GET and
//! SET), in both protocols. Like every codec in kvs they do no I/O.
//!
//! The library's codecs ([`crate::protocol`]) build a [`Request`](crate::protocol::Request)
//! holding `Bytes` and run postcard over it; here the bytes of a GET or SET are laid down
//! directly from the layout in `docs/protocol.md` (for a fixed key and value size everything
//! but the key and the value is a constant prefix computed once), and the common replies
//! (`Ok`, `Value`, `+OK`, a bulk string, a null) are recognised in place without allocating.
//! Anything else falls back to the library's decoders, so an error reply or a malformed
//! frame is judged by the same rules the rest of kvs uses. The tests pin the hand-built
//! bytes to the library's encoders, and `benches/loadgen_codec.rs` measures both.
//!
//! Promises: the encoders produce exactly the bytes of the library's encoders; a reply is
//! either complete and consumed whole, `Ok(None)` (more bytes needed), or an error after
//! which the connection cannot be trusted.

use std::ops::Range;

use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::protocol::resp;
use crate::protocol::{decode_response, frame_len_hint, Reply, Response, FRAME_HEADER_BYTES};
use crate::KvsError;

use super::Protocol;

/// Request variant indices from `docs/protocol.md`.
const NATIVE_GET: u8 = 0;
const NATIVE_SET: u8 = 1;
/// Response variant indices and the `Option` tags from `docs/protocol.md`.
const NATIVE_OK: u8 = 0;
const NATIVE_VALUE: u8 = 1;
const OPTION_NONE: u8 = 0;
const OPTION_SOME: u8 = 1;
/// The longest varint a u32 takes.
const VARINT_U32_BYTES_MAX: usize = 5;
/// A RESP bulk header longer than this (`$` + 20 digits + CRLF, with room) is left to the
/// library parser to judge.
const RESP_BULK_HEADER_BYTES_MAX: usize = 24;

/// Builds GET and SET requests for one key size and one value size.
#[derive(Clone, Debug)]
pub struct RequestEncoder {
    /// Everything before the key in a GET.
    get_head: Vec<u8>,
    /// Everything after the key in a GET.
    get_tail: &'static [u8],
    /// Everything before the key in a SET.
    set_head: Vec<u8>,
    /// Everything between the key and the value in a SET.
    set_mid: Vec<u8>,
    /// Everything after the value in a SET.
    set_tail: &'static [u8],
    key_size: usize,
    value_size: usize,
}

impl RequestEncoder {
    pub fn new(
        protocol: Protocol,
        key_size: usize,
        value_size: usize,
    ) -> Result<RequestEncoder, KvsError> {
        if key_size > KEY_BYTES_MAX || value_size > VALUE_BYTES_MAX {
            return Err(KvsError::Config(format!(
                "keys are limited to {KEY_BYTES_MAX} bytes and values to {VALUE_BYTES_MAX}"
            )));
        }
        let encoder = match protocol {
            Protocol::Native => {
                let key_len = varint(key_size as u32);
                let value_len = varint(value_size as u32);
                let get_body = 1 + key_len.len() + key_size;
                let set_body = get_body + value_len.len() + value_size;
                let mut get_head = (get_body as u32).to_le_bytes().to_vec();
                get_head.push(NATIVE_GET);
                get_head.extend_from_slice(&key_len);
                let mut set_head = (set_body as u32).to_le_bytes().to_vec();
                set_head.push(NATIVE_SET);
                set_head.extend_from_slice(&key_len);
                RequestEncoder {
                    get_head,
                    get_tail: b"",
                    set_head,
                    set_mid: value_len,
                    set_tail: b"",
                    key_size,
                    value_size,
                }
            }
            Protocol::Resp => RequestEncoder {
                get_head: format!("*2\r\n$3\r\nGET\r\n${key_size}\r\n").into_bytes(),
                get_tail: b"\r\n",
                set_head: format!("*3\r\n$3\r\nSET\r\n${key_size}\r\n").into_bytes(),
                set_mid: format!("\r\n${value_size}\r\n").into_bytes(),
                set_tail: b"\r\n",
                key_size,
                value_size,
            },
        };
        Ok(encoder)
    }

    /// Bytes one GET takes on the wire.
    pub fn get_len(&self) -> usize {
        self.get_head.len() + self.key_size + self.get_tail.len()
    }

    /// Bytes one SET takes on the wire.
    pub fn set_len(&self) -> usize {
        self.set_head.len()
            + self.key_size
            + self.set_mid.len()
            + self.value_size
            + self.set_tail.len()
    }

    /// Appends a GET of `key`, which must be `key_size` bytes.
    pub fn get(&self, key: &[u8], out: &mut Vec<u8>) {
        debug_assert_eq!(key.len(), self.key_size);
        out.extend_from_slice(&self.get_head);
        out.extend_from_slice(key);
        out.extend_from_slice(self.get_tail);
    }

    /// Appends a SET of `key`; `value` appends the value, which must be `value_size` bytes.
    pub fn set(&self, key: &[u8], out: &mut Vec<u8>, value: impl FnOnce(&mut Vec<u8>)) {
        debug_assert_eq!(key.len(), self.key_size);
        out.extend_from_slice(&self.set_head);
        out.extend_from_slice(key);
        out.extend_from_slice(&self.set_mid);
        let start = out.len();
        value(out);
        debug_assert_eq!(out.len() - start, self.value_size);
        out.extend_from_slice(self.set_tail);
    }
}

/// A postcard varint (LEB128) of `n`.
fn varint(mut n: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(VARINT_U32_BYTES_MAX);
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// Reads a postcard varint of at most [`VARINT_U32_BYTES_MAX`] bytes: the value and the
/// bytes it took.
fn read_varint(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(VARINT_U32_BYTES_MAX).enumerate() {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return usize::try_from(value).ok().map(|v| (v, i + 1));
        }
    }
    None
}

/// What one reply said, as far as the load generator cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyKind {
    /// A SET succeeded (`Ok`, `+OK`).
    Done,
    /// A GET's answer: where the value lies in the parsed buffer, or `None` for no such key.
    Value(Option<Range<usize>>),
    /// The server answered with an error (`Error`, `-ERR ...`); the connection goes on.
    ServerError(String),
    /// A well-formed reply that answers neither a GET nor a SET.
    Unexpected(String),
}

/// Parses the reply at the start of `buf`: what it said and the bytes it took, `Ok(None)` if
/// it is incomplete, or an error if the bytes can never be a valid reply.
pub fn parse_reply(protocol: Protocol, buf: &[u8]) -> Result<Option<(ReplyKind, usize)>, KvsError> {
    match protocol {
        Protocol::Native => parse_native(buf),
        Protocol::Resp => parse_resp(buf),
    }
}

fn parse_native(buf: &[u8]) -> Result<Option<(ReplyKind, usize)>, KvsError> {
    let Some(total) = frame_len_hint(buf)? else {
        return Ok(None);
    };
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let body = &frame[FRAME_HEADER_BYTES..];
    let fast = match body {
        [NATIVE_OK] => Some(ReplyKind::Done),
        [NATIVE_VALUE, OPTION_NONE] => Some(ReplyKind::Value(None)),
        [NATIVE_VALUE, OPTION_SOME, rest @ ..] => match read_varint(rest) {
            Some((len, used)) if used + len == rest.len() && len <= VALUE_BYTES_MAX => {
                let start = FRAME_HEADER_BYTES + 2 + used;
                Some(ReplyKind::Value(Some(start..total)))
            }
            _ => None,
        },
        _ => None,
    };
    if let Some(kind) = fast {
        return Ok(Some((kind, total)));
    }
    // Errors, other responses and anything suspicious: the library decides.
    let Some((response, used)) = decode_response(frame)? else {
        return Ok(None);
    };
    let kind = match response {
        Response::Error { kind, message } => ReplyKind::ServerError(format!("{kind:?}: {message}")),
        other => ReplyKind::Unexpected(format!("{other:?}")),
    };
    Ok(Some((kind, used)))
}

fn parse_resp(buf: &[u8]) -> Result<Option<(ReplyKind, usize)>, KvsError> {
    match buf.first() {
        None => return Ok(None),
        Some(b'+') if buf.starts_with(b"+OK\r\n") => return Ok(Some((ReplyKind::Done, 5))),
        Some(b'$') if buf.starts_with(b"$-1\r\n") => return Ok(Some((ReplyKind::Value(None), 5))),
        Some(b'$') => {
            if let Some(parsed) = fast_bulk(buf) {
                return Ok(parsed);
            }
        }
        Some(_) => {}
    }
    let Some((reply, used)) = resp::parse_reply(buf)? else {
        return Ok(None);
    };
    let kind = match reply {
        Reply::Simple(text) if text == "OK" => ReplyKind::Done,
        Reply::Bulk(None) => ReplyKind::Value(None),
        Reply::Bulk(Some(data)) => ReplyKind::Value(Some(used - 2 - data.len()..used - 2)),
        Reply::Error(text) => ReplyKind::ServerError(text),
        other => ReplyKind::Unexpected(format!("{other:?}")),
    };
    Ok(Some((kind, used)))
}

/// A well-formed bulk string at the start of `buf`: `Some(Ok(None))` while its payload is
/// still arriving, `Some(..)` once complete; `None` leaves the judgement to the library
/// parser (an odd header, a missing CRLF).
fn fast_bulk(buf: &[u8]) -> Option<Option<(ReplyKind, usize)>> {
    let window = &buf[..buf.len().min(RESP_BULK_HEADER_BYTES_MAX)];
    let cr = window.iter().position(|&b| b == b'\r')?;
    let digits = &window[1..cr];
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    let len = digits
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    if len > VALUE_BYTES_MAX || window.get(cr + 1).is_some_and(|&b| b != b'\n') {
        return None;
    }
    let start = cr + 2;
    let end = start + len;
    if buf.len() < end + 2 {
        return Some(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return None;
    }
    Some(Some((ReplyKind::Value(Some(start..end)), end + 2)))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::{encode_request, encode_response, ErrorKind, Request};

    const SIZES: [(usize, usize); 6] = [
        (16, 100),
        (1, 0),
        (127, 128),
        (128, 4096),
        (16, 16_384),
        (300, 70_000),
    ];

    fn key(size: usize) -> Vec<u8> {
        (0..size).map(|i| b'a' + (i % 26) as u8).collect()
    }

    fn value(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 7) as u8).collect()
    }

    #[test]
    fn hand_built_native_requests_match_the_library_encoder_byte_for_byte() {
        // Guards against the generator sending frames the documented layout does not describe.
        for (key_size, value_size) in SIZES {
            let encoder = RequestEncoder::new(Protocol::Native, key_size, value_size).expect("ok");
            let (k, v) = (key(key_size), value(value_size));
            let mut ours = Vec::new();
            encoder.get(&k, &mut ours);
            let mut theirs = Vec::new();
            let get = Request::Get {
                key: Bytes::from(k.clone()),
            };
            encode_request(&get, &mut theirs).expect("encodable");
            assert_eq!(ours, theirs, "GET {key_size}/{value_size}");
            assert_eq!(ours.len(), encoder.get_len());

            let mut ours = Vec::new();
            encoder.set(&k, &mut ours, |out| out.extend_from_slice(&v));
            let mut theirs = Vec::new();
            let set = Request::Set {
                key: Bytes::from(k),
                value: Bytes::from(v),
            };
            encode_request(&set, &mut theirs).expect("encodable");
            assert_eq!(ours, theirs, "SET {key_size}/{value_size}");
            assert_eq!(ours.len(), encoder.set_len());
        }
    }

    #[test]
    fn hand_built_resp_requests_match_the_library_encoder_byte_for_byte() {
        // Guards against the generator's RESP commands drifting from what Redis clients send.
        for (key_size, value_size) in SIZES {
            let encoder = RequestEncoder::new(Protocol::Resp, key_size, value_size).expect("ok");
            let (k, v) = (key(key_size), value(value_size));
            let mut ours = Vec::new();
            encoder.get(&k, &mut ours);
            let mut theirs = Vec::new();
            resp::encode_command(&[b"GET", &k], &mut theirs);
            assert_eq!(ours, theirs);
            let mut ours = Vec::new();
            encoder.set(&k, &mut ours, |out| out.extend_from_slice(&v));
            let mut theirs = Vec::new();
            resp::encode_command(&[b"SET", &k, &v], &mut theirs);
            assert_eq!(ours, theirs);
            assert_eq!(ours.len(), encoder.set_len());
        }
    }

    fn native(response: &Response) -> Vec<u8> {
        let mut out = Vec::new();
        encode_response(response, &mut out).expect("encodable");
        out
    }

    /// Parses `wire` whole, and asserts every strict prefix is "incomplete".
    fn parse_whole(protocol: Protocol, wire: &[u8]) -> ReplyKind {
        for cut in 0..wire.len() {
            assert_eq!(
                parse_reply(protocol, &wire[..cut]).expect("a prefix is not an error"),
                None,
                "prefix of {} bytes",
                cut
            );
        }
        let mut padded = wire.to_vec();
        padded.extend_from_slice(b"more");
        let (kind, used) = parse_reply(protocol, &padded)
            .expect("valid")
            .expect("complete");
        assert_eq!(used, wire.len());
        kind
    }

    #[test]
    fn native_replies_are_recognised_whole_and_never_from_a_prefix() {
        // Guards against acting on half a frame, or consuming bytes of the next one.
        assert_eq!(
            parse_whole(Protocol::Native, &native(&Response::Ok)),
            ReplyKind::Done
        );
        assert_eq!(
            parse_whole(Protocol::Native, &native(&Response::Value(None))),
            ReplyKind::Value(None)
        );
        for size in [0, 1, 127, 128, 4096, 70_000] {
            let v = value(size);
            let wire = native(&Response::Value(Some(Bytes::from(v.clone()))));
            let ReplyKind::Value(Some(range)) = parse_whole(Protocol::Native, &wire) else {
                panic!("not a value");
            };
            assert_eq!(&wire[range], &v[..]);
        }
        let error = Response::Error {
            kind: ErrorKind::ReadOnly,
            message: "read-only".into(),
        };
        assert_eq!(
            parse_whole(Protocol::Native, &native(&error)),
            ReplyKind::ServerError("ReadOnly: read-only".into())
        );
        assert!(matches!(
            parse_whole(Protocol::Native, &native(&Response::Pong)),
            ReplyKind::Unexpected(_)
        ));
    }

    #[test]
    fn malformed_native_replies_are_errors() {
        // Guards against a fast path that accepts what the library decoder would refuse.
        // Value(Some) whose length says 5 but carries 4 bytes.
        let frame = [6, 0, 0, 0, 1, 1, 5, b'a', b'b', b'c'];
        assert!(parse_reply(Protocol::Native, &frame).is_err());
        // Ok with a trailing byte.
        assert!(parse_reply(Protocol::Native, &[2, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_reply(Protocol::Native, &u32::MAX.to_le_bytes()).is_err());
    }

    #[test]
    fn resp_replies_are_recognised_whole_and_never_from_a_prefix() {
        // Guards against acting on half a reply, or consuming bytes of the next one.
        assert_eq!(parse_whole(Protocol::Resp, b"+OK\r\n"), ReplyKind::Done);
        assert_eq!(
            parse_whole(Protocol::Resp, b"$-1\r\n"),
            ReplyKind::Value(None)
        );
        for size in [0, 1, 9, 10, 4096, 70_000] {
            let v = value(size);
            let mut wire = Vec::new();
            resp::bulk(&v, &mut wire);
            let ReplyKind::Value(Some(range)) = parse_whole(Protocol::Resp, &wire) else {
                panic!("not a value");
            };
            assert_eq!(&wire[range], &v[..]);
        }
        assert_eq!(
            parse_whole(Protocol::Resp, b"-ERR nope\r\n"),
            ReplyKind::ServerError("ERR nope".into())
        );
        assert!(matches!(
            parse_whole(Protocol::Resp, b"+PONG\r\n"),
            ReplyKind::Unexpected(_)
        ));
        assert!(matches!(
            parse_whole(Protocol::Resp, b":1\r\n"),
            ReplyKind::Unexpected(_)
        ));
    }

    #[test]
    fn malformed_resp_replies_are_errors() {
        // Guards against a fast path that accepts what the library parser would refuse.
        assert!(parse_reply(Protocol::Resp, b"$3\r\nabcXY").is_err());
        assert!(parse_reply(Protocol::Resp, b"$03\r\nabc\r\n").is_err());
        assert!(parse_reply(Protocol::Resp, b"?\r\n").is_err());
    }
}
