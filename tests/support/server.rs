//! Runs the real `kvs-server` binary for a test: a free loopback port, a data directory, its
//! stderr captured, readiness by polling (never by sleeping), and kill on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_kvs-server");

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The I/O backends to test here: blocking always, uring where the machine allows it.
pub fn io_backends() -> Vec<&'static str> {
    let mut v = vec!["blocking"];
    match kvs::io_backend::uring::probe() {
        Ok(()) => v.push("uring"),
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: the uring half, io_uring is unavailable here: {e}"
            );
        }
    }
    v
}

/// A running `kvs-server`.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

/// How to start one.
pub struct ServerBuilder {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub args: Vec<String>,
    pub deny_io_uring: bool,
}

impl ServerBuilder {
    pub fn new(dir: &Path) -> ServerBuilder {
        ServerBuilder {
            dir: dir.to_owned(),
            addr: free_addr(),
            args: Vec::new(),
            deny_io_uring: false,
        }
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
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.deny_io_uring {
            super::seccomp::deny_io_uring(&mut cmd);
        }
        cmd
    }

    /// Starts the server and waits (up to 10 s) until it accepts connections.
    pub fn start(self) -> Server {
        let server = self.spawn();
        server.wait_listening(Duration::from_secs(10));
        server
    }

    /// Starts the server without waiting for it to listen.
    pub fn spawn(self) -> Server {
        let mut child = self.command().spawn().expect("spawn kvs-server");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Server {
            child,
            addr: self.addr,
            dir: self.dir,
            stderr,
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
            if self.log().contains("listening on") && TcpStream::connect(self.addr).is_ok() {
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
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "kvs-server did not exit within {within:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
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
