//! How a session reaches the data. [`Store`] is what sessions call; [`KvsRouter`] sends each
//! operation to the worker that owns its partition (directly when that is this worker, else
//! batched into one message per owner, one hop), and [`SledStore`] calls sled directly.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use tokio::sync::{mpsc, oneshot};

use crate::engine::shard::{partition_of, Op, OpResult, Shard, ShardMsg};
use crate::engine::{KvsEngine, SledKvsEngine};
use crate::io_backend::Disk;
use crate::protocol::{PartitionStats, StatsReport};
use crate::{KvsError, Result};

pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// The data as a session sees it.
pub trait Store: Clone + 'static {
    /// Starts `op`. Operations for other workers are held until [`Store::flush`].
    fn call(&self, op: Op) -> LocalBoxFuture<OpResult>;
    /// Sends held operations to their owners: one message per owner.
    fn flush(&self);
    fn stats(&self) -> LocalBoxFuture<Result<StatsReport>>;
    /// Live keys in the whole store.
    fn key_count(&self) -> LocalBoxFuture<Result<u64>> {
        let stats = self.stats();
        Box::pin(async move { Ok(stats.await?.partitions.iter().map(|p| p.keys).sum()) })
    }
}

type Held = Vec<(u32, Op, oneshot::Sender<OpResult>)>;

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

/// kvs's partitions, reached from one worker.
pub struct KvsRouter<D: Disk> {
    inner: Rc<RouterInner<D>>,
}

impl<D: Disk> Clone for KvsRouter<D> {
    fn clone(&self) -> Self {
        KvsRouter {
            inner: self.inner.clone(),
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
        }
    }
}

impl<D: Disk> Store for KvsRouter<D> {
    fn call(&self, op: Op) -> LocalBoxFuture<OpResult> {
        let partition = partition_of(op.key(), self.inner.partitions);
        let owner = self.inner.owner_of[partition as usize];
        if owner == self.inner.me {
            let shard = self.inner.shard.clone();
            return Box::pin(async move { shard.apply(partition, op).await });
        }
        let (tx, rx) = oneshot::channel();
        self.inner.held.borrow_mut()[owner].push((partition, op, tx));
        Box::pin(async move { rx.await.unwrap_or(Err(KvsError::Closed)) })
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
    fn call(&self, op: Op) -> LocalBoxFuture<OpResult> {
        let db = self.db.clone();
        Box::pin(async move {
            match op {
                Op::Get(k) => db.get(k).await,
                Op::Set(k, v) => db.set(k, v).await.map(|()| None),
                Op::Remove(k) => db.remove(k).await.map(|()| None),
            }
        })
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
