//! The io_uring backend: file operations through tokio-uring.
//!
//! Files are opened with std (`open` is rare and fast on a local filesystem) and then handed
//! to tokio-uring; reads, writes, fdatasync, renames, removals and directory fsyncs go
//! through the ring. A `try_clone`d std handle serves the rare `len` (fstat) and `set_len`
//! (ftruncate), which tokio-uring does not offer.
//!
//! Everything here must run inside a tokio-uring runtime (see [`runtime`]); outside one,
//! tokio-uring panics. Dropping a read or write future does not cancel the operation: the
//! kernel may still complete it, and tokio-uring keeps the buffer alive until it does. A
//! write whose future was dropped must therefore be treated as possibly done.
//!
//! [`probe`] is the start-up check behind [`super::choose`]: it sets up a ring the size the
//! workers use and checks that the kernel supports every opcode kvs needs.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use io_uring::{opcode, IoUring, Probe};
use tokio_uring::buf::BoundedBuf;

use super::{Disk, DiskFile};
use crate::limits::URING_ENTRIES;

/// Opcodes that tokio-uring issues for the calls kvs makes, with the names shown in errors.
///
/// Files: `read_at` (Read), `write_at` (Write), `sync_data`/`sync_all` (Fsync), `rename`
/// (RenameAt), `remove_file` (UnlinkAt). Sockets: `accept` (Accept), `connect` (Connect),
/// and a TCP stream's `read`/`write` are Read/Write too (not Send/Recv). `close().await` on
/// a file or socket is Close, and the driver cancels in-flight operations with AsyncCancel
/// when a runtime is dropped. Timers are tokio's, so Timeout is not needed. Add an opcode
/// here when kvs starts using a tokio-uring call built on a new one.
const OPCODES_NEEDED: [(u8, &str); 9] = [
    (opcode::Read::CODE, "Read"),
    (opcode::Write::CODE, "Write"),
    (opcode::Fsync::CODE, "Fsync"),
    (opcode::RenameAt::CODE, "RenameAt"),
    (opcode::UnlinkAt::CODE, "UnlinkAt"),
    (opcode::Accept::CODE, "Accept"),
    (opcode::Connect::CODE, "Connect"),
    (opcode::Close::CODE, "Close"),
    (opcode::AsyncCancel::CODE, "AsyncCancel"),
];

/// Checks that an io_uring of [`URING_ENTRIES`] entries can be set up here and that the
/// kernel supports every opcode kvs needs. The error says what is missing; a refused ring
/// setup keeps its errno (EPERM, ENOSYS, ENOMEM, ...) in the message.
pub fn probe() -> io::Result<()> {
    let ring = IoUring::new(URING_ENTRIES).map_err(setup_error)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot ask the kernel which io_uring opcodes it supports \
                 (IORING_REGISTER_PROBE needs Linux 5.6): {}",
                describe_os_error(&e)
            ),
        )
    })?;
    let missing: Vec<&str> = OPCODES_NEEDED
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the kernel's io_uring lacks opcodes kvs needs: {}",
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Builds a tokio-uring runtime with the ring size [`probe`] checked. Unlike
/// `tokio_uring::start`, which panics, a refused ring setup comes back as an error.
///
/// The ring is set up with `IORING_SETUP_COOP_TASKRUN` (Linux 5.19 on): a completion for a
/// worker that is running is not delivered by an inter-processor interrupt that stops it, but
/// when the worker next enters the kernel, which a worker does at every park (a sleeping worker
/// is woken as before). Where the kernel refuses the flag (EINVAL), the ring is set up without
/// it. `KVS_URING_COOP_TASKRUN=0` leaves it off, to compare.
pub fn runtime() -> io::Result<tokio_uring::Runtime> {
    let coop = std::env::var_os("KVS_URING_COOP_TASKRUN").is_none_or(|v| v != "0");
    if coop {
        let mut ring = tokio_uring::uring_builder();
        ring.setup_coop_taskrun();
        match tokio_uring::Runtime::new(
            tokio_uring::builder()
                .entries(URING_ENTRIES)
                .uring_builder(&ring),
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => return other.map_err(setup_error),
        }
    }
    tokio_uring::Runtime::new(tokio_uring::builder().entries(URING_ENTRIES)).map_err(setup_error)
}

fn setup_error(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("io_uring setup failed: {}", describe_os_error(&e)),
    )
}

/// `e` with its errno spelled out and, for the usual refusals, a hint at the cause.
fn describe_os_error(e: &io::Error) -> String {
    let Some(errno) = e.raw_os_error() else {
        return e.to_string();
    };
    let (name, hint) = match errno {
        libc::EPERM => (
            "EPERM",
            Some("io_uring is disabled by sysctl kernel.io_uring_disabled or by a seccomp policy"),
        ),
        libc::ENOSYS => (
            "ENOSYS",
            Some("the kernel has no io_uring, or a seccomp filter hides it"),
        ),
        libc::ENOMEM => (
            "ENOMEM",
            Some("the locked-memory limit (ulimit -l) is too small for the ring"),
        ),
        libc::EACCES => ("EACCES", None),
        libc::EINVAL => ("EINVAL", Some("the kernel rejects the ring parameters")),
        libc::EMFILE => ("EMFILE", Some("the process is out of file descriptors")),
        libc::ENFILE => ("ENFILE", Some("the system is out of file descriptors")),
        _ => ("", None),
    };
    let mut text = e.to_string();
    if !name.is_empty() {
        text = format!("{name}: {text}");
    }
    if let Some(hint) = hint {
        text = format!("{text}; {hint}");
    }
    text
}

/// The io_uring filesystem. Zero-sized: the ring is the current thread's tokio-uring
/// runtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct UringDisk;

/// A file whose reads, writes and syncs go through the current thread's ring.
#[derive(Debug)]
pub struct UringFile {
    ring: tokio_uring::fs::File,
    /// The same open file description, for fstat and ftruncate.
    std: std::fs::File,
}

impl Disk for UringDisk {
    type File = UringFile;

    async fn open(&self, path: &Path, create: bool) -> io::Result<UringFile> {
        // Never O_APPEND: it makes the kernel ignore the offsets of positional writes.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .mode(0o600)
            // A link in the data directory is never followed out of it.
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let std = file.try_clone()?;
        Ok(UringFile {
            ring: tokio_uring::fs::File::from_std(file),
            std,
        })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        tokio_uring::fs::rename(from, to).await
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        tokio_uring::fs::remove_file(path).await
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = std::fs::File::open(dir)?;
        tokio_uring::fs::File::from_std(dir).sync_all().await
    }
}

impl DiskFile for UringFile {
    async fn read_at(&self, mut buf: Vec<u8>, pos: u64) -> (io::Result<usize>, Vec<u8>) {
        // The buffer's old contents are discarded: the read fills it from the start.
        buf.clear();
        let capacity = buf.capacity();
        if pos.checked_add(capacity as u64).is_none() {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "read past the largest offset");
            return (Err(e), buf);
        }
        // A single read may come back short before the end of the file (a signal, a
        // filesystem splitting large requests); only 0 means end of file.
        while buf.len() < capacity {
            let filled = buf.len();
            let (result, slice) = self
                .ring
                .read_at(buf.slice(filled..), pos + filled as u64)
                .await;
            // tokio-uring has already set the vector's length to `filled + n`.
            buf = slice.into_inner();
            match result {
                Ok(0) => break,
                Ok(n) => debug_assert_eq!(buf.len(), filled + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(buf.len()), buf)
    }

    async fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<()>, Vec<u8>) {
        // tokio-uring loops on short writes and reports a zero-length write as WriteZero.
        self.ring.write_all_at(buf, pos).await
    }

    fn write_all_at_now(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        // std loops on short writes, retries EINTR and reports a zero write as WriteZero.
        std::os::unix::fs::FileExt::write_all_at(&self.std, buf, pos)
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.ring.sync_data().await
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.std.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.std.metadata()?.len())
    }

    fn start_writeback(&self, pos: u64, len: u64) {
        // tokio-uring has no SyncFileRange; without waiting, the call only queues write-back.
        super::start_writeback_fd(self.std.as_raw_fd(), pos, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards against a refused ring setup whose message hides the errno.
    #[test]
    fn setup_error_names_the_errno() {
        for (errno, name) in [
            (libc::EPERM, "EPERM"),
            (libc::ENOSYS, "ENOSYS"),
            (libc::ENOMEM, "ENOMEM"),
        ] {
            let e = setup_error(io::Error::from_raw_os_error(errno));
            let text = e.to_string();
            assert!(text.contains(name), "{text}");
            assert!(text.contains(&format!("os error {errno}")), "{text}");
            assert_eq!(e.kind(), io::Error::from_raw_os_error(errno).kind());
        }
    }

    /// Guards against the probe and the runtime disagreeing about whether io_uring works.
    #[test]
    fn probe_agrees_with_runtime_setup() {
        match (probe(), runtime()) {
            (Ok(()), Ok(_)) => {}
            (Err(e), _) => eprintln!("io_uring unavailable here, probe said: {e}"),
            (Ok(()), Err(e)) => panic!("probe passed but the runtime failed: {e}"),
        }
    }
}
