//! A shard: the partitions one thread owns, and the messages other threads send it.
//!
//! Invariant: a partition is in exactly one shard, and only that shard's thread touches it.
//! Other threads reach it by sending a [`ShardMsg`] to the shard's inbox.

use std::collections::BTreeMap;
use std::ops::Range;
use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};

use super::cache::{Packed, Prefetch};
use super::fair_queue::Source;
use super::partition::{Partition, PartitionConfig, PartitionStats};
use crate::io_backend::Disk;
use crate::{KvsError, Result};

/// Which partition a key belongs to: crc32c of the key modulo the partition count. Stable
/// across versions (it decides where data lives on disk).
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    partition_of_hash(crc32c::crc32c(key), partitions)
}

/// [`partition_of`] for a key whose crc32c is `hash`.
pub fn partition_of_hash(hash: u32, partitions: u32) -> u32 {
    hash % partitions
}

/// What [`Shard::serve_gets`] sets aside for each value it packs, before it knows their
/// lengths: a 100-byte value's.
const PACKED_VALUE_GUESS_BYTES: usize = 128;

/// One engine operation.
#[derive(Debug)]
pub enum Op {
    Get(Bytes),
    Set(Bytes, Bytes),
    Remove(Bytes),
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get(k) | Op::Set(k, _) | Op::Remove(k) => k,
        }
    }

    pub fn into_key(self) -> Bytes {
        match self {
            Op::Get(k) | Op::Set(k, _) | Op::Remove(k) => k,
        }
    }
}

/// The result of an [`Op`]: the value for a get, `None` otherwise.
pub type OpResult = Result<Option<Bytes>>;

/// An operation sent to the shard that owns its partition, answered on its own channel.
pub struct Routed {
    pub partition: u32,
    /// Who asked: writes of one source keep their order, sources take turns at the writer.
    pub source: Source,
    pub op: Op,
    /// Where the result goes.
    pub reply: oneshot::Sender<OpResult>,
}

/// Gets sent to a shard together and answered together, in one message each way. Their keys
/// travel end to end in one buffer, and the small values of the answers share one buffer
/// back: a batch costs a few allocations, not one per key and one per value, each freed by
/// the other thread.
pub struct BatchGets {
    /// The keys, end to end.
    pub keys: Vec<u8>,
    /// Each get's partition and where its key ends in `keys` (it starts where the one before
    /// ends).
    pub gets: Vec<(u32, u32)>,
    /// Where the answers go, in the gets' order, once every one is known.
    pub answers: oneshot::Sender<Vec<OpResult>>,
}

impl BatchGets {
    /// The key of get `i`.
    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.gets[i - 1].1 };
        &self.keys[start as usize..self.gets[i].1 as usize]
    }
}

/// Operations sent to a shard in one message.
pub struct Batch {
    pub ops: Vec<Routed>,
    pub gets: Option<BatchGets>,
}

impl Batch {
    /// One operation, answered on its own channel.
    pub fn one(partition: u32, source: Source, op: Op) -> (Batch, oneshot::Receiver<OpResult>) {
        let (tx, rx) = oneshot::channel();
        let routed = Routed {
            partition,
            source,
            op,
            reply: tx,
        };
        let batch = Batch {
            ops: vec![routed],
            gets: None,
        };
        (batch, rx)
    }
}

/// What other threads send a shard.
pub enum ShardMsg {
    Ops(Batch),
    Stats(oneshot::Sender<Vec<PartitionStats>>),
    Compact(oneshot::Sender<Result<()>>),
    /// Close every partition (queued writes are finished and synced), then answer.
    Close(oneshot::Sender<()>),
}

/// The partitions of one thread. Clones share them: each operation's task holds one.
pub struct Shard<D: Disk> {
    partitions: Rc<BTreeMap<u32, Partition<D>>>,
}

impl<D: Disk> Clone for Shard<D> {
    fn clone(&self) -> Self {
        Shard {
            partitions: self.partitions.clone(),
        }
    }
}

impl<D: Disk> Shard<D> {
    /// Opens the given partitions on the current thread, one after another.
    pub async fn open(disk: &D, configs: Vec<PartitionConfig>) -> Result<Shard<D>> {
        let mut partitions = BTreeMap::new();
        for cfg in configs {
            let id = cfg.id;
            partitions.insert(id, Partition::open(disk.clone(), cfg).await?);
        }
        Ok(Shard {
            partitions: Rc::new(partitions),
        })
    }

    pub fn owns(&self, partition: u32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Reads `key` from a partition this shard owns.
    pub async fn get(&self, partition: u32, key: Bytes) -> OpResult {
        self.partition(partition)?.get(&key).await
    }

    /// Queues a put (`Some(value)`) or delete (`None`) of `source` on a partition this shard
    /// owns and returns the channel its result arrives on.
    pub fn submit(
        &self,
        partition: u32,
        source: Source,
        key: Bytes,
        value: Option<Bytes>,
    ) -> Result<oneshot::Receiver<OpResult>> {
        self.partition(partition)?.submit(source, key, value)
    }

    fn partition(&self, partition: u32) -> Result<&Partition<D>> {
        self.partitions.get(&partition).ok_or_else(|| {
            KvsError::Config(format!("partition {partition} is not owned by this thread"))
        })
    }

    /// The length of `key`'s record in `partition`, if it is live there.
    pub fn record_len(&self, partition: u32, key: &[u8]) -> Option<usize> {
        self.partitions.get(&partition)?.record_len(key)
    }

    /// A get answered without I/O, when the partition can (see [`Partition::get_cached`]).
    pub fn get_cached(&self, partition: u32, key: &[u8]) -> Option<Option<Bytes>> {
        self.partitions.get(&partition)?.get_cached(key)
    }

    /// Starts loading what a [`Shard::get_cached`] of `key` will read.
    pub fn prefetch_cached(&self, partition: u32, key: &[u8], stage: Prefetch) {
        if let Some(p) = self.partitions.get(&partition) {
            p.prefetch_cached(key, stage);
        }
    }

    pub fn stats(&self) -> Vec<PartitionStats> {
        self.partitions.values().map(Partition::stats).collect()
    }

    pub async fn compact(&self) -> Result<()> {
        for p in self.partitions.values() {
            p.compact().await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        for p in self.partitions.values() {
            p.close().await;
        }
    }

    /// Serves another worker's batch. A get the partition can answer without I/O is answered
    /// at once, a write is queued at once, and a read from disk runs as its own local task so a
    /// slow read does not hold up the others.
    fn serve_batch(&self, Batch { ops, gets }: Batch) {
        for Routed {
            partition,
            source,
            op,
            reply,
        } in ops
        {
            let p = match self.partition(partition) {
                Ok(p) => p,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
            };
            match op {
                Op::Get(key) => match p.get_cached(&key) {
                    Some(found) => {
                        let _ = reply.send(Ok(found));
                    }
                    None => {
                        let p = p.clone();
                        tokio::task::spawn_local(async move {
                            let _ = reply.send(p.get(&key).await);
                        });
                    }
                },
                // Queued here, in arrival order: no task between a write and its place in the
                // writer's queue.
                Op::Set(key, value) => p.enqueue(source, key, Some(value), reply),
                Op::Remove(key) => p.enqueue(source, key, None, reply),
            }
        }
        if let Some(gets) = gets {
            self.serve_gets(gets);
        }
    }

    /// Answers a batch of gets in one message, once its reads from disk (if any) are done.
    /// The small cached values are copied end to end into one buffer, which the answers share.
    fn serve_gets(&self, batch: BatchGets) {
        let n = batch.gets.len();
        // Its cached gets overlap their cache misses, as a pipeline's do on the worker that
        // read it.
        if n > 1 {
            for stage in [Prefetch::Bucket, Prefetch::Block] {
                for (i, &(partition, _)) in batch.gets.iter().enumerate() {
                    self.prefetch_cached(partition, batch.key(i), stage);
                }
            }
        }
        let mut answered: Vec<OpResult> = Vec::with_capacity(n);
        let mut values = Vec::with_capacity(n * PACKED_VALUE_GUESS_BYTES);
        // The answers whose value is in `values`, and where.
        let mut packed: Vec<(usize, Range<usize>)> = Vec::new();
        // The gets that must read the disk: their place in `answered`.
        let mut reads: Vec<(usize, Partition<D>, Bytes)> = Vec::new();
        for (i, &(partition, _)) in batch.gets.iter().enumerate() {
            let key = batch.key(i);
            let p = match self.partition(partition) {
                Ok(p) => p,
                Err(e) => {
                    answered.push(Err(e));
                    continue;
                }
            };
            match p.get_cached_packed(key, &mut values) {
                Some(Some(Packed::Shared(v))) => answered.push(Ok(Some(v))),
                Some(Some(Packed::At(range))) => {
                    packed.push((answered.len(), range));
                    answered.push(Ok(None));
                }
                Some(None) => answered.push(Ok(None)),
                None => {
                    reads.push((answered.len(), p.clone(), Bytes::copy_from_slice(key)));
                    answered.push(Ok(None));
                }
            }
        }
        if !packed.is_empty() {
            let values = Bytes::from(values);
            for (at, range) in packed {
                answered[at] = Ok(Some(values.slice(range)));
            }
        }
        let tx = batch.answers;
        if reads.is_empty() {
            let _ = tx.send(answered);
            return;
        }
        tokio::task::spawn_local(async move {
            let got = join_all(reads.iter().map(|(_, p, key)| p.get(key))).await;
            for ((at, ..), result) in reads.iter().zip(got) {
                answered[*at] = result;
            }
            let _ = tx.send(answered);
        });
    }

    /// Serves messages from other threads until the inbox closes or a `Close` arrives.
    pub async fn serve(&self, mut inbox: mpsc::UnboundedReceiver<ShardMsg>) {
        while let Some(msg) = inbox.recv().await {
            match msg {
                ShardMsg::Ops(batch) => self.serve_batch(batch),
                ShardMsg::Stats(reply) => {
                    let _ = reply.send(self.stats());
                }
                ShardMsg::Compact(reply) => {
                    let _ = reply.send(self.compact().await);
                }
                ShardMsg::Close(reply) => {
                    self.close().await;
                    let _ = reply.send(());
                    return;
                }
            }
        }
        self.close().await;
    }
}
