//! The narrow file-I/O trait the engine is written against, and the choice of backend.
//!
//! Two implementations: [`uring`] (tokio-uring file operations, truly asynchronous) and
//! [`blocking`] (positional syscalls on a small thread pool fed by crossbeam-channel). The
//! backend is picked once at start-up by [`choose`]: `auto` probes io_uring and falls back
//! where ring setup is refused (EPERM, ENOSYS, ENOMEM); `KVS_IO=uring|blocking|auto` or the
//! server's `--io` flag forces it. The choice and its reason are logged by the caller.
//!
//! Buffers are owned (`Vec<u8>`) and handed back with the result, as io_uring requires: a
//! read discards what the vector held, fills it up to its capacity and sets its length to
//! the bytes read.
//!
//! Futures are not `Send`: a file belongs to the thread that owns its partition.

use std::future::Future;
use std::io;
use std::path::Path;

pub mod blocking;
#[cfg(test)]
pub mod faulty;
pub mod uring;

pub use blocking::{BlockingDisk, BlockingFile};
pub use uring::{UringDisk, UringFile};

#[cfg(test)]
pub(crate) mod tests;

/// One open file: positional reads and writes, data sync, resize.
#[expect(
    async_fn_in_trait,
    reason = "files are owned by one thread; the futures are deliberately not Send"
)]
#[expect(
    clippy::len_without_is_empty,
    reason = "a file's length is read to find where the log ends, never to test emptiness"
)]
pub trait DiskFile: 'static {
    /// Reads up to `buf.capacity()` bytes at `pos` into `buf` (whose length is set to the
    /// bytes read; fewer only at end of file). Whatever `buf` held before is discarded.
    fn read_at(&self, buf: Vec<u8>, pos: u64)
        -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;
    /// Writes all of `buf` at `pos` (never O_APPEND).
    fn write_all_at(
        &self,
        buf: Vec<u8>,
        pos: u64,
    ) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;
    /// Writes all of `buf` at `pos` on the calling thread, blocking it until the kernel has
    /// the bytes. For a small write that lands in the page cache, a few microseconds: less
    /// than handing it to another thread, as io_uring does with every buffered write to ext4
    /// (which takes none without blocking), at the cost of a wake-up and a context switch each
    /// way.
    fn write_all_at_now(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// fdatasync.
    async fn sync_data(&self) -> io::Result<()>;
    /// ftruncate.
    async fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current size.
    fn len(&self) -> io::Result<u64>;
    /// Asks the kernel to start writing `len` bytes at `pos` back to the disk, without waiting
    /// for it (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`). It makes nothing durable (only
    /// fdatasync does); it spreads the write-back of a log written faster than it is synced, so
    /// that the fdatasync sealing a segment waits for little. Failures show up at that sync.
    fn start_writeback(&self, pos: u64, len: u64);
}

/// [`DiskFile::start_writeback`] on a descriptor.
#[expect(
    unsafe_code,
    reason = "sync_file_range has no safe wrapper in std or rustix; listed in UNSAFE.md"
)]
pub(crate) fn start_writeback_fd(fd: std::os::fd::RawFd, pos: u64, len: u64) {
    let (Ok(pos), Ok(len)) = (i64::try_from(pos), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a foreign function that takes no pointers: it reads no memory of ours, and a
    // descriptor that is not open (it always is here: the caller borrows its file) is an error.
    let rc = unsafe { libc::sync_file_range(fd, pos, len, libc::SYNC_FILE_RANGE_WRITE) };
    if rc != 0 {
        tracing::debug!(
            "sync_file_range: {}; the next fdatasync writes it back instead",
            io::Error::last_os_error()
        );
    }
}

/// A filesystem: opens files, renames, removes, and syncs directories.
#[expect(
    async_fn_in_trait,
    reason = "files are owned by one thread; the futures are deliberately not Send"
)]
pub trait Disk: Clone + 'static {
    type File: DiskFile;
    /// Opens `path` for reading and writing; with `create`, creates it if missing (mode 0600).
    async fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// fsyncs a directory, making creations, renames and removals in it durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Which backend to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoBackendKind {
    Uring,
    Blocking,
}

impl IoBackendKind {
    pub fn name(self) -> &'static str {
        match self {
            IoBackendKind::Uring => "uring",
            IoBackendKind::Blocking => "blocking",
        }
    }
}

impl std::fmt::Display for IoBackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoChoice {
    #[default]
    Auto,
    Uring,
    Blocking,
}

impl std::str::FromStr for IoChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IoChoice::Auto),
            "uring" => Ok(IoChoice::Uring),
            "blocking" => Ok(IoChoice::Blocking),
            other => Err(format!(
                "unknown I/O backend '{other}' (expected auto, uring or blocking)"
            )),
        }
    }
}

impl IoChoice {
    /// Reads `KVS_IO`; unset means `auto`.
    pub fn from_env() -> std::result::Result<IoChoice, String> {
        match std::env::var("KVS_IO") {
            Ok(v) if !v.is_empty() => v.parse().map_err(|e| format!("KVS_IO: {e}")),
            _ => Ok(IoChoice::Auto),
        }
    }
}

/// The backend in force and a sentence saying why.
#[derive(Clone, Debug)]
pub struct BackendChoice {
    pub kind: IoBackendKind,
    pub reason: String,
}

/// Decides the backend once. `Uring` forced on a machine that refuses io_uring is an error.
pub fn choose(choice: IoChoice) -> io::Result<BackendChoice> {
    match choice {
        IoChoice::Blocking => Ok(BackendChoice {
            kind: IoBackendKind::Blocking,
            reason: "forced by configuration".into(),
        }),
        IoChoice::Uring => match uring::probe() {
            Ok(()) => Ok(BackendChoice {
                kind: IoBackendKind::Uring,
                reason: "forced by configuration".into(),
            }),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("io_uring was forced but is unavailable: {e}"),
            )),
        },
        IoChoice::Auto => Ok(match uring::probe() {
            Ok(()) => BackendChoice {
                kind: IoBackendKind::Uring,
                reason: "io_uring is available".into(),
            },
            Err(e) => BackendChoice {
                kind: IoBackendKind::Blocking,
                reason: format!(
                    "io_uring is unavailable ({e}); using epoll and a blocking file pool"
                ),
            },
        }),
    }
}
