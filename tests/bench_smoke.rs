//! Keeps the benchmark harness working: the real `kvs-bench` drives the real `kvs-server` for
//! about half a second per protocol in verify mode, pipelined, and must finish with
//! operations counted and no errors.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvs::bench::Report;

/// How long the server gets to start listening.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);

/// A `kvs-server` child process, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `kvs-server` on port 0, reads the port it bound from its log, and polls until it
/// accepts connections.
fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvs-server"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--fsync",
            "never",
            "--no-pin",
        ])
        .arg("--dir")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvs-server starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    sent = tx.send(addr).is_ok();
                }
            }
        }
    });
    let addr: SocketAddr = match rx.recv_timeout(STARTUP_DEADLINE) {
        Ok(addr) => addr.parse().expect("the log names a socket address"),
        Err(_) => {
            let _ = child.kill();
            panic!("kvs-server did not say where it listens within {STARTUP_DEADLINE:?}");
        }
    };
    let deadline = Instant::now() + STARTUP_DEADLINE;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "kvs-server at {addr} did not accept connections in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        addr,
        _dir: dir,
    }
}

fn run_bench(server: &Server, protocol: &str) -> Report {
    let output = Command::new(env!("CARGO_BIN_EXE_kvs-bench"))
        .arg("--addr")
        .arg(server.addr.to_string())
        .args(["--protocol", protocol])
        // Pipelined 1 KB values make requests span the server's reads.
        .args(["--connections", "4", "--pipeline", "16", "--keys", "2000"])
        .args(["--value-size", "1000"])
        .args([
            "--read-ratio",
            "0.7",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
        ])
        .args(["--verify", "--json", "--no-progress"])
        .args(["--server-pid", &server.child.id().to_string()])
        .output()
        .expect("kvs-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kvs-bench --protocol {protocol} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not a report ({e}): {stdout}"))
}

#[test]
fn kvs_bench_verifies_kvs_server_over_both_protocols_without_errors() {
    // Guards against a harness that silently stops measuring, and against a server that
    // returns values other than those written or mangles requests that span its reads, in
    // either protocol.
    let server = start_server();
    for protocol in ["native", "resp"] {
        let report = run_bench(&server, protocol);
        assert!(report.ops > 0, "{protocol}: no operations measured");
        assert_eq!(report.errors.total, 0, "{protocol}: {:?}", report.errors);
        assert!(report.gets > 0 && report.sets > 0, "{protocol}: {report:?}");
        assert!(report.verified_gets > 0, "{protocol}: nothing was verified");
        assert!(report.latency_us.p50 > 0.0, "{protocol}: no latencies");
        assert!(
            report.server_cpu.is_some(),
            "{protocol}: no server CPU reading"
        );
    }
}
