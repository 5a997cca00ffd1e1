//! The one library error type. Variants carry data; `Display` is a sentence a user can act on.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in kvs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvsError {
    /// The key is not in the store (talent-plan's wording, which users match on).
    #[error("Key not found")]
    KeyNotFound,

    /// An operating-system I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// A record, segment header, hint or manifest failed its checksum or is malformed.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The filesystem is full. The partial record was cut off; writes work again once there is space.
    #[error("disk full: the write was not stored (free space and retry)")]
    DiskFull,

    /// A write or fsync failed earlier; the log refuses writes and keeps serving reads.
    #[error("the store refuses writes after a failed {op}: {cause}")]
    Poisoned { op: &'static str, cause: String },

    /// A key longer than [`crate::limits::KEY_BYTES_MAX`].
    #[error("key is {len} bytes; the limit is {max} bytes")]
    KeyTooLarge { len: usize, max: usize },

    /// A value longer than [`crate::limits::VALUE_BYTES_MAX`].
    #[error("value is {len} bytes; the limit is {max} bytes")]
    ValueTooLarge { len: usize, max: usize },

    /// Another process holds the data directory.
    #[error("the data directory {0} is in use by another process")]
    Locked(PathBuf),

    /// The directory was created by the other engine.
    #[error("the data directory holds a '{on_disk}' store; it cannot be opened with engine '{requested}'")]
    WrongEngine { on_disk: String, requested: String },

    /// A configuration value that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An error from the sled engine.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),

    /// A malformed or unexpected message on the wire.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// The server answered with an error.
    #[error("server error: {0}")]
    Server(String),

    /// The client could not open a TCP connection to the server.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },

    /// The server is at its connection cap and turned the connection away.
    #[error("the server is busy: {0}")]
    Busy(String),

    /// The connection to the server closed, or can no longer be trusted to pair responses
    /// with requests. The client refuses further requests on it; connect again.
    #[error("connection to the server lost: {0}")]
    ConnectionLost(String),

    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch { ours: u16, theirs: u16 },

    /// An operation did not finish within its deadline.
    #[error("timed out: {0}")]
    Timeout(String),

    /// The store or connection has shut down.
    #[error("the store is shut down")]
    Closed,

    /// The server requires a password, and this connection has not authenticated.
    #[error("the server requires a password, and none was given")]
    AuthRequired,

    /// The server refused the password.
    #[error("the server refused the password")]
    WrongPassword,
}

/// Result with [`KvsError`].
pub type Result<T> = std::result::Result<T, KvsError>;

impl KvsError {
    /// Maps an I/O error from a write path: ENOSPC becomes [`KvsError::DiskFull`].
    pub fn from_write(err: io::Error) -> KvsError {
        if err.raw_os_error() == Some(libc::ENOSPC) {
            KvsError::DiskFull
        } else {
            KvsError::Io(err)
        }
    }
}
