//! Runs the real `kvs-server` binary for a test, and finds the Redis tools tests compare with.
//!
//! [`ServerBuilder::start`] starts the server in a given data directory, by default on
//! `127.0.0.1:0`: the server binds one ephemeral port for all its workers and logs it, and the
//! helper reads the port from that log line (so no other process can take the port between
//! choosing and binding it), then polls until the port accepts connections, within a deadline.
//! Dropping the handle kills the server. [`KvsServer`] does the same in a fresh temporary
//! directory. [`RedisServer`] starts a real `redis-server`, for tests that compare replies.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_kvs-server");

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

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
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: the io_uring half: io_uring is unavailable here: {e}"
            );
        }
    }
    v
}

/// [`backends`] as `--io` values.
pub fn io_backends() -> Vec<&'static str> {
    backends().into_iter().map(Backend::flag).collect()
}

/// A running `kvs-server`.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    /// Where the reader of the log reports the address the server listens on.
    listening: Option<mpsc::Receiver<SocketAddr>>,
}

/// How to start one.
pub struct ServerBuilder {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub args: Vec<String>,
    pub deny_io_uring: bool,
    /// Environment variables for the server, set after the defaults (`RUST_LOG=info`).
    pub envs: Vec<(String, String)>,
}

impl ServerBuilder {
    pub fn new(dir: &Path) -> ServerBuilder {
        ServerBuilder {
            dir: dir.to_owned(),
            addr: "127.0.0.1:0".parse().expect("an address"),
            args: Vec::new(),
            deny_io_uring: false,
            envs: Vec::new(),
        }
    }
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.envs.push((name.into(), value.into()));
        self
    }
    pub fn io(mut self, io: &str) -> Self {
        self.args.extend(["--io".into(), io.into()]);
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<'a>(mut self, a: impl IntoIterator<Item = &'a str>) -> Self {
        self.args.extend(a.into_iter().map(String::from));
        self
    }
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(SERVER_BIN);
        cmd.arg("--addr")
            .arg(self.addr.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args);
        cmd.env("RUST_LOG", "info").env_remove("KVS_IO");
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.deny_io_uring {
            super::seccomp::deny_io_uring(&mut cmd);
        }
        cmd
    }

    /// Starts the server and waits until it reports its address and accepts connections.
    pub fn start(self) -> Server {
        let mut server = self.spawn();
        let listening = server.listening.take().expect("a fresh server");
        match listening.recv_timeout(START_TIMEOUT) {
            Ok(addr) => server.addr = addr,
            Err(_) => panic!(
                "kvs-server did not report listening; log:\n{}",
                server.log()
            ),
        }
        server.wait_listening(START_TIMEOUT);
        server
    }

    /// Starts the server without waiting for it to listen (its `addr` is then the requested
    /// one, which may be port 0).
    pub fn spawn(self) -> Server {
        let mut child = self.command().spawn().expect("spawn kvs-server");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let (found, listening) = mpsc::channel();
        // Keeps draining stderr for the server's whole life, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let addr = listening_addr(&line);
                {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
                // After the line is in the log, so a caller that saw the address sees the line.
                if let Some(addr) = addr {
                    let _ = found.send(addr);
                }
            }
        });
        Server {
            child,
            addr: self.addr,
            dir: self.dir,
            stderr,
            listening: Some(listening),
        }
    }
}

impl Server {
    pub fn start(dir: &Path, io: &str) -> Server {
        ServerBuilder::new(dir).io(io).start()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_listening(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "kvs-server did not listen on {} within {within:?}; log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls until the log contains `needle` (the log arrives through a pipe).
    pub fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status (at most `within`).
    pub fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        match sigterm_and_wait(&mut self.child, within) {
            Some(status) => status,
            None => panic!(
                "kvs-server did not exit within {within:?} of SIGTERM; log:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `kvs-server` to completion (for start-up failures) and returns (status, stderr).
pub fn run_to_exit(mut cmd: Command, within: Duration) -> (std::process::ExitStatus, String) {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The address in the server's `listening on ADDR` log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A running `kvs-server` in a temporary directory of its own, with two unpinned workers (so
/// operations cross between workers).
pub struct KvsServer {
    server: Server,
    backend: Backend,
    _dir: tempfile::TempDir,
}

impl KvsServer {
    pub fn start(backend: Backend) -> KvsServer {
        KvsServer::start_with(backend, &[])
    }

    /// Starts a server with extra `kvs-server` flags.
    pub fn start_with(backend: Backend, extra: &[&str]) -> KvsServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut builder = ServerBuilder::new(dir.path())
            .io(backend.flag())
            .arg("--cores")
            .arg("2")
            .arg("--no-pin");
        for a in extra {
            builder = builder.arg(*a);
        }
        KvsServer {
            server: builder.start(),
            backend,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.server.child.try_wait(), Ok(None))
    }
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
        {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test}: {name} is not installed (bash ci/install-deps.sh installs it)"
            );
        }
    }
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A `redis-server` for comparisons: loopback only, by default without persistence in a
/// temporary directory. Killed when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts `redis-server` without persistence on a free port.
    pub fn start(binary: &Path) -> RedisServer {
        RedisServer::start_with(binary, None, &["--save", "", "--appendonly", "no"])
    }

    /// Starts `redis-server` on a free port in `dir` (a fresh temporary directory if `None`)
    /// with extra arguments.
    pub fn start_with(binary: &Path, dir: Option<&Path>, extra: &[&str]) -> RedisServer {
        RedisServer::try_start_with(binary, dir, extra)
            .expect("redis-server did not start in five attempts")
    }

    /// [`RedisServer::start_with`], or `None` if redis-server exited before accepting
    /// connections on each of a few attempts (the port is chosen, by binding port 0 and
    /// releasing it, before redis-server binds it; or redis-server refused to start).
    pub fn try_start_with(
        binary: &Path,
        dir: Option<&Path>,
        extra: &[&str],
    ) -> Option<RedisServer> {
        for _ in 0..5 {
            let temp = match dir {
                Some(_) => None,
                None => Some(tempfile::tempdir().expect("temporary directory")),
            };
            let path = dir
                .unwrap_or_else(|| temp.as_ref().unwrap().path())
                .to_owned();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--daemonize", "no", "--protected-mode", "no"])
                .args(extra)
                .arg("--dir")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Some(RedisServer {
                        child,
                        port,
                        _dir: temp,
                    });
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
        None
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM (Redis then flushes its append-only file) and waits for the exit, at most
    /// `within`.
    pub fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        sigterm_and_wait(&mut self.child, within)
            .unwrap_or_else(|| panic!("redis-server did not exit within {within:?} of SIGTERM"))
    }
}

/// Sends `child` SIGTERM and waits at most `within` for its exit status; `None` (after
/// killing it) if it did not exit in time.
fn sigterm_and_wait(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`); 0 once the process is gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// KiB to MiB, rounded down.
pub fn mib(kib: u64) -> u64 {
    kib / 1024
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
