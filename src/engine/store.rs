//! [`KvStore`]: kvs's engine as a library. A cheap, `Send + Sync` handle to partitions that
//! live on a dedicated owner thread (a tokio-uring runtime, or a tokio current-thread runtime
//! with the blocking file pool), so it works from any async program.
//!
//! Directory layout: `kvs.meta` (engine and partition count), `LOCK` (held while open, so a
//! second process is refused), and `pNNNN/` per partition with its segments and hints.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::cache::ReadMirror;
use super::durability::FsyncPolicy;
use super::fair_queue::EMBEDDED;
use super::key_filter::KeyFilter;
use super::meta::{self, EngineKind, StoreMeta};
use super::partition::{PartitionConfig, PartitionStats};
use super::shard::{partition_of, Batch, Op, OpResult, Shard, ShardMsg};
use super::KvsEngine;
use crate::io_backend::{
    self, BackendChoice, BlockingDisk, Disk, IoBackendKind, IoChoice, UringDisk,
};
use crate::{KvsError, Result};

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Partitions for a new directory (an existing one keeps its own count).
    pub partitions: u32,
    pub fsync: FsyncPolicy,
    /// The I/O backend; defaults to `KVS_IO` (or `auto`).
    pub io: Option<IoChoice>,
    pub segment_bytes: u64,
    /// Zero-fill each next segment ahead of time. Honoured under `FsyncPolicy::Always` only,
    /// where it makes every batch's fdatasync faster; under the other policies it would only
    /// write each segment twice, and is ignored.
    pub preallocate: bool,
    /// Bytes of values cached in memory, shared out among the partitions (default 1 GiB; 0
    /// caches nothing). Writes and reads fill it up to this bound; a get of a cached key is
    /// answered without I/O.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            partitions: 1,
            fsync: FsyncPolicy::Always,
            io: None,
            segment_bytes: crate::limits::SEGMENT_BYTES_DEFAULT,
            preallocate: true,
            cache_bytes: crate::limits::CACHE_BYTES_DEFAULT,
        }
    }
}

impl StoreOptions {
    /// The configuration of partition `id` of the store in `dir` (one of `partitions`).
    pub fn partition_config(&self, dir: &Path, id: u32, partitions: u32) -> PartitionConfig {
        let mut c = PartitionConfig::new(id, partition_dir(dir, id));
        c.segment_bytes = self.segment_bytes;
        // Compaction waits for at least a segment's worth of garbage.
        c.compaction_min_dead_bytes = self.segment_bytes;
        c.fsync = self.fsync;
        // Zero-filling pays where every batch is fdatasynced; elsewhere it only writes each
        // segment twice (see BENCHMARKS.md).
        c.preallocate = self.preallocate && self.fsync == FsyncPolicy::Always;
        c.cache_bytes = self.cache_bytes / partitions.max(1) as usize;
        c
    }
}

pub fn partition_dir(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("p{id:04}"))
}

/// Takes the directory's lock file; a second process gets [`KvsError::Locked`].
pub fn lock_dir(dir: &Path) -> Result<File> {
    // The first touch of the directory: an error here (a read-only filesystem, no
    // permission) names the path, since nothing else in the message would.
    let with_path = |what: &str, path: &Path, e: std::io::Error| {
        KvsError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot {what} {}: {e}", path.display()),
        ))
    };
    meta::create_dir_durable(dir).map_err(|e| with_path("create the data directory", dir, e))?;
    let lock = dir.join("LOCK");
    let f = meta::owner_only()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| with_path("open the lock file", &lock, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(KvsError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Decides the I/O backend from an explicit choice or `KVS_IO`.
pub fn choose_backend(io: Option<IoChoice>) -> Result<BackendChoice> {
    let choice = match io {
        Some(c) => c,
        None => IoChoice::from_env().map_err(KvsError::Config)?,
    };
    Ok(io_backend::choose(choice)?)
}

struct Shared {
    inbox: mpsc::UnboundedSender<ShardMsg>,
    /// The partitions' cached entries: a get of a cached key is answered from here, on the
    /// calling thread, without the hop to the owner thread.
    mirror: Arc<ReadMirror>,
    /// Each partition's filter of live keys: a get of a key its partition's filter has never
    /// seen is answered "absent" on the calling thread.
    filters: Vec<Arc<KeyFilter>>,
    partitions: u32,
    backend: BackendChoice,
    thread: Mutex<Option<JoinHandle<()>>>,
    _lock: File,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.inbox.send(ShardMsg::Close(tx));
        if let Some(t) = self.thread.lock().expect("store thread lock").take() {
            let _ = t.join();
        }
    }
}

/// kvs's own engine. Clones share one store; the last one dropped closes it (queued writes
/// finished and synced).
#[derive(Clone)]
pub struct KvStore {
    shared: Arc<Shared>,
}

impl KvStore {
    /// Opens (or creates) the store in `dir` with default options.
    pub fn open(dir: impl Into<PathBuf>) -> Result<KvStore> {
        KvStore::open_with(dir, StoreOptions::default())
    }

    pub fn open_with(dir: impl Into<PathBuf>, opts: StoreOptions) -> Result<KvStore> {
        let dir = dir.into();
        let lock = lock_dir(&dir)?;
        let meta = StoreMeta::load_or_create(
            &dir,
            StoreMeta {
                engine: EngineKind::Kvs,
                partitions: opts.partitions,
            },
        )?;
        let backend = choose_backend(opts.io)?;
        tracing::info!(backend = %backend.kind, reason = %backend.reason, "kvs store I/O backend");
        let mirror = Arc::new(ReadMirror::default());
        let filters: Vec<Arc<KeyFilter>> = (0..meta.partitions)
            .map(|_| Arc::new(KeyFilter::default()))
            .collect();
        let configs: Vec<_> = (0..meta.partitions)
            .map(|id| {
                let mut c = opts.partition_config(&dir, id, meta.partitions);
                c.read_mirror = Some(mirror.clone());
                c.key_filter = Some(filters[id as usize].clone());
                c
            })
            .collect();
        let (inbox, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let kind = backend.kind;
        let thread = std::thread::Builder::new()
            .name("kvs-store".into())
            .spawn(move || run_owner(kind, configs, rx, ready_tx))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(KvsError::Closed);
            }
        }
        Ok(KvStore {
            shared: Arc::new(Shared {
                inbox,
                mirror,
                filters,
                partitions: meta.partitions,
                backend,
                thread: Mutex::new(Some(thread)),
                _lock: lock,
            }),
        })
    }

    /// The I/O backend in force and why it was chosen.
    pub fn backend(&self) -> &BackendChoice {
        &self.shared.backend
    }

    pub async fn stats(&self) -> Result<Vec<PartitionStats>> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .inbox
            .send(ShardMsg::Stats(tx))
            .map_err(|_| KvsError::Closed)?;
        rx.await.map_err(|_| KvsError::Closed)
    }

    /// Compacts every partition now.
    pub async fn compact(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .inbox
            .send(ShardMsg::Compact(tx))
            .map_err(|_| KvsError::Closed)?;
        rx.await.map_err(|_| KvsError::Closed)?
    }

    fn partition_of(&self, key: &[u8]) -> u32 {
        partition_of(key, self.shared.partitions)
    }

    /// Runs `op` on the owner thread; `partition` is its key's.
    async fn call(&self, partition: u32, op: Op) -> OpResult {
        let (batch, rx) = Batch::one(partition, EMBEDDED, op);
        self.shared
            .inbox
            .send(ShardMsg::Ops(batch))
            .map_err(|_| KvsError::Closed)?;
        rx.await.map_err(|_| KvsError::Closed)?
    }

    /// [`KvsEngine::get`] for UTF-8 strings.
    pub async fn get_string(&self, key: impl Into<String>) -> Result<Option<String>> {
        let v = self.get(Bytes::from(key.into())).await?;
        v.map(|b| {
            String::from_utf8(b.to_vec())
                .map_err(|_| KvsError::Protocol("value is not UTF-8".into()))
        })
        .transpose()
    }

    /// [`KvsEngine::set`] for strings.
    pub async fn set_string(&self, key: impl Into<String>, value: impl Into<String>) -> Result<()> {
        self.set(Bytes::from(key.into()), Bytes::from(value.into()))
            .await
    }

    /// [`KvsEngine::remove`] for strings.
    pub async fn remove_string(&self, key: impl Into<String>) -> Result<()> {
        self.remove(Bytes::from(key.into())).await
    }
}

impl KvsEngine for KvStore {
    async fn set(&self, key: Bytes, value: Bytes) -> Result<()> {
        self.call(self.partition_of(&key), Op::Set(key, value))
            .await
            .map(|_| ())
    }
    async fn get(&self, key: Bytes) -> Result<Option<Bytes>> {
        if let Some(v) = self.shared.mirror.get(&key) {
            return Ok(Some(v));
        }
        let partition = self.partition_of(&key);
        if !self.shared.filters[partition as usize].may_contain(&key) {
            return Ok(None);
        }
        self.call(partition, Op::Get(key)).await
    }
    async fn remove(&self, key: Bytes) -> Result<()> {
        self.call(self.partition_of(&key), Op::Remove(key))
            .await
            .map(|_| ())
    }
}

/// The owner thread: a runtime of the chosen kind, the partitions, and the inbox loop.
fn run_owner(
    kind: IoBackendKind,
    configs: Vec<PartitionConfig>,
    rx: mpsc::UnboundedReceiver<ShardMsg>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) {
    match kind {
        IoBackendKind::Uring => match io_backend::uring::runtime() {
            Ok(rt) => rt.block_on(serve_owner(UringDisk, configs, rx, ready)),
            Err(e) => {
                let _ = ready.send(Err(e.into()));
            }
        },
        IoBackendKind::Blocking => {
            let built = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let (rt, disk) = match (built, BlockingDisk::new()) {
                (Ok(rt), Ok(disk)) => (rt, disk),
                (Err(e), _) => {
                    let _ = ready.send(Err(e.into()));
                    return;
                }
                (_, Err(e)) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            tokio::task::LocalSet::new()
                .block_on(&rt, serve_owner(disk.clone(), configs, rx, ready));
            disk.shutdown();
        }
    }
}

async fn serve_owner<D: Disk>(
    disk: D,
    configs: Vec<PartitionConfig>,
    rx: mpsc::UnboundedReceiver<ShardMsg>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) {
    match Shard::open(&disk, configs).await {
        Ok(shard) => {
            let _ = ready.send(Ok(()));
            shard.serve(rx).await;
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}
