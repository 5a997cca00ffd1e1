//! `kvs-server`: parses flags, installs logging, and runs [`kvs::server`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kvs::engine::meta::EngineKind;
use kvs::engine::FsyncPolicy;
use kvs::io_backend::IoChoice;
use kvs::server::{self, ServerConfig};

/// A persistent key/value store server: thread-per-core, io_uring, segmented log.
#[derive(Parser, Debug)]
#[command(name = "kvs-server", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4000")]
    addr: SocketAddr,
    /// Storage engine; default: the one already in the directory, else kvs.
    #[arg(long, value_parser = ["kvs", "sled"])]
    engine: Option<String>,
    /// Data directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Worker threads (one per core); default: all CPUs.
    #[arg(long)]
    cores: Option<usize>,
    /// I/O backend: auto (io_uring where the kernel allows it), uring, or blocking (epoll + file thread pool).
    #[arg(long, default_value = "auto")]
    io: IoChoice,
    /// When to fsync: always (before acknowledging), never, or an interval such as 10ms.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// Partitions for a new data directory (fixed once created).
    #[arg(long)]
    partitions: Option<u32>,
    /// Segment size in bytes.
    #[arg(long, default_value_t = kvs::limits::SEGMENT_BYTES_DEFAULT)]
    segment_bytes: u64,
    /// Connection cap; past it clients get an error and are closed.
    #[arg(long, default_value_t = kvs::limits::CONNECTIONS_MAX)]
    max_connections: usize,
    /// Close a connection that sends no request for this many milliseconds.
    #[arg(long, default_value_t = kvs::limits::IDLE_TIMEOUT_MS)]
    idle_timeout_ms: u64,
    /// Do not pin worker threads to CPUs.
    #[arg(long)]
    no_pin: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = ServerConfig::new(args.addr, args.dir);
    config.engine = args
        .engine
        .map(|e| e.parse::<EngineKind>().expect("clap checked the value"));
    if let Some(c) = args.cores {
        config.cores = c;
    }
    config.pin = !args.no_pin;
    config.io = args.io;
    config.fsync = args.fsync;
    config.partitions = args.partitions;
    config.segment_bytes = args.segment_bytes;
    config.max_connections = args.max_connections;
    config.idle_timeout = Duration::from_millis(args.idle_timeout_ms);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        addr = %config.addr,
        dir = %config.dir.display(),
        cores = config.cores,
        fsync = %config.fsync,
        "kvs-server starting"
    );
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kvs-server: {e}");
            ExitCode::FAILURE
        }
    }
}
