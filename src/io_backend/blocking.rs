//! The blocking backend: positional syscalls on a pool of file-I/O threads.
//!
//! Every operation (open, pread, pwrite, fdatasync, ftruncate, rename, unlink, directory
//! fsync) is a job on a [`SharedQueueThreadPool`]; its result comes back through a
//! `tokio::sync::oneshot`, which needs no particular executor, so the same disk works under
//! a tokio current-thread runtime, a tokio-uring runtime or a multi-threaded runtime. Only
//! `len` (fstat) runs on the caller's thread, as the trait makes it synchronous.
//!
//! Promise: an operation never hangs on a pool that cannot run it. After
//! [`BlockingDisk::shutdown`], or if a job is lost for any other reason, the job is dropped,
//! its oneshot sender with it, and the caller gets an `io::Error` at once. Dropping an
//! operation's future does not cancel the job: a write may still land.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::oneshot;

use super::{Disk, DiskFile};
use crate::limits::FILE_IO_THREADS_DEFAULT;
use crate::thread_pool::{SharedQueueThreadPool, ThreadPool};

/// The file-I/O threads shared by a disk and every file it opened.
struct FilePool {
    /// `None` once shut down; the lock is only ever held to queue a job or to take the pool.
    pool: RwLock<Option<SharedQueueThreadPool>>,
}

impl FilePool {
    /// Runs `job` on the pool and waits for its result without blocking the caller's thread.
    async fn run<T, F>(&self, job: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = move || {
            // The caller may have given up waiting; the result is then discarded.
            let _ = tx.send(job());
        };
        match self
            .pool
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            Some(pool) => pool.spawn(job),
            // Dropping the job drops `tx`, so `rx` reports the closed channel below.
            None => drop(job),
        }
        rx.await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the file-I/O thread pool has shut down (or the job panicked)",
            )
        })
    }
}

/// A filesystem whose operations run on a pool of blocking threads.
#[derive(Clone)]
pub struct BlockingDisk {
    pool: Arc<FilePool>,
}

impl std::fmt::Debug for BlockingDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingDisk").finish_non_exhaustive()
    }
}

impl BlockingDisk {
    /// A disk with [`FILE_IO_THREADS_DEFAULT`] file-I/O threads.
    pub fn new() -> crate::Result<BlockingDisk> {
        BlockingDisk::with_threads(FILE_IO_THREADS_DEFAULT)
    }

    /// A disk with `threads` file-I/O threads (at least one), shared by every clone of the
    /// disk and every file opened through it.
    pub fn with_threads(threads: u32) -> crate::Result<BlockingDisk> {
        let pool = SharedQueueThreadPool::named(threads, "kvs-file-io")?;
        Ok(BlockingDisk {
            pool: Arc::new(FilePool {
                pool: RwLock::new(Some(pool)),
            }),
        })
    }

    /// Stops the pool for this disk, its clones and its files: jobs already queued finish,
    /// the threads are joined, and every later operation fails with an `io::Error`. Blocks
    /// until the queued jobs are done; must not be called from a file-I/O job.
    pub fn shutdown(&self) {
        let pool = self
            .pool
            .pool
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Joined outside the lock, so callers queueing jobs meanwhile fail fast.
        drop(pool);
    }

    /// Runs `job` on the pool and waits for its result.
    async fn run<T, F>(&self, job: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.pool.run(job).await
    }
}

/// A file whose operations run on its disk's pool.
pub struct BlockingFile {
    file: Arc<File>,
    disk: BlockingDisk,
}

impl std::fmt::Debug for BlockingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingFile")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Disk for BlockingDisk {
    type File = BlockingFile;

    async fn open(&self, path: &Path, create: bool) -> io::Result<BlockingFile> {
        let path = path.to_owned();
        let file = self
            .run(move || {
                // Never O_APPEND: it makes the kernel ignore the offsets of positional writes.
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(create)
                    .mode(0o600)
                    // A link in the data directory is never followed out of it.
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
            })
            .await??;
        Ok(BlockingFile {
            file: Arc::new(file),
            disk: self.clone(),
        })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.run(move || std::fs::rename(from, to)).await?
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        let path = path.to_owned();
        self.run(move || std::fs::remove_file(path)).await?
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = dir.to_owned();
        self.run(move || File::open(dir)?.sync_all()).await?
    }
}

impl DiskFile for BlockingFile {
    async fn read_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<usize>, Vec<u8>) {
        let file = self.file.clone();
        match self.disk.run(move || read_full_at(&file, buf, pos)).await {
            Ok(done) => done,
            // The buffer went down with the job.
            Err(e) => (Err(e), Vec::new()),
        }
    }

    async fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<()>, Vec<u8>) {
        let file = self.file.clone();
        let job = move || {
            // std loops on short writes, retries EINTR and reports a zero write as WriteZero.
            let result = file.write_all_at(&buf, pos);
            (result, buf)
        };
        match self.disk.run(job).await {
            Ok(done) => done,
            Err(e) => (Err(e), Vec::new()),
        }
    }

    fn write_all_at_now(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.file.write_all_at(buf, pos)
    }

    async fn sync_data(&self) -> io::Result<()> {
        let file = self.file.clone();
        self.disk.run(move || file.sync_data()).await?
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        let file = self.file.clone();
        self.disk.run(move || file.set_len(len)).await?
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn start_writeback(&self, pos: u64, len: u64) {
        super::start_writeback_fd(self.file.as_raw_fd(), pos, len);
    }
}

/// Fills `buf` from its start, up to its capacity, reading at `pos`; stops early only at end
/// of file. The length of the returned vector is the number of bytes read.
fn read_full_at(file: &File, mut buf: Vec<u8>, pos: u64) -> (io::Result<usize>, Vec<u8>) {
    // Zeroing the spare capacity costs a memset but needs no unsafe; this is the fallback path.
    let capacity = buf.capacity();
    if pos.checked_add(capacity as u64).is_none() {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "read past the largest offset");
        return (Err(e), buf);
    }
    buf.clear();
    buf.resize(capacity, 0);
    let mut filled = 0;
    while filled < capacity {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(filled);
                return (Err(e), buf);
            }
        }
    }
    buf.truncate(filled);
    (Ok(filled), buf)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An operation that takes longer than this has hung.
    const DEADLINE: Duration = Duration::from_secs(10);

    async fn round_trip(disk: BlockingDisk, path: std::path::PathBuf) {
        let file = disk.open(&path, true).await.unwrap();
        let (result, _) = file.write_all_at(b"pool".to_vec(), 3).await;
        result.unwrap();
        file.sync_data().await.unwrap();
        let (result, buf) = file.read_at(Vec::with_capacity(8), 0).await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(buf, b"\0\0\0pool");
    }

    /// Guards against an operation that waits forever on a pool that is gone.
    #[test]
    fn operations_fail_fast_after_shutdown() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let disk = BlockingDisk::with_threads(1).unwrap();
        rt.block_on(async {
            let file = disk.open(&dir.path().join("f"), true).await.unwrap();
            let clone = disk.clone();
            clone.shutdown();
            tokio::time::timeout(DEADLINE, async {
                let e = disk.open(&dir.path().join("g"), true).await.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
                let (result, _) = file.read_at(Vec::with_capacity(8), 0).await;
                assert!(result.is_err());
                let (result, _) = file.write_all_at(b"x".to_vec(), 0).await;
                assert!(result.is_err());
                assert!(file.sync_data().await.is_err());
                assert!(file.set_len(0).await.is_err());
                assert!(disk.sync_dir(dir.path()).await.is_err());
            })
            .await
            .expect("an operation hung after shutdown");
            // `len` runs on the caller's thread and still works.
            assert_eq!(file.len().unwrap(), 0);
        });
    }

    /// Guards against futures that only complete under one kind of executor.
    #[test]
    fn works_under_a_multi_threaded_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let disk = BlockingDisk::with_threads(2).unwrap();
        let path = dir.path().join("f");
        // Spawned, so the futures must be Send and are woken on a worker thread.
        let task = rt.spawn(round_trip(disk, path));
        rt.block_on(async { tokio::time::timeout(DEADLINE, task).await })
            .expect("hung")
            .unwrap();
    }

    /// Guards against lost wakeups when the blocking backend runs inside a tokio-uring
    /// runtime (completions arrive from pool threads, not from the ring).
    #[test]
    fn works_under_a_tokio_uring_runtime() {
        let rt = match super::super::uring::runtime() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("SKIPPED: io_uring is unavailable here: {e}");
                return;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let disk = BlockingDisk::with_threads(2).unwrap();
        let path = dir.path().join("f");
        rt.block_on(async {
            tokio::time::timeout(DEADLINE, round_trip(disk, path))
                .await
                .expect("hung");
        });
    }

    /// Guards against a zero-thread pool that would accept jobs and never run them.
    #[test]
    fn zero_threads_is_rejected() {
        assert!(BlockingDisk::with_threads(0).is_err());
    }
}
