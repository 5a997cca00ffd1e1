//! Runs the real `kvs-server` binary for a test, and finds the Redis tools tests compare with.
//!
//! [`KvsServer::start`] starts the server on `127.0.0.1:0` in a fresh temporary directory with
//! a chosen I/O backend. The server binds one ephemeral port for all its workers and logs it;
//! the helper reads the port from that log line (so no other process can take the port
//! between choosing and binding it), then polls until the port accepts connections, within a
//! deadline. Dropping the handle kills the server. [`RedisServer`] does the same for a real
//! `redis-server`, for tests that compare replies.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to open its partitions and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// An I/O backend a test server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Uring,
    Blocking,
}

impl Backend {
    /// The value of `kvs-server --io`.
    pub fn flag(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Blocking => "blocking",
        }
    }
}

/// The backends to run on here: blocking always; uring where the machine allows it.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Blocking];
    match kvs::io_backend::uring::probe() {
        Ok(()) => v.insert(0, Backend::Uring),
        Err(e) => println!("skipped: the io_uring half: io_uring is unavailable here: {e}"),
    }
    v
}

/// A running `kvs-server` process.
pub struct KvsServer {
    child: Child,
    addr: SocketAddr,
    backend: Backend,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl KvsServer {
    /// Starts a server with two unpinned workers (so operations cross between workers) and
    /// the default fsync policy.
    pub fn start(backend: Backend) -> KvsServer {
        KvsServer::start_with(backend, &[])
    }

    /// Starts a server with extra `kvs-server` flags.
    pub fn start_with(backend: Backend, extra: &[&str]) -> KvsServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvs-server"))
            .args([
                "--addr",
                "127.0.0.1:0",
                "--cores",
                "2",
                "--no-pin",
                "--io",
                backend.flag(),
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kvs-server starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (found, listening) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        // Keeps draining stderr for the server's whole life, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line) {
                    let _ = found.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = match listening.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kvs-server ({}) did not report listening: log:\n{}",
                    backend.flag(),
                    log.lock().unwrap()
                );
            }
        };
        let server = KvsServer {
            child,
            addr,
            backend,
            log,
            _dir: dir,
        };
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "kvs-server does not accept on {addr}: log:\n{}",
                server.log()
            );
            std::thread::yield_now();
        }
        server
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for KvsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the server's `listening on ADDR` log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A Redis tool (`redis-cli`, `redis-benchmark`, `redis-server`) on `PATH`, or `None` after
/// printing the skip line for `test`.
pub fn redis_tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path));
    if found.is_none() {
        println!("skipped: {test}: {name} is not installed (bash ci/install-deps.sh installs it)");
    }
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A `redis-server` for comparisons: no persistence, loopback only, in a temporary
/// directory. Killed when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free port; a few attempts, since the port is chosen (by
    /// binding port 0 and releasing it) before redis-server binds it.
    pub fn start(binary: &Path) -> RedisServer {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temporary directory");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(binary)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--daemonize", "no", "--protected-mode", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return RedisServer {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                // Exited: most likely the port was taken in between; try another.
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "redis-server does not accept on {addr}"
                );
                std::thread::yield_now();
            }
        }
        panic!("redis-server did not start in five attempts");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
