//! Test disks: [`StdDisk`] (plain synchronous std calls, deterministic) and [`FaultyDisk`],
//! which wraps any disk and, at the N-th mutating operation, fails it (EIO or ENOSPC) or
//! tears it (writes a prefix). A crash or a tear then behaves like a crashed process: every
//! later operation fails, and reopening the directory with a healthy disk shows what a crash
//! at that moment would have left. EIO and ENOSPC faults leave the disk working, as a device
//! that reported one error, or a filesystem where space was freed, would.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

use super::{Disk, DiskFile};

/// Synchronous std file operations behind the async trait.
#[derive(Clone, Copy, Default)]
pub struct StdDisk;

pub struct StdFile(File);

impl DiskFile for StdFile {
    async fn read_at(&self, mut buf: Vec<u8>, pos: u64) -> (io::Result<usize>, Vec<u8>) {
        let start = 0;
        buf.clear();
        buf.resize(buf.capacity(), 0);
        let mut n = 0;
        let res = loop {
            match self.0.read_at(&mut buf[start + n..], pos + n as u64) {
                Ok(0) => break Ok(n),
                Ok(k) => {
                    n += k;
                    if start + n == buf.len() {
                        break Ok(n);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        buf.truncate(start + n);
        (res, buf)
    }
    async fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<()>, Vec<u8>) {
        (self.0.write_all_at(&buf, pos), buf)
    }
    fn write_all_at_now(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }
    async fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn start_writeback(&self, pos: u64, len: u64) {
        super::start_writeback_fd(self.0.as_raw_fd(), pos, len);
    }
}

impl Disk for StdDisk {
    type File = StdFile;
    async fn open(&self, path: &Path, create: bool) -> io::Result<StdFile> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .mode(0o600)
            // A link in the data directory is never followed out of it.
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map(StdFile)
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// What happens at the chosen operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The operation fails with EIO; the process is then "dead".
    Crash,
    /// A write stores only its first half, then the process is "dead".
    Tear,
    /// The operation fails with ENOSPC; a write stores its first half first, as a short
    /// write followed by ENOSPC does. Later operations work (space was freed).
    NoSpace,
    /// The operation fails with EIO and has no effect; later operations work (a device error
    /// the kernel reported once, such as a failed fdatasync).
    Eio,
    /// The operation takes effect, then reports EIO; later operations work (a rename done in
    /// memory whose journal update failed, say).
    EioAfter,
}

struct Plan {
    ops: Cell<u64>,
    at: u64,
    fault: Fault,
    dead: Cell<bool>,
    /// The operation the fault hit, once it has.
    hit: Cell<Option<&'static str>>,
    /// Count and fault syncs, but do not pass them on.
    skip_syncs: bool,
    /// fdatasyncs of files seen so far.
    data_syncs: Cell<u64>,
    /// Ranges whose write-back was started, in order.
    writebacks: RefCell<Vec<(u64, u64)>>,
}

/// Wraps a disk and injects one fault at the `at`-th mutating operation (1-based).
#[derive(Clone)]
pub struct FaultyDisk<D> {
    inner: D,
    plan: Rc<Plan>,
}

pub struct FaultyFile<F> {
    inner: F,
    plan: Rc<Plan>,
}

impl<D> FaultyDisk<D> {
    pub fn new(inner: D, at: u64, fault: Fault) -> FaultyDisk<D> {
        FaultyDisk {
            inner,
            plan: Rc::new(Plan {
                ops: Cell::new(0),
                at,
                fault,
                dead: Cell::new(false),
                hit: Cell::new(None),
                skip_syncs: false,
                data_syncs: Cell::new(0),
                writebacks: RefCell::new(Vec::new()),
            }),
        }
    }

    /// Counts and faults `sync_data` and `sync_dir` like any other operation but does not
    /// pass them to the inner disk. A simulated crash keeps the page cache, so a real sync
    /// changes nothing a sweep can observe; skipping it makes each run of a sweep take
    /// microseconds per operation instead of milliseconds.
    pub fn skipping_syncs(mut self) -> FaultyDisk<D> {
        Rc::get_mut(&mut self.plan)
            .expect("set before the disk is shared")
            .skip_syncs = true;
        self
    }
    /// Mutating operations seen so far.
    pub fn ops(&self) -> u64 {
        self.plan.ops.get()
    }
    /// fdatasyncs of files seen so far.
    pub fn data_syncs(&self) -> u64 {
        self.plan.data_syncs.get()
    }
    /// The (offset, length) of every write-back started so far, in order.
    pub fn writebacks(&self) -> Vec<(u64, u64)> {
        self.plan.writebacks.borrow().clone()
    }
    /// Whether the injected crash has happened.
    pub fn crashed(&self) -> bool {
        self.plan.dead.get()
    }
    /// The operation the fault hit (`"write"`, `"sync_data"`, `"set_len"`, `"rename"`,
    /// `"remove"` or `"sync_dir"`), or `None` if it has not happened yet.
    pub fn fault_hit(&self) -> Option<&'static str> {
        self.plan.hit.get()
    }
}

/// A faulted write's result: its own error first, then the one its fault sets.
fn finish_write(res: io::Result<()>, after: Option<io::Error>) -> io::Result<()> {
    res?;
    after.map_or(Ok(()), Err)
}

impl Plan {
    /// Counts one mutating operation named `op`; says which fault (if any) applies to it.
    /// `Ok(Some(fault))` asks the caller to act the fault out; `Err` is the failure to return.
    fn step(&self, op: &'static str) -> io::Result<Option<Fault>> {
        if self.dead.get() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let n = self.ops.get() + 1;
        self.ops.set(n);
        if n != self.at {
            return Ok(None);
        }
        self.hit.set(Some(op));
        match self.fault {
            Fault::Crash => {
                self.dead.set(true);
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
            Fault::Eio => Err(io::Error::from_raw_os_error(libc::EIO)),
            Fault::EioAfter => Ok(Some(Fault::EioAfter)),
            Fault::NoSpace if op == "write" => Ok(Some(Fault::NoSpace)),
            Fault::NoSpace => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Fault::Tear => {
                self.dead.set(true);
                Ok(Some(Fault::Tear))
            }
        }
    }

    /// Counts one write of `len` bytes: how many of them to write (a tear or a full disk writes
    /// half), and the error to report once they are written, if the fault sets one.
    fn write_step(&self, len: usize) -> io::Result<(usize, Option<io::Error>)> {
        Ok(match self.step("write")? {
            None => (len, None),
            Some(Fault::EioAfter) => (len, Some(io::Error::from_raw_os_error(libc::EIO))),
            Some(fault) => {
                let errno = if fault == Fault::NoSpace {
                    libc::ENOSPC
                } else {
                    libc::EIO
                };
                (len / 2, Some(io::Error::from_raw_os_error(errno)))
            }
        })
    }

    /// Runs an operation that takes effect whole or not at all (no half of it to tear): a
    /// fault other than `EioAfter` fails it without running it.
    async fn apply(
        &self,
        op: &'static str,
        run: impl Future<Output = io::Result<()>>,
    ) -> io::Result<()> {
        match self.step(op)? {
            None => run.await,
            Some(Fault::EioAfter) => {
                run.await?;
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
            Some(_) => Err(io::Error::from_raw_os_error(libc::EIO)),
        }
    }

    /// [`Plan::apply`] for a sync, which does nothing when syncs are skipped.
    async fn sync(
        &self,
        op: &'static str,
        sync: impl Future<Output = io::Result<()>>,
    ) -> io::Result<()> {
        let skip = self.skip_syncs;
        self.apply(op, async move {
            if skip {
                return Ok(());
            }
            sync.await
        })
        .await
    }
}

impl<F: DiskFile> DiskFile for FaultyFile<F> {
    async fn read_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<usize>, Vec<u8>) {
        if self.plan.dead.get() {
            return (Err(io::Error::from_raw_os_error(libc::EIO)), buf);
        }
        self.inner.read_at(buf, pos).await
    }
    async fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<()>, Vec<u8>) {
        let (n, after) = match self.plan.write_step(buf.len()) {
            Ok(step) => step,
            Err(e) => return (Err(e), buf),
        };
        if n == buf.len() {
            let (res, buf) = self.inner.write_all_at(buf, pos).await;
            (finish_write(res, after), buf)
        } else {
            let (res, _) = self.inner.write_all_at(buf[..n].to_vec(), pos).await;
            (finish_write(res, after), buf)
        }
    }
    fn write_all_at_now(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let (n, after) = self.plan.write_step(buf.len())?;
        finish_write(self.inner.write_all_at_now(&buf[..n], pos), after)
    }
    async fn sync_data(&self) -> io::Result<()> {
        self.plan.data_syncs.set(self.plan.data_syncs.get() + 1);
        self.plan.sync("sync_data", self.inner.sync_data()).await
    }
    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.plan.apply("set_len", self.inner.set_len(len)).await
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn start_writeback(&self, pos: u64, len: u64) {
        // Changes nothing that a crash or a fault could observe: not an injection point.
        self.plan.writebacks.borrow_mut().push((pos, len));
        self.inner.start_writeback(pos, len);
    }
}

impl<D: Disk> Disk for FaultyDisk<D> {
    type File = FaultyFile<D::File>;
    async fn open(&self, path: &Path, create: bool) -> io::Result<Self::File> {
        if self.plan.dead.get() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(FaultyFile {
            inner: self.inner.open(path, create).await?,
            plan: self.plan.clone(),
        })
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.plan.apply("rename", self.inner.rename(from, to)).await
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.plan.apply("remove", self.inner.remove(path)).await
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.plan.sync("sync_dir", self.inner.sync_dir(dir)).await
    }
}
