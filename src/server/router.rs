//! How a session reaches the data. [`Store`] is what sessions call; [`KvsRouter`] sends each
//! operation to the worker that owns its partition (directly when that is this worker, else
//! batched into one message per owner, one hop), and [`SledStore`] calls sled directly.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::engine::shard::{partition_of, Op, OpResult, Routed, Shard, ShardMsg};
use crate::engine::{KvsEngine, Prefetch, SledKvsEngine};
use crate::engine::{Source, EMBEDDED};
use crate::io_backend::Disk;
use crate::protocol::{PartitionStats, StatsReport};
use crate::{KvsError, Result};

pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// An operation once started: finished already, waiting on a channel (a queued write, or an
/// operation sent to another worker), or a future to run (a read from disk) with the bytes its
/// result may hold.
pub enum Started {
    Now(OpResult),
    /// The answer arrives on the channel; the bytes it may hold are charged to the connection.
    Later(oneshot::Receiver<OpResult>, usize),
    Task(LocalBoxFuture<OpResult>, usize),
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
        match self.start(op) {
            Started::Now(r) => Box::pin(std::future::ready(r)),
            Started::Later(rx, _) => {
                Box::pin(async move { rx.await.unwrap_or(Err(KvsError::Closed)) })
            }
            Started::Task(f, _) => f,
        }
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

type Held = Vec<Routed>;

struct RouterInner<D: Disk> {
    me: usize,
    shard: Shard<D>,
    partitions: u32,
    /// Partition to owning worker.
    owner_of: Rc<[usize]>,
    inboxes: Rc<[mpsc::UnboundedSender<ShardMsg>]>,
    held: RefCell<Vec<Held>>,
    io_backend: &'static str,
}

/// Keys [`Store::prefetch_gets`] prefetches at most, per call.
pub const PREFETCH_KEYS_MAX: usize = 32;

/// kvs's partitions, reached from one worker.
pub struct KvsRouter<D: Disk> {
    inner: Rc<RouterInner<D>>,
    /// Whose operations these are.
    source: Source,
}

impl<D: Disk> Clone for KvsRouter<D> {
    fn clone(&self) -> Self {
        KvsRouter {
            inner: self.inner.clone(),
            source: self.source,
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
                held: RefCell::new((0..workers).map(|_| Vec::new()).collect()),
                io_backend,
            }),
            source: EMBEDDED,
        }
    }
}

impl<D: Disk> KvsRouter<D> {
    /// The partition of `key`, and the worker that owns it.
    fn route(&self, key: &[u8]) -> (u32, usize) {
        let partition = partition_of(key, self.inner.partitions);
        (partition, self.inner.owner_of[partition as usize])
    }

    /// A get of this worker's partition that the cache and the index cannot answer: a read
    /// from disk, charged the record's length.
    fn read_from_disk(&self, partition: u32, key: Bytes) -> Started {
        let shard = self.inner.shard.clone();
        let bytes = shard.record_len(partition, &key).unwrap_or(0);
        let read = async move { shard.get(partition, key).await };
        Started::Task(Box::pin(read), bytes)
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
                Ok(rx) => Started::Later(rx, 0),
                Err(e) => Started::Now(Err(e)),
            };
        }
        let charge = match op {
            Op::Get(_) => crate::limits::REMOTE_READ_CHARGE_BYTES,
            Op::Set(..) | Op::Remove(_) => 0,
        };
        let (tx, rx) = oneshot::channel();
        self.inner.held.borrow_mut()[owner].push(Routed {
            partition,
            source: self.source,
            op,
            reply: tx,
        });
        Started::Later(rx, charge)
    }
}

impl<D: Disk> Store for KvsRouter<D> {
    fn start(&self, op: Op) -> Started {
        let (partition, owner) = self.route(op.key());
        self.start_at(partition, owner, op)
    }

    fn prefetch_gets(&self, keys: &[&[u8]]) {
        // Each key is routed once; the keys of other workers' partitions are left out.
        let mut local = [(0u32, &[][..]); PREFETCH_KEYS_MAX];
        let mut n = 0;
        for &key in keys.iter().take(PREFETCH_KEYS_MAX) {
            let (partition, owner) = self.route(key);
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
        let (partition, owner) = self.route(key);
        if owner == self.inner.me {
            return match self.inner.shard.get_cached(partition, key) {
                Some(v) => Started::Now(Ok(v)),
                None => self.read_from_disk(partition, Bytes::copy_from_slice(key)),
            };
        }
        self.start_at(partition, owner, Op::Get(Bytes::copy_from_slice(key)))
    }

    fn flush(&self) {
        let mut held = self.inner.held.borrow_mut();
        for (worker, ops) in held.iter_mut().enumerate() {
            if !ops.is_empty() {
                // A closed inbox drops the replies, which the callers see as `Closed`.
                let _ = self.inner.inboxes[worker].send(ShardMsg::Ops(std::mem::take(ops)));
            }
        }
    }

    fn for_source(&self, source: Source) -> Self {
        KvsRouter {
            inner: self.inner.clone(),
            source,
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
