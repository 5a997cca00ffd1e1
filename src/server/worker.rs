//! A worker: one pinned thread running its own runtime (tokio-uring, or tokio on epoll for the
//! fallback), its listener shard, the sessions it accepted, and the partitions it owns.
//!
//! Invariant: a connection stays on the worker that accepted it; a partition is touched only
//! by its owner (other workers send it operations through its inbox).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};

use super::net::{EpollListener, NetListener, NetStream, UringListener};
use super::router::{KvsRouter, SledStore, Store};
use super::session::{self, Conn, SessionLimits};
use super::ServerFacts;
use crate::engine::shard::{Shard, ShardMsg};
use crate::engine::{PartitionConfig, SledKvsEngine, Source};
use crate::io_backend::{self, BlockingDisk, Disk, IoBackendKind, UringDisk};
use crate::protocol::{encode_server_hello, is_native_magic_start, HelloStatus};
use crate::Result;

/// Where the server is in its life; workers watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// Stop accepting, stop reading, answer what is in flight.
    Drain,
    /// Close the partitions (flush and fsync) and exit.
    Close,
}

/// What a worker's engine is.
pub enum EngineSetup {
    Kvs {
        partitions: Vec<PartitionConfig>,
        owner_of: Arc<[usize]>,
    },
    Sled(SledKvsEngine),
}

/// Everything a worker thread starts from.
pub struct WorkerSetup {
    pub index: usize,
    pub core: Option<core_affinity::CoreId>,
    pub backend: IoBackendKind,
    pub listener: std::net::TcpListener,
    pub engine: EngineSetup,
    pub inbox: mpsc::UnboundedReceiver<ShardMsg>,
    pub inboxes: Arc<[mpsc::UnboundedSender<ShardMsg>]>,
    pub phase: watch::Receiver<Phase>,
    pub connections: Arc<AtomicUsize>,
    pub max_connections: usize,
    pub limits: SessionLimits,
    pub facts: ServerFacts,
    /// Reports start-up (partitions opened) to the main thread.
    pub ready: std::sync::mpsc::Sender<(usize, Result<()>)>,
    /// Reports that every session has finished after `Drain`.
    pub drained: std::sync::mpsc::Sender<usize>,
}

/// The worker thread's body.
pub fn run(setup: WorkerSetup) {
    if let Some(core) = setup.core {
        if !core_affinity::set_for_current(core) {
            tracing::warn!(worker = setup.index, "could not pin to CPU {}", core.id);
        }
    }
    let index = setup.index;
    let ready = setup.ready.clone();
    let drained = setup.drained.clone();
    let result: Result<()> = match setup.backend {
        IoBackendKind::Uring => (|| {
            let rt = io_backend::uring::runtime()?;
            let listener = UringListener::new(setup.listener.try_clone()?)?;
            rt.block_on(worker_main(UringDisk, listener, setup));
            Ok(())
        })(),
        IoBackendKind::Blocking => (|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let disk = BlockingDisk::new()?;
            let local = tokio::task::LocalSet::new();
            let std_listener = setup.listener.try_clone()?;
            local.block_on(&rt, async {
                match EpollListener::new(std_listener) {
                    Ok(l) => worker_main(disk.clone(), l, setup).await,
                    Err(e) => {
                        let _ = setup.ready.send((setup.index, Err(e.into())));
                        let _ = setup.drained.send(setup.index);
                    }
                }
            });
            disk.shutdown();
            Ok(())
        })(),
    };
    if let Err(e) = result {
        let _ = ready.send((index, Err(e)));
        // A worker that never served has nothing to drain; without this the shutdown that
        // follows a failed start would wait its whole grace period for this worker.
        let _ = drained.send(index);
    }
}

async fn worker_main<D: Disk, L: NetListener>(disk: D, listener: L, mut setup: WorkerSetup) {
    let engine = std::mem::replace(
        &mut setup.engine,
        EngineSetup::Kvs {
            partitions: Vec::new(),
            owner_of: Arc::from(Vec::new()),
        },
    );
    match engine {
        EngineSetup::Kvs {
            partitions,
            owner_of,
        } => {
            let shard = match Shard::open(&disk, partitions).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = setup.ready.send((setup.index, Err(e)));
                    let _ = setup.drained.send(setup.index);
                    return;
                }
            };
            let inbox = std::mem::replace(&mut setup.inbox, mpsc::unbounded_channel().1);
            let serving = shard.clone();
            tokio::task::spawn_local(async move { serving.serve(inbox).await });
            let router = KvsRouter::new(
                setup.index,
                shard.clone(),
                Rc::from(owner_of.to_vec()),
                Rc::from(setup.inboxes.to_vec()),
                setup.backend.name(),
            );
            let _ = setup.ready.send((setup.index, Ok(())));
            run_sessions(listener, router, &mut setup).await;
            shard.close().await;
        }
        EngineSetup::Sled(db) => {
            let _ = setup.ready.send((setup.index, Ok(())));
            run_sessions(
                listener,
                SledStore {
                    db,
                    io_backend: setup.backend.name(),
                },
                &mut setup,
            )
            .await;
        }
    }
}

/// This worker's open connections, by id, so a shutdown can reach them.
type Sessions<N> = RefCell<HashMap<u64, Rc<Conn<N>>>>;

/// Accepts and serves connections until `Drain`, drains them, and waits for `Close`.
async fn run_sessions<L: NetListener, S: Store>(listener: L, store: S, setup: &mut WorkerSetup) {
    let listener = Rc::new(listener);
    let sessions: Rc<Sessions<L::Stream>> = Rc::default();
    let ended = Rc::new(Notify::new());
    let draining = Rc::new(Cell::new(false));
    let accepting = {
        let (listener, sessions, ended, draining) = (
            listener.clone(),
            sessions.clone(),
            ended.clone(),
            draining.clone(),
        );
        let connections = setup.connections.clone();
        let max = setup.max_connections;
        let limits = setup.limits.clone();
        let facts = setup.facts;
        let index = setup.index;
        tokio::task::spawn_local(async move {
            let mut next_id = 0u64;
            loop {
                let (stream, _peer) = match listener.accept().await {
                    Ok(s) => s,
                    Err(_) if draining.get() => return,
                    Err(e) => {
                        tracing::warn!(worker = index, "accept failed: {e}");
                        // Out of descriptors and the like: back off rather than spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if draining.get() {
                    stream.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                if connections.fetch_add(1, Ordering::AcqRel) >= max {
                    connections.fetch_sub(1, Ordering::AcqRel);
                    tokio::task::spawn_local(reject(stream));
                    continue;
                }
                let id = next_id;
                next_id += 1;
                let conn = Rc::new(Conn::new(stream));
                sessions.borrow_mut().insert(id, conn.clone());
                let (store, sessions, ended, connections, limits) = (
                    store.for_source(source_of(index, id)),
                    sessions.clone(),
                    ended.clone(),
                    connections.clone(),
                    limits.clone(),
                );
                tokio::task::spawn_local(async move {
                    session::serve_connection(conn, store, limits, facts).await;
                    sessions.borrow_mut().remove(&id);
                    connections.fetch_sub(1, Ordering::AcqRel);
                    ended.notify_one();
                });
            }
        })
    };

    wait_for(&mut setup.phase, Phase::Drain).await;
    draining.set(true);
    listener.stop();
    let _ = accepting.await;
    for conn in sessions.borrow().values() {
        conn.drain();
    }
    while !sessions.borrow().is_empty() {
        ended.notified().await;
    }
    let _ = setup.drained.send(setup.index);
    wait_for(&mut setup.phase, Phase::Close).await;
}

/// The writer-queue source of connection `id` of worker `worker`: distinct from every other
/// connection's and from [`crate::engine::EMBEDDED`].
fn source_of(worker: usize, id: u64) -> Source {
    ((worker as u64) << 48) | (id + 1)
}

async fn wait_for(phase: &mut watch::Receiver<Phase>, at_least: Phase) {
    while *phase.borrow_and_update() < at_least {
        if phase.changed().await.is_err() {
            return;
        }
    }
}

/// Answers a connection over the cap with a clear error in its own protocol, then closes it.
async fn reject<N: NetStream>(stream: N) {
    let stream = Rc::new(stream);
    let guard = stream.clone();
    // The client gets a second to send its first byte; the read is ended by a shutdown,
    // never dropped.
    let timer = tokio::task::spawn_local(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        guard.shutdown(std::net::Shutdown::Both);
    });
    let (res, buf) = stream.read(Vec::with_capacity(8)).await;
    let native = matches!(res, Ok(n) if n > 0) && is_native_magic_start(buf[0]);
    let mut reply = Vec::new();
    if native {
        encode_server_hello(HelloStatus::Busy, &mut reply);
    } else {
        reply.extend_from_slice(b"-ERR max number of clients reached\r\n");
    }
    let _ = stream.write_all(reply).await;
    stream.shutdown(std::net::Shutdown::Both);
    timer.abort();
}
