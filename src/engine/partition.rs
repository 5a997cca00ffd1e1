//! One partition: a segmented append-only log, its in-memory index, its writer loop and its
//! compaction, all owned by one thread.
//!
//! Invariants:
//! - Only the writer loop appends, at `tail` of the active segment, with positional writes.
//! - A write is acknowledged only after it reached the kernel and, under
//!   [`FsyncPolicy::Always`], after fdatasync; the index is updated right before the
//!   acknowledgement, so a reader never sees an unacknowledged write.
//! - After a failed write or fsync (other than ENOSPC, which is undone) the partition refuses
//!   writes and keeps serving reads.
//! - A record read from disk is checksummed and its key compared before its value is served.
//! - Segment ids only grow. Sealed segments are immutable and end exactly at their last record.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use hashbrown::HashMap;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::active_hint::{self, ActiveHint};
use super::cache::{Packed, Prefetch, ReadMirror, ValueCache};
use super::durability::FsyncPolicy;
use super::fair_queue::{FairQueue, Source, EMBEDDED};
use super::hint::{self, HintBuilder, HintEntry};
use super::index::{Index, Loc};
use super::key_filter::{Headroom, KeyFilter};
use super::manifest::{CompactionManifest, MANIFEST_NAME};
use super::newest::NewestRecords;
use super::record::{self, Entry, RecordKind, RecordRef, MARK_BYTES, RECORD_BYTES_MAX};
use super::segment::{self, FileKind, Origin, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::io_backend::{Disk, DiskFile};
use crate::limits::{
    KEY_BYTES_MAX, VALUE_BYTES_MAX, WRITE_BATCH_BYTES_MAX, WRITE_BATCH_BYTES_UNSYNCED,
    WRITE_NOW_BYTES_MAX,
};
use crate::{KvsError, Result};

/// Bytes read at a time when scanning or copying segments.
const SCAN_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Keys of a written batch whose index and cache entries are prefetched together before they
/// are updated: as many as a pipeline's gets (`PREFETCH_KEYS_MAX` of the server's router).
const UPDATE_PREFETCH_KEYS: usize = 32;
/// Outside `--fsync always`, the writer starts the write-back of each this many bytes of the
/// active segment as it fills.
const WRITEBACK_KICK_BYTES: u64 = 8 * 1024 * 1024;
/// Write-back is started for whole pages of this size only.
const WRITEBACK_PAGE_BYTES: u64 = 4096;
/// Bytes of zeros written at a time when preallocating a segment.
const ZERO_CHUNK_BYTES: usize = 1024 * 1024;
/// The name of the preallocated segment waiting to become the next active one.
const SPARE_NAME: &str = "spare.seg.tmp";
/// Writes after which a log in a segment that was not preallocated gets a zero-filled one.
const EARLY_SPARE_BYTES: u64 = 1024 * 1024;

/// How a partition is run.
#[derive(Clone, Debug)]
pub struct PartitionConfig {
    pub id: u32,
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Prepare zero-filled segments ahead of time (writes plus fsync are faster in them).
    pub preallocate: bool,
    /// Compact once sealed segments hold at least this many dead bytes...
    pub compaction_min_dead_bytes: u64,
    /// ...and dead bytes reach this fraction of live bytes.
    pub compaction_dead_ratio: f64,
    /// Run compaction automatically.
    pub auto_compact: bool,
    /// Bytes of values kept in memory for reads (0: none).
    pub cache_bytes: usize,
    /// Where the cache also publishes its entries for readers on other threads (an embedded
    /// store's handles), if anywhere.
    pub read_mirror: Option<Arc<ReadMirror>>,
    /// A filter of the live keys, kept for readers on other threads, if anywhere.
    pub key_filter: Option<Arc<KeyFilter>>,
}

impl PartitionConfig {
    pub fn new(id: u32, dir: PathBuf) -> PartitionConfig {
        PartitionConfig {
            id,
            dir,
            segment_bytes: crate::limits::SEGMENT_BYTES_DEFAULT,
            fsync: FsyncPolicy::Always,
            preallocate: true,
            compaction_min_dead_bytes: crate::limits::SEGMENT_BYTES_DEFAULT,
            compaction_dead_ratio: 0.5,
            auto_compact: true,
            read_mirror: None,
            key_filter: None,
            cache_bytes: 0,
        }
    }
}

/// Counters for the stats request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    pub partition: u32,
    pub keys: u64,
    pub live_bytes: u64,
    pub dead_bytes: u64,
    pub segments: u32,
    pub compactions: u64,
    /// Heap bytes held by the in-memory index.
    pub index_bytes: u64,
}

struct Segment<F> {
    file: Rc<F>,
    /// End of the last record.
    len: u64,
    /// Bytes of records the index points at.
    live: u64,
}

impl<F> Segment<F> {
    fn dead(&self) -> u64 {
        self.len - SEGMENT_HEADER_BYTES - self.live
    }
}

/// A compaction output: its segment (under its `.tmp` name until the commit), where its records
/// end, and its hint, written to `<id>.hint.tmp` a chunk at a time.
struct Output<F> {
    id: u32,
    file: F,
    used: u64,
    hint: HintBuilder,
    hint_file: F,
}

struct Pending {
    key: Bytes,
    /// `None` is a delete.
    value: Option<Bytes>,
    reply: oneshot::Sender<Result<Option<Bytes>>>,
}

struct State<F> {
    index: Index,
    cache: ValueCache,
    segments: BTreeMap<u32, Segment<F>>,
    active: u32,
    tail: u64,
    next_seq: u64,
    next_id: u64,
    /// The active segment's hint, written as the segment grows.
    active_hint: ActiveHint<F>,
    poisoned: Option<(&'static str, String)>,
    compacting: bool,
    /// A compaction failed in a way that needs an operator; no more are started.
    compaction_disabled: bool,
    compactions: u64,
    spare: Option<Rc<F>>,
    preparing_spare: bool,
    /// Set when data was written but not yet fdatasynced (interval and never policies).
    unsynced_since: Option<Instant>,
    /// The active segment was zero-filled ahead (writes into it do not extend the file).
    active_preallocated: bool,
    /// The active segment is format 2 or later, so sync marks may be written to it.
    active_marks: bool,
    /// The active segment's records up to here are known to be on disk (fdatasynced since
    /// they were written, by this process).
    synced: u64,
    /// The offset the last sync mark written to the active segment named.
    marked: u64,
    /// The active segment's write-back has been started up to here (see
    /// [`DiskFile::start_writeback`]).
    writeback_from: u64,
}

struct Inner<D: Disk> {
    disk: D,
    cfg: PartitionConfig,
    state: RefCell<State<D::File>>,
    queue: RefCell<FairQueue<Pending>>,
    wake_writer: Notify,
    closing: Cell<bool>,
    writer_done: RefCell<Option<oneshot::Receiver<()>>>,
    /// Resolves when the newest preallocation task has finished.
    spare_done: RefCell<Option<oneshot::Receiver<()>>>,
    /// Woken when a compaction ends (see [`Partition::close`]).
    compaction_idle: Notify,
    /// A sealed segment's fdatasync is running in the background (see [`Partition::rotate`]).
    sealing: Cell<bool>,
    /// Woken when it ends.
    seal_idle: Notify,
}

/// A handle to a partition; clones share it. Not `Send`: it lives on its owner thread.
pub struct Partition<D: Disk> {
    inner: Rc<Inner<D>>,
}

impl<D: Disk> Clone for Partition<D> {
    fn clone(&self) -> Self {
        Partition {
            inner: self.inner.clone(),
        }
    }
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> KvsError {
    KvsError::Corrupt {
        file: file.to_owned(),
        offset,
        reason: reason.into(),
    }
}

fn to_u32(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| KvsError::Config(format!("{what} {v} exceeds the format's 32-bit range")))
}

/// Reads exactly `len` bytes at `pos`.
async fn read_exact_at<F: DiskFile>(file: &F, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    // The first read fills the result itself; only a short read needs a second buffer.
    let (res, mut out) = file.read_at(Vec::with_capacity(len), pos).await;
    if res? == 0 && len > 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file ends before the record",
        ));
    }
    while out.len() < len {
        let want = len - out.len();
        let (res, chunk) = file
            .read_at(Vec::with_capacity(want), pos + out.len() as u64)
            .await;
        let n = res?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file ends before the record",
            ));
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out)
}

pub(super) async fn write_all<F: DiskFile>(
    file: &F,
    buf: Vec<u8>,
    pos: u64,
) -> io::Result<Vec<u8>> {
    let (res, buf) = file.write_all_at(buf, pos).await;
    res.map(|()| buf)
}

impl<D: Disk> Partition<D> {
    /// Opens (recovering) or creates the partition in `cfg.dir`, and starts its writer loop
    /// on the current thread's `LocalSet`.
    pub async fn open(disk: D, cfg: PartitionConfig) -> Result<Partition<D>> {
        if cfg.segment_bytes < crate::limits::SEGMENT_BYTES_MIN
            || cfg.segment_bytes > u64::from(u32::MAX)
        {
            return Err(KvsError::Config(format!(
                "segment size {} is out of range",
                cfg.segment_bytes
            )));
        }
        if std::fs::symlink_metadata(&cfg.dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(KvsError::Config(format!(
                "{} is a symbolic link; kvs does not follow links inside its data directory",
                cfg.dir.display()
            )));
        }
        super::meta::create_dir_durable(&cfg.dir)?;
        let state = recover(&disk, &cfg).await?;
        if let Some(filter) = &cfg.key_filter {
            filter.rebuild(state.index.len(), Headroom::Quarter, state.index.keys());
        }
        let (done_tx, done_rx) = oneshot::channel();
        let part = Partition {
            inner: Rc::new(Inner {
                disk,
                cfg,
                state: RefCell::new(state),
                queue: RefCell::new(FairQueue::default()),
                wake_writer: Notify::new(),
                closing: Cell::new(false),
                writer_done: RefCell::new(Some(done_rx)),
                spare_done: RefCell::new(None),
                compaction_idle: Notify::new(),
                sealing: Cell::new(false),
                seal_idle: Notify::new(),
            }),
        };
        let writer = part.clone();
        tokio::task::spawn_local(async move {
            writer.writer_loop().await;
            let _ = done_tx.send(());
        });
        part.maybe_prepare_spare();
        part.maybe_compact();
        Ok(part)
    }

    pub fn id(&self) -> u32 {
        self.inner.cfg.id
    }

    /// The value of `key` if it can be had without I/O: `Some(None)` when the key is absent,
    /// `Some(Some(v))` from the cache, `None` when it must be read from disk.
    pub fn get_cached(&self, key: &[u8]) -> Option<Option<Bytes>> {
        self.without_io(key, |cache| cache.get(key))
    }

    /// [`Partition::get_cached`], with a small cached value copied to the end of `out` (see
    /// [`ValueCache::get_packed`]).
    pub fn get_cached_packed(&self, key: &[u8], out: &mut Vec<u8>) -> Option<Option<Packed>> {
        self.without_io(key, |cache| cache.get_packed(key, out))
    }

    /// What `hit` takes from the cache; else `Some(None)` when the index has no `key`, and
    /// `None` when it must be read from disk.
    fn without_io<T>(
        &self,
        key: &[u8],
        hit: impl FnOnce(&ValueCache) -> Option<T>,
    ) -> Option<Option<T>> {
        let st = self.inner.state.borrow();
        // A cached key is live (the cache follows every acknowledged write), so a hit needs
        // no index lookup.
        if let Some(v) = hit(&st.cache) {
            return Some(Some(v));
        }
        if !st.index.contains(key) {
            return Some(None);
        }
        None
    }

    /// Starts loading what a [`Partition::get_cached`] of `key` will read (see
    /// [`ValueCache::prefetch`]).
    pub fn prefetch_cached(&self, key: &[u8], stage: Prefetch) {
        self.inner.state.borrow().cache.prefetch(key, stage);
    }

    /// The length of `key`'s record on disk, if the key is live.
    pub fn record_len(&self, key: &[u8]) -> Option<usize> {
        self.inner
            .state
            .borrow()
            .index
            .get(key)
            .map(|loc| loc.len as usize)
    }

    /// The value of `key`, from the cache or read from disk and checked.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let (file, loc) = {
            let st = self.inner.state.borrow();
            let Some(loc) = st.index.get(key) else {
                return Ok(None);
            };
            if let Some(v) = st.cache.get(key) {
                return Ok(Some(v));
            }
            (st.segments[&loc.segment].file.clone(), loc)
        };
        let buf = read_exact_at(&*file, u64::from(loc.offset), loc.len as usize).await?;
        let seg_path = || segment::segment_path(&self.inner.cfg.dir, u64::from(loc.segment));
        // The value ends the record, and the record must fill what the index says it spans.
        let value_start = match record::decode(&buf) {
            Ok(Some(
                r @ RecordRef {
                    kind: RecordKind::Put,
                    ..
                },
            )) if r.key == key && r.len() == buf.len() => buf.len() - r.value.len(),
            Ok(Some(_)) => {
                return Err(corrupt(
                    &seg_path(),
                    loc.offset.into(),
                    "record does not match the index",
                ))
            }
            Ok(None) => {
                return Err(corrupt(
                    &seg_path(),
                    loc.offset.into(),
                    "record is truncated",
                ))
            }
            Err(e) => return Err(corrupt(&seg_path(), loc.offset.into(), e.to_string())),
        };
        // Advancing past the header and key keeps the read buffer as the value's storage,
        // without the allocation a slice of it would take.
        let mut value = Bytes::from(buf);
        value.advance(value_start);
        let mut st = self.inner.state.borrow_mut();
        // Cache it only if the index still points at what was read (no write landed meanwhile).
        if st.index.get(key) == Some(loc) {
            st.cache.insert(key, &value);
        }
        Ok(Some(value))
    }

    pub async fn set(&self, key: Bytes, value: Bytes) -> Result<()> {
        Self::acknowledged(self.submit(EMBEDDED, key, Some(value))?).await
    }

    /// Removes `key`; [`KvsError::KeyNotFound`] if it is absent when the writer reaches it.
    pub async fn remove(&self, key: Bytes) -> Result<()> {
        Self::acknowledged(self.submit(EMBEDDED, key, None)?).await
    }

    async fn acknowledged(rx: oneshot::Receiver<Result<Option<Bytes>>>) -> Result<()> {
        rx.await.map_err(|_| KvsError::Closed)?.map(|_| ())
    }

    /// Queues a put (`Some(value)`) or a delete (`None`) for the writer loop and returns, at
    /// once, the channel its acknowledgement (`Ok` with the value written, `None` for a
    /// delete) or error will arrive on. The writer takes each `source`'s writes in order, and
    /// sources in turn.
    pub fn submit(
        &self,
        source: Source,
        key: Bytes,
        value: Option<Bytes>,
    ) -> Result<oneshot::Receiver<Result<Option<Bytes>>>> {
        self.admit(&key, value.as_deref())?;
        let (reply, rx) = oneshot::channel();
        self.push(source, key, value, reply);
        Ok(rx)
    }

    /// [`Partition::submit`], with the answer (or the refusal) sent to `reply`.
    pub fn enqueue(
        &self,
        source: Source,
        key: Bytes,
        value: Option<Bytes>,
        reply: oneshot::Sender<Result<Option<Bytes>>>,
    ) {
        match self.admit(&key, value.as_deref()) {
            Ok(()) => self.push(source, key, value, reply),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Whether a write of `key` and `value` may be queued now.
    fn admit(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        if let Some(v) = value {
            if v.len() > VALUE_BYTES_MAX {
                return Err(KvsError::ValueTooLarge {
                    len: v.len(),
                    max: VALUE_BYTES_MAX,
                });
            }
        }
        if key.len() > KEY_BYTES_MAX {
            return Err(KvsError::KeyTooLarge {
                len: key.len(),
                max: KEY_BYTES_MAX,
            });
        }
        if self.inner.closing.get() {
            return Err(KvsError::Closed);
        }
        if let Some((op, cause)) = &self.inner.state.borrow().poisoned {
            return Err(KvsError::Poisoned {
                op,
                cause: cause.clone(),
            });
        }
        Ok(())
    }

    fn push(
        &self,
        source: Source,
        key: Bytes,
        value: Option<Bytes>,
        reply: oneshot::Sender<Result<Option<Bytes>>>,
    ) {
        let bytes = record::encoded_len(&key, value.as_deref().unwrap_or(&[]));
        self.inner
            .queue
            .borrow_mut()
            .push(source, bytes, Pending { key, value, reply });
        self.inner.wake_writer.notify_one();
    }

    pub fn stats(&self) -> PartitionStats {
        let st = self.inner.state.borrow();
        PartitionStats {
            partition: self.inner.cfg.id,
            keys: st.index.len() as u64,
            live_bytes: st.segments.values().map(|s| s.live).sum(),
            dead_bytes: st.segments.values().map(|s| s.dead()).sum(),
            segments: st.segments.len() as u32,
            compactions: st.compactions,
            index_bytes: st.index.heap_bytes() as u64,
        }
    }

    /// Why writes are refused, if they are.
    pub fn poisoned(&self) -> Option<String> {
        self.inner
            .state
            .borrow()
            .poisoned
            .as_ref()
            .map(|(op, c)| format!("failed {op}: {c}"))
    }

    /// Stops taking writes, lets the writer finish what is queued, syncs the log, and waits
    /// for a segment being preallocated and for a compaction in progress, so that nothing
    /// touches the directory once it returns and it can be reopened in this process. A
    /// compaction that has not reached its commit point stops at the next read of its inputs
    /// and removes its outputs; one past it finishes (only renames and deletions are left).
    pub async fn close(&self) {
        self.inner.closing.set(true);
        self.inner.wake_writer.notify_one();
        let rx = self.inner.writer_done.borrow_mut().take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        // No new preallocation starts once `closing` is set.
        wait_while(&self.inner.compaction_idle, || {
            self.inner.state.borrow().compacting
        })
        .await;
        let spare = self.inner.spare_done.borrow_mut().take();
        if let Some(rx) = spare {
            let _ = rx.await;
        }
        self.seal_settled().await;
        // The active segment's hint is rebuilt by the next open, which scans that segment: the
        // file goes, so a closed store holds only its segments and their hints.
        let made = {
            let mut st = self.inner.state.borrow_mut();
            st.active_hint.stop().then(|| st.active_hint.segment())
        };
        if let Some(segment) = made {
            ActiveHint::discard(&self.inner.disk, &self.inner.cfg.dir, segment).await;
        }
    }

    /// Waits until no sealed segment is being synced in the background.
    async fn seal_settled(&self) {
        wait_while(&self.inner.seal_idle, || self.inner.sealing.get()).await;
    }

    // ---- the writer loop -------------------------------------------------------------

    async fn writer_loop(&self) {
        loop {
            if self.inner.queue.borrow().is_empty() {
                if self.inner.closing.get() {
                    self.sync_if_dirty().await;
                    return;
                }
                let deadline = self.sync_deadline();
                match deadline {
                    Some(at) => {
                        tokio::select! {
                            _ = self.inner.wake_writer.notified() => {}
                            _ = tokio::time::sleep_until(at) => self.sync_if_dirty().await,
                        }
                    }
                    None => self.inner.wake_writer.notified().await,
                }
                continue;
            }
            self.write_one_batch().await;
            // Under sustained load the queue may never empty: the interval still holds.
            if self.sync_deadline().is_some_and(|at| Instant::now() >= at) {
                self.sync_if_dirty().await;
            }
        }
    }

    fn sync_deadline(&self) -> Option<Instant> {
        let since = self.inner.state.borrow().unsynced_since?;
        match self.inner.cfg.fsync {
            FsyncPolicy::Interval(d) => Some(since + d),
            _ => None,
        }
    }

    async fn sync_if_dirty(&self) {
        // What the active segment's sync makes durable follows the sealed segment before it:
        // that one must be on disk, and the active one's name, first.
        self.seal_settled().await;
        let (file, active, tail) = {
            let st = self.inner.state.borrow();
            if st.unsynced_since.is_none() || st.poisoned.is_some() {
                return;
            }
            (st.segments[&st.active].file.clone(), st.active, st.tail)
        };
        match file.sync_data().await {
            Ok(()) => {
                self.note_synced(active, tail);
                self.inner.state.borrow_mut().unsynced_since = None;
            }
            Err(e) => self.poison("fsync", &e),
        }
    }

    /// Records that an fdatasync of segment `segment`, begun when its records ended at
    /// `upto`, succeeded: the next batch's sync mark may say so.
    fn note_synced(&self, segment: u32, upto: u64) {
        let mut st = self.inner.state.borrow_mut();
        if st.active == segment {
            st.synced = st.synced.max(upto);
        }
    }

    fn poison(&self, op: &'static str, err: &io::Error) {
        tracing::error!(
            partition = self.inner.cfg.id,
            "{op} failed: {err}; refusing writes from now on"
        );
        let mut st = self.inner.state.borrow_mut();
        if st.poisoned.is_none() {
            st.poisoned = Some((op, err.to_string()));
        }
    }

    fn poisoned_error(&self) -> KvsError {
        match &self.inner.state.borrow().poisoned {
            Some((op, cause)) => KvsError::Poisoned {
                op,
                cause: cause.clone(),
            },
            None => KvsError::Closed,
        }
    }

    /// Takes queued writes (up to a batch), writes them, syncs per policy, updates the index
    /// and acknowledges.
    async fn write_one_batch(&self) {
        struct Op {
            key: Bytes,
            value: Option<Bytes>,
            kind: RecordKind,
            at: usize,
            len: usize,
            seq: u64,
            value_len: u32,
            reply: oneshot::Sender<Result<Option<Bytes>>>,
        }
        if self.inner.state.borrow().poisoned.is_some() {
            let err = self.poisoned_error();
            for p in self.inner.queue.borrow_mut().drain() {
                let _ = p.reply.send(Err(clone_err(&err)));
            }
            return;
        }
        // Rotate first if the next record would not fit and the active segment has records.
        let first_len = {
            let q = self.inner.queue.borrow();
            q.peek()
                .expect("the writer runs a batch only when writes are queued")
                .0
        };
        let needs_rotation = {
            let st = self.inner.state.borrow();
            st.tail > SEGMENT_HEADER_BYTES
                && (st.tail + first_len as u64 > self.inner.cfg.segment_bytes
                    // Move early from a segment that grows with every write to a ready,
                    // zero-filled one.
                    || (st.spare.is_some() && !st.active_preallocated))
        };
        if needs_rotation {
            if let Err(e) = self.rotate().await {
                let mut q = self.inner.queue.borrow_mut();
                let p = q.pop().expect("queue was not empty");
                let _ = p.reply.send(Err(e));
                return;
            }
        }

        let mut buf = Vec::new();
        let mut ops: Vec<Op> = Vec::new();
        let mut mark = None;
        {
            let mut st = self.inner.state.borrow_mut();
            let mut queue = self.inner.queue.borrow_mut();
            // Whether each key in this batch exists after the batch's earlier operations; built
            // only once a delete needs it (most batches are all puts).
            let mut overlay: Option<HashMap<Bytes, bool>> = None;
            let room = self.inner.cfg.segment_bytes.saturating_sub(st.tail);
            // Each batch under `always` pays an fdatasync, so batches are large; otherwise a
            // batch costs one write, and small ones keep a write queued behind another
            // client's flood waiting for one short write rather than a long one.
            let batch_max = match self.inner.cfg.fsync {
                FsyncPolicy::Always => WRITE_BATCH_BYTES_MAX,
                _ => WRITE_BATCH_BYTES_UNSYNCED,
            };
            // Lead with a sync mark when a sync has made more of the segment durable since the
            // last one: recovery then knows that damage before that offset is not a torn write.
            // Marks are optional, so one that would not fit is left out.
            if st.active_marks && st.synced > st.marked && (MARK_BYTES + first_len) as u64 <= room {
                record::encode_mark(&mut buf, st.synced);
                mark = Some(st.synced);
            }
            while let Some((len, _)) = queue.peek() {
                if !ops.is_empty()
                    && (buf.len() + len > batch_max || (buf.len() + len) as u64 > room)
                {
                    break;
                }
                let p = queue.pop().expect("peeked");
                let value = p.value.as_deref().unwrap_or(&[]);
                let kind = if p.value.is_some() {
                    RecordKind::Put
                } else {
                    RecordKind::Delete
                };
                if kind == RecordKind::Delete {
                    let overlay = overlay.get_or_insert_with(|| {
                        ops.iter()
                            .map(|o| (o.key.clone(), o.kind == RecordKind::Put))
                            .collect()
                    });
                    let exists = overlay
                        .get(&p.key)
                        .copied()
                        .unwrap_or_else(|| st.index.contains(&p.key));
                    if !exists {
                        let _ = p.reply.send(Err(KvsError::KeyNotFound));
                        continue;
                    }
                }
                let seq = st.next_seq;
                st.next_seq += 1;
                let at = buf.len();
                record::encode(&mut buf, seq, kind, &p.key, value);
                debug_assert_eq!(
                    record::decode(&buf[at..]).map(|r| r.map(|r| r.len())),
                    Ok(Some(len))
                );
                if let Some(overlay) = overlay.as_mut() {
                    overlay.insert(p.key.clone(), kind == RecordKind::Put);
                }
                let value_len = value.len() as u32;
                ops.push(Op {
                    key: p.key,
                    value: p.value,
                    kind,
                    at,
                    len,
                    seq,
                    value_len,
                    reply: p.reply,
                });
            }
        }
        if ops.is_empty() {
            return;
        }

        let (file, tail, active, extends) = {
            let st = self.inner.state.borrow();
            let file = st.segments[&st.active].file.clone();
            (file, st.tail, st.active, !st.active_preallocated)
        };
        let batch_len = buf.len() as u64;
        let always = self.inner.cfg.fsync == FsyncPolicy::Always;
        // A small batch that extends the file is written from this thread: it only copies into
        // the page cache (no page it touches needs reading from the disk first, as an evicted
        // page of a zero-filled segment would), and io_uring would hand it to a worker thread.
        let written = if extends && buf.len() <= WRITE_NOW_BYTES_MAX {
            file.write_all_at_now(&buf, tail)
        } else {
            write_all(&*file, buf, tail).await.map(drop)
        };
        let result = match written {
            Ok(()) if always => file.sync_data().await.map_err(|e| ("fsync", e)),
            Ok(()) => Ok(()),
            Err(e) => Err(("write", e)),
        };
        if let Err((op, e)) = result {
            let err = self.undo_failed_batch(&file, tail, op, e).await;
            for o in ops {
                let _ = o.reply.send(Err(clone_err(&err)));
            }
            return;
        }

        let writeback = {
            let mut st = self.inner.state.borrow_mut();
            let mut filter_full = false;
            for (i, o) in ops.iter().enumerate() {
                if i % UPDATE_PREFETCH_KEYS == 0 {
                    // The next keys' index and cache entries are loaded ahead, in two passes
                    // (buckets, then what they name), so that their cache misses overlap; the
                    // updates would otherwise take them one after another.
                    let ahead = &ops[i..ops.len().min(i + UPDATE_PREFETCH_KEYS)];
                    for stage in [Prefetch::Bucket, Prefetch::Block] {
                        for o in ahead {
                            st.index.prefetch(&o.key, stage);
                            st.cache.prefetch(&o.key, stage);
                        }
                    }
                }
                let offset = tail + o.at as u64;
                let loc = Loc {
                    segment: active,
                    offset: offset as u32,
                    len: o.len as u32,
                };
                let old = match &o.value {
                    Some(v) => {
                        st.cache.insert(&o.key, v);
                        let old = st.index.insert(&o.key, loc);
                        if let (None, Some(filter)) = (old, &self.inner.cfg.key_filter) {
                            // A new key: in the filter before its write is acknowledged.
                            filter_full |= filter.add(&o.key);
                        }
                        old
                    }
                    None => {
                        st.cache.remove(&o.key);
                        st.index.remove(&o.key)
                    }
                };
                if let Some(old) = old {
                    if let Some(seg) = st.segments.get_mut(&old.segment) {
                        seg.live -= u64::from(old.len);
                    }
                }
                if o.kind == RecordKind::Put {
                    st.segments.get_mut(&active).expect("active segment").live += o.len as u64;
                }
                st.active_hint.push(&HintEntry {
                    seq: o.seq,
                    kind: o.kind,
                    key: &o.key,
                    value_len: o.value_len,
                    offset,
                });
            }
            if let (true, Some(filter)) = (filter_full, &self.inner.cfg.key_filter) {
                filter.rebuild(st.index.len(), Headroom::Double, st.index.keys());
            }
            st.tail = tail + batch_len;
            st.segments.get_mut(&active).expect("active segment").len = st.tail;
            if let Some(durable) = mark {
                st.marked = durable;
            }
            if always {
                st.synced = st.tail;
            }
            if self.inner.cfg.fsync != FsyncPolicy::Always && st.unsynced_since.is_none() {
                st.unsynced_since = Some(Instant::now());
            }
            // Outside `always`, start writing back each WRITEBACK_KICK_BYTES of the segment as it
            // fills (whole pages only: the last one may still be written to), so the fdatasync
            // that seals it finds little left to write.
            let mut writeback = None;
            if !always {
                let whole_pages = st.tail & !(WRITEBACK_PAGE_BYTES - 1);
                if whole_pages >= st.writeback_from + WRITEBACK_KICK_BYTES {
                    writeback = Some((st.writeback_from, whole_pages - st.writeback_from));
                    st.writeback_from = whole_pages;
                }
            }
            writeback
        };
        if let Some((pos, len)) = writeback {
            file.start_writeback(pos, len);
        }
        // A put's acknowledgement hands its value back (the requester may answer a later get
        // of the key with it, see `server::own_writes`); a delete's is `None`.
        for o in ops {
            let _ = o.reply.send(Ok(o.value));
        }
        self.write_hint_chunk().await;
        self.maybe_prepare_spare();
        self.maybe_compact();
    }

    /// Writes the active segment's hint entries out once a chunk of them has gathered.
    async fn write_hint_chunk(&self) {
        let chunk = self.inner.state.borrow_mut().active_hint.take_chunk();
        if let Some(chunk) = chunk {
            let result = chunk.write(&self.inner.disk, &self.inner.cfg.dir).await;
            // Only the writer loop, which is here, pushes to the hint or replaces it.
            self.inner.state.borrow_mut().active_hint.wrote(result);
        }
    }

    /// After a failed write or fsync: ENOSPC is undone (the partial batch cut off, so writes
    /// work again once there is space); anything else poisons the partition.
    async fn undo_failed_batch(
        &self,
        file: &D::File,
        tail: u64,
        op: &'static str,
        e: io::Error,
    ) -> KvsError {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            let undo = async {
                file.set_len(tail).await?;
                file.sync_data().await
            };
            match undo.await {
                Ok(()) => {
                    tracing::warn!(
                        partition = self.inner.cfg.id,
                        "disk full during {op}; batch cut off at offset {tail}"
                    );
                    return KvsError::DiskFull;
                }
                Err(undo_err) => {
                    self.poison(op, &undo_err);
                    return self.poisoned_error();
                }
            }
        }
        self.poison(op, &e);
        self.poisoned_error()
    }

    /// Seals the active segment (cut to its records, synced, hint written) and makes a new one
    /// active: the spare if one is ready, a fresh file otherwise.
    ///
    /// Under `always` all of it happens before the writer goes on. Under the other policies the
    /// sealed segment's fdatasync (up to a segment of writes, tens of milliseconds) runs in the
    /// background while the writer appends to the new segment, which is made under a pending
    /// name that says which segment it continues and where that one ends
    /// ([`segment::pending_path`]), and renamed to its own once the sealed one is on disk. After
    /// a crash before then, open keeps the new segment only if the sealed one still ends where
    /// the name says (a process crash: the page cache had it all); if the sealed one lost its
    /// tail (a power cut), the new one is deleted, so what is lost is a suffix of the log, never
    /// a hole. Nothing else waits for the seal but the next rotation, an interval sync, a
    /// compaction's sync before it drops records, and close.
    async fn rotate(&self) -> Result<()> {
        self.seal_settled().await;
        if self.inner.state.borrow().poisoned.is_some() {
            return Err(self.poisoned_error());
        }
        let dir = self.inner.cfg.dir.clone();
        let disk = &self.inner.disk;
        let (file, tail, active) = {
            let st = self.inner.state.borrow();
            (st.segments[&st.active].file.clone(), st.tail, st.active)
        };
        // Cut the preallocated zeros. A failed cut changes nothing the log depends on, so a
        // full disk (some filesystems need space even to shrink a file) is DiskFull.
        if file.len()? != tail {
            if let Err(e) = file.set_len(tail).await {
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    return Err(KvsError::DiskFull);
                }
                self.poison("truncate", &e);
                return Err(self.poisoned_error());
            }
        }
        let in_background = self.inner.cfg.fsync != FsyncPolicy::Always;
        if !in_background {
            // Under `always` everything in the segment was synced already; this one makes the
            // cut durable.
            if let Err(e) = file.sync_data().await {
                self.poison("fsync", &e);
                return Err(self.poisoned_error());
            }
        }
        let (id, header) = self.next_segment(Origin::Log)?;
        let path = segment::segment_path(&dir, u64::from(id));
        let name = if in_background {
            segment::pending_path(&dir, u64::from(id), u64::from(active), tail)
        } else {
            path.clone()
        };
        let spare = self.inner.state.borrow_mut().spare.take();
        let made = match spare {
            Some(spare) => {
                install_segment(disk, &dir, &spare, &dir.join(SPARE_NAME), &name, header)
                    .await
                    .map(|()| spare)
                    .map_err(|(e, stranded)| (KvsError::from_write(e), stranded))
            }
            None => create_segment(disk, &dir, &name, header).await.map(Rc::new),
        };
        let preallocated = made
            .as_ref()
            .is_ok_and(|f| f.len().unwrap_or(0) >= self.inner.cfg.segment_bytes);
        let new_file = match made {
            Ok(f) => f,
            // A full disk is reported and retried at the next write, once there may be room.
            Err((e @ KvsError::DiskFull, false)) => return Err(e),
            Err((e, false)) => {
                // Anything else (EIO, a filesystem gone read-only) is a failed write: refuse
                // writes from now on rather than retry, and say why.
                self.poison("segment creation", &io::Error::other(e.to_string()));
                return Err(self.poisoned_error());
            }
            Err((e, true)) => {
                // Once a retry makes a newer segment, the next open would take this one for
                // a sealed segment (full of zeros, if it was the spare) and refuse the store.
                let cause = io::Error::other(format!(
                    "{e}; the half-made segment {} could not be removed either",
                    path.display()
                ));
                self.poison("segment creation", &cause);
                return Err(self.poisoned_error());
            }
        };
        // The sealed segment's hint stays where it is until the new segment is active: if
        // making it failed, the writer kept appending to the old one, hint and all.
        let new_hint = ActiveHint::new(id);
        let mut st = self.inner.state.borrow_mut();
        st.segments.insert(
            id,
            Segment {
                file: new_file,
                len: SEGMENT_HEADER_BYTES,
                live: 0,
            },
        );
        st.active = id;
        st.tail = SEGMENT_HEADER_BYTES;
        let sealed_hint = std::mem::replace(&mut st.active_hint, new_hint);
        debug_assert_eq!(sealed_hint.segment(), active);
        st.active_preallocated = preallocated;
        st.active_marks = true;
        // The header was fdatasynced when the segment was made.
        st.synced = SEGMENT_HEADER_BYTES;
        st.marked = SEGMENT_HEADER_BYTES;
        st.writeback_from = SEGMENT_HEADER_BYTES;
        // The new segment holds nothing yet; the sealed one is synced below, or already was.
        st.unsynced_since = None;
        drop(st);
        // The hint is completed in the background, after the segment is on disk (a hint must
        // never name records the segment lost): under `always` it is already.
        self.inner.sealing.set(true);
        let part = self.clone();
        tokio::task::spawn_local(async move {
            if in_background {
                part.seal(file, active, sealed_hint, tail, name, path).await;
            } else {
                sealed_hint
                    .seal(&part.inner.disk, &part.inner.cfg.dir, tail)
                    .await;
            }
            part.inner.sealing.set(false);
            part.inner.seal_idle.notify_waiters();
        });
        Ok(())
    }

    /// The background part of a rotation (see [`Partition::rotate`]): syncs the sealed
    /// segment, gives the active one its own name, then writes the sealed one's hint. A failure
    /// of the first two refuses writes, as any failed fsync does.
    async fn seal(
        &self,
        sealed: Rc<D::File>,
        id: u32,
        hint: ActiveHint<D::File>,
        len: u64,
        active_pending: PathBuf,
        active_path: PathBuf,
    ) {
        let disk = &self.inner.disk;
        let dir = &self.inner.cfg.dir;
        debug_assert_eq!(hint.segment(), id);
        if let Err(e) = sealed.sync_data().await {
            self.poison("fsync", &e);
            hint.abandon(disk, dir).await;
            return;
        }
        let named = async {
            disk.rename(&active_pending, &active_path).await?;
            disk.sync_dir(&self.inner.cfg.dir).await
        }
        .await;
        if let Err(e) = named {
            self.poison("segment creation", &e);
            hint.abandon(disk, dir).await;
            return;
        }
        hint.seal(disk, dir, len).await;
    }

    /// Takes the next segment id (ids only grow) and makes the header of a segment with it.
    fn next_segment(&self, origin: Origin) -> Result<(u32, SegmentHeader)> {
        let mut st = self.inner.state.borrow_mut();
        let id = to_u32(st.next_id, "segment id")?;
        st.next_id += 1;
        let header = SegmentHeader::new(origin, u64::from(id), self.inner.cfg.id);
        Ok((id, header))
    }

    /// Zero-fills the next segment in the background: once the active segment is half full,
    /// or, when the active segment was not preallocated (a new store), once it has seen
    /// [`EARLY_SPARE_BYTES`] of writes, so a busy log soon moves to a segment where write
    /// plus fdatasync does not also extend the file.
    fn maybe_prepare_spare(&self) {
        {
            let mut st = self.inner.state.borrow_mut();
            let threshold = if st.active_preallocated {
                self.inner.cfg.segment_bytes / 2
            } else {
                EARLY_SPARE_BYTES.min(self.inner.cfg.segment_bytes / 2)
            };
            if !self.inner.cfg.preallocate
                || st.spare.is_some()
                || st.preparing_spare
                || st.tail < threshold
                || self.inner.closing.get()
            {
                return;
            }
            st.preparing_spare = true;
        }
        let part = self.clone();
        let (done_tx, done_rx) = oneshot::channel();
        *self.inner.spare_done.borrow_mut() = Some(done_rx);
        tokio::task::spawn_local(async move {
            let path = part.inner.cfg.dir.join(SPARE_NAME);
            let made = zero_filled(&part.inner.disk, &path, part.inner.cfg.segment_bytes).await;
            {
                let mut st = part.inner.state.borrow_mut();
                st.preparing_spare = false;
                match made {
                    Ok(f) => st.spare = Some(Rc::new(f)),
                    Err(e) => tracing::warn!(
                        partition = part.inner.cfg.id,
                        "could not preallocate a segment: {e}"
                    ),
                }
            }
            let _ = done_tx.send(());
        });
    }

    // ---- compaction ------------------------------------------------------------------

    /// A compaction is running, or due and about to start.
    pub fn compaction_pending(&self) -> bool {
        self.inner.state.borrow().compacting
            || (self.inner.cfg.auto_compact && self.compaction_due())
    }

    fn compaction_due(&self) -> bool {
        let st = self.inner.state.borrow();
        if st.compacting
            || st.compaction_disabled
            || st.poisoned.is_some()
            || self.inner.closing.get()
        {
            return false;
        }
        let sealed_dead: u64 = st
            .segments
            .iter()
            .filter(|(id, _)| **id != st.active)
            .map(|(_, s)| s.dead())
            .sum();
        let live: u64 = st.segments.values().map(|s| s.live).sum();
        sealed_dead >= self.inner.cfg.compaction_min_dead_bytes
            && sealed_dead as f64 >= live as f64 * self.inner.cfg.compaction_dead_ratio
    }

    fn maybe_compact(&self) {
        if !self.inner.cfg.auto_compact || !self.compaction_due() {
            return;
        }
        let part = self.clone();
        tokio::task::spawn_local(async move {
            match part.compact().await {
                Err(KvsError::Closed) => tracing::info!(
                    partition = part.inner.cfg.id,
                    "compaction stopped: the partition is closing"
                ),
                Err(e) => tracing::error!(partition = part.inner.cfg.id, "compaction failed: {e}"),
                Ok(_) => {}
            }
        });
    }

    /// Rewrites the live records of every sealed segment into new segments, then deletes the
    /// old ones. Reads and writes go on meanwhile. Returns false if there was nothing to do.
    pub async fn compact(&self) -> Result<bool> {
        let (inputs, mut live) = {
            let mut st = self.inner.state.borrow_mut();
            if st.compacting || st.poisoned.is_some() || st.compaction_disabled {
                return Ok(false);
            }
            let inputs: BTreeSet<u32> = st
                .segments
                .keys()
                .copied()
                .filter(|id| *id != st.active)
                .collect();
            if inputs.is_empty() {
                return Ok(false);
            }
            st.compacting = true;
            let live = st.index.entries_in(&inputs);
            (inputs, live)
        };
        let result = self.compact_inputs(&inputs, &mut live).await;
        self.inner.compaction_idle.notify_waiters();
        let mut st = self.inner.state.borrow_mut();
        st.compacting = false;
        match result {
            Ok(()) => {
                st.compactions += 1;
                Ok(true)
            }
            Err((committed, e)) => {
                if committed {
                    st.compaction_disabled = true;
                    if st.poisoned.is_none() {
                        st.poisoned = Some(("compaction", e.to_string()));
                    }
                }
                Err(e)
            }
        }
    }

    /// The body of [`Partition::compact`]. The error says whether the commit point was passed.
    async fn compact_inputs(
        &self,
        inputs: &BTreeSet<u32>,
        live: &mut [(Box<[u8]>, Loc)],
    ) -> std::result::Result<(), (bool, KvsError)> {
        let dir = self.inner.cfg.dir.clone();
        let disk = &self.inner.disk;
        live.sort_unstable_by_key(|(_, loc)| (loc.segment, loc.offset));
        let mut outputs: Vec<Output<D::File>> = Vec::new();
        let mut moved: Vec<(usize, Loc)> = Vec::with_capacity(live.len());
        let mut out_buf: Vec<u8> = Vec::new();
        let precommit = |e: KvsError| (false, e);
        let mpath = dir.join(MANIFEST_NAME);

        let cleanup = |outputs: &Vec<Output<D::File>>| {
            let paths: Vec<PathBuf> = outputs
                .iter()
                .flat_map(|out| {
                    [
                        segment::tmp_path(&segment::segment_path(&dir, u64::from(out.id))),
                        segment::tmp_path(&segment::hint_path(&dir, u64::from(out.id))),
                    ]
                })
                .collect();
            async move {
                for p in paths {
                    let _ = disk.remove(&p).await;
                }
            }
        };

        let copy: Result<()> = async {
            let mut i = 0;
            while i < live.len() {
                if self.inner.closing.get() {
                    return Err(KvsError::Closed);
                }
                // A run of live records of one segment that fits one read.
                let seg_id = live[i].1.segment;
                let start = u64::from(live[i].1.offset);
                let mut j = i;
                while j < live.len()
                    && live[j].1.segment == seg_id
                    && u64::from(live[j].1.offset) + u64::from(live[j].1.len) - start
                        <= SCAN_CHUNK_BYTES as u64
                {
                    j += 1;
                }
                let j = j.max(i + 1);
                let end = u64::from(live[j - 1].1.offset) + u64::from(live[j - 1].1.len);
                let file = self.inner.state.borrow().segments[&seg_id].file.clone();
                let chunk = read_exact_at(&*file, start, (end - start) as usize).await?;
                for (k, (key, loc)) in live.iter().enumerate().take(j).skip(i) {
                    let at = (u64::from(loc.offset) - start) as usize;
                    let bytes = &chunk[at..at + loc.len as usize];
                    let rec = match record::decode(bytes) {
                        Ok(Some(r)) if r.kind == RecordKind::Put && r.key == &key[..] => r,
                        Ok(_) => {
                            return Err(corrupt(
                                &segment::segment_path(&dir, seg_id.into()),
                                loc.offset.into(),
                                "record does not match the index",
                            ))
                        }
                        Err(e) => {
                            return Err(corrupt(
                                &segment::segment_path(&dir, seg_id.into()),
                                loc.offset.into(),
                                e.to_string(),
                            ))
                        }
                    };
                    let need_new = match outputs.last() {
                        None => true,
                        Some(out) => {
                            out.used + (out_buf.len() + bytes.len()) as u64
                                > self.inner.cfg.segment_bytes
                                && out.used + out_buf.len() as u64 > SEGMENT_HEADER_BYTES
                        }
                    };
                    if need_new {
                        self.flush_output(&mut outputs, &mut out_buf).await?;
                        let (id, header) = self.next_segment(Origin::Compaction)?;
                        let path = segment::tmp_path(&segment::segment_path(&dir, u64::from(id)));
                        let file = create_segment_file(disk, &path, header).await?;
                        let hint_path = segment::tmp_path(&segment::hint_path(&dir, u64::from(id)));
                        let hint_file = disk.open(&hint_path, true).await?;
                        outputs.push(Output {
                            id,
                            file,
                            used: SEGMENT_HEADER_BYTES,
                            hint: HintBuilder::default(),
                            hint_file,
                        });
                    }
                    let out = outputs.last_mut().expect("an output segment");
                    let offset = out.used + out_buf.len() as u64;
                    out.hint.push(&HintEntry {
                        seq: rec.seq,
                        kind: RecordKind::Put,
                        key: rec.key,
                        value_len: rec.value.len() as u32,
                        offset,
                    });
                    moved.push((
                        k,
                        Loc {
                            segment: out.id,
                            offset: offset as u32,
                            len: loc.len,
                        },
                    ));
                    out_buf.extend_from_slice(bytes);
                    if out_buf.len() >= SCAN_CHUNK_BYTES {
                        self.flush_output(&mut outputs, &mut out_buf).await?;
                    }
                }
                i = j;
            }
            self.flush_output(&mut outputs, &mut out_buf).await?;
            for out in outputs.iter_mut() {
                out.file.sync_data().await?;
                // The hint: what is left of it, then its header; synced before the commit.
                let hint = std::mem::take(&mut out.hint);
                active_hint::write_rest(&out.hint_file, hint, u64::from(out.id), out.used)
                    .await
                    .map_err(KvsError::from_write)?;
                out.hint_file.sync_data().await?;
            }
            // Every record the copy left behind was superseded (overwritten or removed) by a
            // newer one in the log, and under the interval and never policies the newest of
            // those may not be durable yet. Deleting the inputs first would let a crash bring
            // back neither the old value nor the new one: make the log durable before the
            // commit point.
            self.sync_log_before_dropping_records().await?;
            let manifest = CompactionManifest {
                inputs: inputs.iter().map(|&id| u64::from(id)).collect(),
                outputs: outputs.iter().map(|out| u64::from(out.id)).collect(),
            };
            write_file(disk, &segment::tmp_path(&mpath), manifest.encode()).await?;
            Ok(())
        }
        .await;
        if let Err(e) = copy {
            cleanup(&outputs).await;
            return Err(precommit(e));
        }
        // The commit point: the manifest under its name, durable. Once the rename is tried,
        // the manifest may be in place (a rename can take effect and still report an error,
        // and a failed directory sync says nothing of what reached the disk), and the next
        // open would finish the compaction: the outputs must stay. So a failure from here on
        // counts as past the commit point, which refuses writes.
        let commit: Result<()> = async {
            disk.rename(&segment::tmp_path(&mpath), &mpath).await?;
            disk.sync_dir(&dir).await?;
            Ok(())
        }
        .await;
        commit.map_err(|e| (true, e))?;

        // Past the commit point: every step below is redone by the next open if we crash.
        let finish: Result<()> = async {
            for out in &outputs {
                for path in [
                    segment::segment_path(&dir, u64::from(out.id)),
                    segment::hint_path(&dir, u64::from(out.id)),
                ] {
                    disk.rename(&segment::tmp_path(&path), &path).await?;
                }
            }
            disk.sync_dir(&dir).await?;
            {
                let mut st = self.inner.state.borrow_mut();
                for out in outputs.drain(..) {
                    st.segments.insert(
                        out.id,
                        Segment {
                            file: Rc::new(out.file),
                            len: out.used,
                            live: 0,
                        },
                    );
                }
                for (k, new) in &moved {
                    let (key, old) = &live[*k];
                    if st.index.replace_if(key, *old, *new) {
                        st.segments
                            .get_mut(&new.segment)
                            .expect("output segment")
                            .live += u64::from(new.len);
                    }
                }
                for id in inputs {
                    st.segments.remove(id);
                }
            }
            for id in inputs {
                for path in [
                    segment::segment_path(&dir, u64::from(*id)),
                    segment::hint_path(&dir, u64::from(*id)),
                ] {
                    remove_if_exists(disk, &path).await?;
                }
            }
            disk.sync_dir(&dir).await?;
            disk.remove(&dir.join(MANIFEST_NAME)).await?;
            disk.sync_dir(&dir).await?;
            Ok(())
        }
        .await;
        finish.map_err(|e| (true, e))
    }

    /// Syncs the active segment if it holds acknowledged writes not yet synced, after the
    /// background sync of a segment sealed before it (older ones were synced when sealed). A
    /// failure refuses writes, as any failed fsync does.
    async fn sync_log_before_dropping_records(&self) -> Result<()> {
        self.seal_settled().await;
        if self.inner.state.borrow().poisoned.is_some() {
            return Err(self.poisoned_error());
        }
        let (file, active, tail) = {
            let st = self.inner.state.borrow();
            if st.unsynced_since.is_none() {
                return Ok(());
            }
            (st.segments[&st.active].file.clone(), st.active, st.tail)
        };
        file.sync_data().await.map_err(|e| {
            self.poison("fsync", &e);
            self.poisoned_error()
        })?;
        self.note_synced(active, tail);
        Ok(())
    }

    async fn flush_output(&self, outputs: &mut [Output<D::File>], buf: &mut Vec<u8>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let out = outputs.last_mut().expect("an output segment");
        let data = std::mem::take(buf);
        let n = data.len() as u64;
        let mut data = write_all(&out.file, data, out.used)
            .await
            .map_err(KvsError::from_write)?;
        out.used += n;
        data.clear();
        *buf = data;
        // The hint follows a chunk at a time, so that no output's hint is whole in memory.
        if out.hint.wants_write() {
            let (pos, chunk) = out.hint.take(Vec::new());
            write_all(&out.hint_file, chunk, pos)
                .await
                .map_err(KvsError::from_write)?;
        }
        Ok(())
    }
}

fn clone_err(e: &KvsError) -> KvsError {
    match e {
        KvsError::DiskFull => KvsError::DiskFull,
        KvsError::Poisoned { op, cause } => KvsError::Poisoned {
            op,
            cause: cause.clone(),
        },
        KvsError::KeyNotFound => KvsError::KeyNotFound,
        other => KvsError::Io(io::Error::other(other.to_string())),
    }
}

/// Waits until `busy` is false, re-checking it whenever `idle` is notified (with
/// `notify_waiters`). The partition lives on one thread, so nothing can change `busy` between
/// the check and the wait's creation, and a `Notified` receives `notify_waiters` once created.
async fn wait_while(idle: &Notify, busy: impl Fn() -> bool) {
    loop {
        let notified = idle.notified();
        if !busy() {
            break;
        }
        notified.await;
    }
}

/// The header of the segment at `path`, or `None` if it cannot be read or does not check out.
async fn read_header<D: Disk>(
    disk: &D,
    path: &Path,
) -> io::Result<(D::File, Option<SegmentHeader>)> {
    let file = disk.open(path, false).await?;
    let header = read_exact_at(&file, 0, SEGMENT_HEADER_BYTES as usize)
        .await
        .ok()
        .and_then(|h| SegmentHeader::decode(&h).ok());
    Ok((file, header))
}

async fn remove_if_exists<D: Disk>(disk: &D, path: &Path) -> io::Result<()> {
    match disk.remove(path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes a whole small file and syncs it.
async fn write_file<D: Disk>(disk: &D, path: &Path, bytes: Vec<u8>) -> io::Result<()> {
    let f = disk.open(path, true).await?;
    f.set_len(0).await?;
    write_all(&f, bytes, 0).await?;
    f.sync_data().await
}

async fn create_segment_file<D: Disk>(
    disk: &D,
    path: &Path,
    header: SegmentHeader,
) -> Result<D::File> {
    let f = disk.open(path, true).await?;
    f.set_len(0).await?;
    write_all(&f, header.encode().to_vec(), 0)
        .await
        .map_err(KvsError::from_write)?;
    Ok(f)
}

/// Puts a prepared segment file in place: writes and syncs its header, renames it from
/// `from` (a temporary name) to `to`, and syncs the directory. A crash at any step leaves a
/// temporary file (deleted at open) or a complete segment, never a segment without a valid
/// header. On failure it removes what it left: the file under `to` if the rename happened,
/// else the one under `from`. The error says whether a file is stranded under `to` because
/// that removal failed too.
async fn install_segment<D: Disk>(
    disk: &D,
    dir: &Path,
    file: &D::File,
    from: &Path,
    to: &Path,
    header: SegmentHeader,
) -> std::result::Result<(), (io::Error, bool)> {
    let mut renamed = false;
    let installed: io::Result<()> = async {
        write_all(file, header.encode().to_vec(), 0).await?;
        file.sync_data().await?;
        disk.rename(from, to).await?;
        renamed = true;
        disk.sync_dir(dir).await
    }
    .await;
    let Err(e) = installed else {
        return Ok(());
    };
    let removed = remove_if_exists(disk, if renamed { to } else { from }).await;
    Err((e, renamed && removed.is_err()))
}

/// Creates a segment durably and atomically under `path` (see [`install_segment`]), starting
/// from an empty `<id>.seg.tmp`. ENOSPC anywhere is [`KvsError::DiskFull`]; the error says
/// whether a file is stranded under `path`.
async fn create_segment<D: Disk>(
    disk: &D,
    dir: &Path,
    path: &Path,
    header: SegmentHeader,
) -> std::result::Result<D::File, (KvsError, bool)> {
    let tmp = segment::tmp_path(path);
    let opened: io::Result<D::File> = async {
        let f = disk.open(&tmp, true).await?;
        f.set_len(0).await?;
        Ok(f)
    }
    .await;
    let result = match opened {
        Ok(f) => install_segment(disk, dir, &f, &tmp, path, header)
            .await
            .map(|()| f),
        Err(e) => {
            let _ = disk.remove(&tmp).await;
            Err((e, false))
        }
    };
    result.map_err(|(e, stranded)| (KvsError::from_write(e), stranded))
}

async fn zero_filled<D: Disk>(disk: &D, path: &Path, len: u64) -> io::Result<D::File> {
    let f = disk.open(path, true).await?;
    f.set_len(0).await?;
    let mut at = 0u64;
    let mut zeros = vec![0u8; ZERO_CHUNK_BYTES];
    while at < len {
        let n = (len - at).min(ZERO_CHUNK_BYTES as u64) as usize;
        zeros.truncate(n);
        match write_all(&f, zeros, at).await {
            Ok(z) => zeros = z,
            Err(e) => {
                let _ = disk.remove(path).await;
                return Err(e);
            }
        }
        at += n as u64;
    }
    f.sync_data().await?;
    Ok(f)
}

// ---- recovery ------------------------------------------------------------------------

/// One segment's records as read from its hint or found by scanning it. The keys share one
/// buffer rather than taking an allocation each: a segment can hold a million records.
#[derive(Default)]
struct SegmentRecords {
    keys: Vec<u8>,
    /// (seq, kind, end of the key in `keys`, offset, record length); a key starts where the
    /// previous one ends.
    records: Vec<(u64, RecordKind, usize, u64, u32)>,
}

impl SegmentRecords {
    fn reserve(&mut self, records: usize, key_bytes: usize) {
        self.records.reserve(records);
        self.keys.reserve(key_bytes);
    }

    fn push(&mut self, seq: u64, kind: RecordKind, key: &[u8], offset: u64, len: u32) {
        self.keys.extend_from_slice(key);
        self.records.push((seq, kind, self.keys.len(), offset, len));
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    /// (seq, kind, key, offset, record length) in the order they were pushed.
    fn iter(&self) -> impl Iterator<Item = (u64, RecordKind, &[u8], u64, u32)> + '_ {
        let mut start = 0;
        self.records
            .iter()
            .map(move |&(seq, kind, end, offset, len)| {
                let key = &self.keys[start..end];
                start = end;
                (seq, kind, key, offset, len)
            })
    }
}

/// Finishes a committed compaction found by [`recover`]: its outputs under their names, its
/// inputs deleted, its manifest removed, each step durable.
async fn finish_compaction<D: Disk>(
    disk: &D,
    dir: &Path,
    partition: u32,
    m: &CompactionManifest,
) -> Result<()> {
    tracing::info!(
        partition,
        "finishing an interrupted compaction of segments {:?}",
        m.inputs
    );
    for id in &m.outputs {
        for path in [
            segment::segment_path(dir, *id),
            segment::hint_path(dir, *id),
        ] {
            if segment::tmp_path(&path).exists() {
                disk.rename(&segment::tmp_path(&path), &path).await?;
            }
        }
    }
    disk.sync_dir(dir).await?;
    for id in &m.inputs {
        for path in [
            segment::segment_path(dir, *id),
            segment::hint_path(dir, *id),
        ] {
            remove_if_exists(disk, &path).await?;
        }
    }
    disk.sync_dir(dir).await?;
    disk.remove(&dir.join(MANIFEST_NAME)).await?;
    disk.sync_dir(dir).await?;
    Ok(())
}

/// Rebuilds a partition's state from its directory: finishes an interrupted compaction,
/// deletes temporary files, loads hints or scans segments, and cuts a torn tail of the active
/// segment.
async fn recover<D: Disk>(disk: &D, cfg: &PartitionConfig) -> Result<State<D::File>> {
    let dir = &cfg.dir;
    // Nothing in a partition directory is a link: none is ever followed out of it.
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_symlink() {
            return Err(KvsError::Config(format!(
                "{} is a symbolic link; kvs does not follow links inside its data directory",
                entry.path().display()
            )));
        }
    }
    let mpath = dir.join(MANIFEST_NAME);
    if let Ok(bytes) = std::fs::read(&mpath) {
        let m = CompactionManifest::decode(&bytes).map_err(|r| corrupt(&mpath, 0, r))?;
        let missing_outputs: Vec<u64> = (m.outputs.iter().copied())
            .filter(|&id| {
                let path = segment::segment_path(dir, id);
                !path.exists() && !segment::tmp_path(&path).exists()
            })
            .collect();
        let missing_inputs: Vec<u64> = (m.inputs.iter().copied())
            .filter(|&id| !segment::segment_path(dir, id).exists())
            .collect();
        if !missing_outputs.is_empty() {
            // Outputs are made before the manifest and deleted only by a compaction that
            // failed: this one never committed, and its inputs, if all there, hold its data.
            if !missing_inputs.is_empty() {
                return Err(corrupt(
                    &mpath,
                    0,
                    format!(
                        "the compaction it names lacks output segments {missing_outputs:?} \
                         and input segments {missing_inputs:?}"
                    ),
                ));
            }
            tracing::warn!(
                partition = cfg.id,
                "discarding a compaction whose output segments {missing_outputs:?} are \
                 missing; keeping its inputs {:?}",
                m.inputs
            );
            disk.remove(&mpath).await?;
            disk.sync_dir(dir).await?;
        } else {
            finish_compaction(disk, dir, cfg.id, &m).await?;
        }
    }

    let mut seg_ids = Vec::new();
    let mut hint_ids = BTreeSet::new();
    let mut pending = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match segment::classify(name) {
            FileKind::Segment(id) => seg_ids.push(id),
            FileKind::Hint(id) => {
                hint_ids.insert(id);
            }
            FileKind::Pending { id, prev, prev_len } => pending.push((id, prev, prev_len)),
            FileKind::Temporary => remove_if_exists(disk, &entry.path()).await?,
            FileKind::CompactionManifest | FileKind::Unknown => {}
        }
    }
    seg_ids.sort_unstable();
    if let Some(id) = settle_pending(disk, cfg, &seg_ids, pending).await? {
        seg_ids.push(id);
        seg_ids.sort_unstable();
    }
    // A hint whose segment is gone (it was compacted away, or its pending segment deleted)
    // describes nothing; the id may be taken again by a new segment.
    for id in hint_ids.clone() {
        if seg_ids.binary_search(&id).is_err() {
            remove_if_exists(disk, &segment::hint_path(dir, id)).await?;
            hint_ids.remove(&id);
        }
    }

    let mut headers = Vec::with_capacity(seg_ids.len());
    for &id in &seg_ids {
        let path = segment::segment_path(dir, id);
        let file = disk.open(&path, false).await?;
        let head = read_exact_at(&file, 0, SEGMENT_HEADER_BYTES as usize)
            .await
            .map_err(|e| corrupt(&path, 0, format!("cannot read segment header: {e}")))?;
        let header = SegmentHeader::decode(&head).map_err(|r| corrupt(&path, 0, r))?;
        if header.id != id || header.partition != cfg.id {
            return Err(corrupt(
                &path,
                0,
                "segment header names another segment or partition",
            ));
        }
        to_u32(id, "segment id")?;
        headers.push((id as u32, header, file));
    }
    // The active segment: the newest one the writer loop made. Only it may have a torn tail.
    let active_id = headers
        .iter()
        .rev()
        .find(|(_, h, _)| h.origin == Origin::Log)
        .map(|(id, ..)| *id);

    let mut found = NewestRecords::default();
    let mut segments = BTreeMap::new();
    let mut max_seq = 0u64;
    let mut active_hint = None;
    let mut active_marks = true;
    for (id, header, file) in headers {
        let path = segment::segment_path(dir, u64::from(id));
        let is_active = Some(id) == active_id;
        let file_len = file.len()?;
        let mut records = SegmentRecords::default();
        let mut used_hint = false;
        if hint_ids.contains(&u64::from(id)) && !is_active {
            let hpath = segment::hint_path(dir, u64::from(id));
            match std::fs::read(&hpath) {
                Ok(bytes) => match hint::decode(&bytes, u64::from(id), file_len) {
                    Ok(entries) => {
                        records.reserve(entries.len(), entries.iter().map(|e| e.key.len()).sum());
                        for e in entries {
                            records.push(e.seq, e.kind, e.key, e.offset, e.record_len() as u32);
                        }
                        used_hint = true;
                    }
                    Err(r) => tracing::warn!(
                        partition = cfg.id,
                        "ignoring hint {}: {r}; scanning the segment",
                        hpath.display()
                    ),
                },
                Err(e) => tracing::warn!(
                    partition = cfg.id,
                    "cannot read hint {}: {e}; scanning the segment",
                    hpath.display()
                ),
            }
        }
        let mut end = file_len;
        if !used_hint {
            let scanned = scan_segment(
                &file,
                &path,
                file_len,
                is_active,
                header.has_marks(),
                |seq, kind, key, offset, len| records.push(seq, kind, key, offset, len),
            )
            .await?;
            end = scanned.end;
            if scanned.torn {
                // Cut the garbage so that later appends are followed by nothing stale.
                file.set_len(end).await?;
                file.sync_data().await?;
            }
        }
        if is_active {
            active_marks = header.has_marks();
            if hint_ids.contains(&u64::from(id)) {
                remove_if_exists(disk, &segment::hint_path(dir, u64::from(id))).await?;
            }
            // The hint is rebuilt from the scan, and goes on growing with the segment.
            let mut hint = ActiveHint::new(id);
            for (seq, kind, key, offset, len) in records.iter() {
                let value_len = len - (record::RECORD_HEADER_BYTES + key.len()) as u32;
                hint.push(&HintEntry {
                    seq,
                    kind,
                    key,
                    value_len,
                    offset,
                });
                hint.write_ready(disk, dir).await;
            }
            active_hint = Some(hint);
        }
        found.reserve(records.len(), records.keys.len());
        for (seq, kind, key, offset, len) in records.iter() {
            max_seq = max_seq.max(seq);
            let loc = Loc {
                segment: id,
                offset: offset as u32,
                len,
            };
            found.offer(key, seq, kind, loc);
        }
        segments.insert(
            id,
            Segment {
                file: Rc::new(file),
                len: end,
                live: 0,
            },
        );
    }

    let mut index = Index::default();
    index.reserve(found.iter().filter(|f| f.1 == RecordKind::Put).count());
    for (key, kind, loc) in found.iter() {
        if kind == RecordKind::Put {
            segments
                .get_mut(&loc.segment)
                .expect("segment of a found record")
                .live += u64::from(loc.len);
            index.insert(key, loc);
        }
    }
    let mut next_id = seg_ids.last().map_or(1, |id| id + 1);
    // A segment longer than its records was preallocated (zero-filled past the tail).
    let active_preallocated = active_id.and_then(|id| segments.get(&id)).is_some_and(|s| {
        s.file
            .len()
            .is_ok_and(|l| l >= cfg.segment_bytes && l > s.len)
    });
    let (active, tail) = match active_id {
        Some(id) => (id, segments[&id].len),
        None => {
            let id = to_u32(next_id, "segment id")?;
            next_id += 1;
            let header = SegmentHeader::new(Origin::Log, u64::from(id), cfg.id);
            let file = create_segment(
                disk,
                dir,
                &segment::segment_path(dir, u64::from(id)),
                header,
            )
            .await
            .map_err(|(e, _)| e)?;
            segments.insert(
                id,
                Segment {
                    file: Rc::new(file),
                    len: SEGMENT_HEADER_BYTES,
                    live: 0,
                },
            );
            (id, SEGMENT_HEADER_BYTES)
        }
    };
    let active_hint = match active_hint {
        Some(h) => h,
        None => ActiveHint::new(active),
    };
    Ok(State {
        index,
        cache: ValueCache::new(cfg.cache_bytes, cfg.read_mirror.clone()),
        segments,
        active,
        tail,
        next_seq: max_seq + 1,
        next_id,
        active_hint,
        poisoned: None,
        compacting: false,
        compaction_disabled: false,
        compactions: 0,
        spare: None,
        preparing_spare: false,
        unsynced_since: None,
        active_preallocated,
        active_marks,
        // What the scan found may still be only in the page cache (after a process crash), so
        // nothing is claimed durable until this process syncs it.
        synced: SEGMENT_HEADER_BYTES,
        marked: SEGMENT_HEADER_BYTES,
        writeback_from: SEGMENT_HEADER_BYTES,
    })
}

/// Decides a log segment left under its pending name by a crash during a background seal
/// (see [`Partition::rotate`]); returns its id if it joins the log. It does when the segment it
/// continues is the newest and still ends, intact, where the name says: that one is cut to that
/// length (zeros a lost truncation left past it) and synced, and the pending one renamed. Else
/// it is deleted: it follows records the crash lost, and keeping it would leave a hole.
async fn settle_pending<D: Disk>(
    disk: &D,
    cfg: &PartitionConfig,
    seg_ids: &[u64],
    pending: Vec<(u64, u64, u64)>,
) -> Result<Option<u64>> {
    let dir = &cfg.dir;
    let mut joined = None;
    for (id, prev, prev_len) in pending {
        let path = segment::pending_path(dir, id, prev, prev_len);
        // Compactions take ids too: only segments they made may come after `prev`.
        let mut newest_log = seg_ids.contains(&prev);
        for &later in seg_ids.iter().filter(|&&later| later > prev) {
            let (_, header) = read_header(disk, &segment::segment_path(dir, later)).await?;
            newest_log &= header.is_some_and(|h| h.origin == Origin::Compaction);
        }
        let intact = if joined.is_none() && newest_log && id > prev {
            let prev_path = segment::segment_path(dir, prev);
            let (file, header) = read_header(disk, &prev_path).await?;
            let file_len = file.len()?;
            let marks = header
                .filter(|h| h.origin == Origin::Log)
                .map(|h| h.has_marks());
            match marks {
                Some(marks) if file_len >= prev_len => {
                    let scanned =
                        scan_segment(&file, &prev_path, file_len, true, marks, |_, _, _, _, _| {})
                            .await?;
                    let intact = !scanned.torn && scanned.end == prev_len;
                    if intact && file_len != prev_len {
                        file.set_len(prev_len).await?;
                        file.sync_data().await?;
                    }
                    intact
                }
                _ => false,
            }
        } else {
            false
        };
        if intact {
            tracing::info!(
                partition = cfg.id,
                "segment {id} was written while segment {prev} was being sealed; {prev} is \
                 whole, so {id} joins the log"
            );
            disk.rename(&path, &segment::segment_path(dir, id)).await?;
            disk.sync_dir(dir).await?;
            joined = Some(id);
        } else {
            tracing::warn!(
                partition = cfg.id,
                "segment {id} was written while segment {prev} was being sealed, and {prev} \
                 lost records from its end in a crash; dropping {id} (only writes that were \
                 never synced are lost)"
            );
            remove_if_exists(disk, &path).await?;
            disk.sync_dir(dir).await?;
        }
    }
    Ok(joined)
}

/// Reads a segment's records in order, calling `each(seq, kind, key, offset, len)`, and
/// returns where they end. Sync marks (allowed where `marks` is set) are read, not reported.
///
/// An invalid region in the active segment is a torn tail, cut off (zero padding is kept),
/// unless it lies where the segment is known to have been durable: before the offset a later
/// sync mark names, or, in a segment without marks, before any later valid record. Anywhere
/// else it is corruption.
async fn scan_segment<F: DiskFile>(
    file: &F,
    path: &Path,
    file_len: u64,
    is_active: bool,
    marks: bool,
    mut each: impl FnMut(u64, RecordKind, &[u8], u64, u32),
) -> Result<ScanEnd> {
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_at = pos;
    let mut last_seq = 0u64;
    let bad = loop {
        if pos == file_len {
            return Ok(ScanEnd {
                end: pos,
                torn: false,
            });
        }
        let have = &buf[(pos - buf_at) as usize..];
        match record::decode_entry(have, marks) {
            Ok(Some(Entry::Record(r))) => {
                each(r.seq, r.kind, r.key, pos, r.len() as u32);
                last_seq = last_seq.max(r.seq);
                pos += r.len() as u64;
            }
            // A mark names an offset before itself, so only marks after damage tell anything.
            Ok(Some(Entry::Mark { .. })) => pos += MARK_BYTES as u64,
            Ok(None) => {
                let need = record::peek_entry_len(have, marks)
                    .ok()
                    .flatten()
                    .unwrap_or(record::RECORD_HEADER_BYTES);
                if pos + need as u64 > file_len {
                    break record::RecordError::BadLength {
                        key_len: 0,
                        value_len: 0,
                    };
                }
                let want = ((file_len - pos) as usize).min(SCAN_CHUNK_BYTES.max(need));
                buf = read_exact_at(file, pos, want).await?;
                buf_at = pos;
            }
            Err(e) => break e,
        }
    };
    // Look at everything after the last good record. The zero padding of a preallocated
    // segment, the usual case, is checked a chunk at a time rather than held whole.
    if all_zero(file, pos, file_len).await? {
        if is_active {
            return Ok(ScanEnd {
                end: pos,
                torn: false,
            });
        }
        return Err(corrupt(
            path,
            pos,
            "sealed segment has zero-filled space after its records",
        ));
    }
    let rest = read_exact_at(file, pos, (file_len - pos) as usize).await?;
    if marks {
        if let Some((at, d)) = find_mark_past(&rest, pos) {
            return Err(corrupt(
                path,
                pos,
                format!(
                    "{bad}, where the sync mark at offset {} says the log was already durable (up to offset {d})",
                    pos + at as u64
                ),
            ));
        }
    }
    let follows = find_valid_record(&rest, last_seq);
    if !marks {
        if let Some(at) = follows {
            return Err(corrupt(
                path,
                pos,
                format!(
                    "{bad}; a valid record follows at offset {}",
                    pos + at as u64
                ),
            ));
        }
    }
    if !is_active {
        return Err(corrupt(path, pos, bad.to_string()));
    }
    match follows {
        // Pages of one unsynced write reach the disk in any order, so a crash can leave a gap
        // with later records of the same write after it: none of them was ever durable.
        Some(at) => tracing::warn!(
            "cutting torn tail of {} at offset {pos} ({bad}); the records from offset {} on \
             follow a gap in a part never synced, and are dropped with it",
            path.display(),
            pos + at as u64
        ),
        None => tracing::warn!(
            "cutting torn tail of {} at offset {pos} ({bad})",
            path.display()
        ),
    }
    Ok(ScanEnd {
        end: pos,
        torn: true,
    })
}

/// Whether the bytes of `file` from `pos` to `end` are all zero.
async fn all_zero<F: DiskFile>(file: &F, mut pos: u64, end: u64) -> io::Result<bool> {
    while pos < end {
        let n = (end - pos).min(SCAN_CHUNK_BYTES as u64) as usize;
        let chunk = read_exact_at(file, pos, n).await?;
        // OR-ing a block at a time lets the compiler vectorise the check.
        if !chunk
            .chunks(4096)
            .all(|block| block.iter().fold(0, |acc, &b| acc | b) == 0)
        {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// Where a scanned segment's records end, and whether garbage after them must be cut.
struct ScanEnd {
    end: u64,
    torn: bool,
}

/// Looks in `bytes` (which start at offset `at` of their segment) for a checksummed sync
/// mark naming an offset past `at`: `(index in bytes, the offset it names)`.
fn find_mark_past(bytes: &[u8], at: u64) -> Option<(usize, u64)> {
    (1..bytes.len().saturating_sub(MARK_BYTES - 1)).find_map(|i| {
        let b = &bytes[i..];
        if b[12] != record::MARK_KIND {
            return None;
        }
        match record::decode_entry(b, true) {
            Ok(Some(Entry::Mark { durable })) if durable > at => Some((i, durable)),
            _ => None,
        }
    })
}

/// Looks for any checksummed record with a sequence number after `after_seq` in `bytes`.
fn find_valid_record(bytes: &[u8], after_seq: u64) -> Option<usize> {
    (1..bytes.len().saturating_sub(record::RECORD_HEADER_BYTES)).find(|&i| {
        let b = &bytes[i..];
        if !matches!(b[12], 1 | 2) {
            return false;
        }
        matches!(record::decode(b), Ok(Some(r)) if r.seq > after_seq && r.len() <= RECORD_BYTES_MAX)
    })
}
