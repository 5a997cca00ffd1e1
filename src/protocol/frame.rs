//! The native protocol's byte layer: the connection preamble ("hello") and length-prefixed
//! frames carrying postcard-encoded [`Request`]s and [`Response`]s.
//!
//! A native connection opens with an 8-byte hello each way:
//!
//! ```text
//! client -> server   MAGIC (4) | version u16 LE | flags u16 LE (0)
//! server -> client   MAGIC (4) | version u16 LE | status u16 LE (0 accepted, 1 not supported, 2 busy)
//! ```
//!
//! then carries frames, each a u32 LE body length followed by that many bytes of postcard.
//!
//! Promises: a length prefix is checked against [`FRAME_BYTES_MAX`] as soon as its four bytes
//! are present, before anything is allocated; a decoded message has no trailing bytes and
//! respects the key and value limits; an encoder either appends one whole frame or leaves the
//! buffer as it found it.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::message::{Request, Response};
use super::ProtocolError;
use crate::limits::FRAME_BYTES_MAX;

/// The first four bytes of every native connection, in both directions. The first byte,
/// 0xFB, is not ASCII, so no RESP command (an array's `*` or an inline command's printable
/// text) can start with it.
pub const MAGIC: [u8; 4] = [0xFB, b'K', b'V', b'S'];

/// The native protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Length of the hello in either direction, in bytes.
pub const HELLO_BYTES: usize = 8;

/// Length of a frame's length prefix, in bytes.
pub const FRAME_HEADER_BYTES: usize = 4;

// A u32 length prefix must be able to carry every legal body length, and widening a u32 to
// usize must be lossless.
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(usize::BITS >= u32::BITS);
const _: () = assert!(!MAGIC[0].is_ascii());

/// The server's verdict on a client's hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum HelloStatus {
    /// The server speaks the client's version; frames follow.
    Accepted = 0,
    /// The server does not speak the client's version and closes after its hello.
    VersionNotSupported = 1,
    /// The server is at its connection cap and closes after its hello.
    Busy = 2,
}

impl HelloStatus {
    /// The verdict of a server that speaks exactly [`PROTOCOL_VERSION`].
    pub fn for_client_version(version: u16) -> HelloStatus {
        if version == PROTOCOL_VERSION {
            HelloStatus::Accepted
        } else {
            HelloStatus::VersionNotSupported
        }
    }
}

/// A decoded server hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerHello {
    /// The protocol version the server speaks.
    pub version: u16,
    /// Whether the server accepted the client's version.
    pub status: HelloStatus,
}

/// True if `first_byte` can open a native connection; false for every byte that can open a
/// RESP command. The server sniffs the first byte of a connection with this.
pub fn is_native_magic_start(first_byte: u8) -> bool {
    first_byte == MAGIC[0]
}

/// Appends the client's hello: [`MAGIC`], [`PROTOCOL_VERSION`], flags 0.
pub fn encode_client_hello(out: &mut Vec<u8>) {
    encode_hello(PROTOCOL_VERSION, 0, out);
}

/// Decodes a client's hello into the client's protocol version. Needs [`HELLO_BYTES`] bytes
/// and consumes exactly that many. Flags are reserved: version 1 sends 0 and ignores them
/// (a version that gives them meaning will bump the version). Wrong magic is an error as soon
/// as the first differing byte arrives.
pub fn decode_client_hello(buf: &[u8]) -> Result<Option<u16>, ProtocolError> {
    Ok(decode_hello(buf)?.map(|(version, _flags)| version))
}

/// Appends the server's hello: [`MAGIC`], [`PROTOCOL_VERSION`], `status`.
pub fn encode_server_hello(status: HelloStatus, out: &mut Vec<u8>) {
    encode_hello(PROTOCOL_VERSION, status as u16, out);
}

/// Decodes the server's hello. Needs [`HELLO_BYTES`] bytes and consumes exactly that many.
/// Wrong magic and unknown statuses are errors.
pub fn decode_server_hello(buf: &[u8]) -> Result<Option<ServerHello>, ProtocolError> {
    let Some((version, status)) = decode_hello(buf)? else {
        return Ok(None);
    };
    let status = match status {
        0 => HelloStatus::Accepted,
        1 => HelloStatus::VersionNotSupported,
        2 => HelloStatus::Busy,
        status => return Err(ProtocolError::UnknownHelloStatus { status }),
    };
    Ok(Some(ServerHello { version, status }))
}

fn encode_hello(version: u16, last: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
}

/// The hello's version and last field, once all eight bytes are present.
fn decode_hello(buf: &[u8]) -> Result<Option<(u16, u16)>, ProtocolError> {
    let present = &buf[..buf.len().min(MAGIC.len())];
    if present != &MAGIC[..present.len()] {
        return Err(ProtocolError::BadMagic {
            found: present.to_vec(),
        });
    }
    let Some(hello) = buf.first_chunk::<HELLO_BYTES>() else {
        return Ok(None);
    };
    let version = u16::from_le_bytes([hello[4], hello[5]]);
    let last = u16::from_le_bytes([hello[6], hello[7]]);
    Ok(Some((version, last)))
}

/// The total length (prefix included) of the frame at the start of `buf`, once its four
/// length bytes are present; `Ok(None)` before that. A length over [`FRAME_BYTES_MAX`] is an
/// error right away, so a reader never waits for, or allocates, an oversized frame.
pub fn frame_len_hint(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    // Lossless: usize has at least 32 bits (asserted above).
    let body_len = u32::from_le_bytes(*header) as usize;
    if body_len > FRAME_BYTES_MAX {
        return Err(ProtocolError::FrameTooLarge {
            len: body_len,
            max: FRAME_BYTES_MAX,
        });
    }
    Ok(Some(FRAME_HEADER_BYTES + body_len))
}

/// Appends `request` as one frame. Oversized keys and values are refused here, so the peer
/// never has to close the connection over them; on error `out` is unchanged.
pub fn encode_request(request: &Request, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    request.check_limits()?;
    encode_frame(request, out)
}

/// Decodes the request frame at the start of `buf`: the request and the bytes it occupied,
/// `Ok(None)` if the frame is incomplete, or an error if it can never be valid.
pub fn decode_request(buf: &[u8]) -> Result<Option<(Request, usize)>, ProtocolError> {
    decode_frame(buf, Request::check_limits)
}

/// Appends `response` as one frame; on error `out` is unchanged.
pub fn encode_response(response: &Response, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    response.check_limits()?;
    encode_frame(response, out)
}

/// Decodes the response frame at the start of `buf`, as [`decode_request`] does requests.
pub fn decode_response(buf: &[u8]) -> Result<Option<(Response, usize)>, ProtocolError> {
    decode_frame(buf, Response::check_limits)
}

fn encode_frame<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    if let Err(err) = postcard::to_io(message, &mut *out) {
        out.truncate(start);
        return Err(ProtocolError::Encode(err.to_string()));
    }
    let body_len = out.len() - start - FRAME_HEADER_BYTES;
    let prefix = match u32::try_from(body_len) {
        Ok(len) if body_len <= FRAME_BYTES_MAX => len.to_le_bytes(),
        _ => {
            out.truncate(start);
            return Err(ProtocolError::FrameTooLarge {
                len: body_len,
                max: FRAME_BYTES_MAX,
            });
        }
    };
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&prefix);
    Ok(())
}

fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    check_limits: impl FnOnce(&T) -> Result<(), ProtocolError>,
) -> Result<Option<(T, usize)>, ProtocolError> {
    let Some(frame_len) = frame_len_hint(buf)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(FRAME_HEADER_BYTES..frame_len) else {
        return Ok(None);
    };
    // The body is complete, so postcard running out of bytes means the message is truncated.
    let (message, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|err| ProtocolError::Malformed(err.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtocolError::TrailingBytes { extra: rest.len() });
    }
    check_limits(&message)?;
    Ok(Some((message, frame_len)))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::limits::{KEY_BYTES_MAX, PASSWORD_BYTES_MAX, VALUE_BYTES_MAX};
    use crate::protocol::hex;
    use crate::protocol::message::{ErrorKind, PartitionStats, StatsReport};

    const PROTOCOL_DOC: &str = include_str!("../../docs/protocol.md");

    fn every_request() -> Vec<Request> {
        vec![
            Request::Get {
                key: Bytes::from_static(b"k"),
            },
            Request::Set {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v\r\n\0"),
            },
            Request::Set {
                key: Bytes::new(),
                value: Bytes::new(),
            },
            Request::Remove {
                key: Bytes::from_static(b"gone"),
            },
            Request::Ping,
            Request::Stats,
            Request::Auth {
                password: Bytes::from_static(b"s3cret"),
            },
        ]
    }

    fn sample_stats() -> StatsReport {
        StatsReport {
            io_backend: "uring".to_owned(),
            partitions: vec![PartitionStats {
                partition: 0,
                keys: 2,
                live_bytes: 300,
                dead_bytes: 0,
                segments: 1,
                compactions: 0,
            }],
        }
    }

    fn every_error_kind() -> [ErrorKind; 11] {
        [
            ErrorKind::KeyTooLarge,
            ErrorKind::ValueTooLarge,
            ErrorKind::FrameTooLarge,
            ErrorKind::Malformed,
            ErrorKind::ReadOnly,
            ErrorKind::DiskFull,
            ErrorKind::Busy,
            ErrorKind::Internal,
            ErrorKind::Unsupported,
            ErrorKind::AuthRequired,
            ErrorKind::WrongPassword,
        ]
    }

    fn every_response() -> Vec<Response> {
        let mut all = vec![
            Response::Ok,
            Response::Value(Some(Bytes::from_static(b"value"))),
            Response::Value(Some(Bytes::new())),
            Response::Value(None),
            Response::NotFound,
            Response::Pong,
            Response::Stats(sample_stats()),
            Response::Stats(StatsReport {
                io_backend: String::new(),
                partitions: Vec::new(),
            }),
        ];
        all.extend(every_error_kind().into_iter().map(|kind| Response::Error {
            kind,
            message: format!("{kind:?} happened"),
        }));
        all
    }

    fn request_frame(request: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(request, &mut out).expect("encodable request");
        out
    }

    fn response_frame(response: &Response) -> Vec<u8> {
        let mut out = Vec::new();
        encode_response(response, &mut out).expect("encodable response");
        out
    }

    /// A frame around `body`, bypassing the encoder's checks.
    fn raw_frame(body: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(body.len())
            .expect("small test body")
            .to_le_bytes()
            .to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn client_hello_round_trips() {
        // Guards against the client and server disagreeing on the preamble layout.
        let mut out = Vec::new();
        encode_client_hello(&mut out);
        assert_eq!(out.len(), HELLO_BYTES);
        assert_eq!(decode_client_hello(&out), Ok(Some(PROTOCOL_VERSION)));
    }

    #[test]
    fn server_hello_round_trips_with_both_statuses() {
        // Guards against a client misreading the server's verdict.
        for status in [
            HelloStatus::Accepted,
            HelloStatus::VersionNotSupported,
            HelloStatus::Busy,
        ] {
            let mut out = Vec::new();
            encode_server_hello(status, &mut out);
            assert_eq!(out.len(), HELLO_BYTES);
            assert_eq!(
                decode_server_hello(&out),
                Ok(Some(ServerHello {
                    version: PROTOCOL_VERSION,
                    status
                }))
            );
        }
    }

    #[test]
    fn hello_split_at_every_byte_needs_more_then_decodes() {
        // Guards against a hello that arrives in pieces being rejected or misread.
        let mut client = Vec::new();
        encode_client_hello(&mut client);
        let mut server = Vec::new();
        encode_server_hello(HelloStatus::Accepted, &mut server);
        for split in 0..HELLO_BYTES {
            assert_eq!(decode_client_hello(&client[..split]), Ok(None));
            assert_eq!(decode_server_hello(&server[..split]), Ok(None));
        }
    }

    #[test]
    fn hello_with_wrong_magic_is_rejected_on_the_first_differing_byte() {
        // Guards against a server waiting for eight bytes from a peer that is plainly not kvs.
        assert_eq!(
            decode_client_hello(b"G"),
            Err(ProtocolError::BadMagic {
                found: b"G".to_vec()
            })
        );
        assert_eq!(
            decode_client_hello(&[0xFB, b'K', b'X']),
            Err(ProtocolError::BadMagic {
                found: vec![0xFB, b'K', b'X']
            })
        );
        assert!(matches!(
            decode_server_hello(b"*1\r\n$4\r\nPING\r\n"),
            Err(ProtocolError::BadMagic { .. })
        ));
    }

    #[test]
    fn client_hello_reports_other_versions_and_ignores_flags() {
        // Guards against a server refusing, rather than answering "not supported", a newer client.
        let hello = [0xFB, b'K', b'V', b'S', 0x07, 0x00, 0xFF, 0xFF];
        assert_eq!(decode_client_hello(&hello), Ok(Some(7)));
        assert_eq!(
            HelloStatus::for_client_version(7),
            HelloStatus::VersionNotSupported
        );
        assert_eq!(
            HelloStatus::for_client_version(PROTOCOL_VERSION),
            HelloStatus::Accepted
        );
    }

    #[test]
    fn server_hello_with_unknown_status_is_rejected() {
        // Guards against a client treating an unknown verdict as acceptance.
        let hello = [0xFB, b'K', b'V', b'S', 0x01, 0x00, 0x03, 0x00];
        assert_eq!(
            decode_server_hello(&hello),
            Err(ProtocolError::UnknownHelloStatus { status: 3 })
        );
    }

    #[test]
    fn native_magic_start_is_no_byte_a_resp_command_can_start_with() {
        // Guards against the server sniffing a RESP client as native, or the reverse.
        assert!(is_native_magic_start(MAGIC[0]));
        for byte in 0..=0x7Fu8 {
            assert!(!is_native_magic_start(byte), "byte {byte:#04x}");
        }
    }

    #[test]
    fn every_request_round_trips() {
        // Guards against a request variant that encodes but does not decode to itself.
        for request in every_request() {
            let frame = request_frame(&request);
            assert_eq!(
                decode_request(&frame),
                Ok(Some((request, frame.len()))),
                "frame {}",
                hex(&frame)
            );
        }
    }

    #[test]
    fn every_response_round_trips() {
        // Guards against a response variant that encodes but does not decode to itself.
        for response in every_response() {
            let frame = response_frame(&response);
            assert_eq!(
                decode_response(&frame),
                Ok(Some((response, frame.len()))),
                "frame {}",
                hex(&frame)
            );
        }
    }

    #[test]
    fn largest_key_and_value_fit_in_one_frame() {
        // Guards against limits that let the store accept a value the protocol cannot carry.
        let request = Request::Set {
            key: Bytes::from(vec![b'k'; KEY_BYTES_MAX]),
            value: Bytes::from(vec![b'v'; VALUE_BYTES_MAX]),
        };
        let frame = request_frame(&request);
        assert_eq!(frame_len_hint(&frame), Ok(Some(frame.len())));
        assert_eq!(decode_request(&frame), Ok(Some((request, frame.len()))));
        let response = Response::Value(Some(Bytes::from(vec![b'v'; VALUE_BYTES_MAX])));
        let frame = response_frame(&response);
        assert_eq!(decode_response(&frame), Ok(Some((response, frame.len()))));
    }

    #[test]
    fn frame_split_at_every_byte_needs_more_then_decodes() {
        // Guards against a reader that errors, or decodes garbage, on a frame arriving in pieces.
        for request in every_request() {
            let frame = request_frame(&request);
            for split in 0..frame.len() {
                assert_eq!(decode_request(&frame[..split]), Ok(None), "split {split}");
            }
            assert_eq!(frame_len_hint(&frame[..3]), Ok(None));
            assert_eq!(frame_len_hint(&frame[..4]), Ok(Some(frame.len())));
        }
        for response in every_response() {
            let frame = response_frame(&response);
            for split in 0..frame.len() {
                assert_eq!(decode_response(&frame[..split]), Ok(None), "split {split}");
            }
        }
    }

    #[test]
    fn pipelined_frames_decode_one_at_a_time_in_order() {
        // Guards against a decoder that consumes more than its own frame.
        let requests = every_request();
        let mut buf = Vec::new();
        for request in &requests {
            encode_request(request, &mut buf).expect("encodable request");
        }
        let mut rest = &buf[..];
        for request in requests {
            let (decoded, used) = decode_request(rest)
                .expect("valid frame")
                .expect("complete frame");
            assert_eq!(decoded, request);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn four_gib_length_prefix_is_rejected_with_only_the_header_present() {
        // Guards against a reader buffering (or allocating) gigabytes a peer merely announced.
        let header = u32::MAX.to_le_bytes();
        let err = ProtocolError::FrameTooLarge {
            len: u32::MAX as usize,
            max: FRAME_BYTES_MAX,
        };
        assert_eq!(frame_len_hint(&header), Err(err.clone()));
        assert_eq!(decode_request(&header), Err(err.clone()));
        assert_eq!(decode_response(&header), Err(err));
    }

    #[test]
    fn length_one_past_the_limit_is_rejected_and_the_limit_itself_is_not() {
        // Guards against an off-by-one in the frame size check.
        let at_limit = u32::try_from(FRAME_BYTES_MAX).expect("limit fits u32");
        assert_eq!(
            frame_len_hint(&at_limit.to_le_bytes()),
            Ok(Some(FRAME_HEADER_BYTES + FRAME_BYTES_MAX))
        );
        assert_eq!(decode_request(&at_limit.to_le_bytes()), Ok(None));
        assert_eq!(
            frame_len_hint(&(at_limit + 1).to_le_bytes()),
            Err(ProtocolError::FrameTooLarge {
                len: FRAME_BYTES_MAX + 1,
                max: FRAME_BYTES_MAX
            })
        );
    }

    #[test]
    fn empty_and_truncated_bodies_are_malformed() {
        // Guards against a short body being read as "need more bytes" and stalling the connection.
        assert!(matches!(
            decode_request(&raw_frame(&[])),
            Err(ProtocolError::Malformed(_))
        ));
        // Set whose key claims five bytes but the body ends after two.
        assert!(matches!(
            decode_request(&raw_frame(&[0x01, 0x05, b'h', b'e'])),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_response(&raw_frame(&[0x01])),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_variant_indices_are_malformed() {
        // Guards against a newer peer's message being misread as some other message.
        assert!(matches!(
            decode_request(&raw_frame(&[0x06])),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_response(&raw_frame(&[0x06])),
            Err(ProtocolError::Malformed(_))
        ));
        // Error with kind index 11.
        assert!(matches!(
            decode_response(&raw_frame(&[0x05, 0x0b, 0x00])),
            Err(ProtocolError::Malformed(_))
        ));
        // Option tag 2 is neither None nor Some.
        assert!(matches!(
            decode_response(&raw_frame(&[0x01, 0x02])),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn invalid_utf8_in_an_error_message_is_malformed() {
        // Guards against a String holding bytes that are not UTF-8.
        assert!(matches!(
            decode_response(&raw_frame(&[0x05, 0x03, 0x02, 0xC3, 0x28])),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_rejected() {
        // Guards against smuggling bytes past the decoder inside an honest-looking frame.
        assert_eq!(
            decode_request(&raw_frame(&[0x03, 0x00, 0x00])),
            Err(ProtocolError::TrailingBytes { extra: 2 })
        );
        assert_eq!(
            decode_response(&raw_frame(&[0x03, 0xFF])),
            Err(ProtocolError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn oversized_key_or_value_inside_a_frame_is_rejected() {
        // Guards against a hand-made frame sneaking a key or value past the store's limits.
        let big_key = Request::Get {
            key: Bytes::from(vec![0; KEY_BYTES_MAX + 1]),
        };
        let frame = raw_frame(&postcard::to_stdvec(&big_key).expect("serializable"));
        assert_eq!(
            decode_request(&frame),
            Err(ProtocolError::KeyTooLarge {
                len: KEY_BYTES_MAX + 1,
                max: KEY_BYTES_MAX
            })
        );
        let big_value = Request::Set {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0; VALUE_BYTES_MAX + 1]),
        };
        let frame = raw_frame(&postcard::to_stdvec(&big_value).expect("serializable"));
        assert_eq!(
            decode_request(&frame),
            Err(ProtocolError::ValueTooLarge {
                len: VALUE_BYTES_MAX + 1,
                max: VALUE_BYTES_MAX
            })
        );
        let big_reply = Response::Value(Some(Bytes::from(vec![0; VALUE_BYTES_MAX + 1])));
        let frame = raw_frame(&postcard::to_stdvec(&big_reply).expect("serializable"));
        assert!(matches!(
            decode_response(&frame),
            Err(ProtocolError::ValueTooLarge { .. })
        ));
    }

    #[test]
    fn oversized_password_is_refused_by_the_encoder_and_the_decoder() {
        // Guards against a password over the limit accepted, or quoted in the error.
        let long = Request::Auth {
            password: Bytes::from(vec![b'p'; PASSWORD_BYTES_MAX + 1]),
        };
        let err = ProtocolError::PasswordTooLarge {
            len: PASSWORD_BYTES_MAX + 1,
            max: PASSWORD_BYTES_MAX,
        };
        let mut out = Vec::new();
        assert_eq!(encode_request(&long, &mut out), Err(err.clone()));
        assert!(out.is_empty());
        let frame = raw_frame(&postcard::to_stdvec(&long).expect("serializable"));
        assert_eq!(decode_request(&frame), Err(err.clone()));
        assert_eq!(err.kind(), ErrorKind::Malformed);
        assert!(!err.to_string().contains("ppp"));
        let at_limit = Request::Auth {
            password: Bytes::from(vec![b'p'; PASSWORD_BYTES_MAX]),
        };
        let frame = request_frame(&at_limit);
        assert_eq!(decode_request(&frame), Ok(Some((at_limit, frame.len()))));
    }

    #[test]
    fn debug_of_an_auth_request_hides_the_password() {
        // Guards against a password reaching a log line through `{:?}` of a request.
        let shown = format!(
            "{:?}",
            Request::Auth {
                password: Bytes::from_static(b"hunter2")
            }
        );
        assert_eq!(shown, "Auth { password: .. }");
        assert_eq!(
            format!(
                "{:?}",
                Request::Get {
                    key: Bytes::from_static(b"k")
                }
            ),
            "Get { key: b\"k\" }"
        );
    }

    #[test]
    fn encoders_refuse_oversized_messages_and_leave_the_buffer_untouched() {
        // Guards against a client sending a frame the server must close the connection over.
        let mut out = b"earlier".to_vec();
        let big_key = Request::Remove {
            key: Bytes::from(vec![0; KEY_BYTES_MAX + 1]),
        };
        assert!(matches!(
            encode_request(&big_key, &mut out),
            Err(ProtocolError::KeyTooLarge { .. })
        ));
        let big_value = Request::Set {
            key: Bytes::new(),
            value: Bytes::from(vec![0; VALUE_BYTES_MAX + 1]),
        };
        assert!(matches!(
            encode_request(&big_value, &mut out),
            Err(ProtocolError::ValueTooLarge { .. })
        ));
        // A response with no key or value can still be too big: a huge error message.
        let huge = Response::Error {
            kind: ErrorKind::Internal,
            message: "x".repeat(FRAME_BYTES_MAX),
        };
        assert!(matches!(
            encode_response(&huge, &mut out),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert_eq!(out, b"earlier");
    }

    #[test]
    fn variant_indices_are_stable() {
        // Guards against reordering enum variants, which would silently change the wire format.
        let request_indices: Vec<u8> = every_request()
            .iter()
            .map(|r| request_frame(r)[FRAME_HEADER_BYTES])
            .collect();
        assert_eq!(request_indices, [0, 1, 1, 2, 3, 4, 5]);
        let response_indices: Vec<u8> = every_response()
            .iter()
            .map(|r| response_frame(r)[FRAME_HEADER_BYTES])
            .collect();
        assert_eq!(
            response_indices,
            [0, 1, 1, 1, 2, 3, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5]
        );
        let kind_indices: Vec<u8> = every_error_kind()
            .into_iter()
            .map(|kind| {
                let response = Response::Error {
                    kind,
                    message: String::new(),
                };
                response_frame(&response)[FRAME_HEADER_BYTES + 1]
            })
            .collect();
        assert_eq!(kind_indices, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    }

    /// Asserts that `bytes` are exactly `expected` and that docs/protocol.md shows them.
    fn assert_documented(what: &str, bytes: &[u8], expected: &str) {
        assert_eq!(hex(bytes), expected, "{what}");
        assert!(
            PROTOCOL_DOC.contains(expected),
            "docs/protocol.md lacks the bytes of {what}: {expected}"
        );
    }

    #[test]
    fn documented_examples_match_the_encoder_byte_for_byte() {
        // Guards against docs/protocol.md drifting from what the code puts on the wire.
        let mut out = Vec::new();
        encode_client_hello(&mut out);
        assert_documented("the client hello", &out, "fb 4b 56 53 01 00 00 00");

        let mut out = Vec::new();
        encode_server_hello(HelloStatus::Accepted, &mut out);
        assert_documented(
            "the accepting server hello",
            &out,
            "fb 4b 56 53 01 00 00 00",
        );

        let mut out = Vec::new();
        encode_server_hello(HelloStatus::VersionNotSupported, &mut out);
        assert_documented("the refusing server hello", &out, "fb 4b 56 53 01 00 01 00");

        let examples_requests = [
            (
                Request::Get {
                    key: Bytes::from_static(b"hello"),
                },
                "07 00 00 00 00 05 68 65 6c 6c 6f",
            ),
            (
                Request::Set {
                    key: Bytes::from_static(b"hello"),
                    value: Bytes::from_static(b"world"),
                },
                "0d 00 00 00 01 05 68 65 6c 6c 6f 05 77 6f 72 6c 64",
            ),
            (
                Request::Remove {
                    key: Bytes::from_static(b"hello"),
                },
                "07 00 00 00 02 05 68 65 6c 6c 6f",
            ),
            (Request::Ping, "01 00 00 00 03"),
            (Request::Stats, "01 00 00 00 04"),
            (
                Request::Auth {
                    password: Bytes::from_static(b"s3cret"),
                },
                "08 00 00 00 05 06 73 33 63 72 65 74",
            ),
        ];
        for (request, expected) in examples_requests {
            assert_documented(&format!("{request:?}"), &request_frame(&request), expected);
        }

        let examples_responses = [
            (Response::Ok, "01 00 00 00 00"),
            (
                Response::Value(Some(Bytes::from_static(b"world"))),
                "08 00 00 00 01 01 05 77 6f 72 6c 64",
            ),
            (Response::Value(None), "02 00 00 00 01 00"),
            (Response::NotFound, "01 00 00 00 02"),
            (Response::Pong, "01 00 00 00 03"),
            (
                Response::Stats(sample_stats()),
                "0f 00 00 00 04 05 75 72 69 6e 67 01 00 02 ac 02 00 01 00",
            ),
            (
                Response::Error {
                    kind: ErrorKind::ReadOnly,
                    message: "read-only".to_owned(),
                },
                "0c 00 00 00 05 04 09 72 65 61 64 2d 6f 6e 6c 79",
            ),
            (
                Response::Error {
                    kind: ErrorKind::WrongPassword,
                    message: "wrong password".to_owned(),
                },
                "11 00 00 00 05 0a 0e 77 72 6f 6e 67 20 70 61 73 73 77 6f 72 64",
            ),
        ];
        for (response, expected) in examples_responses {
            assert_documented(
                &format!("{response:?}"),
                &response_frame(&response),
                expected,
            );
        }
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            arb_bytes(KEY_BYTES_MAX).prop_map(|key| Request::Get { key }),
            (arb_bytes(KEY_BYTES_MAX), arb_bytes(4096))
                .prop_map(|(key, value)| Request::Set { key, value }),
            arb_bytes(KEY_BYTES_MAX).prop_map(|key| Request::Remove { key }),
            Just(Request::Ping),
            Just(Request::Stats),
            arb_bytes(PASSWORD_BYTES_MAX).prop_map(|password| Request::Auth { password }),
        ]
    }

    fn arb_response() -> impl Strategy<Value = Response> {
        let partition = (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
        )
            .prop_map(
                |(partition, keys, live_bytes, dead_bytes, segments, compactions)| PartitionStats {
                    partition,
                    keys,
                    live_bytes,
                    dead_bytes,
                    segments,
                    compactions,
                },
            );
        prop_oneof![
            Just(Response::Ok),
            proptest::option::of(arb_bytes(4096)).prop_map(Response::Value),
            Just(Response::NotFound),
            Just(Response::Pong),
            (".*", proptest::collection::vec(partition, 0..32)).prop_map(
                |(io_backend, partitions)| Response::Stats(StatsReport {
                    io_backend,
                    partitions
                })
            ),
            (proptest::sample::select(every_error_kind().to_vec()), ".*")
                .prop_map(|(kind, message)| Response::Error { kind, message }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_the_native_decoders(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Guards against a hostile peer crashing the server with any byte string.
            if let Ok(Some((_, used))) = decode_request(&buf) {
                prop_assert!(used <= buf.len());
            }
            if let Ok(Some((_, used))) = decode_response(&buf) {
                prop_assert!(used <= buf.len());
            }
            let _ = frame_len_hint(&buf);
            let _ = decode_client_hello(&buf);
            let _ = decode_server_hello(&buf);
        }

        #[test]
        fn corrupted_valid_frames_never_panic_the_decoders(
            request in arb_request(),
            position in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            // Guards against panics that only a nearly valid frame reaches.
            let mut frame = request_frame(&request);
            let at = position.index(frame.len());
            frame[at] = byte;
            let _ = decode_request(&frame);
            let _ = decode_response(&frame);
        }

        #[test]
        fn any_request_round_trips(request in arb_request()) {
            // Guards against keys or values whose bytes do not survive encode then decode.
            let frame = request_frame(&request);
            prop_assert_eq!(decode_request(&frame), Ok(Some((request, frame.len()))));
        }

        #[test]
        fn any_response_round_trips(response in arb_response()) {
            // Guards against responses whose contents do not survive encode then decode.
            let frame = response_frame(&response);
            prop_assert_eq!(decode_response(&frame), Ok(Some((response, frame.len()))));
        }
    }
}
