//! `kvs-server`: parses flags, installs logging, and runs [`kvs::server`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kvs::auth::{read_password_file, Password, PasswordParser};
use kvs::engine::meta::EngineKind;
use kvs::engine::FsyncPolicy;
use kvs::io_backend::IoChoice;
use kvs::server::{self, ServerConfig};

// glibc's allocator took about a fifth of a request's CPU time in profiles; mimalloc's
// thread-local free lists suit a thread-per-core server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A persistent key/value store server: thread-per-core, io_uring, segmented log.
// `Debug` shows a password as `Password(..)`.
#[derive(Parser, Debug)]
#[command(name = "kvs-server", version, about)]
struct Args {
    /// Address to listen on. An address that is not loopback needs a password
    /// (--requirepass-file).
    #[arg(long, default_value = "127.0.0.1:4000")]
    addr: SocketAddr,
    /// A file whose content (less one trailing newline) is the password clients must give
    /// (RESP AUTH, native Auth) before anything else is served. Keep it mode 0600.
    #[arg(long, value_name = "PATH", conflicts_with = "requirepass")]
    requirepass_file: Option<PathBuf>,
    /// The password clients must give, on the command line. Every user of this machine can
    /// read it in the process list: prefer --requirepass-file.
    #[arg(long, value_name = "PASSWORD", value_parser = PasswordParser)]
    requirepass: Option<Password>,
    /// Delay in milliseconds of the answer to a connection's first wrong password; each
    /// further failure doubles it, up to ten times this, and the tenth closes the connection.
    #[arg(long, default_value_t = kvs::limits::AUTH_FAIL_DELAY_MS)]
    auth_fail_delay_ms: u64,
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
    /// Bytes of values cached in memory for reads (all partitions together; 0 disables).
    #[arg(long, default_value_t = kvs::limits::CACHE_BYTES_DEFAULT)]
    cache_bytes: usize,
    /// Connection cap; past it clients get an error and are closed.
    #[arg(long, default_value_t = kvs::limits::CONNECTIONS_MAX)]
    max_connections: usize,
    /// Close a connection that sends no request for this many milliseconds.
    #[arg(long, default_value_t = kvs::limits::IDLE_TIMEOUT_MS)]
    idle_timeout_ms: u64,
    /// Close a connection whose request has started arriving but is not complete within this
    /// many milliseconds (slow senders hold memory and a connection slot).
    #[arg(long, default_value_t = kvs::limits::FRAME_TIMEOUT_MS)]
    frame_timeout_ms: u64,
    /// Do not pin worker threads to CPUs.
    #[arg(long)]
    no_pin: bool,
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let password = match (args.requirepass, &args.requirepass_file) {
        (Some(password), _) => {
            tracing::warn!(
                "--requirepass puts the password in the process list, where every user of this \
                 machine can read it; --requirepass-file keeps it out"
            );
            Some((password, "--requirepass".to_owned()))
        }
        (None, Some(path)) => match read_password_file(path) {
            Ok(file) => {
                if let Some(mode) = file.loose_mode {
                    tracing::warn!(
                        "the password file {} can be read by other users (mode {mode:04o}); \
                         chmod 600 it",
                        path.display()
                    );
                }
                Some((
                    file.password,
                    format!("--requirepass-file {}", path.display()),
                ))
            }
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("kvs-server: {e}");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => None,
    };
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
    config.cache_bytes = args.cache_bytes;
    config.max_connections = args.max_connections;
    config.idle_timeout = Duration::from_millis(args.idle_timeout_ms);
    config.frame_timeout = Duration::from_millis(args.frame_timeout_ms);
    config.auth_fail_delay = Duration::from_millis(args.auth_fail_delay_ms);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        addr = %config.addr,
        dir = %config.dir.display(),
        cores = config.cores,
        fsync = %config.fsync,
        password_required = password.is_some(),
        "kvs-server starting"
    );
    match &password {
        Some((_, source)) => tracing::info!(
            "clients must authenticate (RESP AUTH, native Auth) with the password from {source}"
        ),
        None => tracing::info!("no password: clients are not asked to authenticate"),
    }
    config.password = password.map(|(password, _)| password);
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kvs-server: {e}");
            ExitCode::FAILURE
        }
    }
}
