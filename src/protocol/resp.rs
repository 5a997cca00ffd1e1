//! RESP2, the Redis serialization protocol, as far as kvs speaks it.
//!
//! Server side: [`parse_command`] reads one command (a multibulk array of bulk strings, or an
//! inline line as typed into telnet) and the encoders ([`simple`], [`error`], [`integer`],
//! [`bulk`], [`null_bulk`], [`array_len`], [`null_array`]) append replies. Client side (load
//! generators, tests): [`encode_command`] and [`parse_reply`].
//!
//! Promises: no parser panics on any input; `Ok(None)` means "need more bytes"; every
//! announced length is checked against [`crate::limits`] before the bytes arrive, and nothing
//! is allocated in proportion to an announced length (only to bytes actually present);
//! bulk payloads are binary-safe. Error sentences follow Redis's wording, so a server replies
//! with `-ERR {err}` and clients see what they would from Redis.
//!
//! Where kvs is stricter than Redis: a negative array length in a command (`*-1`) is an
//! error, not an empty command; the two bytes after a bulk payload must be CRLF; header lines
//! must end in CRLF, not a bare CR. Inline commands are split like Redis's `sdssplitargs`:
//! words separated by whitespace, `"double quotes"` with `\n \r \t \b \a \\ \" \xHH` escapes,
//! `'single quotes'` with only `\'`; a closing quote must be followed by whitespace or the end
//! of the line.

use std::ops::Range;

use bytes::Bytes;

use crate::limits::{
    FRAME_BYTES_MAX, RESP_ARRAY_ITEMS_MAX, RESP_COMMAND_BYTES_MAX, RESP_LINE_BYTES_MAX,
    RESP_REPLY_DEPTH_MAX,
};
use crate::KvsError;

/// Most array elements reserved up front, whatever the array's announced length.
const PREALLOC_ITEMS_MAX: usize = 1024;
/// The smallest bulk string, `$0\r\n\r\n`: bounds how many elements the bytes present can hold.
const BULK_BYTES_MIN: usize = 6;
/// The smallest reply, `+\r\n`.
const REPLY_BYTES_MIN: usize = 3;

/// Why RESP bytes can never form a valid command or reply. The connection cannot recover:
/// the server sends `-ERR {self}` and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespError {
    /// An array length that is not a number, is negative (in a command), or exceeds
    /// [`RESP_ARRAY_ITEMS_MAX`].
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A bulk length that is not a number, is negative (other than a null reply), or exceeds
    /// [`FRAME_BYTES_MAX`].
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A byte other than the one the grammar requires, e.g. a command element that is not a
    /// bulk string.
    #[error("Protocol error: expected '{}', got '{}'", .expected.escape_ascii(), .found.escape_ascii())]
    Unexpected { expected: u8, found: u8 },
    /// The two bytes after a bulk payload are not CRLF.
    #[error("Protocol error: expected '\\r\\n' after bulk data")]
    MissingBulkCrlf,
    /// No CRLF within [`RESP_LINE_BYTES_MAX`] bytes of an array header.
    #[error("Protocol error: too big mbulk count string")]
    MultibulkCountTooLong,
    /// No CRLF within [`RESP_LINE_BYTES_MAX`] bytes of a bulk header.
    #[error("Protocol error: too big bulk count string")]
    BulkCountTooLong,
    /// No newline within [`RESP_LINE_BYTES_MAX`] bytes of an inline command.
    #[error("Protocol error: too big inline request")]
    InlineTooLong,
    /// An inline command with an unterminated quote, or a closing quote followed by more text.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A command longer than [`RESP_COMMAND_BYTES_MAX`] in total.
    #[error("Protocol error: command is longer than {max} bytes")]
    CommandTooLarge { max: usize },
    /// No CRLF within [`RESP_LINE_BYTES_MAX`] bytes of a status, error or integer reply.
    #[error("Protocol error: too big reply line")]
    ReplyLineTooLong,
    /// A status, error or integer reply line ended in a bare CR.
    #[error("Protocol error: reply line not terminated by CRLF")]
    BadLineEnding,
    /// An integer reply that is not a decimal i64.
    #[error("Protocol error: invalid integer reply")]
    InvalidInteger,
    /// A status or error reply that is not UTF-8.
    #[error("Protocol error: status or error reply is not UTF-8")]
    InvalidUtf8,
    /// A reply starting with a byte that starts no RESP2 type.
    #[error("Protocol error: unknown reply type '{}'", .found.escape_ascii())]
    UnknownReplyType { found: u8 },
    /// Arrays nested deeper than [`RESP_REPLY_DEPTH_MAX`].
    #[error("Protocol error: reply nests arrays deeper than {max} levels")]
    NestingTooDeep { max: usize },
    /// A reply longer than [`RESP_COMMAND_BYTES_MAX`] in total.
    #[error("Protocol error: reply is longer than {max} bytes")]
    ReplyTooLarge { max: usize },
}

impl From<RespError> for KvsError {
    fn from(err: RespError) -> KvsError {
        KvsError::Protocol(err.to_string())
    }
}

/// A RESP2 reply, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK\r\n`
    Simple(String),
    /// `-ERR message\r\n`, without the `-`.
    Error(String),
    /// `:42\r\n`
    Integer(i64),
    /// `$5\r\nhello\r\n`; `None` is the null bulk `$-1\r\n`.
    Bulk(Option<Bytes>),
    /// `*2\r\n...`; `None` is the null array `*-1\r\n`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Appends this reply with the encoders below (so CR and LF in a simple string or error
    /// become spaces).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(text) => simple(text, out),
            Reply::Error(text) => error(text, out),
            Reply::Integer(n) => integer(*n, out),
            Reply::Bulk(Some(data)) => bulk(data, out),
            Reply::Bulk(None) => null_bulk(out),
            Reply::Array(Some(items)) => {
                array_len(items.len(), out);
                for item in items {
                    item.encode(out);
                }
            }
            Reply::Array(None) => null_array(out),
        }
    }
}

/// Parses one command from the start of `buf`: its arguments and the bytes it occupied.
/// A `*` starts a multibulk command; anything else is an inline command ending in `\n` or
/// `\r\n`. An empty array (`*0\r\n`) or a blank inline line yields no arguments; the caller
/// skips it. All arguments share one copy of the command's bytes.
pub fn parse_command(buf: &[u8]) -> Result<Option<(Vec<Bytes>, usize)>, RespError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf),
        Some(_) => parse_inline(buf),
    }
}

/// `GET key` as client libraries send it, `*2\r\n$3\r\nGET\r\n$<len>\r\n<key>\r\n` (the
/// command's name in any case), read without the allocations of [`parse_command`]: the key, and
/// the bytes the command takes. `None` for anything else, for a key over `key_max`, and for a
/// command not yet whole: [`parse_command`] then reads it, and gives the same command where
/// this gives one (a test holds the two to it).
pub fn plain_get(buf: &[u8], key_max: usize) -> Option<(&[u8], usize)> {
    let at = plain_name(buf, b"*2\r\n$3\r\n", b"GET")?;
    let (key, used) = plain_bulk(buf, at, key_max)?;
    Some((key, used))
}

/// `SET key value` as client libraries send it (no options), read as [`plain_get`] reads a
/// GET: the key, the value, and the bytes the command takes.
pub fn plain_set(buf: &[u8], key_max: usize, value_max: usize) -> Option<(&[u8], &[u8], usize)> {
    let at = plain_name(buf, b"*3\r\n$3\r\n", b"SET")?;
    let (key, at) = plain_bulk(buf, at, key_max)?;
    let (value, used) = plain_bulk(buf, at, value_max)?;
    Some((key, value, used))
}

/// Where the first argument starts, if `buf` starts with `head` and the three-letter `name`.
fn plain_name(buf: &[u8], head: &[u8], name: &[u8; 3]) -> Option<usize> {
    let rest = buf.strip_prefix(head)?;
    let (found, rest) = rest.split_at_checked(3)?;
    if !found.eq_ignore_ascii_case(name) || !rest.starts_with(b"\r\n") {
        return None;
    }
    Some(head.len() + 5)
}

/// The bulk string `$<len>\r\n<bytes>\r\n` at `at`, at most `max` bytes long, and where it
/// ends.
fn plain_bulk(buf: &[u8], at: usize, max: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?.strip_prefix(b"$")?;
    let digits = rest.iter().take(11).position(|&b| b == b'\r')?;
    let len = usize::try_from(parse_i64(&rest[..digits])?)
        .ok()
        .filter(|&n| n <= max)?;
    let rest = rest[digits..].strip_prefix(b"\r\n")?;
    let data = rest.get(..len)?;
    if rest.get(len..len + 2)? != b"\r\n" {
        return None;
    }
    Some((data, buf.len() - rest.len() + len + 2))
}

fn parse_multibulk(buf: &[u8]) -> Result<Option<(Vec<Bytes>, usize)>, RespError> {
    let Some((digits, mut pos)) = read_line(
        buf,
        1,
        RespError::MultibulkCountTooLong,
        RespError::InvalidMultibulkLength,
    )?
    else {
        return Ok(None);
    };
    let count = parse_len(
        digits,
        RESP_ARRAY_ITEMS_MAX,
        RespError::InvalidMultibulkLength,
    )?;
    let mut ranges: Vec<Range<usize>> = Vec::with_capacity(prealloc(
        count,
        buf.len().saturating_sub(pos),
        BULK_BYTES_MIN,
    ));
    for _ in 0..count {
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        if marker != b'$' {
            return Err(RespError::Unexpected {
                expected: b'$',
                found: marker,
            });
        }
        let Some((digits, data_start)) = read_line(
            buf,
            pos + 1,
            RespError::BulkCountTooLong,
            RespError::InvalidBulkLength,
        )?
        else {
            return Ok(None);
        };
        let len = parse_len(digits, FRAME_BYTES_MAX, RespError::InvalidBulkLength)?;
        let data_end = data_start + len;
        let end = data_end + 2;
        if end > RESP_COMMAND_BYTES_MAX {
            return Err(RespError::CommandTooLarge {
                max: RESP_COMMAND_BYTES_MAX,
            });
        }
        if !crlf_at(buf, data_end)? {
            return Ok(None);
        }
        ranges.push(data_start..data_end);
        pos = end;
    }
    let whole = Bytes::copy_from_slice(&buf[..pos]);
    let args = ranges.into_iter().map(|range| whole.slice(range)).collect();
    Ok(Some((args, pos)))
}

fn parse_inline(buf: &[u8]) -> Result<Option<(Vec<Bytes>, usize)>, RespError> {
    let window = &buf[..buf.len().min(RESP_LINE_BYTES_MAX + 1)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return if window.len() > RESP_LINE_BYTES_MAX {
            Err(RespError::InlineTooLong)
        } else {
            Ok(None)
        };
    };
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Some((split_inline_args(line)?, newline + 1)))
}

/// Whitespace as C's `isspace` sees it, which is what Redis splits inline commands on.
fn is_inline_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C)
}

fn split_inline_args(line: &[u8]) -> Result<Vec<Bytes>, RespError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(|&b| is_inline_space(b)) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        while let Some(&byte) = line.get(i) {
            match byte {
                b'"' => i = double_quoted(line, i + 1, &mut arg)?,
                b'\'' => i = single_quoted(line, i + 1, &mut arg)?,
                _ if is_inline_space(byte) => break,
                _ => {
                    arg.push(byte);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
}

/// Reads a double-quoted string whose body starts at `start` into `out`; returns the index
/// just past the closing quote.
fn double_quoted(line: &[u8], start: usize, out: &mut Vec<u8>) -> Result<usize, RespError> {
    let mut i = start;
    loop {
        match line.get(i) {
            None => return Err(RespError::UnbalancedQuotes),
            Some(b'"') => return closing_quote(line, i),
            Some(b'\\') => {
                let escaped = line.get(i + 1).ok_or(RespError::UnbalancedQuotes)?;
                let hex = match (escaped, line.get(i + 2), line.get(i + 3)) {
                    (b'x', Some(&hi), Some(&lo)) => hex_digit(hi).zip(hex_digit(lo)),
                    _ => None,
                };
                if let Some((hi, lo)) = hex {
                    out.push((hi << 4) | lo);
                    i += 4;
                } else {
                    out.push(match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        &other => other,
                    });
                    i += 2;
                }
            }
            Some(&byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
}

/// Reads a single-quoted string whose body starts at `start` into `out`; returns the index
/// just past the closing quote. Only `\'` is an escape.
fn single_quoted(line: &[u8], start: usize, out: &mut Vec<u8>) -> Result<usize, RespError> {
    let mut i = start;
    loop {
        match line.get(i) {
            None => return Err(RespError::UnbalancedQuotes),
            Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                out.push(b'\'');
                i += 2;
            }
            Some(b'\'') => return closing_quote(line, i),
            Some(&byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
}

/// A closing quote at `at` must end the line or be followed by whitespace.
fn closing_quote(line: &[u8], at: usize) -> Result<usize, RespError> {
    match line.get(at + 1) {
        Some(&next) if !is_inline_space(next) => Err(RespError::UnbalancedQuotes),
        _ => Ok(at + 1),
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Parses one reply from the start of `buf`: the reply and the bytes it occupied. Bulk
/// strings share one copy of the reply's bytes.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    let Some((raw, used)) = parse_raw_reply(buf, 0, 0)? else {
        return Ok(None);
    };
    let whole = Bytes::copy_from_slice(&buf[..used]);
    Ok(Some((raw.build(&whole), used)))
}

/// A parsed reply whose bulk strings are still ranges of the input.
enum RawReply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Range<usize>>),
    Array(Option<Vec<RawReply>>),
}

impl RawReply {
    fn build(self, whole: &Bytes) -> Reply {
        match self {
            RawReply::Simple(text) => Reply::Simple(text),
            RawReply::Error(text) => Reply::Error(text),
            RawReply::Integer(n) => Reply::Integer(n),
            RawReply::Bulk(range) => Reply::Bulk(range.map(|range| whole.slice(range))),
            RawReply::Array(items) => Reply::Array(
                items.map(|items| items.into_iter().map(|item| item.build(whole)).collect()),
            ),
        }
    }
}

/// Parses the reply at `start`, which `depth` arrays enclose.
fn parse_raw_reply(
    buf: &[u8],
    start: usize,
    depth: usize,
) -> Result<Option<(RawReply, usize)>, RespError> {
    let Some(&kind) = buf.get(start) else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' | b':' => {
            let Some((line, end)) = reply_line(buf, start + 1, RespError::BadLineEnding)? else {
                return Ok(None);
            };
            let reply = match kind {
                b':' => RawReply::Integer(parse_i64(line).ok_or(RespError::InvalidInteger)?),
                b'+' => RawReply::Simple(utf8(line)?),
                _ => RawReply::Error(utf8(line)?),
            };
            Ok(Some((reply, end)))
        }
        b'$' => {
            let Some((digits, data_start)) =
                reply_line(buf, start + 1, RespError::InvalidBulkLength)?
            else {
                return Ok(None);
            };
            if digits == b"-1" {
                return Ok(Some((RawReply::Bulk(None), data_start)));
            }
            let len = parse_len(digits, FRAME_BYTES_MAX, RespError::InvalidBulkLength)?;
            let data_end = data_start + len;
            let end = data_end + 2;
            check_reply_len(end)?;
            if !crlf_at(buf, data_end)? {
                return Ok(None);
            }
            Ok(Some((RawReply::Bulk(Some(data_start..data_end)), end)))
        }
        b'*' => {
            if depth >= RESP_REPLY_DEPTH_MAX {
                return Err(RespError::NestingTooDeep {
                    max: RESP_REPLY_DEPTH_MAX,
                });
            }
            let Some((digits, mut pos)) =
                reply_line(buf, start + 1, RespError::InvalidMultibulkLength)?
            else {
                return Ok(None);
            };
            if digits == b"-1" {
                return Ok(Some((RawReply::Array(None), pos)));
            }
            let count = parse_len(
                digits,
                RESP_ARRAY_ITEMS_MAX,
                RespError::InvalidMultibulkLength,
            )?;
            let mut items = Vec::with_capacity(prealloc(
                count,
                buf.len().saturating_sub(pos),
                REPLY_BYTES_MIN,
            ));
            for _ in 0..count {
                let Some((item, next)) = parse_raw_reply(buf, pos, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                pos = next;
            }
            Ok(Some((RawReply::Array(Some(items)), pos)))
        }
        found => Err(RespError::UnknownReplyType { found }),
    }
}

/// A reply's header or one-line body starting at `start`, checked against the size limits.
fn reply_line(
    buf: &[u8],
    start: usize,
    bad_ending: RespError,
) -> Result<Option<(&[u8], usize)>, RespError> {
    let line = read_line(buf, start, RespError::ReplyLineTooLong, bad_ending)?;
    if let Some((_, end)) = line {
        check_reply_len(end)?;
    }
    Ok(line)
}

fn check_reply_len(end: usize) -> Result<(), RespError> {
    if end > RESP_COMMAND_BYTES_MAX {
        return Err(RespError::ReplyTooLarge {
            max: RESP_COMMAND_BYTES_MAX,
        });
    }
    Ok(())
}

fn utf8(line: &[u8]) -> Result<String, RespError> {
    std::str::from_utf8(line)
        .map(str::to_owned)
        .map_err(|_| RespError::InvalidUtf8)
}

/// The line starting at `start` without its CRLF, and the index just past the CRLF.
/// `too_long` if no CR appears within [`RESP_LINE_BYTES_MAX`] bytes; `bad_ending` if the CR
/// is followed by anything but LF. Scans at most that many bytes, however long `buf` is.
fn read_line(
    buf: &[u8],
    start: usize,
    too_long: RespError,
    bad_ending: RespError,
) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(RESP_LINE_BYTES_MAX + 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if window.len() > RESP_LINE_BYTES_MAX {
            Err(too_long)
        } else {
            Ok(None)
        };
    };
    match rest.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((&rest[..cr], start + cr + 2))),
        Some(_) => Err(bad_ending),
    }
}

/// Whether CRLF follows a bulk payload ending at `at`: `Ok(false)` while it has not fully
/// arrived, an error as soon as a wrong byte has.
fn crlf_at(buf: &[u8], at: usize) -> Result<bool, RespError> {
    let present = buf.get(at..buf.len().min(at + 2)).unwrap_or_default();
    if present != &b"\r\n"[..present.len()] {
        return Err(RespError::MissingBulkCrlf);
    }
    Ok(present.len() == 2)
}

/// Parses a length: a non-negative decimal no greater than `max`.
fn parse_len(digits: &[u8], max: usize, err: RespError) -> Result<usize, RespError> {
    parse_i64(digits)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= max)
        .ok_or(err)
}

/// A strict decimal i64, as Redis's `string2ll` reads one: optional `-`, no `+`, no spaces,
/// no leading zeros, no `-0`, no overflow. Servers read integer arguments with it too.
pub fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (negative, magnitude) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    match magnitude {
        [] | [b'0', _, ..] => return None,
        [b'0'] if negative => return None,
        _ => {}
    }
    let mut value: i64 = 0;
    for &byte in magnitude {
        if !byte.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(byte - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

/// How many elements to reserve for an array announced as `count` long when `available`
/// bytes follow and each element takes at least `item_bytes_min`.
fn prealloc(count: usize, available: usize, item_bytes_min: usize) -> usize {
    count
        .min(available / item_bytes_min)
        .min(PREALLOC_ITEMS_MAX)
}

/// Appends a simple string, `+text\r\n`. CR and LF in `text` become spaces, as in Redis.
pub fn simple(text: &str, out: &mut Vec<u8>) {
    out.push(b'+');
    push_one_line(text, out);
}

/// Appends an error, `-text\r\n`; `text` should start with a code such as `ERR`. CR and LF
/// in `text` become spaces, as in Redis.
pub fn error(text: &str, out: &mut Vec<u8>) {
    out.push(b'-');
    push_one_line(text, out);
}

/// Appends an integer, `:n\r\n`.
pub fn integer(n: i64, out: &mut Vec<u8>) {
    out.push(b':');
    if n < 0 {
        out.push(b'-');
    }
    push_decimal(n.unsigned_abs(), out);
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string, `$len\r\ndata\r\n`.
pub fn bulk(data: &[u8], out: &mut Vec<u8>) {
    out.push(b'$');
    push_decimal(data.len() as u64, out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the null bulk string, `$-1\r\n` (Redis's "no such key").
pub fn null_bulk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends an array header, `*n\r\n`; the caller appends the `n` elements.
pub fn array_len(n: usize, out: &mut Vec<u8>) {
    out.push(b'*');
    push_decimal(n as u64, out);
    out.extend_from_slice(b"\r\n");
}

/// Appends the null array, `*-1\r\n`.
pub fn null_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

/// Appends a command as a multibulk array of bulk strings, as clients send it.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    array_len(args.len(), out);
    for arg in args {
        bulk(arg, out);
    }
}

fn push_one_line(text: &str, out: &mut Vec<u8>) {
    out.extend(text.bytes().map(|b| match b {
        b'\r' | b'\n' => b' ',
        other => other,
    }));
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn command(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        out
    }

    fn args(list: &[&[u8]]) -> Vec<Bytes> {
        list.iter().map(|a| Bytes::copy_from_slice(a)).collect()
    }

    fn parsed(buf: &[u8]) -> Result<Option<(Vec<Bytes>, usize)>, RespError> {
        parse_command(buf)
    }

    fn encoded(reply: &Reply) -> Vec<u8> {
        let mut out = Vec::new();
        reply.encode(&mut out);
        out
    }

    #[test]
    fn multibulk_command_parses_into_its_arguments() {
        // Guards against misreading the framing every Redis client uses.
        let buf = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        assert_eq!(
            parsed(buf),
            Ok(Some((args(&[b"SET", b"key", b"value"]), buf.len())))
        );
    }

    #[test]
    fn pipelined_commands_parse_one_at_a_time_in_order() {
        // Guards against a parser that swallows the next command of a pipeline.
        let mut buf = command(&[b"SET", b"a", b"1"]);
        buf.extend_from_slice(b"PING\r\n");
        buf.extend_from_slice(&command(&[b"GET", b"a"]));
        buf.extend_from_slice(b"*0\r\n");
        let mut rest = &buf[..];
        let mut seen = Vec::new();
        while !rest.is_empty() {
            let (cmd, used) = parsed(rest).expect("valid").expect("complete");
            seen.push(cmd);
            rest = &rest[used..];
        }
        assert_eq!(
            seen,
            vec![
                args(&[b"SET", b"a", b"1"]),
                args(&[b"PING"]),
                args(&[b"GET", b"a"]),
                Vec::new()
            ]
        );
    }

    #[test]
    fn command_split_at_every_byte_needs_more_then_parses() {
        // Guards against a command arriving in pieces being rejected or parsed early.
        for buf in [
            command(&[b"SET", b"key\r\n", b""]),
            b"  set \"a b\" 'c'\r\n".to_vec(),
            b"*0\r\n".to_vec(),
        ] {
            for split in 0..buf.len() {
                assert_eq!(parsed(&buf[..split]), Ok(None), "split {split} of {buf:?}");
            }
            assert!(matches!(parsed(&buf), Ok(Some((_, used))) if used == buf.len()));
        }
    }

    #[test]
    fn bulk_payloads_may_contain_crlf_and_any_byte() {
        // Guards against a parser that looks for CRLF inside a length-delimited payload.
        let value: Vec<u8> = (0..=255u8).chain(*b"\r\n*1\r\n$3\r\n").collect();
        let buf = command(&[b"SET", b"k", &value]);
        assert_eq!(
            parsed(&buf),
            Ok(Some((args(&[b"SET", b"k", &value]), buf.len())))
        );
    }

    #[test]
    fn inline_commands_split_on_whitespace_and_end_at_newline() {
        // Guards against telnet users (and redis-cli's inline mode) being refused.
        assert_eq!(
            parsed(b"SET  key\tvalue\r\n"),
            Ok(Some((args(&[b"SET", b"key", b"value"]), 16)))
        );
        assert_eq!(parsed(b"PING\n"), Ok(Some((args(&[b"PING"]), 5))));
        assert_eq!(parsed(b"PING"), Ok(None));
    }

    #[test]
    fn inline_quotes_group_words_and_decode_escapes() {
        // Guards against quoted inline arguments being split or left escaped.
        assert_eq!(
            parsed(b"SET \"a b\\n\\x41\\\"\" 'it\\'s \\n'\r\n"),
            Ok(Some((args(&[b"SET", b"a b\nA\"", b"it's \\n"]), 30)))
        );
        assert_eq!(
            parsed(b"x\"y z\"w\n"),
            Err(RespError::UnbalancedQuotes),
            "a closing quote must be followed by whitespace"
        );
        assert_eq!(
            parsed(b"foo\"bar baz\" q\n"),
            Ok(Some((args(&[b"foobar baz", b"q"]), 15))),
            "a quote opens mid-word, as in Redis"
        );
        assert_eq!(parsed(b"\"\"\n"), Ok(Some((args(&[b""]), 3))));
    }

    #[test]
    fn inline_unbalanced_quotes_are_rejected() {
        // Guards against a missing closing quote swallowing the rest of the line silently.
        for line in [
            &b"SET \"abc\r\n"[..],
            b"SET 'abc\n",
            b"SET \"abc\\\"\n",
            b"GET \"a\"b\n",
        ] {
            assert_eq!(parsed(line), Err(RespError::UnbalancedQuotes), "{line:?}");
        }
        assert_eq!(
            RespError::UnbalancedQuotes.to_string(),
            "Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn empty_array_and_blank_inline_lines_yield_no_arguments() {
        // Guards against the server treating a keep-alive newline as an error.
        assert_eq!(parsed(b"*0\r\n"), Ok(Some((Vec::new(), 4))));
        assert_eq!(parsed(b"\r\n"), Ok(Some((Vec::new(), 2))));
        assert_eq!(parsed(b"\n"), Ok(Some((Vec::new(), 1))));
        assert_eq!(parsed(b"  \t \r\n"), Ok(Some((Vec::new(), 6))));
    }

    #[test]
    fn negative_non_numeric_and_oversized_array_lengths_are_rejected() {
        // Guards against a header that cannot be a count being read as one.
        let too_many = format!("*{}\r\n", RESP_ARRAY_ITEMS_MAX + 1);
        for header in [
            &b"*-1\r\n"[..],
            b"*-5\r\n",
            b"*abc\r\n",
            b"*\r\n",
            b"*+1\r\n",
            b"*01\r\n",
            b"* 1\r\n",
            b"*1 \r\n",
            b"*99999999999999999999\r\n",
            b"*1\rX",
            too_many.as_bytes(),
        ] {
            assert_eq!(
                parsed(header),
                Err(RespError::InvalidMultibulkLength),
                "{header:?}"
            );
        }
        assert_eq!(
            RespError::InvalidMultibulkLength.to_string(),
            "Protocol error: invalid multibulk length"
        );
        let at_limit = format!("*{RESP_ARRAY_ITEMS_MAX}\r\n");
        assert_eq!(parsed(at_limit.as_bytes()), Ok(None));
    }

    #[test]
    fn negative_non_numeric_and_oversized_bulk_lengths_are_rejected_before_the_data() {
        // Guards against waiting for, or reserving, a payload whose length is unacceptable.
        let too_big = format!("*1\r\n${}\r\n", FRAME_BYTES_MAX + 1);
        for buf in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$-7\r\n",
            b"*1\r\n$x\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$4294967296000000000000\r\n",
            b"*1\r\n$3\rQ",
            too_big.as_bytes(),
        ] {
            assert_eq!(parsed(buf), Err(RespError::InvalidBulkLength), "{buf:?}");
        }
        assert_eq!(
            RespError::InvalidBulkLength.to_string(),
            "Protocol error: invalid bulk length"
        );
        let at_limit = format!("*1\r\n${FRAME_BYTES_MAX}\r\n");
        assert_eq!(parsed(at_limit.as_bytes()), Ok(None));
    }

    #[test]
    fn array_element_that_is_not_a_bulk_string_is_rejected() {
        // Guards against accepting command elements Redis itself refuses.
        let err = parsed(b"*1\r\nx").expect_err("not a bulk string");
        assert_eq!(
            err,
            RespError::Unexpected {
                expected: b'$',
                found: b'x'
            }
        );
        assert_eq!(err.to_string(), "Protocol error: expected '$', got 'x'");
        let err = parsed(b"*1\r\n:1\r\n").expect_err("integer element");
        assert_eq!(err.to_string(), "Protocol error: expected '$', got ':'");
        let err = parsed(b"*1\r\n\x00").expect_err("NUL element");
        assert_eq!(err.to_string(), "Protocol error: expected '$', got '\\x00'");
    }

    #[test]
    fn missing_crlf_after_a_bulk_payload_is_rejected_as_soon_as_it_shows() {
        // Guards against a wrong length silently shifting the parse into the payload.
        assert_eq!(
            parsed(b"*1\r\n$3\r\nabcd\r\n"),
            Err(RespError::MissingBulkCrlf)
        );
        assert_eq!(
            parsed(b"*1\r\n$3\r\nabc\rX"),
            Err(RespError::MissingBulkCrlf)
        );
        assert_eq!(parsed(b"*1\r\n$3\r\nabcX"), Err(RespError::MissingBulkCrlf));
        assert_eq!(parsed(b"*1\r\n$3\r\nabc\r"), Ok(None));
    }

    #[test]
    fn header_lines_longer_than_the_limit_without_crlf_are_rejected() {
        // Guards against a peer making the server buffer an endless header line.
        let mut count = b"*".to_vec();
        count.resize(RESP_LINE_BYTES_MAX + 2, b'1');
        assert_eq!(parsed(&count), Err(RespError::MultibulkCountTooLong));
        assert_eq!(parsed(&count[..RESP_LINE_BYTES_MAX + 1]), Ok(None));

        let mut bulk_len = b"*1\r\n$".to_vec();
        bulk_len.resize(5 + RESP_LINE_BYTES_MAX + 1, b'1');
        assert_eq!(parsed(&bulk_len), Err(RespError::BulkCountTooLong));

        let inline = vec![b'a'; RESP_LINE_BYTES_MAX + 1];
        assert_eq!(parsed(&inline), Err(RespError::InlineTooLong));
        assert_eq!(parsed(&inline[..RESP_LINE_BYTES_MAX]), Ok(None));
        assert_eq!(
            RespError::InlineTooLong.to_string(),
            "Protocol error: too big inline request"
        );
    }

    #[test]
    fn command_longer_than_the_total_limit_is_rejected_at_the_bulk_header() {
        // Guards against many individually legal arguments adding up to an unbounded command.
        let count = RESP_COMMAND_BYTES_MAX / FRAME_BYTES_MAX + 1;
        let header = format!("${FRAME_BYTES_MAX}\r\n");
        let mut buf = format!("*{count}\r\n").into_bytes();
        let mut accepted = 0;
        loop {
            buf.extend_from_slice(header.as_bytes());
            match parsed(&buf) {
                Ok(None) => {
                    buf.resize(buf.len() + FRAME_BYTES_MAX, b'v');
                    buf.extend_from_slice(b"\r\n");
                    accepted += 1;
                }
                other => {
                    assert_eq!(
                        other,
                        Err(RespError::CommandTooLarge {
                            max: RESP_COMMAND_BYTES_MAX
                        })
                    );
                    break;
                }
            }
        }
        assert!(accepted < count);
        assert!(buf.len() <= RESP_COMMAND_BYTES_MAX + header.len());
    }

    #[test]
    fn replies_of_every_type_parse() {
        // Guards against a load generator misreading what a server sends back.
        let cases: Vec<(&[u8], Reply)> = vec![
            (b"+OK\r\n", Reply::Simple("OK".into())),
            (
                b"-ERR unknown command\r\n",
                Reply::Error("ERR unknown command".into()),
            ),
            (b":-42\r\n", Reply::Integer(-42)),
            (b":-9223372036854775808\r\n", Reply::Integer(i64::MIN)),
            (
                b"$4\r\na\r\nb\r\n",
                Reply::Bulk(Some(Bytes::from_static(b"a\r\nb"))),
            ),
            (b"$0\r\n\r\n", Reply::Bulk(Some(Bytes::new()))),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Array(None)),
            (b"*0\r\n", Reply::Array(Some(Vec::new()))),
            (
                b"*3\r\n:1\r\n*1\r\n$1\r\nx\r\n$-1\r\n",
                Reply::Array(Some(vec![
                    Reply::Integer(1),
                    Reply::Array(Some(vec![Reply::Bulk(Some(Bytes::from_static(b"x")))])),
                    Reply::Bulk(None),
                ])),
            ),
        ];
        for (buf, reply) in cases {
            assert_eq!(parse_reply(buf), Ok(Some((reply.clone(), buf.len()))));
            assert_eq!(encoded(&reply), buf, "encoding of {reply:?}");
            for split in 0..buf.len() {
                assert_eq!(
                    parse_reply(&buf[..split]),
                    Ok(None),
                    "split {split} of {buf:?}"
                );
            }
        }
    }

    #[test]
    fn malformed_replies_are_rejected() {
        // Guards against a client accepting bytes no RESP2 server would send.
        let too_big = format!("${}\r\n", FRAME_BYTES_MAX + 1);
        let cases: Vec<(&[u8], RespError)> = vec![
            (b"?\r\n", RespError::UnknownReplyType { found: b'?' }),
            (b":12a\r\n", RespError::InvalidInteger),
            (b":\r\n", RespError::InvalidInteger),
            (b":99999999999999999999\r\n", RespError::InvalidInteger),
            (b"+OK\rX", RespError::BadLineEnding),
            (b"+\xff\r\n", RespError::InvalidUtf8),
            (b"$-2\r\n", RespError::InvalidBulkLength),
            (too_big.as_bytes(), RespError::InvalidBulkLength),
            (b"$1\r\nab\r\n", RespError::MissingBulkCrlf),
            (b"*-2\r\n", RespError::InvalidMultibulkLength),
            (b"*x\r\n", RespError::InvalidMultibulkLength),
        ];
        for (buf, err) in cases {
            assert_eq!(parse_reply(buf), Err(err), "{buf:?}");
        }
        let mut long = b"+".to_vec();
        long.resize(RESP_LINE_BYTES_MAX + 2, b'a');
        assert_eq!(parse_reply(&long), Err(RespError::ReplyLineTooLong));
    }

    #[test]
    fn deeply_nested_reply_arrays_are_rejected() {
        // Guards against a hostile server overflowing the client's stack with nesting.
        let nested = |levels: usize| {
            let mut buf = b"*1\r\n".repeat(levels);
            buf.extend_from_slice(b":1\r\n");
            buf
        };
        let ok = nested(RESP_REPLY_DEPTH_MAX);
        assert!(matches!(parse_reply(&ok), Ok(Some((_, used))) if used == ok.len()));
        assert_eq!(
            parse_reply(&nested(RESP_REPLY_DEPTH_MAX + 1)),
            Err(RespError::NestingTooDeep {
                max: RESP_REPLY_DEPTH_MAX
            })
        );
        assert_eq!(
            parse_reply(&nested(100_000)),
            Err(RespError::NestingTooDeep {
                max: RESP_REPLY_DEPTH_MAX
            })
        );
    }

    #[test]
    fn pipelined_replies_parse_one_at_a_time_in_order() {
        // Guards against a client pairing a reply with the wrong request.
        let mut buf = Vec::new();
        simple("OK", &mut buf);
        bulk(b"v", &mut buf);
        null_bulk(&mut buf);
        integer(7, &mut buf);
        let (first, used) = parse_reply(&buf).expect("valid").expect("complete");
        assert_eq!(first, Reply::Simple("OK".into()));
        let rest = &buf[used..];
        let (second, used2) = parse_reply(rest).expect("valid").expect("complete");
        assert_eq!(second, Reply::Bulk(Some(Bytes::from_static(b"v"))));
        let rest = &rest[used2..];
        let (third, used3) = parse_reply(rest).expect("valid").expect("complete");
        assert_eq!(third, Reply::Bulk(None));
        assert_eq!(
            parse_reply(&rest[used3..]),
            Ok(Some((Reply::Integer(7), 4)))
        );
    }

    #[test]
    fn encoders_write_exact_resp_bytes() {
        // Guards against replies that redis-cli or redis-benchmark would not understand.
        let mut out = Vec::new();
        simple("OK", &mut out);
        error("ERR bad\r\nthing", &mut out);
        integer(0, &mut out);
        integer(i64::MIN, &mut out);
        bulk(b"", &mut out);
        bulk(b"hi", &mut out);
        null_bulk(&mut out);
        array_len(2, &mut out);
        null_array(&mut out);
        assert_eq!(
            out,
            b"+OK\r\n-ERR bad  thing\r\n:0\r\n:-9223372036854775808\r\n$0\r\n\r\n$2\r\nhi\r\n$-1\r\n*2\r\n*-1\r\n"
        );
        assert_eq!(command(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn plain_get_and_set_take_only_whole_commands_within_the_limits() {
        // Guards against the fast path reading past a command or taking one it should not.
        let get = b"*2\r\n$3\r\nget\r\n$3\r\nkey\r\n*1";
        assert_eq!(plain_get(get, 3), Some((&b"key"[..], 22)));
        assert_eq!(plain_get(get, 2), None, "a key over the limit");
        for cut in 0..22 {
            assert_eq!(plain_get(&get[..cut], 3), None, "cut at {cut}");
        }
        assert_eq!(
            plain_get(b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n", 3),
            Some((&b""[..], 19))
        );
        assert_eq!(plain_get(b"*2\r\n$3\r\nSET\r\n$1\r\nk\r\n", 3), None);
        assert_eq!(plain_get(b"*2\r\n$3\r\nGET\r\n$01\r\nk\r\n", 3), None);
        assert_eq!(plain_get(b"*2\r\n$3\r\nGET\r\n$1\r\nkx\r\n", 3), None);
        let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n";
        assert_eq!(
            plain_set(set, 3, 2),
            Some((&b"k"[..], &b"vv"[..], set.len()))
        );
        assert_eq!(plain_set(set, 3, 1), None, "a value over the limit");
        for cut in 0..set.len() {
            assert_eq!(plain_set(&set[..cut], 3, 2), None, "cut at {cut}");
        }
        assert_eq!(
            plain_set(
                b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nNX\r\n",
                3,
                2
            ),
            None
        );
    }

    #[test]
    fn resp_errors_become_kvs_protocol_errors() {
        // Guards against losing Redis's wording when a RESP error reaches the library error.
        match KvsError::from(RespError::InvalidBulkLength) {
            KvsError::Protocol(msg) => assert_eq!(msg, "Protocol error: invalid bulk length"),
            other => panic!("expected KvsError::Protocol, got {other:?}"),
        }
    }

    /// Byte strings built from RESP's own tokens, so the parsers' deeper branches are reached.
    fn resp_soup() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just(b"*".to_vec()),
            Just(b"$".to_vec()),
            Just(b"+".to_vec()),
            Just(b"-".to_vec()),
            Just(b":".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"-1".to_vec()),
            Just(b"\"".to_vec()),
            Just(b"'".to_vec()),
            Just(b"\\".to_vec()),
            Just(b"\\x4".to_vec()),
            Just(b" ".to_vec()),
            (0u32..20).prop_map(|n| n.to_string().into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..4),
        ];
        proptest::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[^\r\n]*".prop_map(Reply::Simple),
            "[^\r\n]*".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(|b| Reply::Bulk(b.map(Bytes::from))),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            proptest::option::of(proptest::collection::vec(inner, 0..8)).prop_map(Reply::Array)
        })
    }

    proptest! {
        // Most cases are mangled; enough are whole commands to reach the fast paths.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn plain_get_and_set_read_what_the_general_parser_reads(
            name in prop::sample::select(vec!["GET", "get", "gEt", "GOT", "SET", "set"]),
            args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..3),
            len_form in 0..6u8,
            count_text in proptest::option::of("[0-4]"),
            cut in proptest::option::of(any::<prop::sample::Index>()),
            flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            // Guards against the fast paths for GET and SET taking anything the general parser
            // would read differently (other arguments, another length, or a command it refuses).
            let count = count_text.unwrap_or_else(|| (args.len() + 1).to_string());
            let mut buf = format!("*{count}\r\n$3\r\n").into_bytes();
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b"\r\n");
            for (i, arg) in args.iter().enumerate() {
                buf.push(b'$');
                // The first argument's length written right, or in forms RESP refuses (a
                // leading zero or plus sign, a negative), or wrong.
                let n = arg.len();
                let len = match (len_form, i) {
                    (1, 0) => format!("0{n}"),
                    (2, 0) => format!("+{n}"),
                    (3, 0) => format!("-{n}"),
                    (4, 0) => (n + 1).to_string(),
                    _ => n.to_string(),
                };
                buf.extend_from_slice(len.as_bytes());
                buf.extend_from_slice(b"\r\n");
                buf.extend_from_slice(arg);
                buf.extend_from_slice(b"\r\n");
            }
            buf.extend_from_slice(&tail);
            if let Some((at, byte)) = flip {
                let at = at.index(buf.len());
                buf[at] = byte;
            }
            let buf = &buf[..cut.map_or(buf.len(), |c| c.index(buf.len() + 1))];
            if let Some((key, used)) = plain_get(buf, 32) {
                prop_assert!(key.len() <= 32);
                let (args, general_used) = parse_command(buf).unwrap().unwrap();
                prop_assert_eq!(used, general_used);
                prop_assert_eq!(args.len(), 2);
                prop_assert!(args[0].eq_ignore_ascii_case(b"GET"));
                prop_assert_eq!(&args[1][..], key);
            }
            if let Some((key, value, used)) = plain_set(buf, 32, 16) {
                prop_assert!(key.len() <= 32 && value.len() <= 16);
                let (args, general_used) = parse_command(buf).unwrap().unwrap();
                prop_assert_eq!(used, general_used);
                prop_assert_eq!(args.len(), 3);
                prop_assert!(args[0].eq_ignore_ascii_case(b"SET"));
                prop_assert_eq!(&args[1][..], key);
                prop_assert_eq!(&args[2][..], value);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_either_parser(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Guards against a hostile peer crashing the server or a client with any bytes.
            if let Ok(Some((_, used))) = parse_command(&buf) {
                prop_assert!(used > 0 && used <= buf.len());
            }
            if let Ok(Some((_, used))) = parse_reply(&buf) {
                prop_assert!(used > 0 && used <= buf.len());
            }
        }

        #[test]
        fn resp_like_bytes_never_panic_either_parser(buf in resp_soup()) {
            // Guards against panics that only nearly valid RESP reaches.
            if let Ok(Some((_, used))) = parse_command(&buf) {
                prop_assert!(used > 0 && used <= buf.len());
            }
            if let Ok(Some((_, used))) = parse_reply(&buf) {
                prop_assert!(used > 0 && used <= buf.len());
            }
        }

        #[test]
        fn any_command_round_trips(list in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..128), 0..16)) {
            // Guards against arguments whose bytes do not survive encode then parse.
            let refs: Vec<&[u8]> = list.iter().map(Vec::as_slice).collect();
            let buf = command(&refs);
            let expected: Vec<Bytes> = list.iter().map(|a| Bytes::copy_from_slice(a)).collect();
            prop_assert_eq!(parse_command(&buf), Ok(Some((expected, buf.len()))));
            prop_assert_eq!(parse_command(&buf[..buf.len() - 1]), Ok(None));
        }

        #[test]
        fn any_reply_round_trips(reply in arb_reply()) {
            // Guards against replies that do not survive encode then parse.
            let buf = encoded(&reply);
            prop_assert_eq!(parse_reply(&buf), Ok(Some((reply, buf.len()))));
            prop_assert_eq!(parse_reply(&buf[..buf.len() - 1]), Ok(None));
        }
    }
}
