//! How a session reaches the data. [`Store`] is what sessions call; [`KvsRouter`] sends each
//! operation to the worker that owns its partition (directly when that is this worker, else
//! batched into one message per owner, one hop, whose gets are answered in one message back),
//! and [`SledStore`] calls sled directly.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::own_writes::{self, Earlier, OwnWrites, WriteMark};
use crate::engine::shard::{
    partition_of_hash, Batch, BatchGets, Op, OpResult, Routed, Shard, ShardMsg,
};
use crate::engine::{KvsEngine, Prefetch, SledKvsEngine};
use crate::engine::{Source, EMBEDDED};
use crate::io_backend::Disk;
use crate::protocol::{PartitionStats, StatsReport};
use crate::{KvsError, Result};

pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// An operation once started: finished already, waiting for an answer (a queued write, or an
/// operation sent to another worker), or a future to run (a read from disk) with the bytes its
/// result may hold.
pub enum Started {
    Now(OpResult),
    /// The answer arrives later; the bytes it may hold are charged to the connection.
    Later(Answer, usize),
    Task(LocalBoxFuture<OpResult>, usize),
}

impl Started {
    /// The result, as one future.
    pub fn into_future(self) -> LocalBoxFuture<OpResult> {
        match self {
            Started::Now(r) => Box::pin(std::future::ready(r)),
            Started::Later(answer, _) => Box::pin(answer),
            Started::Task(f, _) => f,
        }
    }
}

/// The answer to an operation that waits: on its own channel (a write), or in the answers to
/// the batch of gets it was sent to another worker in.
pub enum Answer {
    /// A write's: its mark settles the write's outcome for later gets of the same source.
    Channel(oneshot::Receiver<OpResult>, Option<WriteMark>),
    InBatch(Rc<BatchAnswers>, usize),
}

impl Answer {
    /// The answer, if it has arrived (`Closed` if it never will).
    pub fn try_take(&mut self) -> Option<OpResult> {
        match self {
            Answer::Channel(rx, mark) => {
                let r = match rx.try_recv() {
                    Ok(r) => r,
                    Err(oneshot::error::TryRecvError::Closed) => Err(KvsError::Closed),
                    Err(oneshot::error::TryRecvError::Empty) => return None,
                };
                Some(taken(mark, r))
            }
            Answer::InBatch(batch, at) => match batch.poll_take(*at, None) {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            },
        }
    }
}

impl Future for Answer {
    type Output = OpResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<OpResult> {
        match self.get_mut() {
            Answer::Channel(rx, mark) => {
                let r = std::task::ready!(Pin::new(rx).poll(cx)).unwrap_or(Err(KvsError::Closed));
                Poll::Ready(taken(mark, r))
            }
            Answer::InBatch(batch, at) => batch.poll_take(*at, Some(cx)),
        }
    }
}

/// A write's answer `r`, taken: settles its mark, once.
fn taken(mark: &mut Option<WriteMark>, r: OpResult) -> OpResult {
    if let Some(mark) = mark.take() {
        mark.settle(&r);
    }
    r
}

/// The answers to one batch of gets sent to another worker: they arrive together, in one
/// message, where each get used to have a channel (an allocation, and a wake-up of this thread
/// from the other, per get). Shared by the gets' [`Answer`]s; each takes its own once.
pub struct BatchAnswers {
    /// The channel the answers arrive on, from the moment the batch is sent.
    rx: RefCell<Option<oneshot::Receiver<Vec<OpResult>>>>,
    answers: RefCell<Option<Vec<OpResult>>>,
    /// The answers will never arrive (the batch was never sent, or its worker is gone).
    closed: Cell<bool>,
    /// The tasks waiting: the channel wakes only the last to poll it, which wakes the others.
    waiters: RefCell<Vec<Waker>>,
}

impl BatchAnswers {
    fn new() -> BatchAnswers {
        BatchAnswers {
            rx: RefCell::new(None),
            answers: RefCell::new(None),
            closed: Cell::new(false),
            waiters: RefCell::new(Vec::new()),
        }
    }

    /// Takes answer `at` if the answers have arrived; else, given a context, wakes its task
    /// when they do.
    fn poll_take(&self, at: usize, mut cx: Option<&mut Context<'_>>) -> Poll<OpResult> {
        if let Some(answers) = self.answers.borrow_mut().as_mut() {
            // A batch answered short (which the owner never does) answers `Closed`.
            let taken = answers
                .get_mut(at)
                .map(|a| std::mem::replace(a, Ok(None)))
                .unwrap_or(Err(KvsError::Closed));
            return Poll::Ready(taken);
        }
        if self.closed.get() {
            return Poll::Ready(Err(KvsError::Closed));
        }
        let arrived = match (self.rx.borrow_mut().as_mut(), cx.as_deref_mut()) {
            (None, _) => None,
            (Some(rx), Some(cx)) => match Pin::new(rx).poll(cx) {
                Poll::Ready(r) => Some(r.ok()),
                Poll::Pending => None,
            },
            (Some(rx), None) => match rx.try_recv() {
                Ok(answers) => Some(Some(answers)),
                Err(oneshot::error::TryRecvError::Closed) => Some(None),
                Err(oneshot::error::TryRecvError::Empty) => None,
            },
        };
        if let Some(answers) = arrived {
            self.rx.borrow_mut().take();
            match answers {
                Some(answers) => *self.answers.borrow_mut() = Some(answers),
                None => self.closed.set(true),
            }
            self.wake_all();
            return self.poll_take(at, None);
        }
        if let Some(cx) = cx {
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }

    /// The batch is sent: its answers arrive on `rx`.
    fn sent(&self, rx: oneshot::Receiver<Vec<OpResult>>) {
        *self.rx.borrow_mut() = Some(rx);
        // A task that waited before the batch left polls again, now on the channel.
        self.wake_all();
    }

    fn close(&self) {
        self.closed.set(true);
        self.wake_all();
    }

    fn wake_all(&self) {
        for w in self.waiters.take() {
            w.wake();
        }
    }
}

/// The operations held for one other worker until [`Store::flush`].
#[derive(Default)]
struct Held {
    /// Writes.
    ops: Vec<Routed>,
    /// Gets, answered together: their keys end to end, and each one's partition and key end
    /// (see [`BatchGets`]).
    keys: Vec<u8>,
    gets: Vec<(u32, u32)>,
    /// The held gets' answers.
    answers: Option<Rc<BatchAnswers>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Gets never sent are never answered.
        if let Some(answers) = self.answers.take() {
            answers.close();
        }
    }
}

/// Takes what `v` holds, leaving room for as many: the next batch is likely as long as this
/// one.
fn take_sized<T>(v: &mut Vec<T>) -> Vec<T> {
    let room = v.len();
    std::mem::replace(v, Vec::with_capacity(room))
}

/// The data as a session sees it.
pub trait Store: Clone + 'static {
    /// Starts `op`. Operations for other workers are held until [`Store::flush`].
    fn start(&self, op: Op) -> Started;
    /// Starts a get of `key`, which is borrowed from the request (a cached value is answered
    /// without copying the key).
    fn start_get(&self, key: &[u8]) -> Started {
        self.start(Op::Get(Bytes::copy_from_slice(key)))
    }
    /// Starts loading what gets of `keys` will read, where that is memory of this thread's,
    /// so that the gets of a pipeline overlap their cache misses. A hint: it changes nothing.
    fn prefetch_gets(&self, _keys: &[&[u8]]) {}
    /// Starts `op` as one future.
    fn call(&self, op: Op) -> LocalBoxFuture<OpResult> {
        self.start(op).into_future()
    }
    /// Sends held operations to their owners: one message per owner.
    fn flush(&self);
    /// This store as seen by one client: its writes keep their order and take turns with other
    /// clients' at each partition's writer (where the store has such a queue).
    fn for_source(&self, _source: Source) -> Self {
        self.clone()
    }
    fn stats(&self) -> LocalBoxFuture<Result<StatsReport>>;
    /// Live keys in the whole store.
    fn key_count(&self) -> LocalBoxFuture<Result<u64>> {
        let stats = self.stats();
        Box::pin(async move { Ok(stats.await?.partitions.iter().map(|p| p.keys).sum()) })
    }
}

struct RouterInner<D: Disk> {
    me: usize,
    shard: Shard<D>,
    partitions: u32,
    /// Partition to owning worker.
    owner_of: Rc<[usize]>,
    inboxes: Rc<[mpsc::UnboundedSender<ShardMsg>]>,
    io_backend: &'static str,
}

/// Keys [`Store::prefetch_gets`] prefetches at most, per call.
pub const PREFETCH_KEYS_MAX: usize = 32;

/// kvs's partitions, reached from one worker.
pub struct KvsRouter<D: Disk> {
    inner: Rc<RouterInner<D>>,
    /// Whose operations these are.
    source: Source,
    /// This source's operations for other workers, by worker, until [`Store::flush`]. Each
    /// source holds its own, so a batch's answers are waited for by one client's tasks only.
    held: Rc<RefCell<Vec<Held>>>,
    /// This source's writes not answered yet, which its gets of the same keys answer after.
    own: Rc<OwnWrites>,
}

impl<D: Disk> Clone for KvsRouter<D> {
    fn clone(&self) -> Self {
        KvsRouter {
            inner: self.inner.clone(),
            source: self.source,
            held: self.held.clone(),
            own: self.own.clone(),
        }
    }
}

impl<D: Disk> KvsRouter<D> {
    pub fn new(
        me: usize,
        shard: Shard<D>,
        owner_of: Rc<[usize]>,
        inboxes: Rc<[mpsc::UnboundedSender<ShardMsg>]>,
        io_backend: &'static str,
    ) -> KvsRouter<D> {
        let workers = inboxes.len();
        KvsRouter {
            inner: Rc::new(RouterInner {
                me,
                shard,
                partitions: owner_of.len() as u32,
                owner_of,
                inboxes,
                io_backend,
            }),
            source: EMBEDDED,
            held: Rc::new(RefCell::new(
                (0..workers).map(|_| Held::default()).collect(),
            )),
            own: Rc::default(),
        }
    }
}

impl<D: Disk> KvsRouter<D> {
    /// The key's crc32c, its partition, and the worker that owns it.
    fn route(&self, key: &[u8]) -> (u32, u32, usize) {
        let hash = crc32c::crc32c(key);
        let partition = partition_of_hash(hash, self.inner.partitions);
        (hash, partition, self.inner.owner_of[partition as usize])
    }

    /// A get of this worker's partition that the cache and the index cannot answer: a read
    /// from disk, charged the record's length.
    fn read_from_disk(&self, partition: u32, key: Bytes) -> Started {
        let shard = self.inner.shard.clone();
        let bytes = shard.record_len(partition, &key).unwrap_or(0);
        let read = async move { shard.get(partition, key).await };
        Started::Task(Box::pin(read), bytes)
    }

    /// A get of a key whose newest write by this source is not answered yet: answered with
    /// what that write left, once its answer is taken (`own_writes`).
    fn get_after(&self, earlier: Earlier, partition: u32, owner: usize, key: Bytes) -> Started {
        // The value it answers with shares the write's, charged with the write's request.
        let charge = crate::limits::REMOTE_READ_CHARGE_BYTES;
        let router = self.clone();
        let read = move || {
            let started = router.start_at(partition, owner, Op::Get(key));
            router.flush();
            started.into_future()
        };
        Started::Task(Box::pin(own_writes::get_after(earlier, read)), charge)
    }

    fn start_at(&self, partition: u32, owner: usize, op: Op) -> Started {
        if owner == self.inner.me {
            let shard = &self.inner.shard;
            let queued = match op {
                Op::Get(key) => {
                    return match shard.get_cached(partition, &key) {
                        Some(v) => Started::Now(Ok(v)),
                        None => self.read_from_disk(partition, key),
                    }
                }
                Op::Set(key, value) => shard.submit(partition, self.source, key, Some(value)),
                Op::Remove(key) => shard.submit(partition, self.source, key, None),
            };
            return match queued {
                // A write's answer is small; its request bytes are charged already.
                Ok(rx) => Started::Later(Answer::Channel(rx, None), 0),
                Err(e) => Started::Now(Err(e)),
            };
        }
        match op {
            Op::Get(key) => self.hold_get(partition, owner, &key),
            Op::Set(..) | Op::Remove(_) => {
                let (tx, rx) = oneshot::channel();
                self.held.borrow_mut()[owner].ops.push(Routed {
                    partition,
                    source: self.source,
                    op,
                    reply: tx,
                });
                Started::Later(Answer::Channel(rx, None), 0)
            }
        }
    }

    /// Holds a get of `key` for the worker `owner`, to be answered with the other gets held
    /// for it.
    fn hold_get(&self, partition: u32, owner: usize, key: &[u8]) -> Started {
        let mut held = self.held.borrow_mut();
        let held = &mut held[owner];
        let answers = held
            .answers
            .get_or_insert_with(|| Rc::new(BatchAnswers::new()));
        let answer = Answer::InBatch(answers.clone(), held.gets.len());
        held.keys.extend_from_slice(key);
        // Keys are limited far below 4 GiB, and a batch holds what one read of a connection
        // holds.
        let end = u32::try_from(held.keys.len()).expect("a batch's keys fit in 4 GiB");
        held.gets.push((partition, end));
        Started::Later(answer, crate::limits::REMOTE_READ_CHARGE_BYTES)
    }
}

impl<D: Disk> Store for KvsRouter<D> {
    fn start(&self, op: Op) -> Started {
        let (hash, partition, owner) = self.route(op.key());
        let mark = match &op {
            Op::Get(key) => match self.own.of(hash, key) {
                Some(earlier) => return self.get_after(earlier, partition, owner, op.into_key()),
                None => None,
            },
            Op::Set(key, _) => Some(self.own.record(hash, key, false)),
            Op::Remove(key) => Some(self.own.record(hash, key, true)),
        };
        match (self.start_at(partition, owner, op), mark) {
            (Started::Later(Answer::Channel(rx, None), charge), Some(mark)) => {
                Started::Later(Answer::Channel(rx, Some(mark)), charge)
            }
            // A write refused at once drops its mark: failed.
            (started, _) => started,
        }
    }

    fn prefetch_gets(&self, keys: &[&[u8]]) {
        // Each key is routed once; the keys of other workers' partitions are left out.
        let mut local = [(0u32, &[][..]); PREFETCH_KEYS_MAX];
        let mut n = 0;
        for &key in keys.iter().take(PREFETCH_KEYS_MAX) {
            let (_, partition, owner) = self.route(key);
            if owner == self.inner.me {
                local[n] = (partition, key);
                n += 1;
            }
        }
        // One pass per stage over all the keys: each stage's loads overlap one another, and
        // the first stage's have arrived by the time the second needs them.
        for stage in [Prefetch::Bucket, Prefetch::Block] {
            for &(partition, key) in &local[..n] {
                self.inner.shard.prefetch_cached(partition, key, stage);
            }
        }
    }

    fn start_get(&self, key: &[u8]) -> Started {
        let (hash, partition, owner) = self.route(key);
        if let Some(earlier) = self.own.of(hash, key) {
            return self.get_after(earlier, partition, owner, Bytes::copy_from_slice(key));
        }
        if owner == self.inner.me {
            return match self.inner.shard.get_cached(partition, key) {
                Some(v) => Started::Now(Ok(v)),
                None => self.read_from_disk(partition, Bytes::copy_from_slice(key)),
            };
        }
        self.hold_get(partition, owner, key)
    }

    fn flush(&self) {
        let mut held = self.held.borrow_mut();
        for (worker, held) in held.iter_mut().enumerate() {
            if held.ops.is_empty() && held.gets.is_empty() {
                continue;
            }
            let ops = take_sized(&mut held.ops);
            let gets = held.answers.take().map(|answers| {
                let (tx, rx) = oneshot::channel();
                answers.sent(rx);
                BatchGets {
                    keys: take_sized(&mut held.keys),
                    gets: take_sized(&mut held.gets),
                    answers: tx,
                }
            });
            // A closed inbox drops the batch and its channels, which the callers see as
            // `Closed`.
            let _ = self.inner.inboxes[worker].send(ShardMsg::Ops(Batch { ops, gets }));
        }
    }

    fn for_source(&self, source: Source) -> Self {
        let workers = self.inner.inboxes.len();
        KvsRouter {
            inner: self.inner.clone(),
            source,
            held: Rc::new(RefCell::new(
                (0..workers).map(|_| Held::default()).collect(),
            )),
            own: Rc::default(),
        }
    }

    fn stats(&self) -> LocalBoxFuture<Result<StatsReport>> {
        let inboxes = self.inner.inboxes.clone();
        let io_backend = self.inner.io_backend;
        Box::pin(async move {
            let mut partitions = Vec::new();
            for inbox in inboxes.iter() {
                let (tx, rx) = oneshot::channel();
                inbox
                    .send(ShardMsg::Stats(tx))
                    .map_err(|_| KvsError::Closed)?;
                for s in rx.await.map_err(|_| KvsError::Closed)? {
                    partitions.push(PartitionStats {
                        partition: s.partition,
                        keys: s.keys,
                        live_bytes: s.live_bytes,
                        dead_bytes: s.dead_bytes,
                        segments: s.segments,
                        compactions: s.compactions,
                    });
                }
            }
            partitions.sort_by_key(|p| p.partition);
            Ok(StatsReport {
                io_backend: io_backend.to_owned(),
                partitions,
            })
        })
    }
}

/// The sled engine, shared by every worker (sled does its own locking).
#[derive(Clone)]
pub struct SledStore {
    pub db: SledKvsEngine,
    pub io_backend: &'static str,
}

impl Store for SledStore {
    fn start(&self, op: Op) -> Started {
        let db = self.db.clone();
        let run = async move {
            match op {
                Op::Get(k) => db.get(k).await,
                Op::Set(k, v) => db.set(k, v).await.map(|()| None),
                Op::Remove(k) => db.remove(k).await.map(|()| None),
            }
        };
        // sled keeps values in its own memory; nothing extra is charged.
        Started::Task(Box::pin(run), 0)
    }

    fn flush(&self) {}

    fn stats(&self) -> LocalBoxFuture<Result<StatsReport>> {
        let report = StatsReport {
            io_backend: self.io_backend.to_owned(),
            partitions: Vec::new(),
        };
        Box::pin(async move { Ok(report) })
    }

    fn key_count(&self) -> LocalBoxFuture<Result<u64>> {
        let n = self.db.len() as u64;
        Box::pin(async move { Ok(n) })
    }
}
