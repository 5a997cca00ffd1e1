//! The thread-per-core server behind `kvs-server`.
//!
//! Start-up: refuse a non-loopback address without a password, lock the data directory, read or record its engine and partition count, choose
//! the I/O backend once, bind one SO_REUSEPORT listener per worker (refusing a port already in
//! use), then start N pinned workers. Each owns the partitions `p` with `p % N == its index`.
//! Shutdown (SIGINT/SIGTERM or [`RunningServer::shutdown`]): workers stop accepting and
//! reading, answer what is in flight, then close their partitions (queued writes finished and
//! fsynced), within `SHUTDOWN_GRACE_MS`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

pub mod auth;
pub mod net;
pub mod own_writes;
pub mod resp;
pub mod router;
pub mod session;
pub mod worker;

use crate::auth::Password;
use crate::engine::meta::{EngineKind, StoreMeta};
use crate::engine::{FsyncPolicy, SledKvsEngine, StoreOptions};
use crate::io_backend::{BackendChoice, IoBackendKind, IoChoice};
use crate::limits::{
    AUTH_FAIL_DELAY_MS, CONNECTIONS_MAX, FRAME_TIMEOUT_MS, IDLE_TIMEOUT_MS, PARTITIONS_MAX,
    SHUTDOWN_GRACE_MS,
};
use crate::{KvsError, Result};
use auth::AuthConfig;
use session::SessionLimits;
use worker::{EngineSetup, Phase, WorkerSetup};

/// How to run a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// `None`: the engine already on disk, else kvs.
    pub engine: Option<EngineKind>,
    pub dir: PathBuf,
    /// Worker threads.
    pub cores: usize,
    pub pin: bool,
    pub io: IoChoice,
    pub fsync: FsyncPolicy,
    /// Partitions for a new directory (default: one per worker, see [`default_partitions`]).
    pub partitions: Option<u32>,
    pub segment_bytes: u64,
    /// Bytes of values cached in memory, all partitions together.
    pub cache_bytes: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub frame_timeout: Duration,
    /// The password clients must give (RESP `AUTH`, native `Auth`); required to listen on
    /// an address that is not loopback.
    pub password: Option<Password>,
    /// The delay of the answer to a connection's first failed password attempt (see
    /// [`auth`]).
    pub auth_fail_delay: Duration,
}

impl ServerConfig {
    pub fn new(addr: SocketAddr, dir: PathBuf) -> ServerConfig {
        ServerConfig {
            addr,
            engine: None,
            dir,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin: true,
            io: IoChoice::Auto,
            fsync: FsyncPolicy::Always,
            partitions: None,
            segment_bytes: crate::limits::SEGMENT_BYTES_DEFAULT,
            cache_bytes: crate::limits::CACHE_BYTES_DEFAULT,
            max_connections: CONNECTIONS_MAX,
            idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS),
            frame_timeout: Duration::from_millis(FRAME_TIMEOUT_MS),
            password: None,
            auth_fail_delay: Duration::from_millis(AUTH_FAIL_DELAY_MS),
        }
    }
}

/// What a running server tells clients about itself (RESP's `INFO`, `HELLO` and
/// `CONFIG GET`). Settled at start-up, once the port, backend and partitions are known.
#[derive(Clone, Copy, Debug)]
pub struct ServerFacts {
    /// The port actually bound (never 0).
    pub port: u16,
    pub io_backend: IoBackendKind,
    pub engine: EngineKind,
    pub fsync: FsyncPolicy,
    pub workers: usize,
    pub partitions: u32,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// When the server started, for uptime.
    pub started: Instant,
}

/// Partitions a new directory gets: one per worker.
///
/// Each partition is a log with its own commit cycle (write a batch, fdatasync, acknowledge).
/// A worker that owns several partitions runs several cycles out of phase: its batches are
/// smaller, its fdatasyncs overlap, and a pipelining client is answered in several waves. Under
/// `--fsync always` one partition per worker gave 1.25 times the SETs per second of four, at
/// 0.7 times the CPU per SET (BENCHMARKS.md). A restart with more workers than partitions works:
/// the workers without one accept connections and hand every operation to an owner.
pub fn default_partitions(cores: usize) -> u32 {
    (cores.max(1) as u32).min(PARTITIONS_MAX)
}

/// A started server.
pub struct RunningServer {
    addr: SocketAddr,
    engine: EngineKind,
    backend: BackendChoice,
    partitions: u32,
    phase: watch::Sender<Phase>,
    drained: std::sync::mpsc::Receiver<usize>,
    threads: Vec<JoinHandle<()>>,
    _lock: std::fs::File,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn engine(&self) -> EngineKind {
        self.engine
    }
    pub fn backend(&self) -> &BackendChoice {
        &self.backend
    }
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Graceful shutdown: stop accepting, answer what is in flight, close the partitions.
    /// Returns once every worker has exited, or after the grace period.
    pub fn shutdown(self) {
        let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_GRACE_MS);
        let _ = self.phase.send(Phase::Drain);
        let mut drained = 0;
        while drained < self.threads.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.drained.recv_timeout(left) {
                Ok(_) => drained += 1,
                Err(_) => {
                    tracing::warn!(
                        "{} worker(s) still had sessions at the shutdown deadline",
                        self.threads.len() - drained
                    );
                    break;
                }
            }
        }
        let _ = self.phase.send(Phase::Close);
        for t in self.threads {
            // Closing partitions finishes queued writes; it is bounded by the disk, not by
            // clients, so it is waited for.
            let _ = t.join();
        }
        tracing::info!("shut down");
    }
}

/// Starts a server and returns once every worker has opened its partitions and listens.
pub fn start(config: ServerConfig) -> Result<RunningServer> {
    auth::check_listen_address(config.addr, config.password.is_some()).map_err(KvsError::Config)?;
    if config.cores == 0 {
        return Err(KvsError::Config("--cores must be at least 1".into()));
    }
    if config.auth_fail_delay.is_zero() {
        return Err(KvsError::Config(
            "--auth-fail-delay-ms must be at least 1: failed password attempts are always slowed"
                .into(),
        ));
    }
    let lock = crate::engine::lock_dir(&config.dir)?;
    let on_disk = StoreMeta::load(&config.dir)?;
    let meta = match (on_disk, config.engine) {
        (Some(m), Some(e)) if m.engine != e => {
            return Err(KvsError::WrongEngine {
                on_disk: m.engine.name().into(),
                requested: e.name().into(),
            })
        }
        (Some(m), _) => m,
        (None, engine) => {
            let m = StoreMeta {
                engine: engine.unwrap_or(EngineKind::Kvs),
                partitions: config
                    .partitions
                    .unwrap_or_else(|| default_partitions(config.cores)),
            };
            if m.partitions == 0 || m.partitions > PARTITIONS_MAX {
                return Err(KvsError::Config(format!(
                    "partitions must be 1 to {PARTITIONS_MAX}"
                )));
            }
            m.store(&config.dir)?;
            m
        }
    };
    if meta.engine == EngineKind::Kvs && (meta.partitions as usize) < config.cores {
        tracing::warn!(
            "more workers ({}) than partitions ({}): a worker without a partition accepts \
             connections and hands every operation to an owner (a directory's partition count \
             is fixed when it is created: --partitions)",
            config.cores,
            meta.partitions
        );
    }
    let backend = crate::io_backend::choose(config.io)?;
    let listeners = net::bind_shards(config.addr, config.cores)?;
    let addr = listeners[0].local_addr()?;

    let workers = config.cores;
    let owner_of: Arc<[usize]> = (0..meta.partitions).map(|p| p as usize % workers).collect();
    let sled = match meta.engine {
        EngineKind::Sled => Some(SledKvsEngine::open(config.dir.join("sled"))?),
        EngineKind::Kvs => None,
    };
    let opts = StoreOptions {
        partitions: meta.partitions,
        fsync: config.fsync,
        io: Some(config.io),
        segment_bytes: config.segment_bytes,
        preallocate: true,
        cache_bytes: config.cache_bytes,
    };
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
    let inboxes: Arc<[_]> = Arc::from(senders);
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (drained_tx, drained_rx) = std::sync::mpsc::channel();
    let connections = Arc::new(AtomicUsize::new(0));
    let cores = if config.pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let limits = SessionLimits {
        idle_timeout: config.idle_timeout,
        frame_timeout: config.frame_timeout,
        auth: AuthConfig {
            password: config.password.clone().map(Arc::new),
            fail_delay: config.auth_fail_delay,
        },
    };
    let facts = ServerFacts {
        port: addr.port(),
        io_backend: backend.kind,
        engine: meta.engine,
        fsync: config.fsync,
        workers,
        partitions: meta.partitions,
        max_connections: config.max_connections,
        idle_timeout: config.idle_timeout,
        started: Instant::now(),
    };
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let mut threads = Vec::with_capacity(workers);
    for (index, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
        let engine = match &sled {
            Some(db) => EngineSetup::Sled(db.clone()),
            None => EngineSetup::Kvs {
                partitions: (0..meta.partitions)
                    .filter(|p| owner_of[*p as usize] == index)
                    .map(|p| opts.partition_config(&config.dir, p, meta.partitions))
                    .collect(),
                owner_of: owner_of.clone(),
            },
        };
        let setup = WorkerSetup {
            index,
            core: (!cores.is_empty()).then(|| cores[index % cores.len()]),
            backend: backend.kind,
            listener,
            engine,
            inbox,
            inboxes: inboxes.clone(),
            phase: phase_rx.clone(),
            connections: connections.clone(),
            max_connections: config.max_connections,
            limits: limits.clone(),
            facts,
            ready: ready_tx.clone(),
            drained: drained_tx.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("kvs-worker-{index}"))
                .spawn(move || worker::run(setup))?,
        );
    }
    drop(ready_tx);
    let server = RunningServer {
        addr,
        engine: meta.engine,
        backend,
        partitions: meta.partitions,
        phase: phase_tx,
        drained: drained_rx,
        threads,
        _lock: lock,
    };
    let mut first_error = None;
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((i, Err(e))) => {
                tracing::error!(worker = i, "worker failed to start: {e}");
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(KvsError::Closed);
                break;
            }
        }
    }
    if let Some(e) = first_error {
        server.shutdown();
        return Err(e);
    }
    Ok(server)
}

/// Runs a server until SIGINT or SIGTERM, then shuts it down gracefully.
pub fn run(config: ServerConfig) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The handlers are in place before the workers listen: a SIGTERM that follows the first
    // answered request must shut the server down gracefully, not kill it.
    let (mut term, mut int) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    let server = start(config)?;
    tracing::info!(
        addr = %server.local_addr(),
        engine = server.engine().name(),
        partitions = server.partitions(),
        io_backend = %server.backend().kind,
        io_reason = %server.backend().reason,
        "listening on {}",
        server.local_addr()
    );
    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    });
    server.shutdown();
    Ok(())
}
