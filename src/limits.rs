//! Every limit in kvs, in one place, units last. Untrusted lengths are checked against these
//! before they size an allocation.

/// Longest key accepted, in bytes.
pub const KEY_BYTES_MAX: usize = 8 * 1024;
/// Longest value accepted, in bytes.
pub const VALUE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Room in a frame for everything but the key and the value.
pub const FRAME_OVERHEAD_BYTES_MAX: usize = 1024;
/// Longest native frame body (and longest RESP command) accepted, in bytes.
pub const FRAME_BYTES_MAX: usize = KEY_BYTES_MAX + VALUE_BYTES_MAX + FRAME_OVERHEAD_BYTES_MAX;
/// Most elements in one RESP array (MSET/MGET/DEL arguments).
pub const RESP_ARRAY_ITEMS_MAX: usize = 1024 * 1024;
/// Most bytes one RESP command may occupy, all arguments together.
pub const RESP_COMMAND_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest RESP line without its CRLF: an inline command, or a `*`/`$`/`+`/`-`/`:` header.
/// Redis uses the same figure (`PROTO_INLINE_MAX_SIZE`).
pub const RESP_LINE_BYTES_MAX: usize = 64 * 1024;
/// Longest connection name a RESP client may set (`CLIENT SETNAME`, `HELLO ... SETNAME`).
pub const CLIENT_NAME_BYTES_MAX: usize = 1024;
/// Deepest nesting of arrays in a RESP reply the client side accepts.
pub const RESP_REPLY_DEPTH_MAX: usize = 64;
/// Longest password a server may be configured with, and a native `Auth` request may carry.
pub const PASSWORD_BYTES_MAX: usize = 512;
/// Default delay of the answer to a connection's first failed password attempt; each further
/// failure on the connection doubles it, up to [`AUTH_FAIL_DELAY_GROWTH_MAX`] times this.
pub const AUTH_FAIL_DELAY_MS: u64 = 200;
/// How many times the first failure's delay a later failure's delay may grow to.
pub const AUTH_FAIL_DELAY_GROWTH_MAX: u32 = 10;
/// Failed password attempts a connection may make; the server closes it after the last
/// one's (delayed) answer.
pub const AUTH_FAILURES_MAX: u32 = 10;
/// A worker releases at most one failed attempt's answer per `fail_delay / this`, across all
/// its connections (10 a second per worker at the default delay).
pub const AUTH_FAIL_SPACING_DIVISOR: u32 = 2;

/// Size at which a segment is sealed and a new one started, in bytes.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest segment size a store may be configured with.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Most bytes of records written by the writer loop in one batch under `--fsync always`, where
/// every batch also pays an fdatasync.
pub const WRITE_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most bytes in one batch under the interval and never policies, where a batch costs only its
/// write: a write that arrives behind another client's flood waits for one short write.
pub const WRITE_BATCH_BYTES_UNSYNCED: usize = 256 * 1024;

/// Largest write batch the writer loop writes from its own thread, when it extends the file
/// (a segment that was not zero-filled ahead), rather than through the I/O backend.
pub const WRITE_NOW_BYTES_MAX: usize = 64 * 1024;

/// Submission-queue entries per io_uring (one ring per worker thread). The probe builds a
/// ring of this size too, so a RLIMIT_MEMLOCK too small for it is caught at start-up.
pub const URING_ENTRIES: u32 = 256;
/// Threads in the blocking backend's file-I/O pool unless configured otherwise.
pub const FILE_IO_THREADS_DEFAULT: u32 = 4;

/// Default cap on open client connections per server.
pub const CONNECTIONS_MAX: usize = 16_384;
/// Default idle timeout: a connection with no complete request for this long is closed.
pub const IDLE_TIMEOUT_MS: u64 = 300_000;
/// A frame that has started arriving must complete within this time (slowloris defence).
pub const FRAME_TIMEOUT_MS: u64 = 10_000;
/// Requests one connection may have in flight before the server stops reading from it.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 1024;
/// Bytes one connection may have in flight (request frames, plus values being read from disk for
/// it) before the server stops reading from it. One request is always admitted.
pub const REQUEST_BYTES_IN_FLIGHT_MAX: usize = 32 * 1024 * 1024;
/// What a read answered by another worker is charged against [`REQUEST_BYTES_IN_FLIGHT_MAX`]
/// when it starts (its size is unknown until the answer arrives): at most 16 such reads are in
/// flight per connection, so a client that never reads cannot pile up values from disk.
pub const REMOTE_READ_CHARGE_BYTES: usize = REQUEST_BYTES_IN_FLIGHT_MAX / 16;
/// Bytes of responses one connection may have queued before the server stops reading from it.
pub const RESPONSE_BYTES_QUEUED_MAX: usize = 16 * 1024 * 1024;
/// Default time a client gives resolving the address, connecting and exchanging hellos.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default time a client waits for a response before it gives up on the connection.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Time the server gives in-flight work on SIGTERM before it exits anyway.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// Default value cache of a server or an embedded store, all partitions together: 1 GiB, as
/// sled's default cache. It is a bound, not a reservation: the cache holds values written and
/// read, and no more of them than fit.
pub const CACHE_BYTES_DEFAULT: usize = 1024 * 1024 * 1024;

/// Most partitions a data directory may have.
pub const PARTITIONS_MAX: u32 = 1024;

/// Most connections one `kvs-bench` run opens.
pub const BENCH_CONNECTIONS_MAX: u32 = 16_384;
/// Most generator threads one `kvs-bench` run starts.
pub const BENCH_THREADS_MAX: u32 = 256;
/// Time `kvs-bench` gives a connection attempt before it gives up.
pub const BENCH_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// A `kvs-bench` run in which no reply arrives for this long is abandoned as stalled.
pub const BENCH_STALL_TIMEOUT_MS: u64 = 10_000;

const _: () = assert!(SEGMENT_BYTES_MIN as usize >= 64);
const _: () = assert!(FRAME_BYTES_MAX > KEY_BYTES_MAX + VALUE_BYTES_MAX);
const _: () = assert!(REQUEST_BYTES_IN_FLIGHT_MAX >= FRAME_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(RESP_COMMAND_BYTES_MAX >= FRAME_BYTES_MAX + RESP_LINE_BYTES_MAX);
const _: () = assert!(CLIENT_NAME_BYTES_MAX <= RESP_LINE_BYTES_MAX);
const _: () = assert!(PASSWORD_BYTES_MAX <= FRAME_OVERHEAD_BYTES_MAX / 2);
const _: () = assert!(AUTH_FAILURES_MAX >= 1 && AUTH_FAIL_DELAY_GROWTH_MAX >= 1);
const _: () = assert!(SEGMENT_BYTES_DEFAULT as usize > KEY_BYTES_MAX + VALUE_BYTES_MAX + 64);
const _: () = assert!(WRITE_BATCH_BYTES_MAX <= SEGMENT_BYTES_DEFAULT as usize);
const _: () = assert!(WRITE_BATCH_BYTES_UNSYNCED <= WRITE_BATCH_BYTES_MAX);
// A load generator should be able to use every connection a server accepts by default.
const _: () = assert!(BENCH_CONNECTIONS_MAX as usize <= CONNECTIONS_MAX);
const _: () = assert!(BENCH_CONNECT_TIMEOUT_MS < BENCH_STALL_TIMEOUT_MS);
// The kernel rounds ring sizes up to a power of two and refuses more than 32768 entries.
const _: () = assert!(URING_ENTRIES.is_power_of_two() && URING_ENTRIES <= 32_768);
const _: () = assert!(FILE_IO_THREADS_DEFAULT >= 1);
